"""A person's decision, the candidate's explanation and feedback, and the ATS webhooks,
against a running server and a real HTTP receiver on loopback: signed, retried with the
same idempotency key after a failure, logged, and erased with the session."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from server import ServerProcess

from rtserver.ats.webhooks import verify

pytestmark = pytest.mark.e2e

SECRET = "a-webhook-secret-for-tests"
JOB = Path(__file__).parent / "jobs" / "backend_engineer.json"


class Receiver:
    """An ATS on loopback: records every request; fails the first ``fail_first`` with 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                receiver.requests.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                        "at": time.time(),
                    }
                )
                failing = len(receiver.requests) <= receiver.fail_first
                self.send_response(500 if failing else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.requests)

    def close(self) -> None:
        self.http.shutdown()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    ats = Receiver(fail_first=1)
    yield ats
    ats.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[ServerProcess]:
    options = ["--webhook-url", f"{receiver.url}/hr", "--webhook-secret", SECRET]
    process = ServerProcess(tmp_path_factory.mktemp("ats") / "data", options=options).start()
    yield process
    process.stop()
    assert "Traceback" not in process.log(), process.log()[-4000:]


def test_a_completed_interview_and_a_decision_reach_the_ats(
    server: ServerProcess, receiver: Receiver
) -> None:
    with httpx.Client(base_url=server.base_url, headers=server.hr_headers, trust_env=False) as hr:
        job_body = json.loads(JOB.read_text())
        job_body["webhooks"] = [f"{receiver.url}/job"]
        job = hr.post("/api/v1/jobs", json=job_body).json()
        session = hr.post("/api/v1/sessions", json={"candidate": "Ada", "job": job["id"]}).json()
        sid = session["id"]
        assert hr.post(f"/api/v1/sessions/{sid}/decision", json={}).status_code in (400, 409)
        ended = hr.post(f"/api/v1/sessions/{sid}/end")
        assert ended.status_code == 200, ended.text

        # session.completed to the server's receiver and the job's; the first try fails
        # (500) and is made again with the same key.
        requests = receiver.wait_for(3)
        completed = [r for r in requests if r["headers"]["X-Rtserver-Event"] == "session.completed"]
        assert sorted(r["path"] for r in completed) == ["/hr", "/hr", "/job"], requests
        keys = {r["path"]: r["headers"]["Idempotency-Key"] for r in completed}
        first, retry = [r for r in completed if r["path"] == "/hr"]
        assert first["headers"]["Idempotency-Key"] == retry["headers"]["Idempotency-Key"]
        assert retry["at"] - first["at"] >= 0.9  # the backoff's first wait
        for request in completed:
            header = request["headers"]["X-Rtserver-Signature"]
            assert verify(SECRET, header, request["body"], time.time())
            assert not verify("another-secret-entirely", header, request["body"], time.time())
            event = json.loads(request["body"])
            assert event["event"] == "session.completed"
            data = event["data"]
            assert data["session"] == sid and data["candidate"] == "Ada"
            assert data["recommendation"] == "review" and data["job"]["id"] == job["id"]
            assert data["report_url"].endswith(f"/api/v1/sessions/{sid}/report")

        # Advancing against the "review" recommendation needs a reason.
        refused = hr.post(
            f"/api/v1/sessions/{sid}/decision", json={"decision": "advance", "reviewer": "Sam"}
        )
        assert refused.status_code == 400 and "needs a reason" in refused.json()["detail"]
        decided = hr.post(
            f"/api/v1/sessions/{sid}/decision",
            json={"decision": "advance", "reviewer": "Sam", "reason": "Strong in person."},
        )
        assert decided.status_code == 201, decided.text
        assert decided.json()["recommendation"] == "review" and len(decided.json()["webhooks"]) == 2
        requests = receiver.wait_for(5)
        made = [r for r in requests if r["headers"]["X-Rtserver-Event"] == "decision.made"]
        assert len(made) == 2
        decision = json.loads(made[0]["body"])["data"]
        assert (decision["decision"], decision["reviewer"]) == ("advance", "Sam")
        assert decision["reason"] == "Strong in person."
        listed = hr.get(f"/api/v1/sessions/{sid}/decision").json()["decisions"]
        assert [d["decision"] for d in listed] == ["advance"]

        log = hr.get("/api/v1/webhooks/deliveries", params={"session": sid}).json()["deliveries"]
        assert {d["status"] for d in log} == {"delivered"}
        assert sorted(d["attempts"] for d in log) == [1, 1, 1, 2]
        assert all(d["id"] in keys.values() or d["event"] == "decision.made" for d in log)

        # The candidate's explanation (Art. 86) and feedback: words, no score.
        explained = hr.get(f"/api/v1/sessions/{sid}/explanation").json()
        assert "not a rejection" in explained["text"] and "A person makes" in explained["text"]
        assert {p["competency"] for p in explained["points"]} == {
            c["id"] for c in job["competencies"]
        }
        summary = httpx.get(
            f"{server.base_url}/api/v1/sessions/{sid}/summary",
            params={"token": session["join_token"]},
            trust_env=False,
        ).json()
        assert summary["status"] == "ended"
        assert [a["feedback"] for a in summary["answers"]] == [
            ["This question was not answered."]
        ] * len(job["questions"])
        assert "score" not in json.dumps(summary)

        audit = [e["action"] for e in hr.get(f"/api/v1/sessions/{sid}/audit").json()["audit"]]
        assert {"decision", "view_decisions", "view_explanation"} <= set(audit)

        # Erasure takes the decisions and the events with it.
        assert hr.delete(f"/api/v1/sessions/{sid}").status_code == 204
        log = hr.get("/api/v1/webhooks/deliveries", params={"session": sid}).json()["deliveries"]
        assert log == []


def test_webhooks_need_a_secret(tmp_path: Path) -> None:
    refused = ServerProcess(tmp_path / "data", options=["--webhook-url", "http://127.0.0.1:9/x"])
    with pytest.raises(RuntimeError):
        refused.start(timeout_s=20.0)
    assert "webhook_secret" in refused.log()

"""Retention and the candidate's rights against a running server: the legal hold, the export
(HR's and the candidate's own), the candidate's erasure request, the consent notice's
figures, and the sweeper in the server process (both the single-process server and the
front process of a server with workers) erasing what is due, found by the server's own
clock on sessions whose retention was moved into the past in its SQLite file."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server import ServerProcess

from rtserver.store import Store

pytestmark = pytest.mark.e2e

JOB = Path(__file__).parent / "jobs" / "backend_engineer.json"
CONTACT = "accommodations@example.com"
DEFAULT_DAYS = 90
DAY_S = 86400.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    options = [
        "--retention-days",
        str(DEFAULT_DAYS),
        "--retention-sweep",
        "1",
        "--alternative-process-contact",
        CONTACT,
    ]
    process = ServerProcess(tmp_path_factory.mktemp("retention") / "data", options=options)
    process.start()
    yield process
    process.stop()
    assert "Traceback" not in process.log(), process.log()[-4000:]


@pytest.fixture
def hr(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.base_url, headers=server.hr_headers, trust_env=False, timeout=30.0
    ) as client:
        yield client


@pytest.fixture
def anyone(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, trust_env=False, timeout=30.0) as client:
        yield client


def ended_session(hr: httpx.Client, **body: Any) -> tuple[str, str]:
    """A session HR created and ended (never joined: the server writes its final); its id
    and join token."""
    created = hr.post("/api/v1/sessions", json={"candidate": "Ada Lovelace", **body})
    assert created.status_code == 201, created.text
    session = created.json()
    ended = hr.post(f"/api/v1/sessions/{session['id']}/end")
    assert ended.status_code == 200, ended.text
    return session["id"], session["join_token"]


def job_id(hr: httpx.Client, retention_days: int | None) -> str:
    body = json.loads(JOB.read_text())
    if retention_days is not None:
        body["retention_days"] = retention_days
    created = hr.post("/api/v1/jobs", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["retention_days"] == retention_days
    return str(created.json()["id"])


def actions(server: ServerProcess, session_id: str) -> list[tuple[str, str, str]]:
    """(action, actor, detail) of the session's audit rows, oldest first, read from the
    server's store (the API no longer shows an erased session's)."""
    store = Store(server.data_dir / "rtserver.sqlite3")
    try:
        rows = store.audit_log(session_id)
    finally:
        store.close()
    return [(r["action"], r["actor"], r["detail"]) for r in reversed(rows)]


def test_a_legal_hold_keeps_the_data_until_it_is_lifted(
    server: ServerProcess, hr: httpx.Client, anyone: httpx.Client
) -> None:
    sid, _ = ended_session(hr)
    hold = f"/api/v1/sessions/{sid}/legal-hold"
    assert anyone.put(hold, json={"reason": "x"}).status_code == 401
    assert hr.put(hold, json={}).status_code == 400
    assert hr.put(hold, json={"reason": "   "}).status_code == 400
    held = hr.put(hold, json={"reason": "Claim 2025-17 by the candidate"})
    assert held.status_code == 200, held.text
    assert held.json()["legal_hold"]["reason"] == "Claim 2025-17 by the candidate"

    record = hr.get(f"/api/v1/sessions/{sid}").json()
    assert record["legal_hold"]["reason"] == "Claim 2025-17 by the candidate"
    assert record["legal_hold"]["by"].startswith("bootstrap@")
    assert record["erase_after"] is None  # held: retention waits
    assert any(s["legal_hold"] for s in hr.get("/api/v1/sessions").json()["sessions"])

    refused = hr.delete(f"/api/v1/sessions/{sid}")
    assert refused.status_code == 409 and "legal hold" in refused.json()["detail"]
    assert hr.get(f"/api/v1/sessions/{sid}/report").status_code == 200  # all still there

    assert anyone.delete(hold).status_code == 401
    lifted = hr.delete(hold)
    assert lifted.status_code == 200 and lifted.json()["legal_hold"] is None
    assert lifted.json()["erased"] is False  # nobody asked for erasure
    record = hr.get(f"/api/v1/sessions/{sid}").json()
    assert record["legal_hold"] is None
    assert record["erase_after"] == pytest.approx(record["ended_at"] + DEFAULT_DAYS * DAY_S)
    assert hr.delete(f"/api/v1/sessions/{sid}").status_code == 204

    rows = actions(server, sid)
    assert [a for a, _, _ in rows if a.startswith("legal_hold") or a == "erase"] == [
        "legal_hold",
        "legal_hold_lift",
        "erase",
    ]
    assert not any("Claim" in detail for _, _, detail in rows)  # ids, never content


def test_the_export_holds_everything_and_the_candidate_gets_their_own(
    server: ServerProcess, hr: httpx.Client, anyone: httpx.Client
) -> None:
    job = job_id(hr, retention_days=30)
    sid, token = ended_session(hr, job=job)
    decided = hr.post(
        f"/api/v1/sessions/{sid}/decision",
        json={"decision": "reject", "reviewer": "Sam", "reason": "not now"},
    )
    assert decided.status_code == 201, decided.text
    answered = anyone.post(
        f"/api/v1/sessions/{sid}/self-identification",
        json={"token": token, "sex": "Female", "race": "Asian"},
    )
    assert answered.status_code == 201

    url = f"/api/v1/sessions/{sid}/export"
    as_hr = hr.get(url)
    assert as_hr.status_code == 200, as_hr.text
    assert as_hr.headers["content-disposition"].startswith("attachment;")
    assert as_hr.headers["cache-control"] == "no-store"
    data = as_hr.json()
    assert data["format"] == "rtserver.candidate_export" and data["version"] == 1
    assert data["session"]["id"] == sid and data["session"]["candidate"] == "Ada Lovelace"
    assert [q["text"] for q in data["questions"]] == [
        q["text"] for q in json.loads(JOB.read_text())["questions"]
    ]
    assert "final" in {m["kind"] for m in data["messages"]}
    assert [d["decision"] for d in data["decisions"]] == ["reject"]
    assert data["retention"]["days"] == 30
    assert data["retention"]["erase_after"] == pytest.approx(
        data["decisions"][0]["at"] + 30 * DAY_S
    )
    # The hiring team never sees the self-identification answers, not even here.
    assert data["self_identification"]["answered"] is True
    assert "Asian" not in as_hr.text and "Female" not in as_hr.text
    assert {"create", "end", "decision", "self_identify", "export"} <= {
        row["action"] for row in data["audit"]
    }
    assert set(data["audit"][0]) == {"id", "at", "action", "by"}  # ids, actions, times

    own = anyone.get(url, params={"token": token})
    assert own.status_code == 200, own.text
    mine = own.json()
    assert mine["self_identification"]["sex"] == "Female"
    assert mine["self_identification"]["race"] == "Asian"
    assert mine["messages"] == data["messages"] and mine["decisions"] == data["decisions"]
    assert [row["by"] for row in mine["audit"] if row["action"] == "export"] == [
        "bootstrap",
        "candidate",
    ]

    assert anyone.get(url, params={"token": token + "x"}).status_code == 401
    assert anyone.get(url).status_code == 401
    assert (
        anyone.get(f"/api/v1/sessions/{'0' * 32}/export", params={"token": token}).status_code
        == 404
    )

    # A legal hold's reason is HR's: the candidate learns there is a hold, not why.
    hr.put(f"/api/v1/sessions/{sid}/legal-hold", json={"reason": "Claim by a third party"})
    held = anyone.get(url, params={"token": token})
    assert held.json()["retention"]["legal_hold"] is True
    assert "third party" not in held.text
    hr.delete(f"/api/v1/sessions/{sid}/legal-hold")


def test_the_candidate_gets_their_data_after_the_link_expired(
    hr: httpx.Client, anyone: httpx.Client
) -> None:
    sid, token = ended_session(hr, expires_in=1)
    time.sleep(1.2)
    expired = anyone.get(f"/api/v1/sessions/{sid}/questions", params={"token": token})
    assert expired.status_code == 410  # the link no longer opens the interview...
    export = anyone.get(f"/api/v1/sessions/{sid}/export", params={"token": token})
    assert export.status_code == 200  # ...but the candidate's data stays theirs to see
    assert export.json()["session"]["id"] == sid
    erased = anyone.post(f"/api/v1/sessions/{sid}/erasure-request", json={"token": token})
    assert erased.status_code == 200 and erased.json()["status"] == "erased"


def test_an_erasure_request_erases_at_once(
    server: ServerProcess, hr: httpx.Client, anyone: httpx.Client
) -> None:
    sid, token = ended_session(hr)
    url = f"/api/v1/sessions/{sid}/erasure-request"
    assert anyone.post(url, json={"token": "wrong"}).status_code == 401
    assert anyone.post(url, json={}).status_code == 401
    assert hr.get(f"/api/v1/sessions/{sid}").status_code == 200  # nothing happened yet

    done = anyone.post(url, json={"token": token})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "erased"
    assert hr.get(f"/api/v1/sessions/{sid}").status_code == 404
    assert anyone.get(f"/api/v1/sessions/{sid}/export", params={"token": token}).status_code == 404
    assert anyone.post(url, json={"token": token}).status_code == 404  # nothing left
    assert [(a, actor.split("@")[0]) for a, actor, _ in actions(server, sid)][-2:] == [
        ("erasure_request", "candidate"),
        ("erase", "candidate"),
    ]
    store = Store(server.data_dir / "rtserver.sqlite3")
    try:
        assert store.messages(sid) == []
        [request] = store.erasure_requests(sid)
        assert request["status"] == "erased"
    finally:
        store.close()


def test_an_erasure_request_under_a_legal_hold_waits_for_its_lift(
    server: ServerProcess, hr: httpx.Client, anyone: httpx.Client
) -> None:
    sid, token = ended_session(hr)
    hr.put(f"/api/v1/sessions/{sid}/legal-hold", json={"reason": "Claim 2025-18"})
    url = f"/api/v1/sessions/{sid}/erasure-request"
    pending = anyone.post(url, json={"token": token})
    assert pending.status_code == 202, pending.text
    body = pending.json()
    assert body["status"] == "pending" and body["reason"] == "legal_hold"
    assert "legal hold" in body["detail"] and "2025-18" not in body["detail"]
    again = anyone.post(url, params={"token": token})  # the token in the query works too
    assert again.status_code == 202 and again.json()["requested_at"] == body["requested_at"]

    # HR sees the pending request; the data is all still there.
    record = hr.get(f"/api/v1/sessions/{sid}").json()
    assert record["erasure_requested_at"] == body["requested_at"]
    assert hr.get(f"/api/v1/sessions/{sid}/report").status_code == 200

    lifted = hr.delete(f"/api/v1/sessions/{sid}/legal-hold")
    assert lifted.status_code == 200 and lifted.json()["erased"] is True
    assert hr.get(f"/api/v1/sessions/{sid}").status_code == 404
    changes = {"legal_hold", "erasure_request", "legal_hold_lift", "erase"}
    assert [(a, actor.split("@")[0]) for a, actor, _ in actions(server, sid) if a in changes] == [
        ("legal_hold", "bootstrap"),
        ("erasure_request", "candidate"),
        ("erasure_request", "candidate"),
        ("legal_hold_lift", "bootstrap"),
        ("erase", "system"),
    ]


def test_the_consent_notice_says_what_is_assessed_and_kept(
    hr: httpx.Client, anyone: httpx.Client
) -> None:
    job = job_id(hr, retention_days=30)
    created = hr.post("/api/v1/sessions", json={"candidate": "Bo", "job": job}).json()
    notice = anyone.get(
        f"/api/v1/sessions/{created['id']}/questions", params={"token": created["join_token"]}
    ).json()
    assert notice["assessment"]["automated"] is True
    assert [c["name"] for c in notice["assessment"]["job"]["competencies"]] == [
        c["name"] for c in json.loads(JOB.read_text())["competencies"]
    ]
    assert notice["retention_days"] == 30
    assert notice["alternative_process_contact"] == CONTACT

    plain = hr.post("/api/v1/sessions", json={"candidate": "Cy"}).json()
    notice = anyone.get(
        f"/api/v1/sessions/{plain['id']}/questions", params={"token": plain["join_token"]}
    ).json()
    assert notice["assessment"]["job"] is None and notice["retention_days"] == DEFAULT_DAYS


def backdate(server: ServerProcess, session_id: str, days: float) -> None:
    """Moves the time the session's retention counts from ``days`` into the past, in the
    server's own SQLite file (WAL: the server goes on reading and writing it)."""
    db = sqlite3.connect(server.data_dir / "rtserver.sqlite3", timeout=10)
    with db:
        db.execute(
            "UPDATE sessions SET retain_from = retain_from - ? WHERE id = ?",
            (days * DAY_S, session_id),
        )
    db.close()


def wait_erased(hr: httpx.Client, session_id: str, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if hr.get(f"/api/v1/sessions/{session_id}").status_code == 404:
            return True
        time.sleep(0.2)
    return False


def sweeps_what_is_due(server: ServerProcess, hr: httpx.Client) -> None:
    due, _ = ended_session(hr)
    held, _ = ended_session(hr)
    young, _ = ended_session(hr)
    hr.put(f"/api/v1/sessions/{held}/legal-hold", json={"reason": "a claim"})
    backdate(server, due, DEFAULT_DAYS + 1)
    backdate(server, held, DEFAULT_DAYS + 1)
    backdate(server, young, DEFAULT_DAYS - 1)
    assert wait_erased(hr, due), server.log()[-3000:]
    time.sleep(1.5)  # another sweep or more
    assert hr.get(f"/api/v1/sessions/{held}").status_code == 200
    assert hr.get(f"/api/v1/sessions/{young}").status_code == 200
    action, actor, detail = actions(server, due)[-1]
    assert (action, actor) == ("retention_erase", "system@local")
    assert detail.startswith(f"{DEFAULT_DAYS} days from ")


def test_the_server_sweeps_what_is_due(server: ServerProcess, hr: httpx.Client) -> None:
    sweeps_what_is_due(server, hr)


def test_the_front_process_of_a_server_with_workers_sweeps_too(tmp_path: Path) -> None:
    options = ["--retention-days", str(DEFAULT_DAYS), "--retention-sweep", "1"]
    options += ["--analysis", "decode"]  # no models: the workers start in a moment
    front = ServerProcess(tmp_path / "data", options=options, workers=2).start()
    try:
        with httpx.Client(
            base_url=front.base_url, headers=front.hr_headers, trust_env=False, timeout=30.0
        ) as hr:
            sweeps_what_is_due(front, hr)
    finally:
        front.stop()
    assert "Traceback" not in front.log(), front.log()[-4000:]


def token_headers(hr: httpx.Client, role: str, unit: str) -> dict[str, str]:
    made = hr.post(
        "/api/v1/tokens",
        json={"name": f"{role} of {unit}", "role": role, "unit": unit, "expires_in_days": 1},
    )
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['token']}"}


def test_roles_and_scope_decide_who_holds_lifts_and_exports(
    hr: httpx.Client, anyone: httpx.Client
) -> None:
    """A recruiter in scope sets a hold and exports; only an admin lifts a hold (whoever may
    erase must not be able to undo what stops erasure); a viewer may do neither; outside
    the session's unit it does not exist."""
    for unit in ("ret-store-1", "ret-store-2"):
        made = hr.post("/api/v1/units", json={"id": unit, "name": unit, "parent": "hq"})
        assert made.status_code == 201, made.text
    sid, _ = ended_session(hr, unit="ret-store-1")
    viewer = token_headers(hr, "viewer", "ret-store-1")
    recruiter = token_headers(hr, "recruiter", "ret-store-1")
    elsewhere = token_headers(hr, "recruiter", "ret-store-2")
    hold, export = f"/api/v1/sessions/{sid}/legal-hold", f"/api/v1/sessions/{sid}/export"

    assert anyone.put(hold, json={"reason": "x"}, headers=viewer).status_code == 403
    assert anyone.get(export, headers=viewer).status_code == 403
    assert anyone.put(hold, json={"reason": "x"}, headers=elsewhere).status_code == 404
    assert anyone.get(export, headers=elsewhere).status_code == 404

    assert anyone.put(hold, json={"reason": "Claim 7"}, headers=recruiter).status_code == 200
    assert anyone.get(export, headers=recruiter).status_code == 200
    assert anyone.delete(f"/api/v1/sessions/{sid}", headers=recruiter).status_code == 409
    assert anyone.delete(hold, headers=recruiter).status_code == 403  # admins only
    assert hr.get(f"/api/v1/sessions/{sid}").json()["legal_hold"] is not None
    assert hr.delete(hold).status_code == 200  # the bootstrap key acts as an admin
    assert anyone.delete(f"/api/v1/sessions/{sid}", headers=recruiter).status_code == 204

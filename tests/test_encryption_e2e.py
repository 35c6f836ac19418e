"""End to end: encryption at rest in a running server.

- A real interview on a server with two worker processes and its master key in
  RTSERVER_MASTER_KEY: the worker that runs the session seals its messages and queues its
  webhook with that key, the server process opens them (the report, the signed webhook
  with the candidate's name), and the files on disk hold neither the name, the decision's
  reason nor the webhook secret. The same server started without the key refuses to start,
  saying why.
- ``rtserver keys rotate`` while a server creates and reads sessions: nothing fails, every
  session reads back, and the old master key is retired.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from media import SpeechTrack
from peer import collect_signals, connect_peer, create_session, signals_url, use_loopback_only
from server import ServerProcess

from rtserver.ats.webhooks import verify
from rtserver.store import Store
from rtserver.store.encryption import encode_key, key_id, new_master_key

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SECRET = "webhook-secret-Quokka-0451"
NAME = "Philippa Oyelaran-Marsh"
REASON = "Thoughtful about rollback-Zeppelin plans"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any RTSERVER_ setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTSERVER_")}
    return {**env, **extra}


def file_bytes(db: Path) -> bytes:
    parts = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    return b"".join(p.read_bytes() for p in parts if p.exists())


def kek_ids(db: Path) -> set[str]:
    """The master keys that wrap the database's data keys."""
    connection = sqlite3.connect(db)
    try:
        return {row[0] for row in connection.execute("SELECT DISTINCT kek_id FROM data_keys")}
    finally:
        connection.close()


class Receiver:
    """An ATS on loopback that records every webhook."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                received.append({"headers": dict(self.headers), "body": body})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/ats"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    async def event(self, name: str, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for request in self.requests:
                if request["headers"]["X-Rtserver-Event"] == name:
                    return request
            await asyncio.sleep(0.1)
        raise AssertionError(f"no {name} webhook: {self.requests}")


async def test_a_real_interview_is_sealed_by_its_worker_with_the_configured_key(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    use_loopback_only()
    receiver = Receiver()
    key = new_master_key()
    data = tmp_path / "data"
    server = ServerProcess(
        data,
        workers=2,
        env=clean_env(RTSERVER_MASTER_KEY=encode_key(key)),
        options=["--webhook-url", receiver.url, "--webhook-secret", SECRET],
    ).start()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            base, hr = server.base_url, server.hr_headers
            session = await create_session(client, base, server.api_key, candidate=NAME)
            sid = session["id"]
            observer = asyncio.create_task(collect_signals(signals_url(base, sid, server.api_key)))
            await asyncio.sleep(0.3)
            peer = await connect_peer(base, sid, session["join_token"], face_video, speech_wav.path)
            await peer.wait_media_ended(speech_wav.duration_s + 15)
            await peer.close()
            messages = await asyncio.wait_for(observer, 60)
            assert messages[-1]["type"] == "final"
            signals = [m for m in messages if m["type"] == "signal"]
            assert len(signals) >= speech_wav.duration_s - 2

            # The server process opens what the worker sealed.
            record = (await client.get(f"{base}/api/v1/sessions/{sid}", headers=hr)).json()
            assert record["candidate"] == NAME and record["status"] == "ended"
            report = await client.get(f"{base}/api/v1/sessions/{sid}/report", headers=hr)
            assert report.status_code == 200, report.text
            completed = await receiver.event("session.completed")
            assert verify(SECRET, completed["headers"]["X-Rtserver-Signature"],
                          completed["body"], time.time())  # fmt: skip
            assert json.loads(completed["body"])["data"]["candidate"] == NAME
            decided = await client.post(
                f"{base}/api/v1/sessions/{sid}/decision",
                headers=hr,
                json={"decision": "hold", "reviewer": "Sam", "reason": REASON},
            )
            assert decided.status_code == 201, decided.text
            made = await receiver.event("decision.made")
            assert json.loads(made["body"])["data"]["reason"] == REASON
            listed = await client.get(f"{base}/api/v1/sessions/{sid}/decision", headers=hr)
            assert listed.json()["decisions"][0]["reason"] == REASON
    finally:
        server.stop()
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
    assert "RTSERVER_MASTER_KEY" in log  # where the key came from, said at start

    db = data / "rtserver.sqlite3"
    on_disk = file_bytes(db)
    assert [s for s in (NAME.encode(), REASON.encode(), SECRET.encode()) if s in on_disk] == []
    assert encode_key(key).encode() not in on_disk
    connection = sqlite3.connect(db)
    try:
        kinds = connection.execute("SELECT DISTINCT kek_id FROM data_keys").fetchall()
        stored = connection.execute(
            "SELECT COUNT(*), SUM(typeof(payload) = 'blob') FROM messages WHERE session_id = ?",
            (sid,),
        ).fetchone()
    finally:
        connection.close()
    assert kinds == [(key_id(key),)]
    assert stored[0] >= len(signals) + 1 and stored[1] == stored[0]
    assert not (data / "master.keys").exists()

    # Without its key, the server does not start: it says why, and makes no key of its own.
    refused = subprocess.run(
        [sys.executable, "-m", "rtserver", "serve", "--data-dir", str(data), "--port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=clean_env(),
    )  # fmt: skip
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert key_id(key) in refused.stderr and "does not hold" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (data / "master.keys").exists()


async def test_keys_rotate_while_the_server_creates_and_reads_sessions(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = data / "rtserver.sqlite3"
    # Sessions enough for the rotation (one data key per transaction) to take a while.
    store = Store(db)  # its keyring file is the server's: data/master.keys
    names = {
        store.create_session(f"Before {i}", None, [])[0].id: f"Before {i}" for i in range(3000)
    }
    store.close()
    old_id = json.loads((data / "master.keys").read_text())["current"]
    # Rate limits off: this loop creates sessions as fast as the server answers, for as long
    # as the rotation takes, which can be past the 120 a minute a client may create.
    server = ServerProcess(data, env=clean_env(), options=["--rate-sessions", "0"]).start()
    errors: list[str] = []
    mixed = 0  # requests answered while the data keys were half re-wrapped
    try:
        async with httpx.AsyncClient(
            base_url=server.base_url, headers=server.hr_headers, trust_env=False, timeout=15.0
        ) as client:
            stop = asyncio.Event()

            async def use_the_server() -> int:
                n = 0
                while not stop.is_set():
                    made = await client.post("/api/v1/sessions", json={"candidate": f"During {n}"})
                    if made.status_code != 201:
                        errors.append(made.text)
                        continue
                    names[made.json()["id"]] = f"During {n}"
                    listed = await client.get("/api/v1/sessions")
                    if listed.status_code != 200:
                        errors.append(listed.text)
                    if len(kek_ids(db)) > 1:
                        nonlocal mixed
                        mixed += 1
                    n += 1
                return n

            busy = asyncio.create_task(use_the_server())
            await asyncio.sleep(0.5)
            rotated = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "rtserver", "keys", "rotate", "--data-dir", str(data),
                 "--batch", "1"],
                cwd=ROOT, capture_output=True, text=True, timeout=120, env=clean_env(),
            )  # fmt: skip
            await asyncio.sleep(0.5)
            stop.set()
            during = await busy
            assert rotated.returncode == 0, rotated.stderr
            assert errors == []
            assert during >= 5 and mixed >= 1, (during, mixed)
            out = json.loads(rotated.stdout)
            assert out["retired"] == [old_id]
            # Sessions read back with their names, one by one: all those made during the
            # rotation, and some from before that the server had not read (uncached).
            before = [sid for sid, name in names.items() if name.startswith("Before")]
            sample = random.Random(3).sample(before, 200)
            for sid, name in names.items():
                if name.startswith("Before") and sid not in sample:
                    continue
                record = await client.get(f"/api/v1/sessions/{sid}")
                assert record.status_code == 200 and record.json()["candidate"] == name
            created_after = await client.post("/api/v1/sessions", json={"candidate": "After"})
            assert created_after.status_code == 201
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()[-4000:]
    status = subprocess.run(
        [sys.executable, "-m", "rtserver", "keys", "status", "--data-dir", str(data)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=clean_env(),
    )  # fmt: skip
    report = json.loads(status.stdout)
    # The sessions made after the rotation are under the new key too: no data key anywhere
    # is wrapped by the retired one.
    assert report["keys"] == [out["current"]]
    assert report["data_keys"] == {out["current"]: len(names) + 1}

"""The audit log against a running server: rows past retention pruned at start, the session
audit's wire v1 rows with the new fields, list polling folded, details without free text,
and the admin route `GET /api/v1/audit-log` paged and itself logged."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from server import ServerProcess

from rtserver.messages import StoredMessage
from rtserver.store import Actor, Store
from rtserver.store.audit_log import AuditLog
from rtserver.store.sqlite import open_connection

pytestmark = pytest.mark.e2e

DAY_S = 86400.0
V1 = ["id", "at", "actor", "action", "session_id", "detail"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("audit_log") / "data"
    data.mkdir()
    # Three rows from 300 days ago (past the 183 days kept) and one from yesterday.
    now = time.time()
    times = [now - 300 * DAY_S, now - 300 * DAY_S + 1, now - 300 * DAY_S + 2, now - DAY_S]
    connection = open_connection(data / "rtserver.sqlite3")
    clock = [0.0]
    old = AuditLog(connection, clock=lambda: clock[0])
    for i, at in enumerate(times):
        clock[0] = at
        old.append(Actor("user:old", "viewer", None, "10.9.9.9"), "view_report", f"old-{i}")
    connection.close()
    process = ServerProcess(data).start()
    yield process
    process.stop()
    assert "Traceback" not in process.log(), process.log()[-4000:]


@pytest_asyncio.fixture
async def hr(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.base_url, headers=server.hr_headers, trust_env=False, timeout=15.0
    ) as http:
        yield http


def store_of(server: ServerProcess) -> Store:
    return Store(server.data_dir / "rtserver.sqlite3")


async def test_rows_past_retention_are_pruned_at_start_and_the_chain_holds(
    server: ServerProcess,
) -> None:
    store = store_of(server)
    try:
        deadline = time.monotonic() + 10
        while store.verify_audit_log().anchor_id != 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        report = store.verify_audit_log()
        remaining = [r["session_id"] for r in store.audit_log(None) if r["user_id"] == "user:old"]
    finally:
        store.close()
    assert report.intact and report.anchor_id == 3 and report.pruned == 3, report
    assert remaining == ["old-3"]  # yesterday's row is kept


async def test_the_session_audit_keeps_wire_v1_and_adds_who(
    server: ServerProcess, hr: httpx.AsyncClient
) -> None:
    created = await hr.post("/api/v1/sessions", json={"candidate": "Ada Lovelace"})
    sid = created.json()["id"]
    await hr.get(f"/api/v1/sessions/{sid}")
    rows = (await hr.get(f"/api/v1/sessions/{sid}/audit")).json()["audit"]
    assert [r["action"] for r in rows] == ["view_audit", "view_session", "create"]  # newest first
    for row in rows:
        assert list(row)[:6] == V1 and row["session_id"] == sid
        assert row["actor"] == "bootstrap@127.0.0.1"
        assert (row["user_id"], row["role"], row["unit"], row["client"]) == (
            "bootstrap",
            "admin",
            "hq",  # the bootstrap key is an admin of the top unit
            "127.0.0.1",
        )
        assert len(row["hash"]) == 64 and len(row["prev_hash"]) == 64
    assert "Ada" not in str(rows)


async def test_a_decision_is_logged_without_the_reviewers_text(
    server: ServerProcess, hr: httpx.AsyncClient
) -> None:
    store = store_of(server)
    try:
        record, _ = store.create_session("Eve", None, [])
        store.mark_live(record.id, "test-node")
        store.append_message(StoredMessage(record.id, 0, "final", {"score": 50}))
        store.mark_ended(record.id, "completed")
    finally:
        store.close()
    decided = await hr.post(
        f"/api/v1/sessions/{record.id}/decision",
        json={"decision": "hold", "reviewer": "Jane Reviewer", "reason": "needs a second look"},
    )
    assert decided.status_code == 201, decided.text
    rows = (await hr.get(f"/api/v1/sessions/{record.id}/audit")).json()["audit"]
    decision = next(r for r in rows if r["action"] == "decision")
    assert decision["detail"] == "hold"
    assert "Jane" not in str(rows) and "second look" not in str(rows)


async def test_list_polling_is_folded_per_minute(
    server: ServerProcess, hr: httpx.AsyncClient
) -> None:
    store = store_of(server)
    try:
        before = sum(r["action"] == "list" for r in store.audit_log(None))
        start = time.time()
        for _ in range(10):
            assert (await hr.get("/api/v1/sessions")).status_code == 200
        for _ in range(3):
            assert (await hr.get("/api/v1/jobs")).status_code == 200
        minutes = int(time.time() // 60) - int(start // 60) + 1
        rows = store.audit_log(None)
    finally:
        store.close()
    after = sum(r["action"] == "list" for r in rows)
    assert 1 <= after - before <= minutes  # ten polls, one row (two across a minute's end)
    assert 1 <= sum(r["action"] == "list_jobs" for r in rows) <= minutes


async def test_the_admin_route_pages_the_whole_log_and_is_logged(
    server: ServerProcess, hr: httpx.AsyncClient
) -> None:
    await hr.post("/api/v1/sessions", json={})
    pages, after = [], 0
    while True:
        page = await hr.get("/api/v1/audit-log", params={"limit": 3, "after": after})
        assert page.status_code == 200, page.text
        pages.append(page.json())
        after = page.json()["next_after"]
        if after is None:
            break
    entries = [e for p in pages for e in p["entries"]]
    assert all(len(p["entries"]) <= 3 for p in pages) and len(pages) >= 3
    ids = [e["id"] for e in entries]
    assert ids == list(range(4, 4 + len(ids)))  # rows 1-3 pruned; the rest, in order
    assert all(list(e)[:6] == V1 for e in entries)
    for earlier, entry in itertools.pairwise(entries):
        assert entry["prev_hash"] == earlier["hash"]
    # Every page read is a row of its own (never folded).
    logged = [e for e in entries if e["action"] == "view_audit_log"]
    assert len(logged) >= len(pages) - 1 and logged[0]["detail"].startswith("from=- to=-")

    today = time.strftime("%Y-%m-%d", time.gmtime())
    recent = (await hr.get("/api/v1/audit-log", params={"from": today})).json()["entries"]
    assert recent and all(e["at"] >= time.time() - DAY_S for e in recent)
    assert "user:old" not in {e["user_id"] for e in recent}
    assert (await hr.get("/api/v1/audit-log", params={"from": "soon"})).status_code == 400
    assert (await hr.get("/api/v1/audit-log", params={"limit": 0})).status_code == 400
    anonymous = await hr.get("/api/v1/audit-log", headers={"Authorization": ""})
    assert anonymous.status_code == 401


def test_verify_runs_beside_the_running_server(server: ServerProcess) -> None:
    command = [sys.executable, "-m", "rtserver", "audit-log", "verify"]
    done = subprocess.run(
        [*command, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(server.data_dir),
    )
    assert done.returncode == 0, done.stderr
    assert "audit log intact" in done.stdout and "anchored at pruned row 3" in done.stdout

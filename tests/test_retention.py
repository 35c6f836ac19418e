"""Retention (rtserver/store/retention.py) on a real SQLite file and a fresh PostgreSQL
database (``store_target``, tests/conftest.py): which sessions fall due and
when, what stops them, what the sweep erases and logs. Every sweep is given its ``now``, so
nothing sleeps: "a day later" is a number."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtserver.messages import StoredMessage
from rtserver.store import (
    STATUS_ENDED,
    STATUS_ERASED,
    AsyncStore,
    JobRecord,
    Question,
    SessionRecord,
    Store,
)
from rtserver.store.encryption import Keyring
from rtserver.store.engine import StoreTarget
from rtserver.store.outbox import Outbox
from rtserver.store.records import DAY_S
from rtserver.store.retention import RetentionSweeper, find_due, sweep

DEFAULT = 180  # the server's retention_days in these tests


@pytest.fixture
def store(store_target: StoreTarget, keyring: Keyring) -> Iterator[Store]:
    opened = Store(store_target, keyring)
    yield opened
    opened.close()


@pytest.fixture
def outbox(store_target: StoreTarget, keyring: Keyring, store: Store) -> Iterator[Outbox]:
    opened = Outbox(store_target, keyring)
    yield opened
    opened.close()


def job_body(retention_days: int | None) -> dict[str, object]:
    body: dict[str, object] = {"title": "Engineer", "competencies": [], "questions": []}
    if retention_days is not None:
        body["retention_days"] = retention_days
    return body


def ended(
    store: Store, job: JobRecord | None = None, retention_days: int | None = None
) -> SessionRecord:
    """A session that ran and ended, with a signal and a final stored."""
    record, _ = store.create_session(
        "Ada",
        job.id if job else None,
        [Question("Why us?", 60)],
        job_version=job.version if job else None,
        retention_days=retention_days,
    )
    assert store.mark_live(record.id, "test-node")
    store.append_message(StoredMessage(record.id, 0, "signal", {"t": 0}))
    store.append_message(StoredMessage(record.id, 1, "final", {"score": 50}))
    store.mark_ended(record.id, "hangup")
    again = store.get_session(record.id)
    assert again is not None and again.status == STATUS_ENDED
    return again


def decide(store: Store, session_id: str, decision: str = "reject") -> float:
    """Records a decision; returns its time (what retention counts from)."""
    return float(store.add_decision(session_id, decision, "", "Sam", "review", "hr")["at"])


def due_ids(store: Store, now: float, default_days: int = DEFAULT) -> set[str]:
    return {item.session for item in find_due(store, now, default_days).due}


def test_a_decided_session_is_erased_its_days_after_the_decision(
    store: Store, outbox: Outbox
) -> None:
    record = ended(store)
    decided_at = decide(store, record.id)
    outbox.add("decision.made", ["http://127.0.0.1:9/hr"], {"candidate": "Ada"}, record.id)
    deadline = decided_at + DEFAULT * DAY_S
    assert store.get_session(record.id).erase_after(DEFAULT) == pytest.approx(deadline)  # type: ignore[union-attr]

    assert sweep(store, outbox, deadline - 1, DEFAULT).erased == []
    assert store.messages(record.id) != []
    result = sweep(store, outbox, deadline + 1, DEFAULT)
    assert result.erased == [record.id]
    assert [d.days for d in result.due] == [DEFAULT]
    assert result.due[0].since == pytest.approx(decided_at)

    erased = store.get_session(record.id)
    assert erased is not None and erased.status == STATUS_ERASED and erased.candidate is None
    assert store.messages(record.id) == [] and store.decisions(record.id) == []
    assert outbox.deliveries(record.id) == []  # its webhook events held its data too
    rows = store.audit_log(record.id)
    assert [(r["action"], r["actor"]) for r in rows] == [("retention_erase", "system@local")]
    assert rows[0]["detail"].startswith(f"{DEFAULT} days from ")
    assert "Ada" not in rows[0]["detail"]
    assert due_ids(store, deadline + 10 * DAY_S) == set()  # erased once, never again


def test_the_latest_decision_restarts_the_count(store: Store) -> None:
    record = ended(store)
    first = decide(store, record.id, "hold")
    assert due_ids(store, first + DEFAULT * DAY_S + 1) == {record.id}
    second = decide(store, record.id, "advance")
    assert second >= first
    assert due_ids(store, second + DEFAULT * DAY_S - 1) == set()
    assert due_ids(store, second + DEFAULT * DAY_S + 1) == {record.id}


def test_a_jobs_retention_days_override_the_servers_and_follow_its_latest_version(
    store: Store,
) -> None:
    job = store.save_job(job_body(30), "hr")
    of_job = ended(store, job, retention_days=30)
    default = ended(store)  # no job: the server's default
    label = ended(store)  # a free "job" label, as before jobs: the default too
    decided = {r.id: decide(store, r.id) for r in (of_job, default, label)}

    day_31 = decided[of_job.id] + 31 * DAY_S
    assert due_ids(store, day_31) == {of_job.id}
    assert due_ids(store, day_31, default_days=10) == {of_job.id, default.id, label.id}

    # A new version with a shorter retention applies to the job's earlier sessions too.
    store.save_job(job_body(7), "hr", job.id)
    assert store.get_session(of_job.id).retention_days == 7  # type: ignore[union-attr]
    assert due_ids(store, decided[of_job.id] + 6 * DAY_S) == set()
    assert due_ids(store, decided[of_job.id] + 8 * DAY_S) == {of_job.id}
    # And a version without one hands it back to the server's default.
    store.save_job(job_body(None), "hr", job.id)
    assert store.get_session(of_job.id).retention_days is None  # type: ignore[union-attr]
    assert due_ids(store, decided[of_job.id] + 8 * DAY_S) == set()


def test_a_legal_hold_stops_every_erasure_until_it_is_lifted(store: Store, outbox: Outbox) -> None:
    record = ended(store)
    decided_at = decide(store, record.id)
    late = decided_at + 10 * DEFAULT * DAY_S
    assert store.set_legal_hold(record.id, "litigation 2025-17", "bootstrap@127.0.0.1")
    held = store.get_session(record.id)
    assert held is not None and held.legal_hold is not None
    assert held.legal_hold.reason == "litigation 2025-17"
    assert held.to_wire()["legal_hold"]["by"] == "bootstrap@127.0.0.1"
    assert held.erase_after(DEFAULT) is None

    assert due_ids(store, late) == set()
    assert sweep(store, outbox, late, DEFAULT).erased == []
    assert not store.erase(record.id)  # HR's DELETE path refuses it too
    assert store.messages(record.id) != [] and store.decisions(record.id) != []

    assert store.lift_legal_hold(record.id)
    assert not store.lift_legal_hold(record.id)  # there is none any more
    assert sweep(store, outbox, late, DEFAULT).erased == [record.id]


def test_undecided_and_never_joined_sessions_are_not_kept_forever(store: Store) -> None:
    undecided = ended(store)
    assert undecided.ended_at is not None
    assert due_ids(store, undecided.ended_at + DEFAULT * DAY_S - 1) == set()
    assert due_ids(store, undecided.ended_at + DEFAULT * DAY_S + 1) == {undecided.id}

    never_joined, _ = store.create_session("Bo", None, [], expires_in_s=3600)
    expiry = never_joined.expires_at
    assert never_joined.retain_from == expiry
    assert never_joined.id not in due_ids(store, expiry + DEFAULT * DAY_S - 1)
    assert never_joined.id in due_ids(store, expiry + DEFAULT * DAY_S + 1)

    live, _ = store.create_session("Cy", None, [])
    assert store.mark_live(live.id, "test-node")
    assert live.id not in due_ids(store, live.expires_at + 100 * DEFAULT * DAY_S)


def test_a_dry_run_erases_nothing(store: Store, outbox: Outbox) -> None:
    record = ended(store)
    late = decide(store, record.id) + 2 * DEFAULT * DAY_S
    found = sweep(store, outbox, late, DEFAULT, dry_run=True)
    assert [d.session for d in found.due] == [record.id] and found.erased == []
    assert store.messages(record.id) != []
    assert store.audit_log(record.id) == []


def test_a_held_erasure_request_is_carried_out_once_the_hold_is_lifted(
    store: Store, outbox: Outbox
) -> None:
    record = ended(store)
    store.set_legal_hold(record.id, "a claim", "hr")
    first = store.request_erasure(record.id)
    assert store.request_erasure(record.id) == first  # one pending request at a time
    assert store.get_session(record.id).erasure_requested_at == first  # type: ignore[union-attr]
    assert store.pending_erasure_requests() == []  # held
    assert sweep(store, outbox, first, DEFAULT).erased == []

    store.lift_legal_hold(record.id)
    assert store.pending_erasure_requests() == [record.id]
    result = sweep(store, outbox, first + 1, DEFAULT)  # long before retention's turn
    assert result.erased == [record.id]
    assert [(r["action"], r["actor"]) for r in store.audit_log(record.id)] == [
        ("erase", "system@local")
    ]
    [request] = store.erasure_requests(record.id)
    assert request["status"] == "erased" and request["done_at"] >= request["at"]
    assert store.pending_erasure_requests() == []


def test_the_due_query_reads_its_indexes(tmp_path: Path) -> None:
    """One query finds every due session, through the two partial indexes, without scanning
    the sessions table (a table of years of interviews)."""
    Store(tmp_path / "db.sqlite3").close()
    db = sqlite3.connect(tmp_path / "db.sqlite3")
    from rtserver.store.sqlite import _DUE_FOR_ERASURE

    plan = db.execute(
        "EXPLAIN QUERY PLAN " + _DUE_FOR_ERASURE, {"now": 0.0, "by_default": 0.0, "limit": -1}
    ).fetchall()
    db.close()
    details = " | ".join(row[3] for row in plan)
    assert "sessions_due_by_default" in details and "sessions_due_by_job" in details, details
    assert "SCAN s " not in details and "SCAN sessions" not in details, details


OLD_SCHEMA = """
CREATE TABLE sessions (
    id TEXT PRIMARY KEY, candidate TEXT, job TEXT, questions TEXT NOT NULL DEFAULT '[]',
    token_hash TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL,
    started_at REAL, ended_at REAL, end_reason TEXT, expires_at REAL, resume_hash TEXT,
    job_version INTEGER
);
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL, at REAL NOT NULL,
    decision TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', reviewer TEXT NOT NULL,
    recommendation TEXT, actor TEXT NOT NULL
);
INSERT INTO sessions (id, token_hash, status, created_at, expires_at, ended_at) VALUES
    ('decided', 'x', 'ended', 1000.0, 2000.0, 1500.0),
    ('undecided', 'x', 'ended', 1000.0, 2000.0, 1600.0),
    ('unused', 'x', 'created', 1000.0, 2000.0, NULL),
    ('running', 'x', 'live', 1000.0, 2000.0, NULL);
INSERT INTO decisions (session_id, at, decision, reviewer, actor)
    VALUES ('decided', 1700.0, 'reject', 'Sam', 'hr'), ('decided', 1800.0, 'hold', 'Sam', 'hr');
"""


def test_a_database_from_before_retention_counts_from_its_history(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    old.close()
    store = Store(path)
    since = {
        sid: store.get_session(sid).retain_from  # type: ignore[union-attr]
        for sid in ("decided", "undecided", "unused", "running")
    }
    assert since == {"decided": 1800.0, "undecided": 1600.0, "unused": 2000.0, "running": None}
    assert due_ids(store, 1700.0 + DAY_S, default_days=1) == {"undecided"}
    assert due_ids(store, 1900.0 + DAY_S, default_days=1) == {"decided", "undecided"}
    assert due_ids(store, 2000.0 + DAY_S, default_days=1) == {"decided", "undecided", "unused"}
    store.close()


def test_the_servers_sweeper_erases_through_the_async_store(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    """RetentionSweeper, as the server runs it: reads on a read thread, each erasure a
    write on the writer thread."""
    path = store_target
    reads = Store(path, keyring)
    due = ended(reads)
    kept = ended(reads)
    reads.set_legal_hold(kept.id, "a claim", "hr")
    assert due.ended_at is not None
    outbox = Outbox(path, keyring)

    async def run() -> list[str]:
        db = AsyncStore(reads, Store(path, keyring))
        try:
            sweeper = RetentionSweeper(db, outbox, DEFAULT, 3600.0)
            return await sweeper.sweep(due.ended_at + DEFAULT * DAY_S + 1)  # type: ignore[operator]
        finally:
            await db.close()

    assert asyncio.run(run()) == [due.id]
    assert reads.get_session(due.id).status == STATUS_ERASED  # type: ignore[union-attr]
    assert reads.get_session(kept.id).status == STATUS_ENDED  # type: ignore[union-attr]
    outbox.close()
    reads.close()

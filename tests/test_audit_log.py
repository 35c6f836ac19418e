"""The hash-chained audit log (rtserver/store/audit_log.py) on real SQLite files and fresh
PostgreSQL databases (``store_target``, tests/conftest.py): the chain
verifies, every kind of tampering with raw SQL is named by row, concurrent writers keep one
chain, an older table is migrated once, list polling folds, retention prunes without
breaking verification, and the `rtserver audit-log` commands run as a user runs them."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import itertools
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtserver.config import ConfigError, load_config
from rtserver.store import CLI_ACTOR, Actor, Store, engine
from rtserver.store.audit_log import (
    COLUMNS,
    GENESIS_HASH,
    AuditChainBroken,
    AuditLog,
    AuditPruner,
    is_folded,
    parse_bound,
    row_hash,
)
from rtserver.store.encryption import Keyring
from rtserver.store.engine import StoreTarget

ALICE = Actor("user:alice", "recruiter", "unit:store-12", "10.0.0.7")
BOB = Actor("user:bob", "viewer", "unit:hq", "10.0.0.8")
DAY_S = 86400.0


class Clock:
    """A clock the test moves (unix s)."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def raw(target: StoreTarget) -> engine.Connection:
    """A plain connection (autocommit, rows by name), as someone with the file or the
    database's credentials would tamper with it."""
    return engine.connect(target)


def filled(target: StoreTarget, keyring: Keyring | None = None, rows: int = 8) -> Store:
    store = Store(target, keyring)
    for i in range(rows):
        store.audit(ALICE if i % 2 else BOB, "view_report", f"session-{i}", "")
    return store


def test_rows_carry_who_what_and_the_chain_and_verify(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    store = Store(store_target, keyring)
    store.audit(ALICE, "view_report", "s1")
    store.audit(BOB, "create_job", None, "job j1 version 1", "job:j1")
    store.audit(CLI_ACTOR, "export_audit_log", None, "format=jsonl from=- to=-")
    rows = list(reversed(store.audit_log(None)))
    # Wire v1's fields first, as before; then the new ones.
    assert list(rows[0])[:6] == ["id", "at", "actor", "action", "session_id", "detail"]
    assert set(rows[0]) == set(COLUMNS)
    first, job = rows[0], rows[1]
    assert (first["actor"], first["user_id"], first["role"], first["unit"], first["client"]) == (
        "user:alice@10.0.0.7",
        "user:alice",
        "recruiter",
        "unit:store-12",
        "10.0.0.7",
    )
    assert (job["session_id"], job["object"]) == (None, "job:j1")
    assert first["prev_hash"] == GENESIS_HASH
    for before, row in itertools.pairwise(rows):
        assert row["prev_hash"] == before["hash"] and row["id"] == before["id"] + 1
    assert all(row["hash"] == row_hash(row) for row in rows)

    report = store.verify_audit_log()
    assert report.intact and report.rows == 3 and (report.first_id, report.last_id) == (1, 3)
    assert (report.head_id, report.head_hash) == (3, rows[-1]["hash"])
    assert "intact: 3 rows" in report.summary()
    store.close()


def test_a_detail_longer_than_ids_is_refused(store_target: StoreTarget, keyring: Keyring) -> None:
    store = Store(store_target, keyring)
    with pytest.raises(ValueError, match="ids, not content"):
        store.audit(ALICE, "decision", "s1", "x" * 501)
    assert store.audit_log(None) == [] and store.verify_audit_log().intact
    store.close()


@pytest.mark.parametrize(
    ("column", "value"),
    [("detail", "advance"), ("user_id", "user:mallory"), ("actor", "user:mallory@10.0.0.9"),
     ("at", 1.0), ("session_id", "session-x"), ("role", "admin")],
)  # fmt: skip
def test_an_edited_row_is_named(
    store_target: StoreTarget, keyring: Keyring, column: str, value: object
) -> None:
    path = store_target
    store = filled(path, keyring)
    raw(path).execute(f"UPDATE audit SET {column} = ? WHERE id = 5", (value,))
    report = store.verify_audit_log()
    assert not report.intact and report.bad_row == 5, report
    assert "edited" in report.summary() and "row 5" in report.summary()
    store.close()


def test_a_deleted_middle_row_is_named(store_target: StoreTarget, keyring: Keyring) -> None:
    path = store_target
    store = filled(path, keyring)
    raw(path).execute("DELETE FROM audit WHERE id = 4")
    report = store.verify_audit_log()
    assert not report.intact and report.bad_row == 4 and "missing" in (report.problem or "")
    store.close()


def test_deleted_first_rows_are_named(store_target: StoreTarget, keyring: Keyring) -> None:
    path = store_target
    store = filled(path, keyring)
    raw(path).execute("DELETE FROM audit WHERE id <= 2")
    report = store.verify_audit_log()
    assert not report.intact and report.bad_row == 1 and "rows 1-2 are missing" in report.summary()
    store.close()


def test_a_deleted_last_row_is_caught_by_the_head_record(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    path = store_target
    store = filled(path, keyring)
    raw(path).execute("DELETE FROM audit WHERE id = 8")
    report = store.verify_audit_log()
    assert not report.intact and report.bad_row == 8 and "deleted at the end" in report.summary()
    # The store goes on writing after the recorded head, so the gap stays visible.
    store.audit(ALICE, "view_report", "s9")
    again = store.verify_audit_log()
    assert not again.intact and again.bad_row == 8
    store.close()


def test_a_truncation_that_rewrites_the_head_needs_a_head_kept_elsewhere(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    """What the chain cannot see alone, stated as a test: someone who deletes the last rows
    and also rewrites the head record leaves a valid shorter chain. A head recorded earlier
    (``--expect``) catches it."""
    path = store_target
    store = filled(path, keyring)
    kept = store.verify_audit_log()
    db = raw(path)
    row7 = db.execute("SELECT hash FROM audit WHERE id = 7").fetchone()[0]
    db.execute("DELETE FROM audit WHERE id = 8")
    db.execute("UPDATE audit_chain SET head_id = 7, head_hash = ?", (row7,))
    assert store.verify_audit_log().intact  # the limit: undetectable from the file alone
    report = store.verify_audit_log([(kept.head_id, kept.head_hash)])
    assert not report.intact and report.bad_row == 8 and "log ends at row 7" in report.summary()
    store.close()


def test_a_rewritten_history_is_caught_only_against_a_recorded_head(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    """Edit row 3 and recompute every hash after it: SHA-256 has no key, so the file alone
    verifies; the head printed before no longer matches."""
    path = store_target
    store = filled(path, keyring)
    kept = store.verify_audit_log()
    db = raw(path)
    db.execute("UPDATE audit SET detail = 'forged' WHERE id = 3")
    prev = db.execute("SELECT hash FROM audit WHERE id = 2").fetchone()[0]
    for row in db.execute("SELECT * FROM audit WHERE id >= 3 ORDER BY id").fetchall():
        fields = {**dict(row), "prev_hash": prev}
        prev = row_hash(fields)
        db.execute(
            "UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?",
            (fields["prev_hash"], prev, row["id"]),
        )
    db.execute("UPDATE audit_chain SET head_hash = ?", (prev,))
    assert store.verify_audit_log().intact
    report = store.verify_audit_log([(kept.head_id, kept.head_hash)])
    assert not report.intact and report.bad_row == kept.head_id and "rewritten" in report.summary()
    store.close()


def test_an_inserted_row_is_named(store_target: StoreTarget, keyring: Keyring) -> None:
    path = store_target
    store = filled(path, keyring)
    raw(path).execute(
        "INSERT INTO audit (id, at, actor, action, session_id, detail)"
        " VALUES (9, ?, 'user:mallory@10.0.0.9', 'view_report', 's1', '')",
        (time.time(),),
    )
    report = store.verify_audit_log()
    assert not report.intact and report.bad_row == 9 and "inserted by hand" in report.summary()
    store.close()


def test_a_row_forged_into_a_gap_is_named_by_the_next_row(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    """A replacement for row 4 with a correctly computed hash, chained to row 3: row 5 still
    points at the original row 4."""
    path = store_target
    store = filled(path, keyring)
    db = raw(path)
    row = dict(db.execute("SELECT * FROM audit WHERE id = 4").fetchone())
    row |= {"actor": "user:mallory@10.0.0.9", "user_id": "user:mallory"}
    row["hash"] = row_hash(row)
    db.execute("DELETE FROM audit WHERE id = 4")
    db.execute(
        f"INSERT INTO audit ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
        [row[name] for name in COLUMNS],
    )
    report = store.verify_audit_log()
    assert not report.intact and report.bad_row == 5 and "replaced or inserted" in report.summary()
    store.close()


def test_a_row_appended_past_the_head_with_a_valid_hash_is_named(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    path = store_target
    store = filled(path, keyring)
    db = raw(path)
    last = dict(db.execute("SELECT * FROM audit WHERE id = 8").fetchone())
    forged = {**last, "id": 9, "detail": "", "prev_hash": last["hash"]}
    forged["hash"] = row_hash(forged)
    db.execute(
        f"INSERT INTO audit ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
        [forged[name] for name in COLUMNS],
    )
    report = store.verify_audit_log()
    assert (
        not report.intact and report.bad_row == 9 and "past the recorded head" in report.summary()
    )
    store.close()


def test_two_connections_writing_at_once_keep_one_chain(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    """The server and a worker (or the command line) each have their own connection: the
    head is read and the row inserted in one IMMEDIATE transaction, so they never both chain
    to the same row."""
    path = store_target
    stores = [Store(path, keyring), Store(path, keyring)]
    errors: list[BaseException] = []

    def write(store: Store, actor: Actor) -> None:
        try:
            for i in range(300):
                store.audit(actor, "view_report", f"s{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=pair) for pair in zip(stores, (ALICE, BOB), strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    report = stores[0].verify_audit_log()
    assert report.intact and report.rows == 600 and (report.first_id, report.last_id) == (1, 600)
    users = [row["user_id"] for row in stores[1].audit_log(None, limit=600)]
    assert users.count("user:alice") == users.count("user:bob") == 300
    for store in stores:
        store.close()


WRITER = """
import sys
from pathlib import Path
from rtserver.store import Actor, Store
store = Store(Path(sys.argv[1]))
actor = Actor(sys.argv[2], "viewer", None, "local")
for i in range(int(sys.argv[3])):
    store.audit(actor, "view_report", f"s{i}")
store.close()
"""


def test_two_processes_writing_at_once_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    Store(path).close()
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"user:{name}", "250"])
        for name in ("p1", "p2")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = Store(path)
    report = store.verify_audit_log()
    assert report.intact and report.rows == 500, report
    store.close()


OLD_SCHEMA = """
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    session_id TEXT,
    detail TEXT NOT NULL DEFAULT ''
);
"""


def test_a_first_release_table_is_migrated_and_chained_once(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    db = raw(path)
    db.executescript(OLD_SCHEMA)
    old = [
        (1700000000.5, "hr@127.0.0.1", "create", "s1", ""),
        (1700000001.25, "candidate@10.1.2.3", "join", "s1", ""),
        (1700000002.0, "cli@local", "create_job", None, "job j1 version 1"),
    ]
    db.executemany(
        "INSERT INTO audit (at, actor, action, session_id, detail) VALUES (?, ?, ?, ?, ?)", old
    )
    db.close()
    # Two processes' stores open the old file at once: one migrates, the other finds it done.
    stores: list[Store] = []
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            stores.append(Store(path))
        except BaseException as exc:  # shown by the assertion below, not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(stores) == 2
    rows = list(reversed(stores[0].audit_log(None)))
    assert [(r["user_id"], r["client"], r["role"]) for r in rows] == [
        ("hr", "127.0.0.1", None),
        ("candidate", "10.1.2.3", None),
        ("cli", "local", None),
    ]
    assert stores[1].verify_audit_log().intact
    stores[1].audit(ALICE, "view_report", "s1")  # new rows chain on from the migrated ones
    for store in stores:
        store.close()
    reopened = Store(path)
    report = reopened.verify_audit_log()
    assert report.intact and report.rows == 4
    hashes = [r["hash"] for r in reversed(reopened.audit_log(None))]
    assert hashes[:3] == [r["hash"] for r in rows]  # chained once: reopening changes nothing
    reopened.close()


def test_list_polling_folds_to_one_row_per_user_per_minute(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    clock = Clock(1_750_000_020.0)  # 20 s into a minute
    log = AuditLog(engine.connect(store_target), clock)
    polls = []
    for _ in range(5):
        polls.append(log.append(ALICE, "list", None, "12 sessions"))
        clock.now += 1
    assert polls[0] is not None and polls[1:] == [None] * 4  # the first in the minute only
    assert log.append(BOB, "list", None, "3 sessions") is not None  # another user: own row
    assert log.append(ALICE, "list_jobs", None, "2 jobs") is not None  # another action
    assert log.append(ALICE, "view_outcomes", None, "job j1", "job:j1") is not None
    assert log.append(ALICE, "view_outcomes", None, "job j2", "job:j2") is not None  # object
    assert log.append(ALICE, "view_outcomes", None, "job j1", "job:j1") is None
    clock.now += 60  # the next minute
    assert log.append(ALICE, "list", None, "12 sessions") is not None
    assert log.append(ALICE, "list", None, "12 sessions") is None
    actions = [(r["user_id"], r["action"]) for r in log.rows()]
    assert actions.count(("user:alice", "list")) == 2
    assert log.folded == 4 + 1 + 1  # counted in memory, never written
    assert log.verify().intact


def test_logins_and_other_views_are_never_folded(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    clock = Clock()
    log = AuditLog(engine.connect(store_target), clock)
    for action in ("login", "login_failed", "logout", "view_report", "watch", "decision"):
        assert not is_folded(action)
        ids = [log.append(ALICE, action, "s1") for _ in range(3)]
        assert None not in ids, action
    assert all(is_folded(a) for a in ("list", "list_jobs", "list_users", "view_webhooks"))
    assert log.folded == 0 and len(log.rows()) == 18


def test_the_store_folds_polling_as_the_api_writes_it(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    store = Store(store_target, keyring)
    start = time.time()
    for _ in range(20):
        store.audit(ALICE, "list", None, "0 sessions")
    minutes = int(time.time() // 60) - int(start // 60) + 1  # 2 if a minute ended meanwhile
    assert len(store.audit_log(None)) == minutes and store.audit_folded == 20 - minutes
    store.close()


def written_at(target: StoreTarget, times: list[float]) -> AuditLog:
    clock = Clock()
    log = AuditLog(engine.connect(target), clock)
    for i, at in enumerate(times):
        clock.now = at
        log.append(ALICE, "view_report", f"s{i}")
    return log


def test_pruning_moves_the_anchor_and_verification_still_holds(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    now = 1_750_000_000.0
    path = store_target
    log = written_at(path, [now - 300 * DAY_S + i for i in range(7)] + [now - DAY_S, now])
    head = log.verify()
    assert log.prune(now - 183 * DAY_S, batch=3) == 3  # batch by batch
    assert log.prune(now - 183 * DAY_S, batch=3) == 3
    assert log.prune(now - 183 * DAY_S, batch=3) == 1
    assert log.prune(now - 183 * DAY_S, batch=3) == 0
    report = log.verify([(head.head_id, head.head_hash)])
    assert report.intact and report.anchor_id == 7 and report.pruned == 7 and report.rows == 2
    assert (report.first_id, report.last_id) == (8, 9)
    assert "anchored at pruned row 7" in report.summary()
    # A row recorded before pruning can no longer be checked, and says so.
    assert any("pruned" in note for note in log.verify([(3, "0" * 64)]).notes)
    # The head of the log is still protected: deleting the first kept row is seen.
    raw(path).execute("DELETE FROM audit WHERE id = 8")
    broken = log.verify()
    assert not broken.intact and broken.bad_row == 8


def test_pruning_everything_keeps_the_chain_going(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    now = 1_750_000_000.0
    log = written_at(store_target, [now - 400 * DAY_S + i for i in range(4)])
    assert log.prune(now) == 4
    empty = log.verify()
    assert empty.intact and empty.rows == 0 and empty.anchor_id == empty.head_id == 4
    log.append(BOB, "view_report", "s9")
    after = log.verify()
    assert after.intact and (after.first_id, after.last_id) == (5, 5)


def test_pruning_refuses_to_delete_tampered_rows(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    """Pruning checks what it deletes: evidence of tampering is never pruned away."""
    now = 1_750_000_000.0
    path = store_target
    log = written_at(path, [now - 300 * DAY_S + i for i in range(5)] + [now])
    raw(path).execute("UPDATE audit SET detail = 'forged' WHERE id = 2")
    with pytest.raises(AuditChainBroken, match="row 2"):
        log.prune(now - 183 * DAY_S)
    assert len(log.rows()) == 6 and log.verify().bad_row == 2


async def test_the_pruner_prunes_what_is_past_retention(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    now = time.time()
    path = store_target
    written_at(path, [now - 200 * DAY_S, now - 190 * DAY_S, now - 100 * DAY_S, now])
    store = Store(path, keyring)
    pruner = AuditPruner(
        lambda before: asyncio.to_thread(store.prune_audit_log, before), retention_days=183
    )
    assert await pruner.run_once() == 2
    report = store.verify_audit_log()
    assert report.intact and report.anchor_id == 2 and report.rows == 2
    with pytest.raises(ValueError, match="183 days"):
        AuditPruner(lambda before: asyncio.to_thread(store.prune_audit_log, before), 90)
    store.close()


def test_retention_is_six_months_at_least() -> None:
    assert load_config({}, {}).audit_retention_days >= 183
    assert load_config({}, {"RTSERVER_AUDIT_RETENTION_DAYS": "400"}).audit_retention_days == 400
    with pytest.raises(ConfigError, match="183"):
        load_config({}, {"RTSERVER_AUDIT_RETENTION_DAYS": "182"})


# -- the commands, through the real `rtserver` entry point ---------------------------------


def rtserver(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "rtserver", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_verify_command_passes_an_intact_log_and_names_a_bad_row(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = data / "rtserver.sqlite3"
    filled(path).close()
    ok = rtserver("audit-log", "verify", "--data-dir", str(data))
    assert ok.returncode == 0, ok.stderr
    assert "audit log intact: 8 rows (rows 1-8)" in ok.stdout
    head = ok.stdout.split("head: ")[1].split()[0]
    assert head.startswith("8:") and len(head) == 2 + 64
    expected = rtserver("audit-log", "verify", "--expect", head, "--data-dir", str(data))
    assert expected.returncode == 0 and "hash recorded earlier" in expected.stdout

    raw(path).execute("UPDATE audit SET detail = 'forged' WHERE id = 6")
    edited = rtserver("audit-log", "verify", "--data-dir", str(data))
    assert edited.returncode == 1 and "BROKEN at row 6" in edited.stderr, edited.stderr

    missing = rtserver("audit-log", "verify", "--data-dir", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "no database" in missing.stderr
    assert not (tmp_path / "nothing").exists()
    bad = rtserver("audit-log", "verify", "--expect", "8:xyz", "--data-dir", str(data))
    assert bad.returncode == 2 and "ID:HASH" in bad.stderr


def test_export_command_writes_a_period_as_jsonl_or_csv(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = data / "rtserver.sqlite3"
    jan = [1767225600.0 + i * DAY_S for i in range(5)]  # 2026-01-01 .. 2026-01-05, 00:00 UTC
    written_at(path, jan)
    lines = rtserver("audit-log", "export", "--data-dir", str(data))
    assert lines.returncode == 0, lines.stderr
    rows = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5, 6] and list(rows[0]) == list(COLUMNS)
    assert rows[-1]["action"] == "export_audit_log"  # logged before it is written out
    assert all(r["hash"] == row_hash(r) for r in rows)  # checkable outside the server
    assert "exported 6 audit rows" in lines.stderr

    period = rtserver(
        "audit-log", "export", "--from", "2026-01-02", "--to", "2026-01-03",
        "--format", "csv", "--data-dir", str(data),
    )  # fmt: skip
    assert period.returncode == 0, period.stderr
    table = list(csv.DictReader(io.StringIO(period.stdout)))
    assert [int(r["id"]) for r in table] == [2, 3]  # --to's whole day, not later
    assert list(table[0]) == list(COLUMNS) and float(table[0]["at"]) == jan[1]

    out = tmp_path / "export.jsonl"
    to_file = rtserver("audit-log", "export", "--output", str(out), "--data-dir", str(data))
    assert to_file.returncode == 0 and len(out.read_text().splitlines()) >= 5
    store = Store(path)
    exports = [r for r in store.audit_log(None) if r["action"] == "export_audit_log"]
    assert len(exports) == 3 and exports[0]["user_id"] == "cli"  # each export is logged
    assert store.verify_audit_log().intact
    store.close()
    refused = rtserver("audit-log", "export", "--from", "January", "--data-dir", str(data))
    assert refused.returncode == 2 and "ISO 8601" in refused.stderr


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=40)
    | st.dates().map(str)
    | st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    end=st.booleans(),
)
def test_any_bound_is_a_time_or_a_value_error(text: str, end: bool) -> None:
    """parse_bound raises ValueError alone (the API's 400, the CLI's message)."""
    with contextlib.suppress(ValueError):
        assert isinstance(parse_bound(text, end), float)


def test_bounds_past_the_calendar_are_value_errors() -> None:
    """Found by the property above: the end of 9999-12-31 (the next day) overflowed, a 500
    from GET /api/v1/audit-log?to=9999-12-31."""
    with pytest.raises(ValueError, match="out of range"):
        parse_bound("9999-12-31", end=True)
    assert parse_bound("9999-12-31", end=False) > 0

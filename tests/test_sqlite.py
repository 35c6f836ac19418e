"""The store (rtserver/store/sqlite.py) on both engines: each test taking ``store_target``
runs on a SQLite file and on a fresh PostgreSQL database (tests/conftest.py); the others
are about what only a SQLite file has (its bytes, its pragmas, files of older releases)."""

import sqlite3
import threading
from pathlib import Path

import pytest

from rtserver.errors import KeyringError
from rtserver.messages import StoredMessage
from rtserver.store import (
    CLI_ACTOR,
    DEFAULT_EXPIRES_IN_S,
    ROOT_UNIT,
    STATUS_ENDED,
    STATUS_ERASED,
    STATUS_LIVE,
    Actor,
    Question,
    Store,
    engine,
)
from rtserver.store.encryption import Keyring
from rtserver.store.engine import StoreTarget


def test_session_lifecycle_survives_reopen(store_target: StoreTarget, keyring: Keyring) -> None:
    store = Store(store_target, keyring)
    record, token = store.create_session("Ada", "Engineer", [Question("Why us?", 90)])
    assert record.status == "created" and record.questions == (Question("Why us?", 90),)
    assert store.check_join_token(record.id, token)
    assert not store.check_join_token(record.id, token + "x")
    assert store.mark_live(record.id, "test-node")
    assert not store.mark_live(record.id, "test-node")  # a session is joined once
    store.append_message(StoredMessage(record.id, 0, "signal", {"t": 0}))
    store.append_message(StoredMessage(record.id, 1, "final", {"score": 50}))
    store.mark_ended(record.id, "hangup")
    store.close()

    reopened = Store(store_target, keyring)
    again = reopened.get_session(record.id)
    assert again is not None and again.status == STATUS_ENDED and again.end_reason == "hangup"
    assert [m.payload for m in reopened.messages(record.id)] == [{"t": 0}, {"score": 50}]
    assert [m.seq for m in reopened.messages(record.id, after_seq=0)] == [1]
    final = reopened.final_message(record.id)
    assert final is not None and final.payload == {"score": 50}
    reopened.close()


def test_join_token_is_stored_hashed(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    _, token = store.create_session(None, None, [])
    store.close()
    assert token.encode() not in path.read_bytes()


def test_erase_removes_candidate_data_but_keeps_audit(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    store = Store(store_target, keyring)
    record, _ = store.create_session("Ada", "Engineer", [])
    store.mark_live(record.id, "test-node")
    store.append_message(StoredMessage(record.id, 0, "signal", {"t": 0}))
    store.audit(Actor("bootstrap", "admin", None, "127.0.0.1"), "view_session", record.id)
    assert store.erase(record.id)
    erased = store.get_session(record.id)
    assert erased is not None
    assert (erased.candidate, erased.job, erased.status) == (None, None, STATUS_ERASED)
    assert store.messages(record.id) == []
    assert [entry["action"] for entry in store.audit_log(record.id)] == ["view_session"]
    assert store.sessions_with_status(STATUS_LIVE) == []
    store.close()


def test_two_connections_write_at_once_without_losing_any(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    """Workers and the server (or many hosts) each hold their own connection to the store
    (SQLite: WAL + busy timeout; PostgreSQL: the write transactions' advisory lock):
    concurrent writers wait for each other instead of failing, and the audit chain stays
    one chain."""
    first = Store(store_target, keyring)
    record, _ = first.create_session(None, None, [])
    stores = [first, Store(store_target, keyring), Store(store_target, keyring)]

    def write(store: Store, offset: int) -> None:
        for i in range(200):
            store.append_message(StoredMessage(record.id, offset + i, "signal", {"i": i}))
            store.audit(CLI_ACTOR, "write", record.id)

    threads = [
        threading.Thread(target=write, args=(store, 1000 * n)) for n, store in enumerate(stores)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(first.messages(record.id)) == 600
    assert len(stores[1].audit_log(record.id)) == 600
    assert stores[2].verify_audit_log().intact
    for store in stores:
        store.close()


def test_join_links_expire_after_their_time(store_target: StoreTarget, keyring: Keyring) -> None:
    store = Store(store_target, keyring)
    default, _ = store.create_session(None, None, [])
    assert (
        default.expires_at
        == default.created_at + DEFAULT_EXPIRES_IN_S
        == (default.created_at + 7 * 24 * 3600)
    )
    assert not default.is_expired(default.created_at + 7 * 24 * 3600 - 1)
    assert default.is_expired(default.created_at + 7 * 24 * 3600)
    short, _ = store.create_session(None, None, [], expires_in_s=60)
    assert short.expires_at == short.created_at + 60
    assert short.to_wire()["expires_at"] == short.expires_at
    store.close()


OLD_SCHEMA = """
CREATE TABLE sessions (
    id TEXT PRIMARY KEY, candidate TEXT, job TEXT, questions TEXT NOT NULL DEFAULT '[]',
    token_hash TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL,
    started_at REAL, ended_at REAL, end_reason TEXT
);
INSERT INTO sessions (id, token_hash, status, created_at)
    VALUES ('old', 'x', 'created', 1000.0);
"""


def test_a_database_from_before_expiry_migrates(tmp_path: Path) -> None:
    """Sessions of an older database get the default lifetime from their creation; several
    processes opening it at once (the server and its workers) migrate it once."""
    path = tmp_path / "db.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    old.close()
    errors: list[BaseException] = []
    stores: list[Store] = []

    def open_store() -> None:
        try:
            stores.append(Store(path))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    record = stores[0].get_session("old")
    assert record is not None and record.expires_at == 1000.0 + DEFAULT_EXPIRES_IN_S
    assert record.is_expired()  # created in 1970
    assert not stores[0].check_resume_secret("old", "")
    for store in stores:
        store.close()


def test_resume_secret_is_set_once_and_stored_hashed(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    store = Store(store_target, keyring)
    record, _ = store.create_session(None, None, [])
    assert not store.check_resume_secret(record.id, "anything")  # none issued yet
    assert not store.check_resume_secret(record.id, "")
    assert store.set_resume_secret(record.id, "secret-1" * 5)
    assert not store.set_resume_secret(record.id, "secret-2" * 5)  # one for the session
    assert store.check_resume_secret(record.id, "secret-1" * 5)
    assert not store.check_resume_secret(record.id, "secret-2" * 5)
    assert not store.check_resume_secret("nope", "secret-1" * 5)
    store.close()
    raw = engine.connect(store_target)
    [stored] = raw.execute("SELECT resume_hash FROM sessions").fetchall()
    raw.close()
    assert stored[0] != "secret-1" * 5 and len(stored[0]) == 64  # SHA-256, hex
    if isinstance(store_target, Path):
        assert b"secret-1" not in store_target.read_bytes()


def test_hiring_history_is_kept_apart_and_erased_with_the_candidate(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    """Outcomes, self-identification and decisions are erased with the session; scored
    sessions carry the final and the latest decision; a calibration makes a new version."""
    from bench.hiring_history import PastCandidate, job_body, seed_history
    from rtserver.store import Outcome

    store = Store(store_target, keyring)
    record = store.save_job(job_body(), "hr@test")
    scores = {"problem_solving": 80.0, "system_design": 60.0, "code_quality": 40.0}
    scores["collaboration"] = 20.0
    ids = seed_history(
        store,
        record,
        [
            PastCandidate("Ada", scores, "advance", "Female", "Asian"),
            PastCandidate("Bo", scores, None, None, "White"),
            PastCandidate("Cy", scores, "hold", answered_form=False),
        ],
    )
    store.add_decision(ids["Cy"], "advance", "second look", "Dana", "review", "hr@test")
    sessions = {s.candidate: s for s in store.scored_sessions(record.id)}
    assert sessions["Ada"].final["score"] == 60.0  # 0.4*80 + 0.3*60 + 0.2*40 + 0.1*20
    assert (sessions["Ada"].decision, sessions["Bo"].decision) == ("advance", None)
    assert sessions["Cy"].decision == "advance"  # the latest decision stands
    assert store.self_identification_for_audit(list(ids.values())) == {
        ids["Ada"]: ("Female", "Asian"),
        ids["Bo"]: (None, "White"),
    }
    store.save_outcomes(
        record.id,
        [Outcome(ids["Ada"], True, 4.0, "2026-01-31"), Outcome(ids["Bo"], False, None, None)],
        "hr@test",
    )
    store.save_outcomes(record.id, [Outcome(ids["Ada"], True, 4.5, "2026-06-30")], "hr@test")
    assert store.outcomes(record.id)[ids["Ada"]].performance == 4.5  # the later one replaces
    assert set(store.outcomes(record.id)) == {ids["Ada"], ids["Bo"]}

    assert store.erase(ids["Ada"])
    assert set(store.outcomes(record.id)) == {ids["Bo"]}
    assert ids["Ada"] not in store.self_identification_for_audit([ids["Ada"]])
    assert store.decisions(ids["Ada"]) == []
    assert {s.candidate for s in store.scored_sessions(record.id)} == {"Bo", "Cy"}

    body = {**record.body, "threshold": 65}
    applied = store.apply_calibration(record.id, body, 1, {"n": 40}, "cli:Dana")
    assert (applied.version, applied.created_by) == (2, "cli:Dana")
    assert store.get_job(record.id) == applied
    [calibration] = store.calibrations(record.id)
    assert calibration["from_version"] == 1 and calibration["to_version"] == 2
    assert calibration["applied_by"] == "cli:Dana" and calibration["result"] == {"n": 40}
    store.close()


def test_every_connection_zeroes_what_it_deletes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``secure_delete`` is set on each connection, also where SQLite's build leaves it off."""
    from rtserver.store.sqlite import open_connection

    connect = sqlite3.connect

    def plain_connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        connection = connect(*args, **kwargs)  # type: ignore[arg-type]
        connection.execute("PRAGMA secure_delete=OFF")
        return connection

    monkeypatch.setattr(sqlite3, "connect", plain_connect)
    db = open_connection(tmp_path / "db.sqlite3")
    assert db.execute("PRAGMA secure_delete").fetchone()[0] == 1
    db.close()


def test_a_store_without_a_keyring_keeps_its_master_key_beside_the_database(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data" / "rtserver.sqlite3"
    store = Store(path)
    record, _ = store.create_session("Ada", None, [])
    store.close()
    keys = path.parent / "master.keys"
    assert keys.stat().st_mode & 0o777 == 0o600
    reopened = Store(path)  # reads the same key back
    assert reopened.get_session(record.id).candidate == "Ada"  # type: ignore[union-attr]
    assert reopened.keyring.path == keys
    reopened.close()


def test_decision_ids_are_never_reused_after_an_erase(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    """A decision's reason is sealed for its row id, taken before the insert: ids keep
    AUTOINCREMENT's promise (never reused, also when the newest rows were erased)."""
    store = Store(store_target, keyring)
    first, _ = store.create_session("Ada", None, [])
    second, _ = store.create_session("Bo", None, [])
    for n in range(3):
        store.add_decision(first.id, "hold", f"look {n}", "Sam", None, "hr")
    store.erase(first.id)
    store.add_decision(second.id, "advance", "strong", "Sam", None, "hr")
    raw = engine.connect(store_target)
    rows = [tuple(row) for row in raw.execute("SELECT id FROM decisions").fetchall()]
    raw.close()
    assert rows == [(4,)]
    assert [d["reason"] for d in store.decisions(second.id)] == ["strong"]
    store.close()


# -- PostgreSQL only ---------------------------------------------------------------------------


def test_hosts_starting_at_once_migrate_the_database_once(
    postgresql_url: str, keyring: Keyring
) -> None:
    """Several stores (hosts, processes) opening a fresh database at once: one applies each
    migration, under the advisory lock; the others wait and find it done."""
    errors: list[BaseException] = []
    stores: list[Store] = []

    def open_store() -> None:
        try:
            stores.append(Store(postgresql_url, keyring))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    raw = engine.connect(postgresql_url)
    rows = raw.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
    raw.close()
    wanted = [(m.version, m.name) for m in engine.migrations()]
    assert [tuple(row) for row in rows] == wanted and wanted[0] == (1, "initial")
    record, _ = stores[0].create_session("Ada", None, [])
    assert stores[-1].get_session(record.id).candidate == "Ada"  # type: ignore[union-attr]
    for store in stores:
        store.close()


def test_a_postgresql_store_needs_the_configured_keyring(postgresql_url: str) -> None:
    """No file sits beside a database URL: a store opened without a keyring is refused
    with the reason, never given a new, unrelated key."""
    with pytest.raises(KeyringError, match="configured keyring"):
        Store(postgresql_url)


def test_usernames_are_unique_whatever_their_case_on_both_engines(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    """SQLite's COLLATE NOCASE, and its ICU equivalent on PostgreSQL: one account per name
    whatever its case, found by any case."""
    from rtserver.store.accounts import AccountStore

    accounts = AccountStore(store_target, keyring)
    user = accounts.add_user("Dana", "Dana", "hash", "recruiter", ROOT_UNIT)
    with pytest.raises(ValueError, match="already a user"):
        accounts.add_user("dANA", "Other", "hash", "recruiter", ROOT_UNIT)
    found = accounts.find_user("DANA")
    assert found is not None and found.id == user.id
    accounts.close()


def test_placeholders_are_translated_outside_quoted_text_only(postgresql_url: str) -> None:
    """SQLite's ``?`` and ``:name`` become psycopg's; a ``?`` or ``:name`` in a literal and
    a PostgreSQL cast are left as they are; every ``%`` is doubled for psycopg."""
    sql = "SELECT '?', 'it''s :x', x::text, ? FROM t WHERE a LIKE '5%' AND b = :name"
    assert engine.translate(sql) == (
        "SELECT '?', 'it''s :x', x::text, %s FROM t WHERE a LIKE '5%%' AND b = %(name)s"
    )
    assert engine.translate("SELECT 100 % ?") == "SELECT 100 %% %s"
    raw = engine.connect(postgresql_url)  # and psycopg takes it, literals as they were
    cursor = raw.execute("SELECT '5%?', 'it''s :x', 7 % :m, :n::text AS n", {"m": 3, "n": 3})
    found = cursor.fetchone()
    raw.close()
    assert tuple(found) == ("5%?", "it's :x", 1, "3") and found["n"] == "3"

"""Encryption at rest (rtserver/store/encryption.py) on real SQLite files and, for every test
taking ``store_target`` (tests/conftest.py), on a fresh PostgreSQL database too: what reaches
the files (on PostgreSQL, the rows as anyone with the database's credentials reads them),
erasure, the migration of plaintext databases, wrong keys, and key rotation while another
connection reads and writes."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rtserver.config import load_config
from rtserver.errors import DecryptionFailed, KeyringError, MasterKeyMissing
from rtserver.messages import StoredMessage
from rtserver.store import Outcome, Question, Store, engine
from rtserver.store.encryption import (
    Keyring,
    encode_key,
    key_id,
    keyring_for,
    new_master_key,
    session_record,
)
from rtserver.store.engine import StoreTarget
from rtserver.store.outbox import Outbox

ROOT = Path(__file__).resolve().parents[1]


def file_bytes(db: Path) -> bytes:
    """Everything SQLite keeps on disk for ``db``: the database, its WAL and WAL index."""
    parts = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    return b"".join(p.read_bytes() for p in parts if p.exists())


def stored_bytes(target: StoreTarget) -> bytes:
    """What the store holds, as someone who reads it without the keys would: a SQLite
    database's files; every row of every table of a PostgreSQL database."""
    if isinstance(target, Path):
        return file_bytes(target)
    connection = engine.connect(target)
    try:
        tables = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
        dump = [list(connection.execute(f"SELECT * FROM {t[0]}").fetchall()) for t in tables]
    finally:
        connection.close()
    return b"".join(
        value if isinstance(value, bytes) else str(value).encode()
        for rows in dump
        for row in rows
        for value in row
    )


def raw(db: StoreTarget, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """``sql`` on a connection of its own, outside the Store."""
    connection = engine.connect(db)
    try:
        cursor = connection.execute(sql, args)
        return [] if cursor.description is None else [tuple(row) for row in cursor.fetchall()]
    finally:
        connection.close()


def fill(store: Store, name: str, marker: str) -> str:
    """A session with every kind of sealed value, each carrying ``marker``, and the columns
    that are not sealed carrying it reversed; its id."""
    plain = marker[::-1]
    record, _ = store.create_session(name, f"job-{plain}", [Question(f"q-{plain}", 60)])
    store.append_message(StoredMessage(record.id, 0, "signal", {"t": 0, "face": 0.5}))
    store.append_message(
        StoredMessage(record.id, 1, "transcript", {"text": f"I led the {marker} migration"})
    )
    final = {"score": 71, "evidence": [{"quote": f"the {marker} migration", "t": 3.5}]}
    store.append_message(StoredMessage(record.id, 2, "final", final))
    store.add_decision(record.id, "advance", f"reason {marker}", f"rev-{plain}", "review", "hr")
    store.save_self_identification(record.id, f"sex-{marker}", f"race-{marker}")
    store.save_outcomes("job", [Outcome(record.id, True, 4.0, f"2025-{plain}")], "hr")
    return record.id


def flip_a_byte(db: StoreTarget, table: str, column: str, key: str, value: str) -> None:
    """Changes one byte in the middle of a sealed value, as an edit of the file would."""
    connection = engine.connect(db)
    (sealed,) = connection.execute(
        f"SELECT {column} FROM {table} WHERE {key} = ?", (value,)
    ).fetchone()
    changed = bytearray(sealed)
    changed[len(changed) // 2] ^= 0x01
    connection.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (bytes(changed), value))
    connection.close()


def test_candidate_data_never_reaches_the_files_in_plaintext(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    path = store_target
    store = Store(path, keyring)
    sid = fill(store, "Zenobia Quartermain", "Xylophone42")
    outbox = Outbox(path, keyring)
    outbox.add("decision.made", ["http://ats.invalid/"], {"reason": "Yodel-Outbox-77"}, sid)

    # The store returns plaintext...
    assert store.get_session(sid).candidate == "Zenobia Quartermain"  # type: ignore[union-attr]
    messages = store.messages(sid)
    assert messages[1].payload == {"text": "I led the Xylophone42 migration"}
    assert messages[2].payload["evidence"][0]["quote"] == "the Xylophone42 migration"
    assert store.decisions(sid)[0]["reason"] == "reason Xylophone42"
    assert store.self_identification_for_audit([sid]) == {
        sid: ("sex-Xylophone42", "race-Xylophone42")
    }
    assert json.loads(outbox.due(time.time())[0].body)["data"]["reason"] == "Yodel-Outbox-77"
    # ...while the files hold none of it, open (WAL) or closed (checkpointed).
    secrets = [b"Zenobia", b"Xylophone42", b"Yodel-Outbox-77"]
    on_disk = stored_bytes(path)
    assert b"job-24enohpolyX" in on_disk  # the job label is not sealed: the search works
    assert not [s for s in secrets if s in on_disk]
    if not isinstance(path, Path):  # PostgreSQL: the sealed columns are BYTEA, no typeof
        outbox.close()
        store.close()
        return
    sealed = raw(
        path,
        "SELECT typeof(candidate) FROM sessions UNION ALL SELECT typeof(payload) FROM messages"
        " UNION ALL SELECT typeof(reason) FROM decisions UNION ALL SELECT typeof(sex) ||"
        " typeof(race) FROM self_identification UNION ALL SELECT typeof(body) FROM webhook_outbox",
    )
    assert {t for (t,) in sealed} == {"blob", "blobblob"}
    outbox.close()
    store.close()
    assert not [s for s in secrets if s in file_bytes(path)]


def test_a_sealed_value_opens_only_in_its_own_row_column_and_session(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    path = store_target
    store = Store(path, keyring)
    one, two = fill(store, "Ada", "one"), fill(store, "Grace", "two")
    store.close()

    def fresh() -> Store:  # a new connection: nothing cached
        return Store(path, keyring)

    # Another row of the same session (message 1's payload copied onto message 0).
    raw_db = engine.connect(path)
    if True:
        raw_db.execute(
            "UPDATE messages SET payload = (SELECT payload FROM messages WHERE session_id = ?"
            " AND seq = 1) WHERE session_id = ? AND seq = 0",
            (one, one),
        )
    with pytest.raises(DecryptionFailed, match="authentication"):
        fresh().messages(one)
    # Another session's value (Grace's name on Ada's session).
    if True:
        raw_db.execute(
            "UPDATE sessions SET candidate = (SELECT candidate FROM sessions WHERE id = ?)"
            " WHERE id = ?",
            (two, one),
        )
    with pytest.raises(DecryptionFailed):
        fresh().get_session(one)
    # Another column of the same row (race into sex).
    if True:
        raw_db.execute("UPDATE self_identification SET sex = race WHERE session_id = ?", (two,))
    with pytest.raises(DecryptionFailed):
        fresh().self_identification_for_audit([two])
    # A changed byte.
    flip_a_byte(path, "decisions", "reason", "session_id", two)
    with pytest.raises(DecryptionFailed):
        fresh().decisions(two)
    # Plaintext put in a sealed column after the migration is refused, not read (on
    # PostgreSQL the column is BYTEA: the text's bytes, in no sealed format).
    raw_db.execute("UPDATE messages SET payload = '{\"forged\": 1}' WHERE session_id = ?", (two,))
    with pytest.raises(DecryptionFailed, match=r"not sealed|unknown format"):
        fresh().messages(two)
    raw_db.close()


@pytest.mark.parametrize("sqlite_default", ["secure_delete", "plain_delete"])
def test_erase_leaves_no_trace_in_the_database_or_its_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_default: str
) -> None:
    if sqlite_default == "plain_delete":
        # Many SQLite builds (Debian's is not one) leave deleted bytes in free space unless
        # told otherwise: every connection starts that way here.
        connect = sqlite3.connect

        def plain_connect(*args: object, **kwargs: object) -> sqlite3.Connection:
            connection = connect(*args, **kwargs)  # type: ignore[arg-type]
            connection.execute("PRAGMA secure_delete=OFF")
            return connection

        monkeypatch.setattr(sqlite3, "connect", plain_connect)
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    erased = fill(store, "Erin Erasable", "Eraseme77")
    store.append_message(StoredMessage(erased, 3, "transcript", {"text": "late words"}))
    kept = fill(store, "Kim Keeper", "Keepme55")
    # Some of the erased session's rows in the database file, others only in the WAL.
    raw(path, "PRAGMA wal_checkpoint(TRUNCATE)")
    store.append_message(StoredMessage(erased, 4, "transcript", {"text": "in the WAL only"}))
    outbox = Outbox(path)
    outbox.add("session.completed", ["http://ats.invalid/"], {"c": "Erin"}, erased)

    sealed_values = [
        bytes(value)  # type: ignore[arg-type]
        for (value,) in raw(
            path,
            "SELECT candidate FROM sessions WHERE id = ?1 UNION ALL"
            " SELECT payload FROM messages WHERE session_id = ?1 UNION ALL"
            " SELECT reason FROM decisions WHERE session_id = ?1 UNION ALL"
            " SELECT sex FROM self_identification WHERE session_id = ?1 UNION ALL"
            " SELECT race FROM self_identification WHERE session_id = ?1 UNION ALL"
            " SELECT body FROM webhook_outbox WHERE session_id = ?1 UNION ALL"
            " SELECT wrapped FROM data_keys WHERE record = 'session:' || ?1",
            (erased,),
        )
    ]
    assert len(sealed_values) == 11
    plain_markers = [b"job-77emesarE", b"q-77emesarE", b"rev-77emesarE", b"2025-77emesarE"]
    before = file_bytes(path)
    assert all(value in before for value in sealed_values + plain_markers)  # the search works

    assert store.erase(erased)
    outbox.erase(erased)

    after = file_bytes(path)
    left = [v for v in sealed_values if v in after] + [m for m in plain_markers if m in after]
    assert left == []
    assert path.with_name(path.name + "-wal").stat().st_size == 0  # checkpointed, emptied
    # The other candidate is untouched.
    assert store.decisions(kept)[0]["reason"] == "reason Keepme55"
    assert [m.seq for m in store.messages(kept)] == [0, 1, 2]
    assert b"job-55empeeK" in after
    # A copy of the erased rows (say, from a backup of the rows alone) no longer opens: the
    # session's data key is gone (crypto-shredding), so it reads as erased, not as data.
    raw_db = sqlite3.connect(path)
    with raw_db:
        raw_db.execute(
            "INSERT INTO messages (session_id, seq, kind, payload) VALUES (?, 9, 'final', ?)",
            (erased, sealed_values[1]),
        )
    raw_db.close()
    assert Store(path).messages(erased) == []
    assert raw(path, "SELECT COUNT(*) FROM data_keys WHERE record = ?", (session_record(erased),))[
        0
    ] == (0,)
    outbox.close()
    store.close()


def test_a_plaintext_database_of_an_older_release_is_sealed_on_open(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    legacy = sqlite3.connect(path)
    legacy.executescript(
        """
        PRAGMA journal_mode=WAL;
        CREATE TABLE sessions (id TEXT PRIMARY KEY, candidate TEXT, job TEXT,
            questions TEXT NOT NULL DEFAULT '[]', token_hash TEXT NOT NULL, status TEXT NOT NULL,
            created_at REAL NOT NULL, started_at REAL, ended_at REAL, end_reason TEXT,
            expires_at REAL, resume_hash TEXT, job_version INTEGER);
        CREATE TABLE messages (session_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
            payload TEXT NOT NULL, PRIMARY KEY (session_id, seq));
        CREATE TABLE decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL,
            at REAL NOT NULL, decision TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
            reviewer TEXT NOT NULL, recommendation TEXT, actor TEXT NOT NULL);
        CREATE TABLE self_identification (session_id TEXT PRIMARY KEY, sex TEXT, race TEXT,
            at REAL NOT NULL);
        CREATE TABLE webhook_outbox (id TEXT PRIMARY KEY, session_id TEXT, event TEXT NOT NULL,
            url TEXT NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL, created_at REAL NOT NULL,
            delivered_at REAL, last_status INTEGER, last_error TEXT NOT NULL DEFAULT '');
        """
    )
    sessions = [f"s{i:04d}" for i in range(1200)]  # more than one migration batch (500)
    with legacy:
        for i, sid in enumerate(sessions):
            legacy.execute(
                "INSERT INTO sessions (id, candidate, job, token_hash, status, created_at,"
                " expires_at) VALUES (?, ?, 'job', 'h', 'ended', ?, ?)",
                (sid, f"Legacy Person {i} Plainname", float(i), 1e12),
            )
            legacy.execute(
                "INSERT INTO messages VALUES (?, 0, 'final', ?)",
                (sid, json.dumps({"quote": f"legacy words {i} Plaintalk"})),
            )
        legacy.execute(
            "INSERT INTO decisions (session_id, at, decision, reason, reviewer, actor)"
            " VALUES ('s0001', 1.0, 'reject', 'Plainreason', 'Sam', 'hr')"
        )
        legacy.execute("INSERT INTO self_identification VALUES ('s0001', 'female', NULL, 1.0)")
        legacy.execute("INSERT INTO self_identification VALUES ('s0002', NULL, NULL, 1.0)")
        legacy.execute(
            "INSERT INTO sessions (id, candidate, token_hash, status, created_at, expires_at)"
            " VALUES ('anonymous', NULL, 'h', 'created', 0, 1e12)"
        )
        legacy.execute(
            "INSERT INTO webhook_outbox (id, session_id, event, url, body, status, next_at,"
            " created_at) VALUES ('k1', 's0001', 'decision.made', 'http://ats.invalid/',"
            " '{\"reason\":\"Plainoutbox\"}', 'pending', 0, 0)"
        )
    legacy.close()

    # Three connections open it at once (the server and two workers): each takes turns
    # with the others, batch by batch, and none seals a value twice.
    stores: list[Store] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(Store(path))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    outbox = Outbox(path)
    store = stores[0]
    assert store.get_session("s0007").candidate == "Legacy Person 7 Plainname"  # type: ignore[union-attr]
    assert stores[2].messages("s1199")[0].payload == {"quote": "legacy words 1199 Plaintalk"}
    assert store.decisions("s0001")[0]["reason"] == "Plainreason"
    assert store.self_identification_for_audit(["s0001", "s0002"]) == {
        "s0001": ("female", None),
        "s0002": (None, None),  # declined both: sealed too, not told apart by NULLs
    }
    assert store.get_session("anonymous").candidate is None  # type: ignore[union-attr]
    assert json.loads(outbox.due(time.time())[0].body) == {"reason": "Plainoutbox"}
    assert raw(path, "SELECT COUNT(*) FROM data_keys") == [(1200,)]
    kinds = raw(
        path,
        "SELECT DISTINCT typeof(candidate) FROM sessions WHERE id != 'anonymous'"
        " UNION SELECT typeof(payload) FROM"
        " messages UNION SELECT typeof(reason) FROM decisions UNION SELECT typeof(body) FROM"
        " webhook_outbox UNION SELECT typeof(race) FROM self_identification",
    )
    assert kinds == [("blob",)]
    # Sealed in place: the plaintext is gone from the files already, and stays gone.
    plain = [b"Plainname", b"Plaintalk", b"Plainreason", b"Plainoutbox", b"female"]
    assert [p for p in plain if p in file_bytes(path)] == []
    outbox.close()
    for each in stores:
        each.close()
    assert [p for p in plain if p in file_bytes(path)] == []
    # Done once: the next open does not look for plaintext again (it would be refused).
    assert raw(path, "SELECT name FROM encryption_migrations ORDER BY name") == [
        ("store-v1",),
        ("webhook_outbox-v1",),
    ]


def test_the_wrong_or_a_missing_master_key_is_a_typed_error(
    tmp_path: Path, store_target: StoreTarget
) -> None:
    path = store_target
    keys_file = tmp_path / "master.keys"

    def opened(keyring: Keyring | None = None) -> Store:  # the keyring file, read afresh
        return Store(path, keyring or Keyring.from_file(keys_file))

    store = opened()
    sid = fill(store, "Ada", "k")
    store.close()
    right = Keyring.from_file(keys_file)
    original = keys_file.read_text()
    assert keys_file.stat().st_mode & 0o777 == 0o600

    # Another key (RTSERVER_MASTER_KEY set to the wrong value).
    other = Keyring.from_keys(encode_key(new_master_key()))
    with pytest.raises(MasterKeyMissing, match=right.current_id() or "?"):
        opened(other)
    # The keyring file gone: the default keyring has no key for it.
    keys_file.rename(tmp_path / "elsewhere.keys")
    with pytest.raises(MasterKeyMissing, match="does not hold"):
        opened()
    (tmp_path / "elsewhere.keys").rename(keys_file)
    # A key changed in the file under its id.
    text = json.loads(keys_file.read_text())
    kid = text["current"]
    text["keys"][kid]["key"] = encode_key(new_master_key())
    keys_file.write_text(json.dumps(text))
    with pytest.raises(KeyringError, match="damaged"):
        opened()
    keys_file.write_text(json.dumps({**text, "keys": {kid: {"key": "not base64!"}}}))
    with pytest.raises(KeyringError, match="base64"):
        opened()
    # A wrapped data key changed in the database: that session fails, typed.
    keys_file.write_text(original)
    flip_a_byte(path, "data_keys", "wrapped", "record", session_record(sid))
    with pytest.raises(DecryptionFailed, match="data key"):
        opened().messages(sid)
    with pytest.raises(KeyringError, match="RTSERVER_MASTER_KEY"):
        Keyring.from_keys("c2hvcnQ=")


def test_the_keyring_file_is_made_once_0600_even_by_processes_starting_together(
    tmp_path: Path,
) -> None:
    keys_file = tmp_path / "data" / "master.keys"
    rings = [Keyring.from_file(keys_file) for _ in range(6)]
    assert not keys_file.exists()  # made on first use, not on open
    made: list[bool] = []
    threads = [threading.Thread(target=lambda r=r: made.append(r.ensure())) for r in rings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(made) == [False] * 5 + [True]
    assert len({ring.current_id() for ring in rings}) == 1
    assert keys_file.stat().st_mode & 0o777 == 0o600
    data = json.loads(keys_file.read_text())
    assert data["format"] == "rtserver-keyring-1" and list(data["keys"]) == [data["current"]]
    assert [p.name for p in keys_file.parent.iterdir()] == ["master.keys"]  # no temp left


def test_the_configured_master_key_reaches_every_process(tmp_path: Path) -> None:
    from rtserver.config import config_from_wire, config_to_wire

    key = new_master_key()
    config = load_config({"data_dir": str(tmp_path)}, {"RTSERVER_MASTER_KEY": encode_key(key)})
    assert encode_key(key) not in repr(config)
    assert keyring_for(config).ids() == [key_id(key)]
    worker = config_from_wire(config_to_wire(config))  # what a worker process is given
    assert keyring_for(worker).ids() == [key_id(key)]
    store = Store(config.db_path, keyring_for(config))
    fill(store, "Ada", "w")
    store.close()
    assert not (tmp_path / "master.keys").exists()  # the environment's key, no file
    assert raw(config.db_path, "SELECT DISTINCT kek_id FROM data_keys") == [(key_id(key),)]
    default = load_config({"data_dir": str(tmp_path)}, {})
    assert keyring_for(default).path == tmp_path / "master.keys"
    elsewhere = load_config({"master_key_file": str(tmp_path / "k" / "ring")}, {})
    assert elsewhere.master_key_path == tmp_path / "k" / "ring"


def test_an_erased_sessions_pending_webhooks_are_dropped_unread(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    path = store_target
    store, outbox = Store(path, keyring), Outbox(path, keyring)
    erased, kept = fill(store, "Ada", "a"), fill(store, "Bo", "b")
    outbox.add("session.completed", ["http://a.invalid/", "http://b.invalid/"], {"n": 1}, erased)
    outbox.add("session.completed", ["http://a.invalid/"], {"n": 2}, kept)
    outbox.add("system.event", ["http://a.invalid/"], {"n": 3}, None)  # the global key
    assert len(outbox.due(time.time())) == 4
    store.erase(erased)  # its data key is gone; the outbox rows are not erased yet
    due = outbox.due(time.time())
    assert sorted(json.loads(d.body)["data"]["n"] for d in due) == [2, 3]
    assert raw(path, "SELECT COUNT(*) FROM webhook_outbox WHERE session_id = ?", (erased,)) == [
        (0,)
    ]
    outbox.close()
    store.close()


def test_a_write_after_another_connection_erased_the_session_uses_no_erased_key(
    store_target: StoreTarget,
    keyring: Keyring,
) -> None:
    path = store_target
    worker, server = Store(path, keyring), Store(path, keyring)
    record, _ = server.create_session("Ada", None, [])
    worker.append_message(StoredMessage(record.id, 0, "signal", {"t": 0}))  # key now cached
    server.erase(record.id)
    worker.append_message(StoredMessage(record.id, 1, "signal", {"t": 1}))
    # Written under a new key, readable (as before encryption, a late message is kept).
    assert [m.payload for m in Store(path, keyring).messages(record.id)] == [{"t": 1}]
    worker.close()
    server.close()


def test_rotation_while_another_process_reads_and_writes(
    tmp_path: Path, store_target: StoreTarget
) -> None:
    data = tmp_path / "data"
    sqlite = isinstance(store_target, Path)
    path = data / "rtserver.sqlite3" if sqlite else store_target
    setup = Store(path, Keyring.from_file(data / "master.keys"))
    expected: dict[str, tuple[str, list[dict[str, object]]]] = {}
    # Enough data keys, re-wrapped one per transaction, for the rotation to take a while
    # (about half a second) with the server working through it.
    sessions = 1200
    for i in range(sessions):
        record, _ = setup.create_session(f"Candidate {i}", None, [])
        payloads: list[dict[str, object]] = [{"t": 0, "i": i}, {"text": f"answer {i}"}]
        for seq, payload in enumerate(payloads if i % 4 == 0 else []):
            setup.append_message(StoredMessage(record.id, seq, "signal", payload))
        expected[record.id] = (f"Candidate {i}", payloads if i % 4 == 0 else [])
    setup.close()
    old_id = json.loads((data / "master.keys").read_text())["current"]
    old_wrapped = [bytes(w) for (w,) in raw(path, "SELECT wrapped FROM data_keys")]  # type: ignore[arg-type]

    # The "server": its keyring was read before the rotation; it keeps one connection open,
    # and opens new ones (a worker starting) that meet data keys under the new master key.
    keyring = Keyring.from_file(data / "master.keys")
    server = Store(path, keyring)
    stop = threading.Event()
    errors: list[BaseException] = []
    # The server's iterations that overlapped the re-wrapping: the master keys in use differ
    # between their start and their end, or either found keys under both (half re-wrapped).
    mixed = []
    made: dict[str, tuple[str, list[dict[str, object]]]] = {}
    rng = random.Random(7)
    ids = list(expected)

    def serve() -> None:
        n = 0
        while not stop.is_set():
            try:
                before = {k for (k,) in raw(path, "SELECT DISTINCT kek_id FROM data_keys")}
                sid = rng.choice(ids)
                name, payloads = expected[sid]
                fresh = Store(path, keyring)
                assert fresh.get_session(sid).candidate == name  # type: ignore[union-attr]
                assert [m.payload for m in fresh.messages(sid)] == payloads
                fresh.close()
                assert server.get_session(rng.choice(ids)) is not None
                record, _ = server.create_session(f"New {n}", None, [])
                server.append_message(StoredMessage(record.id, 0, "signal", {"n": n}))
                made[record.id] = (f"New {n}", [{"n": n}])
                after = {k for (k,) in raw(path, "SELECT DISTINCT kek_id FROM data_keys")}
                if len(before | after) > 1:
                    mixed.append(n)
                n += 1
            except BaseException as exc:
                errors.append(exc)
                return

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        time.sleep(0.5)
        rotated = subprocess.run(
            [sys.executable, "-m", "rtserver", "keys", "rotate", "--data-dir", str(data),
             "--batch", "1", *([] if sqlite else ["--store", str(path)])],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={k: v for k, v in os.environ.items() if not k.startswith("RTSERVER_")},
        )  # fmt: skip
        time.sleep(0.5)  # the server goes on after the old key's retirement
    finally:
        stop.set()
        thread.join()
    assert rotated.returncode == 0, rotated.stderr
    assert errors == []
    # It did work while the data keys were being re-wrapped (how many times depends on how
    # the two processes share the cores; once is what the test needs).
    assert len(mixed) >= 1, mixed
    out = json.loads(rotated.stdout)
    new_id = out["current"]
    assert out["retired"] == [old_id] and new_id != old_id
    assert out["rewrapped"] >= sessions
    assert len(made) >= 10

    ring = json.loads((data / "master.keys").read_text())
    assert list(ring["keys"]) == [new_id] and ring["current"] == new_id
    assert (data / "master.keys").stat().st_mode & 0o777 == 0o600
    assert keyring.ids() == [new_id]  # the server read the file again
    server.close()
    check = Store(
        path, Keyring.from_file(data / "master.keys")
    )  # a fresh process: only the new key
    assert check.data_keys_by_master_key() == {new_id: sessions + len(made)}
    for sid, (name, payloads) in {**expected, **made}.items():
        assert check.get_session(sid).candidate == name  # type: ignore[union-attr]
        assert [m.payload for m in check.messages(sid)] == payloads
    assert any(e["action"] == "rotate_master_key" for e in check.audit_log())
    check.close()
    # The data keys as the old master key wrapped them are in neither file any more.
    on_disk = stored_bytes(path)
    assert [w for w in old_wrapped if w in on_disk] == []


def test_rotation_with_keys_from_the_environment(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    path = store_target
    old, new = new_master_key(), new_master_key()
    store = Store(path, Keyring.from_keys(encode_key(old)))
    sid = fill(store, "Ada", "env")
    store.close()
    store = Store(path, Keyring.from_keys(f"{encode_key(new)},{encode_key(old)}"))
    done = store.rotate_master_key(batch=1)
    assert (done.current, done.rewrapped, done.retired, done.left) == (
        key_id(new),
        1,
        (),
        (key_id(old),),
    )
    store.close()
    after = Store(path, Keyring.from_keys(encode_key(new)))  # the old key dropped
    assert after.decisions(sid)[0]["reason"] == "reason env"
    after.close()


def test_keys_commands_report_and_refuse_the_wrong_key_without_a_traceback(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    store = Store(data / "rtserver.sqlite3")
    fill(store, "Ada", "cli")
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTSERVER_")}

    def keys(*args: str, data_dir: Path = data, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rtserver", "keys", *args, "--data-dir", str(data_dir)],
            cwd=ROOT, capture_output=True, text=True, timeout=60, env={**env, **extra},
        )  # fmt: skip

    status = keys("status")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    kid = json.loads((data / "master.keys").read_text())["current"]
    assert report["current"] == kid and report["data_keys"] == {kid: 1}
    assert json.loads((data / "master.keys").read_text())["keys"][kid]["key"] not in status.stdout

    wrong = keys("status", RTSERVER_MASTER_KEY=encode_key(new_master_key()))
    assert wrong.returncode == 1
    assert "does not hold" in wrong.stderr and "Traceback" not in wrong.stderr
    bad = keys("rotate", RTSERVER_MASTER_KEY="bm90IGEga2V5")
    assert bad.returncode == 2 and "master_key" in bad.stderr
    nothing = tmp_path / "nothing here"
    absent = keys("status", data_dir=nothing)
    assert absent.returncode == 1 and "no database" in absent.stderr
    assert not nothing.exists()


def test_totp_secrets_are_sealed_and_enrolment_moves_them_whole(tmp_path: Path) -> None:
    from rtserver.accounts.principal import ROOT_UNIT
    from rtserver.store.accounts import AccountStore

    path = tmp_path / "db.sqlite3"
    accounts = AccountStore(path)
    user = accounts.add_user("sam", "Sam", "argon2-hash", "admin", ROOT_UNIT)
    older = accounts.add_user("kim", "Kim", "argon2-hash", "viewer", ROOT_UNIT)
    secret = "JBSWY3DPEHPK3PXPQRSTUVWXYZ234567"
    accounts.set_pending_totp(user.id, secret)
    assert accounts.totp_state(user.id) == (None, secret, None)
    accounts.activate_totp(user.id, 100, [])
    assert accounts.totp_state(user.id) == (secret, None, 100)
    assert accounts.get_user(user.id).totp_enrolled  # type: ignore[union-attr]
    assert secret.encode() not in file_bytes(path)
    # One user's secret copied onto another does not open as theirs.
    raw_db = sqlite3.connect(path)
    with raw_db:
        raw_db.execute(
            "UPDATE users SET totp_secret = (SELECT totp_secret FROM users WHERE id = ?)"
            " WHERE id = ?",
            (user.id, older.id),
        )
        # and a plaintext secret left by an older release...
        raw_db.execute("DELETE FROM encryption_migrations WHERE name = 'accounts-v1'")
        raw_db.execute(
            "UPDATE users SET totp_pending = 'OLDPLAINSECRET234' WHERE id = ?", (user.id,)
        )
    raw_db.close()
    with pytest.raises(DecryptionFailed):
        accounts.totp_state(older.id)
    accounts.close()
    reopened = AccountStore(path)  # ...is sealed on open
    assert reopened.totp_state(user.id) == (secret, "OLDPLAINSECRET234", 100)
    assert raw(path, "SELECT typeof(totp_pending) FROM users WHERE id = ?", (user.id,)) == [
        ("blob",)
    ]
    assert b"OLDPLAINSECRET234" not in file_bytes(path)
    reopened.close()


def test_legal_hold_reasons_and_the_candidates_own_answers_are_sealed(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    path = store_target
    store = Store(path, keyring)
    sid = fill(store, "Ada", "Holdfast")
    assert store.set_legal_hold(sid, "Tribunal claim Wobblegong-9", "hr")
    assert not store.set_legal_hold("no-such-session", "x", "hr")
    hold = store.get_session(sid).legal_hold  # type: ignore[union-attr]
    assert hold is not None and hold.reason == "Tribunal claim Wobblegong-9"
    answers = store.self_identification_of(sid)
    assert answers is not None
    assert (answers["sex"], answers["race"]) == ("sex-Holdfast", "race-Holdfast")
    assert b"Wobblegong" not in stored_bytes(path) and b"Holdfast" not in stored_bytes(path)
    [(sealed,)] = raw(path, "SELECT legal_hold_reason FROM sessions WHERE id = ?", (sid,))
    assert isinstance(sealed, bytes) and sealed[0] == 1  # VERSION: a sealed value
    # no data key was made for the session that is not there
    assert raw(path, "SELECT COUNT(*) FROM data_keys WHERE record = 'session:no-such-session'") == [
        (0,)
    ]
    store.close()


def test_erasure_shreds_the_data_key_so_a_copy_of_the_rows_reads_as_erased(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    """On both engines: an erased session's sealed values are in no row, its data key is
    gone, and a copy of its rows put back (from a backup of the rows alone) reads as
    erased, never as data; the other candidate is untouched."""
    store, outbox = Store(store_target, keyring), Outbox(store_target, keyring)
    erased, kept = fill(store, "Erin Erasable", "Eraseme77"), fill(store, "Kim Keeper", "Keepme55")
    outbox.add("session.completed", ["http://ats.invalid/"], {"c": "Erin"}, erased)
    [(payload,)] = raw(
        store_target, "SELECT payload FROM messages WHERE session_id = ? AND seq = 1", (erased,)
    )
    assert isinstance(payload, bytes) and payload in stored_bytes(store_target)
    assert store.erase(erased)
    outbox.erase(erased)
    assert payload not in stored_bytes(store_target)
    assert raw(store_target, "SELECT COUNT(*) FROM data_keys WHERE record = ?", (
        session_record(erased),
    )) == [(0,)]  # fmt: skip
    raw(
        store_target,
        "INSERT INTO messages (session_id, seq, kind, payload) VALUES (?, 9, 'final', ?)",
        (erased, payload),
    )
    assert Store(store_target, keyring).messages(erased) == []
    assert store.decisions(kept)[0]["reason"] == "reason Keepme55"
    outbox.close()
    store.close()

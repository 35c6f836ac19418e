"""Durable state: sessions, their message logs, reports and the audit log, on SQLite (the
embedded default) or PostgreSQL (many hosts), through one connection layer (``engine.py``).

The message log is the source of truth for observer backfill and for reports, so both
survive a restart. Join tokens and resume secrets are stored only as SHA-256 hashes: they
are 256-bit random strings, so a plain hash is enough to make a stolen database useless for
joining or rejoining.

Candidate data is sealed at rest (``encryption.py``: AES-GCM under a data key per session,
wrapped by the keyring's master key): candidate names, every message's payload (signals,
transcripts, the final report and its quoted evidence), decision reasons,
self-identification and legal-hold reasons. The methods take and return plaintext; SQL
never looks inside those columns. Erasing a session deletes its data key too; on SQLite it
overwrites what it freed (``secure_delete``) and checkpoints the WAL, so nothing of it stays
in the files (``engine.scrub`` says what PostgreSQL does).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rtserver.messages import StoredMessage
from rtserver.store import engine
from rtserver.store.audit_log import AuditLog, ChainReport
from rtserver.store.encryption import (
    Column,
    Keyring,
    RecordKeys,
    Rotation,
    default_keyring_path,
    key_usage,
    mark_migrated,
    migrated,
    prepare,
    rotate,
    seal_table,
    session_record,
)
from rtserver.store.engine import Connection, Row, StoreTarget
from rtserver.store.records import (
    DAY_S,
    DEFAULT_EXPIRES_IN_S,
    ROOT_UNIT,
    STATUS_CREATED,
    STATUS_ENDED,
    STATUS_ERASED,
    STATUS_LIVE,
    Actor,
    JobRecord,
    LegalHold,
    Outcome,
    Question,
    ScoredSession,
    SessionRecord,
)
from rtserver.store.transactions import write_transaction

log = logging.getLogger(__name__)


# The SQLite schema (PostgreSQL's is migrations/postgresql/*.sql: a new column goes into
# _ADDED_COLUMNS here and into a new migration there).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    candidate TEXT,
    job TEXT,
    questions TEXT NOT NULL DEFAULT '[]',
    token_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    end_reason TEXT,
    expires_at REAL,
    resume_hash TEXT
);
CREATE TABLE IF NOT EXISTS messages (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (id, version)
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    at REAL NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    reviewer TEXT NOT NULL,
    recommendation TEXT,
    actor TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outcomes (
    session_id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    hired INTEGER,
    performance REAL,
    rated_at TEXT,
    recorded_at REAL NOT NULL,
    recorded_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS self_identification (
    session_id TEXT PRIMARY KEY,
    sex TEXT,
    race TEXT,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS calibrations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    from_version INTEGER NOT NULL,
    to_version INTEGER NOT NULL,
    at REAL NOT NULL,
    applied_by TEXT NOT NULL,
    result TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS erasure_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    at REAL NOT NULL,
    status TEXT NOT NULL,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS erasure_requests_by_status ON erasure_requests (status, session_id);
"""

# Every table keyed by a session that holds the candidate's data: erase() empties them all.
_ERASED_WITH_THE_SESSION = ("messages", "decisions", "outcomes", "self_identification")

# Columns added since a table's first release, with the value rows of an older database
# get: each is added on open when missing. A NULL unit is the root unit (ROOT_UNIT).
_ADDED_COLUMNS = (
    ("sessions", "expires_at", "REAL", f"created_at + {DEFAULT_EXPIRES_IN_S!r}"),
    ("sessions", "resume_hash", "TEXT", None),
    ("sessions", "job_version", "INTEGER", None),
    ("sessions", "unit", "TEXT", None),
    ("jobs", "unit", "TEXT", None),
    # Retention (store/retention.py): what a session's retention counts from (the latest
    # decision; the end when undecided; the link's expiry when never joined; NULL while
    # live or once erased), its job's retention_days (NULL: the server's default), and
    # its legal hold (NULL: none).
    (
        "sessions",
        "retain_from",
        "REAL",
        f"CASE status WHEN {STATUS_CREATED!r} THEN expires_at WHEN {STATUS_ENDED!r} THEN"
        " COALESCE((SELECT MAX(d.at) FROM decisions d WHERE d.session_id = sessions.id),"
        " ended_at, created_at) ELSE NULL END",
    ),
    ("sessions", "retention_days", "INTEGER", None),
    ("sessions", "legal_hold_reason", "TEXT", None),
    ("sessions", "legal_hold_at", "REAL", None),
    ("sessions", "legal_hold_by", "TEXT", None),
    # The node whose process runs the session while it is live (NULL before it joins, and
    # for sessions from before nodes): a restarting node ends only its own, and a node that
    # stops heartbeating has its own ended by a front end (rtserver/cluster/).
    ("sessions", "node", "TEXT", None),
)

# The sweep's one query reads these: sessions that follow the server's default by their
# retain_from, and those whose job sets its own days by when they fall due. Held sessions
# are left out of both, so a hold costs the sweep nothing.
_RETENTION_INDEXES = f"""
CREATE INDEX IF NOT EXISTS sessions_due_by_default ON sessions (retain_from)
    WHERE retention_days IS NULL AND legal_hold_at IS NULL;
CREATE INDEX IF NOT EXISTS sessions_due_by_job
    ON sessions (retain_from + retention_days * {DAY_S!r})
    WHERE retention_days IS NOT NULL AND legal_hold_at IS NULL;
"""
_DUE_FOR_ERASURE = f"""
SELECT id, retain_from, NULL AS retention_days FROM sessions
    WHERE retention_days IS NULL AND legal_hold_at IS NULL AND retain_from <= :by_default
UNION ALL
SELECT id, retain_from, retention_days FROM sessions
    WHERE retention_days IS NOT NULL AND legal_hold_at IS NULL
    AND retain_from + retention_days * {DAY_S!r} <= :now
LIMIT :limit
"""
# A session as SessionRecord reads it: its row, and its pending erasure request's time.
_SELECT_SESSIONS = (
    "SELECT s.*, (SELECT MIN(r.at) FROM erasure_requests r WHERE r.session_id = s.id"
    " AND r.status = 'pending') AS erasure_requested_at FROM sessions s"
)


# The sealed columns (encryption.py): each value is bound to its table, column and row.
CANDIDATE = Column("sessions", "candidate")  # row: the session id
PAYLOAD = Column("messages", "payload")  # row: "<session id>/<seq>"
REASON = Column("decisions", "reason")  # row: the decision's id
SEX = Column("self_identification", "sex")  # row: the session id; JSON (null: declined)
RACE = Column("self_identification", "race")
HOLD = Column("sessions", "legal_hold_reason")  # row: the session id; HR's words on the case
MIGRATION = "store-v1"  # the plaintext rows of older releases, sealed on open


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_connection(path: Path) -> engine.SqliteConnection:
    """A connection to the SQLite database at ``path`` (``engine.connect_sqlite``)."""
    return engine.connect_sqlite(path)


class Store:
    """A thread-safe store on SQLite or PostgreSQL. Calls are short single statements (well
    under 1 ms on SQLite; a round trip on PostgreSQL).

    Several processes may open the same file (the server and its workers), or many hosts
    the same PostgreSQL database, each with its own Store: their write transactions wait
    for each other (``transactions.py``).

    ``keyring`` holds the master keys (the server passes the configured one, and so must
    every process that opens the store); by default, the keyring file beside a SQLite
    database, made on first use (a PostgreSQL store needs one given). Opening checks that
    it opens the data keys (MasterKeyMissing, DecryptionFailed) and seals the plaintext rows
    an older release left.
    """

    def __init__(self, target: StoreTarget, keyring: Keyring | None = None) -> None:
        if keyring is None:
            keyring = Keyring.from_file(default_keyring_path(target))
        self.keyring = keyring
        self.target = target
        self._keys = RecordKeys(keyring)
        self._db = engine.connect(target)
        self._lock = threading.Lock()
        with self._locked() as db:
            engine.prepare_schema(db, lambda: _sqlite_schema(db))
            self._audit = AuditLog(db)  # its own tables, made or migrated here
            prepare(db, keyring)
            _seal_plaintext(db, self._keys)

    @contextmanager
    def _locked(self) -> Iterator[Connection]:
        with self._lock:
            yield self._db

    def close(self) -> None:
        with self._locked() as db:
            db.close()

    def rollback_open_transaction(self) -> None:
        """Rolls back a transaction that a failure left open (a COMMIT that failed and whose
        ROLLBACK failed too, store/transactions.py), so that the write can be tried again
        from the start."""
        with self._locked() as db:
            if db.in_transaction:
                db.rollback()

    # -- jobs -------------------------------------------------------------------------

    def save_job(
        self,
        body: dict[str, Any],
        actor: str,
        job_id: str | None = None,
        unit: str = ROOT_UNIT,
    ) -> JobRecord:
        """Saves ``body`` (a valid job, ``scoring/jobs.py``) as a new job of ``unit``, or as
        the next version of ``job_id`` (which keeps its unit). KeyError when ``job_id`` is no
        job."""
        with self._locked() as db, write_transaction(db):
            return _insert_job_version(db, body, actor, job_id, unit)

    def get_job(self, job_id: str, version: int | None = None) -> JobRecord | None:
        """The job's ``version``, or its latest; None when there is no such job."""
        with self._locked() as db:
            if version is None:
                row = db.execute(
                    "SELECT * FROM jobs WHERE id = ? ORDER BY version DESC LIMIT 1", (job_id,)
                ).fetchone()
            else:
                row = db.execute(
                    "SELECT * FROM jobs WHERE id = ? AND version = ?", (job_id, version)
                ).fetchone()
        return _job_from_row(row) if row else None

    def list_jobs(self, units: frozenset[str] | None = None) -> list[JobRecord]:
        """Every job's latest version (of ``units`` only, when given), newest first."""
        with self._locked() as db:
            rows = db.execute(
                "SELECT j.* FROM jobs j JOIN (SELECT id, MAX(version) AS v FROM jobs GROUP BY id)"
                " latest ON j.id = latest.id AND j.version = latest.v ORDER BY j.created_at DESC"
            ).fetchall()
        jobs = [_job_from_row(row) for row in rows]
        return jobs if units is None else [job for job in jobs if job.unit in units]

    # -- sessions ---------------------------------------------------------------------

    def create_session(
        self,
        candidate: str | None,
        job: str | None,
        questions: list[Question],
        expires_in_s: float = DEFAULT_EXPIRES_IN_S,
        job_version: int | None = None,
        unit: str = ROOT_UNIT,
        retention_days: int | None = None,
    ) -> tuple[SessionRecord, str]:
        """Creates a session of org ``unit`` whose join link lasts ``expires_in_s`` seconds;
        returns it with its join token (the only time it is seen). ``job_version`` is set
        when ``job`` is a job's id: the version the session is scored with; and
        ``retention_days`` is that job's (None: the server's default)."""
        session_id = uuid.uuid4().hex
        join_token = secrets.token_urlsafe(32)
        now = time.time()
        questions_json = json.dumps([q.__dict__ for q in questions])
        record = session_record(session_id)
        with self._locked() as db, write_transaction(db):
            # The session's data key is made here, in the same transaction as its row.
            self._keys.ensure(db, record)
            sealed = None
            if candidate is not None:
                sealed = self._keys.seal(db, record, CANDIDATE, session_id, candidate)
            db.execute(
                "INSERT INTO sessions (id, candidate, job, questions, token_hash, status,"
                " created_at, expires_at, job_version, unit, retain_from, retention_days)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session_id,
                    sealed,
                    job,
                    questions_json,
                    hash_token(join_token),
                    STATUS_CREATED,
                    now,
                    now + expires_in_s,
                    job_version,
                    unit,
                    now + expires_in_s,  # never joined: retention counts from the expiry
                    retention_days,
                ),
            )
        created = self.get_session(session_id)
        assert created is not None
        return created, join_token

    def get_session(self, session_id: str) -> SessionRecord | None:
        with self._locked() as db:
            row = db.execute(f"{_SELECT_SESSIONS} WHERE s.id = ?", (session_id,)).fetchone()
            return self._session(db, row) if row else None

    def list_sessions(
        self, limit: int = 100, units: frozenset[str] | None = None
    ) -> list[SessionRecord]:
        """The newest ``limit`` sessions (of ``units`` only, when given)."""
        with self._locked() as db:
            if units is None:
                rows = db.execute(
                    f"{_SELECT_SESSIONS} ORDER BY s.created_at DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                marks = ",".join("?" * len(units))
                rows = db.execute(
                    f"{_SELECT_SESSIONS} WHERE COALESCE(s.unit, ?) IN ({marks})"
                    " ORDER BY s.created_at DESC LIMIT ?",
                    (ROOT_UNIT, *sorted(units), limit),
                ).fetchall()
            self._keys.load(db, [session_record(row["id"]) for row in rows])
            return [self._session(db, row) for row in rows]

    def _session(self, db: Connection, row: Row) -> SessionRecord:
        """The session of a ``sessions`` row, its sealed fields opened."""
        record, sid = session_record(row["id"]), row["id"]
        candidate, hold_reason = row["candidate"], row["legal_hold_reason"]
        if candidate is not None:
            candidate = self._keys.open(db, record, CANDIDATE, sid, candidate)
        if hold_reason is not None:
            hold_reason = self._keys.open(db, record, HOLD, sid, hold_reason)
        return _session_from_row(row, candidate, hold_reason)

    def check_join_token(self, session_id: str, token: str) -> bool:
        with self._locked() as db:
            row = db.execute(
                "SELECT token_hash FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
        return bool(row) and hmac.compare_digest(row["token_hash"], hash_token(token))

    def set_resume_secret(self, session_id: str, secret: str) -> bool:
        """Stores the hash of the session's resume secret, issued at its first join; False
        when the session already has one (there is one secret per session)."""
        with self._locked() as db:
            cursor = db.execute(
                "UPDATE sessions SET resume_hash = ? WHERE id = ? AND resume_hash IS NULL",
                (hash_token(secret), session_id),
            )
        return cursor.rowcount == 1

    def check_resume_secret(self, session_id: str, secret: str) -> bool:
        """Whether ``secret`` is the session's resume secret (False before one is issued)."""
        with self._locked() as db:
            row = db.execute(
                "SELECT resume_hash FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
        stored = row["resume_hash"] if row else None
        return isinstance(stored, str) and hmac.compare_digest(stored, hash_token(secret))

    def mark_live(self, session_id: str, node: str) -> bool:
        """Moves created -> live on ``node`` (the node id of the process that runs it);
        False when the session was not waiting for its peer."""
        with self._locked() as db:
            cursor = db.execute(
                "UPDATE sessions SET status = ?, started_at = ?, retain_from = NULL, node = ?"
                " WHERE id = ? AND status = ?",
                (STATUS_LIVE, time.time(), node, session_id, STATUS_CREATED),
            )
        return cursor.rowcount == 1

    def mark_ended(self, session_id: str, reason: str) -> None:
        now = time.time()
        with self._locked() as db:
            # Retention counts from the end, or from a decision already taken on the final.
            db.execute(
                "UPDATE sessions SET status = ?, ended_at = ?, end_reason = ?, retain_from ="
                " COALESCE((SELECT MAX(d.at) FROM decisions d WHERE d.session_id = sessions.id),"
                " ?) WHERE id = ? AND status IN (?, ?)",
                (STATUS_ENDED, now, reason, now, session_id, STATUS_CREATED, STATUS_LIVE),
            )

    def sessions_with_status(self, status: str) -> list[str]:
        with self._locked() as db:
            rows = db.execute("SELECT id FROM sessions WHERE status = ?", (status,)).fetchall()
        return [row["id"] for row in rows]

    def live_sessions_by_node(self) -> dict[str | None, list[str]]:
        """The live sessions, by the node that runs them (None: a session from before nodes,
        or made live by an older release)."""
        with self._locked() as db:
            rows = db.execute(
                "SELECT id, node FROM sessions WHERE status = ? ORDER BY node, id", (STATUS_LIVE,)
            ).fetchall()
        by_node: dict[str | None, list[str]] = {}
        for row in rows:
            by_node.setdefault(row["node"], []).append(row["id"])
        return by_node

    def erase(self, session_id: str) -> bool:
        """Erases a candidate's data: messages, personal fields, decisions, outcomes and
        self-identification, and the session's data key (what a copy of the rows would
        need), and marks their pending erasure requests done. Then ``engine.scrub``: on
        SQLite, freed pages are zeroed (secure_delete) and the WAL is checkpointed and
        emptied, so no copy stays in either file. The audit log stays. False, erasing
        nothing, when there is no such session or it is under a legal hold (checked in the
        same transaction, so a hold set meanwhile is kept)."""
        now = time.time()
        with self._locked() as db:
            with write_transaction(db):
                cursor = db.execute(
                    "UPDATE sessions SET candidate = NULL, job = NULL, questions = '[]',"
                    " status = ?, ended_at = COALESCE(ended_at, ?),"
                    " end_reason = COALESCE(end_reason, 'erased'), retain_from = NULL"
                    " WHERE id = ? AND legal_hold_at IS NULL",
                    (STATUS_ERASED, now, session_id),
                )
                if cursor.rowcount != 1:
                    return False  # nothing was changed: the empty transaction commits
                for table in _ERASED_WITH_THE_SESSION:
                    db.execute(f"DELETE FROM {table} WHERE session_id = ?", (session_id,))
                db.execute(
                    "UPDATE erasure_requests SET status = 'erased', done_at = ?"
                    " WHERE session_id = ? AND status = 'pending'",
                    (now, session_id),
                )
                self._keys.erase(db, session_record(session_id))
            engine.scrub(db, session_id)
        return True

    # -- decisions --------------------------------------------------------------------

    def add_decision(
        self,
        session_id: str,
        decision: str,
        reason: str,
        reviewer: str,
        recommendation: str | None,
        actor: str,
    ) -> dict[str, Any]:
        """Records a person's decision on a candidate (the latest one stands, and the
        session's retention counts from it)."""
        now = time.time()
        record = session_record(session_id)
        with self._locked() as db, write_transaction(db):
            # The id is taken here (the write lock is held) so the reason can be bound to it.
            row_id = engine.next_id(db, "decisions")

            def insert() -> int:
                sealed = self._keys.seal(db, record, REASON, str(row_id), reason)
                return db.execute(
                    "INSERT INTO decisions (id, session_id, at, decision, reason, reviewer,"
                    " recommendation, actor) SELECT ?, ?, ?, ?, ?, ?, ?, ?"
                    f" WHERE {_KEY_EXISTS}",
                    (
                        *(row_id, session_id, now, decision, sealed),
                        *(reviewer, recommendation, actor, record),
                    ),
                ).rowcount

            self._write_sealed(record, insert)
            db.execute(
                "UPDATE sessions SET retain_from = ? WHERE id = ? AND status = ?",
                (now, session_id, STATUS_ENDED),
            )
        return {
            "session": session_id,
            "at": now,
            "decision": decision,
            "reason": reason,
            "reviewer": reviewer,
            "recommendation": recommendation,
        }

    def decisions(self, session_id: str) -> list[dict[str, Any]]:
        """The session's decisions, oldest first."""
        record = session_record(session_id)
        found = []
        with self._locked() as db:
            rows = db.execute(
                "SELECT id, session_id AS session, at, decision, reason, reviewer, recommendation"
                " FROM decisions WHERE session_id = ? ORDER BY id",
                (session_id,),
            ).fetchall()
            for row in rows:
                reason = self._keys.open(db, record, REASON, str(row["id"]), row["reason"])
                if reason is not None:  # None: erased meanwhile
                    entry = dict(row)
                    del entry["id"]
                    found.append({**entry, "reason": reason})
        return found

    # -- outcomes and calibration ------------------------------------------------------

    def save_outcomes(self, job_id: str, outcomes: list[Outcome], actor: str) -> None:
        """Records what became of these sessions' candidates, all or none; a session's
        later outcome replaces its earlier one."""
        now = time.time()
        with self._locked() as db, write_transaction(db):
            db.executemany(
                "INSERT INTO outcomes (session_id, job, hired, performance, rated_at,"
                " recorded_at, recorded_by) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (session_id) DO UPDATE SET job = excluded.job,"
                " hired = excluded.hired, performance = excluded.performance,"
                " rated_at = excluded.rated_at, recorded_at = excluded.recorded_at,"
                " recorded_by = excluded.recorded_by",
                [
                    (o.session, job_id, o.hired, o.performance, o.rated_at, now, actor)
                    for o in outcomes
                ],
            )

    def outcomes(self, job_id: str) -> dict[str, Outcome]:
        """The job's recorded outcomes by session id."""
        with self._locked() as db:
            rows = db.execute(
                "SELECT session_id, hired, performance, rated_at FROM outcomes WHERE job = ?",
                (job_id,),
            ).fetchall()
        return {
            row["session_id"]: Outcome(
                row["session_id"],
                None if row["hired"] is None else bool(row["hired"]),
                row["performance"],
                row["rated_at"],
            )
            for row in rows
        }

    def scored_sessions(self, job_id: str) -> list[ScoredSession]:
        """The job's ended sessions that have a final report, oldest first, each with the
        latest decision on it."""
        with self._locked() as db:
            rows = db.execute(
                "SELECT s.id, s.candidate, s.job_version, s.ended_at, m.seq, m.payload,"
                " (SELECT d.decision FROM decisions d WHERE d.session_id = s.id"
                "  ORDER BY d.id DESC LIMIT 1) AS decision"
                " FROM sessions s JOIN messages m ON m.session_id = s.id AND m.kind = 'final'"
                " WHERE s.job = ? AND s.status = ? ORDER BY s.ended_at, s.id",
                (job_id, STATUS_ENDED),
            ).fetchall()
            # The payloads are sealed, so what SQL joined on is ids and kinds; the report
            # itself is opened here.
            self._keys.load(db, [session_record(row["id"]) for row in rows])
            scored = []
            for row in rows:
                record = session_record(row["id"])
                payload = self._keys.open(
                    db, record, PAYLOAD, f"{row['id']}/{row['seq']}", row["payload"]
                )
                if payload is None:
                    continue  # erased meanwhile
                candidate = row["candidate"]
                if candidate is not None:
                    candidate = self._keys.open(db, record, CANDIDATE, row["id"], candidate)
                scored.append(
                    ScoredSession(
                        row["id"],
                        candidate,
                        row["job_version"],
                        row["ended_at"],
                        json.loads(payload),
                        row["decision"],
                    )
                )
        return scored

    def apply_calibration(
        self, job_id: str, body: dict[str, Any], from_version: int, result: dict[str, Any], by: str
    ) -> JobRecord:
        """Saves ``body`` (the job with calibrated weights) as the job's next version and
        records who applied which calibration, from which version, with its figures."""
        with self._locked() as db, write_transaction(db):
            record = _insert_job_version(db, body, by, job_id)
            db.execute(
                "INSERT INTO calibrations (job, from_version, to_version, at, applied_by, result)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, from_version, record.version, record.created_at, by, json.dumps(result)),
            )
        return record

    def calibrations(self, job_id: str) -> list[dict[str, Any]]:
        """The calibrations applied to the job, oldest first."""
        with self._locked() as db:
            rows = db.execute(
                "SELECT from_version, to_version, at, applied_by, result FROM calibrations"
                " WHERE job = ? ORDER BY id",
                (job_id,),
            ).fetchall()
        return [{**dict(row), "result": json.loads(row["result"])} for row in rows]

    # -- voluntary self-identification --------------------------------------------------
    # Kept in its own table and read by one method, for the bias audit only: nothing that
    # scores, reports or lists sessions reads it.

    def save_self_identification(self, session_id: str, sex: str | None, race: str | None) -> None:
        """The candidate's own answers (None: declined); a later answer replaces it. Both are
        sealed, a declined answer too: the database does not show who declined."""
        record = session_record(session_id)
        with self._locked() as db:

            def insert() -> int:
                return db.execute(
                    "INSERT INTO self_identification (session_id, sex, race, at)"
                    f" SELECT ?, ?, ?, ? WHERE {_KEY_EXISTS}"
                    " ON CONFLICT (session_id) DO UPDATE SET sex = excluded.sex,"
                    " race = excluded.race, at = excluded.at",
                    (
                        session_id,
                        self._keys.seal(db, record, SEX, session_id, json.dumps(sex)),
                        self._keys.seal(db, record, RACE, session_id, json.dumps(race)),
                        time.time(),
                        record,
                    ),
                ).rowcount

            self._write_sealed(record, insert)

    def self_identification_for_audit(
        self, session_ids: list[str]
    ) -> dict[str, tuple[str | None, str | None]]:
        """(sex, race) of those sessions' candidates who answered, by session id."""
        found: dict[str, tuple[str | None, str | None]] = {}
        with self._locked() as db:
            for start in range(0, len(session_ids), 500):  # SQLite's bound parameters
                chunk = session_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    "SELECT session_id, sex, race FROM self_identification"
                    f" WHERE session_id IN ({marks})",
                    chunk,
                ).fetchall()
                self._keys.load(db, [session_record(row["session_id"]) for row in rows])
                for row in rows:
                    session_id, record = row["session_id"], session_record(row["session_id"])
                    sex = self._keys.open(db, record, SEX, session_id, row["sex"])
                    race = self._keys.open(db, record, RACE, session_id, row["race"])
                    if sex is not None and race is not None:  # None: erased meanwhile
                        found[session_id] = (json.loads(sex), json.loads(race))
        return found

    # -- message log ------------------------------------------------------------------

    def append_message(self, message: StoredMessage) -> None:
        record = session_record(message.session)
        row = f"{message.session}/{message.seq}"
        with self._locked() as db:

            def insert() -> int:
                return db.execute(
                    "INSERT INTO messages (session_id, seq, kind, payload)"
                    f" SELECT ?, ?, ?, ? WHERE {_KEY_EXISTS}",
                    (
                        message.session,
                        message.seq,
                        message.kind,
                        self._keys.seal(db, record, PAYLOAD, row, message.encode()),
                        record,
                    ),
                ).rowcount

            self._write_sealed(record, insert)

    def messages(self, session_id: str, after_seq: int = -1) -> list[StoredMessage]:
        with self._locked() as db:
            rows = db.execute(
                "SELECT * FROM messages WHERE session_id = ? AND seq > ? ORDER BY seq",
                (session_id, after_seq),
            ).fetchall()
            opened = [self._message(db, row) for row in rows]
        return [message for message in opened if message is not None]

    def final_message(self, session_id: str) -> StoredMessage | None:
        with self._locked() as db:
            row = db.execute(
                "SELECT * FROM messages WHERE session_id = ? AND kind = 'final'", (session_id,)
            ).fetchone()
            return None if row is None else self._message(db, row)

    def _message(self, db: Connection, row: Row) -> StoredMessage | None:
        """The message of a ``messages`` row; None when its session was erased meanwhile."""
        session_id, seq = row["session_id"], row["seq"]
        payload = self._keys.open(
            db, session_record(session_id), PAYLOAD, f"{session_id}/{seq}", row["payload"]
        )
        if payload is None:
            return None
        return StoredMessage(session_id, seq, row["kind"], json.loads(payload))

    def _write_sealed(self, record: str, write: Callable[[], int]) -> None:
        """Runs ``write``: a statement that seals with the record's data key and writes only
        while that key is in ``data_keys`` (``_KEY_EXISTS``), returning the rows written.
        When none was written, another connection erased the record after this one cached
        its key: the write is made again under a new key, never under one that is gone."""
        if write():
            return
        self._keys.forget(record)
        if not write():
            raise RuntimeError(f"{record}: its data key vanished twice")

    # -- master keys (encryption.py) --------------------------------------------------

    def rotate_master_key(self, batch: int | None = None, new_key: bool = True) -> Rotation:
        """``rtserver keys rotate``: a new current master key, every data key re-wrapped
        under it in short write transactions, the old keys retired (``encryption.rotate``);
        other processes go on meanwhile. Then the store is scrubbed (``engine.scrub``), so
        the data keys wrapped by the old master key leave the files too."""
        with self._locked() as db:
            kwargs = {} if batch is None else {"batch": batch}
            done = rotate(db, self.keyring, new_key=new_key, **kwargs)
            engine.scrub(db, None)
        return done

    def data_keys_by_master_key(self) -> dict[str, int]:
        """How many data keys each master key wraps (``rtserver keys status``)."""
        with self._locked() as db:
            return key_usage(db)

    # -- retention and candidate rights (store/retention.py) -----------------------------

    def set_legal_hold(self, session_id: str, reason: str, by: str) -> bool:
        """Holds the session's data (a later hold replaces the reason); False when there is
        no such session, or it is erased."""
        with self._locked() as db, write_transaction(db):
            held = db.execute(
                "SELECT 1 FROM sessions WHERE id = ? AND status != ?", (session_id, STATUS_ERASED)
            ).fetchone()
            if held is None:  # checked first: no data key is made for a session not here
                return False
            sealed = self._keys.seal(db, session_record(session_id), HOLD, session_id, reason)
            db.execute(
                "UPDATE sessions SET legal_hold_reason = ?, legal_hold_at = ?, legal_hold_by = ?"
                " WHERE id = ?",
                (sealed, time.time(), by, session_id),
            )
        return True

    def lift_legal_hold(self, session_id: str) -> bool:
        """Lifts the session's legal hold; False when it had none."""
        with self._locked() as db:
            cursor = db.execute(
                "UPDATE sessions SET legal_hold_reason = NULL, legal_hold_at = NULL,"
                " legal_hold_by = NULL WHERE id = ? AND legal_hold_at IS NOT NULL",
                (session_id,),
            )
        return cursor.rowcount == 1

    def due_for_erasure(
        self, now: float, default_days: int, limit: int = -1
    ) -> list[tuple[str, float, int]]:
        """(session id, the time its retention counted from, its days) of the sessions
        (at most ``limit``; -1: all) whose retention has run out at unix time ``now``:
        ``default_days`` after their retain_from, or their job's days. Held, live and
        erased ones never are."""
        with self._locked() as db:
            rows = db.execute(
                _DUE_FOR_ERASURE,
                {
                    "now": now,
                    "by_default": now - default_days * DAY_S,
                    # "All": a bound both engines take (PostgreSQL refuses LIMIT -1).
                    "limit": limit if limit >= 0 else 2**62,
                },
            ).fetchall()
        return [
            (row["id"], row["retain_from"], row["retention_days"] or default_days) for row in rows
        ]

    def request_erasure(self, session_id: str) -> float:
        """Records the candidate's erasure request, pending until the session is erased
        (``erase`` marks it done); returns its time (an earlier pending one's, if any)."""
        with self._locked() as db, write_transaction(db):
            row = db.execute(
                "SELECT MIN(at) FROM erasure_requests WHERE session_id = ? AND status = 'pending'",
                (session_id,),
            ).fetchone()
            if row[0] is not None:
                return float(row[0])
            now = time.time()
            db.execute(
                "INSERT INTO erasure_requests (session_id, at, status) VALUES (?, ?, 'pending')",
                (session_id, now),
            )
        return now

    def erasure_requests(self, session_id: str) -> list[dict[str, Any]]:
        """The session's erasure requests, oldest first: ``at``, ``status`` ("pending" or
        "erased") and ``done_at``."""
        with self._locked() as db:
            rows = db.execute(
                "SELECT at, status, done_at FROM erasure_requests WHERE session_id = ? ORDER BY id",
                (session_id,),
            ).fetchall()
        return [dict(row) for row in rows]

    def pending_erasure_requests(self) -> list[str]:
        """Sessions with a pending erasure request and no legal hold (any more), not live:
        due now."""
        with self._locked() as db:
            rows = db.execute(
                "SELECT DISTINCT r.session_id FROM erasure_requests r JOIN sessions s"
                " ON s.id = r.session_id WHERE r.status = 'pending' AND s.legal_hold_at IS NULL"
                " AND s.status != ?",
                (STATUS_LIVE,),
            ).fetchall()
        return [row["session_id"] for row in rows]

    def outcome_of(self, session_id: str) -> dict[str, Any] | None:
        """The outcome recorded for the session's candidate (the candidate's export)."""
        with self._locked() as db:
            row = db.execute(
                "SELECT session_id AS session, job, hired, performance, rated_at, recorded_at"
                " FROM outcomes WHERE session_id = ?",
                (session_id,),
            ).fetchone()
        if row is None:
            return None
        outcome = dict(row)
        outcome["hired"] = None if row["hired"] is None else bool(row["hired"])
        return outcome

    def self_identification_of(self, session_id: str) -> dict[str, Any] | None:
        """The candidate's own self-identification answers, for their own export only
        (``api/candidate_rights.py``); None when they gave none."""
        record = session_record(session_id)
        with self._locked() as db:
            row = db.execute(
                "SELECT sex, race, at FROM self_identification WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            if row is None:
                return None
            sex = self._keys.open(db, record, SEX, session_id, row["sex"])
            race = self._keys.open(db, record, RACE, session_id, row["race"])
        if sex is None or race is None:  # erased meanwhile
            return None
        return {"sex": json.loads(sex), "race": json.loads(race), "at": row["at"]}

    # -- audit log (store/audit_log.py) -----------------------------------------------

    def audit(
        self,
        actor: Actor,
        action: str,
        session_id: str | None,
        detail: str = "",
        obj: str | None = None,
    ) -> None:
        """Appends a row to the hash-chained audit log (a list read already written this
        minute for the same actor is folded); ``detail`` holds ids and enums only, ``obj``
        names a non-session object (``job:<id>``)."""
        with self._locked():
            self._audit.append(actor, action, session_id, detail, obj)

    def audit_log(self, session_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest ``limit`` audit rows (of one session, or all), newest first."""
        with self._locked():
            return self._audit.session_rows(session_id, limit)

    def audit_rows(
        self,
        since: float | None = None,
        until: float | None = None,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Audit rows with ``since <= at < until`` (unix s) after ``after_id``, oldest
        first: a page of an export."""
        with self._locked():
            return self._audit.rows(since, until, after_id, limit)

    def verify_audit_log(self, expect: list[tuple[int, str]] | None = None) -> ChainReport:
        """Checks the audit log's hash chain (store/audit_log.py says what it detects)."""
        with self._locked():
            return self._audit.verify(expect or ())

    def prune_audit_log(self, before: float) -> int:
        """Deletes one batch of audit rows written before ``before`` (unix s), keeping the
        chain verifiable from its new anchor; returns how many rows."""
        with self._locked():
            return self._audit.prune(before)

    @property
    def audit_folded(self) -> int:
        """List reads this store folded into an earlier row of the same minute."""
        return self._audit.folded


# Appended to a sealed row's INSERT: the row is written only while its data key exists.
_KEY_EXISTS = "EXISTS (SELECT 1 FROM data_keys WHERE record = ?)"


def _seal_plaintext(db: Connection, keys: RecordKeys) -> None:
    """Seals, in place, the plaintext values an older release wrote (``seal_table``: by
    rowid, in write transactions, other processes opening the file at once taking turns).
    Marked done once, so later opens skip it."""
    if not engine.may_hold_plaintext(db) or migrated(db, MIGRATION):
        return

    def session(row: Row) -> tuple[bytes, ...]:
        return (keys.seal(db, session_record(row["id"]), CANDIDATE, row["id"], row["candidate"]),)

    def message(row: Row) -> tuple[bytes, ...]:
        sid, seq = row["session_id"], row["seq"]
        return (keys.seal(db, session_record(sid), PAYLOAD, f"{sid}/{seq}", row["payload"]),)

    def decision(row: Row) -> tuple[bytes, ...]:
        record = session_record(row["session_id"])
        return (keys.seal(db, record, REASON, str(row["id"]), row["reason"]),)

    def answers(row: Row) -> tuple[bytes, ...]:
        sid, record = row["session_id"], session_record(row["session_id"])
        return (
            keys.seal(db, record, SEX, sid, json.dumps(row["sex"])),
            keys.seal(db, record, RACE, sid, json.dumps(row["race"])),
        )

    def hold(row: Row) -> tuple[bytes, ...]:
        record = session_record(row["id"])
        return (keys.seal(db, record, HOLD, row["id"], row["legal_hold_reason"]),)

    # Sessions without a name or a hold (NULL) stay NULL: only text is sealed there.
    sealed = seal_table(db, "sessions", ("candidate",), session, where="candidate IS NOT NULL")
    sealed += seal_table(
        db, "sessions", ("legal_hold_reason",), hold, where="legal_hold_reason IS NOT NULL"
    )
    sealed += seal_table(db, "messages", ("payload",), message)
    sealed += seal_table(db, "decisions", ("reason",), decision)
    sealed += seal_table(db, "self_identification", ("sex", "race"), answers)
    with write_transaction(db):
        mark_migrated(db, MIGRATION)
    if sealed:
        log.info("sealed %d rows of plaintext an older release left", sealed)
        engine.scrub(db, None)  # the plaintext leaves the WAL now, not at the last close


def _insert_job_version(
    db: Connection,
    body: dict[str, Any],
    actor: str,
    job_id: str | None,
    unit: str = ROOT_UNIT,
) -> JobRecord:
    """Inserts ``body`` as a new job of ``unit`` or as ``job_id``'s next version, in the
    unit of its first (KeyError when there is no such job); inside the caller's
    transaction."""
    now = time.time()
    if job_id is None:
        job_id, version = uuid.uuid4().hex, 1
    else:
        row = db.execute(
            "SELECT MAX(version), COALESCE(MIN(unit), ?) FROM jobs WHERE id = ?",
            (ROOT_UNIT, job_id),
        ).fetchone()
        if row[0] is None:
            raise KeyError(job_id)
        version, unit = int(row[0]) + 1, row[1]
    db.execute(
        "INSERT INTO jobs (id, version, body, created_at, created_by, unit)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (job_id, version, json.dumps(body, sort_keys=True), now, actor, unit),
    )
    if version > 1:
        # A job's retention is its latest version's, for every session of it: a shorter one
        # erases its older candidates sooner.
        db.execute(
            "UPDATE sessions SET retention_days = ? WHERE job = ? AND job_version IS NOT NULL",
            (body.get("retention_days"), job_id),
        )
    return JobRecord(job_id, version, body, now, actor, unit)


def _sqlite_schema(db: Connection) -> None:
    """Makes the SQLite tables, or brings a file of an older release up to date."""
    db.executescript(_SCHEMA)
    _add_missing_columns(db)
    db.executescript(_RETENTION_INDEXES)


def _add_missing_columns(db: Connection) -> None:
    """Migrates a database made by an older release: adds the columns it lacks, filling
    them for its rows. Several processes may open it at once (the server and its workers),
    so the check and the change run in one write transaction: the first migrates, the
    others find the columns there."""
    with write_transaction(db):
        for table, name, kind, fill in _ADDED_COLUMNS:
            if name in engine.columns(db, table):
                continue
            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            if fill is not None:
                db.execute(f"UPDATE {table} SET {name} = {fill} WHERE {name} IS NULL")


def _job_from_row(row: Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        version=int(row["version"]),
        body=json.loads(row["body"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
        unit=row["unit"] or ROOT_UNIT,
    )


def _session_from_row(row: Row, candidate: str | None, hold_reason: str | None) -> SessionRecord:
    """The session of a ``sessions`` row, with its sealed fields as opened."""
    questions = tuple(Question(q["text"], int(q["seconds"])) for q in json.loads(row["questions"]))
    return SessionRecord(
        id=row["id"],
        candidate=candidate,
        job=row["job"],
        questions=questions,
        status=row["status"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        end_reason=row["end_reason"],
        expires_at=row["expires_at"],
        job_version=row["job_version"],
        unit=row["unit"] or ROOT_UNIT,
        retain_from=row["retain_from"],
        retention_days=row["retention_days"],
        legal_hold=(
            LegalHold(hold_reason or "", row["legal_hold_at"], row["legal_hold_by"])
            if row["legal_hold_at"] is not None
            else None
        ),
        erasure_requested_at=row["erasure_requested_at"],
        node=row["node"],
    )

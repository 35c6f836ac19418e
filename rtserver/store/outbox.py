"""The webhook outbox: events for the company's ATS, kept until they are delivered.

An event is written here in the same database as the session it is about, by whichever
process produced it (a worker that ended a session, the server that took a decision), and
the server's dispatcher (``ats/webhooks.py``) delivers it. Each row is one event for one
receiver URL, with its idempotency key; it stays ``pending`` until a receiver answers 2xx
(``delivered``) or the attempts run out (``failed``). So a delivery survives a restart and
is made at least once; a receiver that sees the same key twice has seen the same event.

A body carries candidate data (the name, the decision's reason), so it is sealed at rest
(``encryption.py``) under its session's data key, or the global one for an event of no
session: erasing the session makes its undelivered events unreadable at once, and they are
dropped when next met.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rtserver.store import engine
from rtserver.store.encryption import (
    GLOBAL_RECORD,
    Column,
    Keyring,
    RecordKeys,
    default_keyring_path,
    mark_migrated,
    migrated,
    prepare,
    seal_table,
    session_record,
)
from rtserver.store.engine import Connection, Row, StoreTarget
from rtserver.store.transactions import write_transaction

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id TEXT PRIMARY KEY,
    session_id TEXT,
    event TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    created_at REAL NOT NULL,
    delivered_at REAL,
    last_status INTEGER,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (status, next_at);
"""

BODY = Column("webhook_outbox", "body")  # row: the delivery's id
MIGRATION = "webhook_outbox-v1"


@dataclass(frozen=True)
class Delivery:
    """One event for one receiver."""

    id: str  # the idempotency key: the same for every attempt
    session: str | None
    event: str  # "session.completed", "decision.made"
    url: str
    body: str  # the JSON sent, exactly as signed
    status: str
    attempts: int
    next_at: float
    created_at: float
    delivered_at: float | None
    last_status: int | None  # the receiver's last HTTP status (None: no answer)
    last_error: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "session": self.session,
            "event": self.event,
            "url": self.url,
            "status": self.status,
            "attempts": self.attempts,
            "next_at": self.next_at if self.status == PENDING else None,
            "created_at": self.created_at,
            "delivered_at": self.delivered_at,
            "last_status": self.last_status,
            "last_error": self.last_error,
        }


class Outbox:
    """The outbox table, on its own connection to the server's store (on SQLite, WAL:
    readers and the store's writer do not wait on each other). ``keyring`` as for the
    Store."""

    def __init__(self, target: StoreTarget, keyring: Keyring | None = None) -> None:
        if keyring is None:
            keyring = Keyring.from_file(default_keyring_path(target))
        self._keys = RecordKeys(keyring)
        self._db = engine.connect(target)
        self._lock = threading.Lock()
        with self._locked() as db:
            engine.prepare_schema(db, lambda: db.executescript(_SCHEMA))
            prepare(db, keyring)
            _seal_plaintext(db, self._keys)

    @contextmanager
    def _locked(self) -> Iterator[Connection]:
        with self._lock:
            yield self._db

    def close(self) -> None:
        with self._locked() as db:
            db.close()

    def add(
        self, event: str, urls: list[str], payload: dict[str, Any], session: str | None
    ) -> list[str]:
        """Queues ``payload`` (JSON) as ``event`` for each of ``urls``; their keys."""
        now = time.time()
        keys = []
        record = _record(session)
        with self._locked() as db, write_transaction(db):
            # In the transaction, the key is read afresh (not from the cache): one that
            # another connection erased meanwhile is never used.
            self._keys.forget(record)
            for url in dict.fromkeys(urls):
                key = uuid.uuid4().hex
                body = json.dumps(
                    {"id": key, "event": event, "created_at": now, "data": payload},
                    sort_keys=True,
                    separators=(",", ":"),
                )
                sealed = self._keys.seal(db, record, BODY, key, body)
                db.execute(
                    "INSERT INTO webhook_outbox (id, session_id, event, url, body, status,"
                    " next_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, session, event, url, sealed, PENDING, now, now),
                )
                keys.append(key)
        return keys

    def due(self, now: float, limit: int = 32) -> list[Delivery]:
        with self._locked() as db:
            rows = db.execute(
                "SELECT * FROM webhook_outbox WHERE status = ? AND next_at <= ?"
                " ORDER BY next_at LIMIT ?",
                (PENDING, now, limit),
            ).fetchall()
            return self._deliveries(db, rows)

    def claim_due(self, now: float, lease_s: float, limit: int = 32) -> list[Delivery]:
        """The due deliveries this process takes: each is moved ``lease_s`` into the future
        by a compare-and-set on its ``next_at``, so another dispatcher (another front end
        on the same store) that read it too finds it taken. The attempt's :meth:`record`
        sets its real next time; a dispatcher that dies mid-attempt leaves it to be taken
        again when the lease runs out."""
        claimed = []
        for delivery in self.due(now, limit):
            with self._locked() as db:
                taken = db.execute(
                    "UPDATE webhook_outbox SET next_at = ? WHERE id = ? AND status = ?"
                    " AND next_at = ?",
                    (now + lease_s, delivery.id, PENDING, delivery.next_at),
                ).rowcount
            if taken == 1:
                claimed.append(delivery)
        return claimed

    def next_due(self) -> float | None:
        """When the next pending delivery is due (unix time), None with none pending."""
        with self._locked() as db:
            row = db.execute(
                "SELECT MIN(next_at) FROM webhook_outbox WHERE status = ?", (PENDING,)
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def record(
        self,
        key: str,
        delivered: bool,
        http_status: int | None,
        error: str,
        retry_at: float | None,
    ) -> None:
        """One attempt's outcome: delivered; or pending again from ``retry_at``; or, with
        no ``retry_at``, failed for good."""
        now = time.time()
        status = DELIVERED if delivered else PENDING if retry_at is not None else FAILED
        with self._locked() as db:
            db.execute(
                "UPDATE webhook_outbox SET status = ?, attempts = attempts + 1, next_at = ?,"
                " delivered_at = ?, last_status = ?, last_error = ? WHERE id = ?",
                (
                    status,
                    retry_at if retry_at is not None else now,
                    now if delivered else None,
                    http_status,
                    error[:500],
                    key,
                ),
            )

    def deliveries(self, session: str | None = None, limit: int = 200) -> list[Delivery]:
        """The delivery log, newest first."""
        with self._locked() as db:
            if session is None:
                rows = db.execute(
                    "SELECT * FROM webhook_outbox ORDER BY created_at DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT * FROM webhook_outbox WHERE session_id = ?"
                    " ORDER BY created_at DESC LIMIT ?",
                    (session, limit),
                ).fetchall()
            return self._deliveries(db, rows)

    def _deliveries(self, db: Connection, rows: list[Row]) -> list[Delivery]:
        """The deliveries of ``rows``, bodies opened. A row whose session was erased (its
        data key is gone) is deleted: its body can never be read nor sent."""
        found, gone = [], []
        records = [_record(row["session_id"]) for row in rows]
        # Checked in the database, not the cache: the Store erases sessions on its own
        # connection, and an erased session's event must not go out.
        present = self._keys.present(db, records)
        self._keys.load(db, present)
        for row, record in zip(rows, records, strict=True):
            body = None
            if record in present:
                body = self._keys.open(db, record, BODY, row["id"], row["body"])
            if body is None:
                gone.append((row["id"],))
            else:
                found.append(_delivery(row, body))
        if gone:
            db.executemany("DELETE FROM webhook_outbox WHERE id = ?", gone)
        return found

    def erase(self, session: str) -> None:
        """A candidate's events, delivered or not, are their data: erased with the session."""
        with self._locked() as db:
            db.execute("DELETE FROM webhook_outbox WHERE session_id = ?", (session,))
            engine.scrub(db, session)  # as Store.erase: no copy left in the WAL


def _record(session: str | None) -> str:
    return GLOBAL_RECORD if session is None else session_record(session)


def _seal_plaintext(db: Connection, keys: RecordKeys) -> None:
    """Seals the plaintext bodies an older release queued (as ``sqlite._seal_plaintext``)."""
    if not engine.may_hold_plaintext(db) or migrated(db, MIGRATION):
        return

    def body(row: Row) -> tuple[bytes, ...]:
        return (keys.seal(db, _record(row["session_id"]), BODY, row["id"], row["body"]),)

    sealed = seal_table(db, "webhook_outbox", ("body",), body)
    with write_transaction(db):
        mark_migrated(db, MIGRATION)
    if sealed:
        engine.scrub(db, None)


def _delivery(row: Row, body: str) -> Delivery:
    return Delivery(
        id=row["id"],
        session=row["session_id"],
        event=row["event"],
        url=row["url"],
        body=body,
        status=row["status"],
        attempts=int(row["attempts"]),
        next_at=float(row["next_at"]),
        created_at=float(row["created_at"]),
        delivered_at=row["delivered_at"],
        last_status=row["last_status"],
        last_error=row["last_error"],
    )

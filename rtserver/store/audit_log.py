"""The audit log (EU AI Act Art. 12 and 26): who did what to which object, when, from where.

Every row holds the time, the actor (user id, role, org unit, client address), the action,
the object (``session_id`` for a session; ``object`` such as ``job:<id>`` otherwise) and a
detail of ids and enums only, never content: no candidate names, no transcript text, no
reviewer's free text.

**Append-only and hash-chained.** Each row carries ``prev_hash`` (the previous row's
``hash``) and ``hash`` = SHA-256 over a canonical JSON encoding of its own fields and
``prev_hash`` (:func:`row_hash`). A one-row table, ``audit_chain``, holds the head (the last
row written: id and hash) and the anchor (the last row pruned by retention). Appends read the
head and insert the row in one write transaction (``transactions.py``: SQLite's write lock,
PostgreSQL's advisory lock), so the server, its workers and other hosts writing the same
store never fork the chain.

What :meth:`AuditLog.verify` detects, from the anchor to the head:

- a row whose fields were edited (its hash no longer matches them);
- a row deleted in the middle or at the start (an id gap; the next row's ``prev_hash``);
- a row inserted anywhere (a missing or wrong hash, an id past the head, or the next row's
  ``prev_hash`` no longer matching);
- rows deleted at the end (the head record names a row that is gone).

What it cannot detect: someone with write access to the file who recomputes the hashes of
every row after the one they changed and rewrites the head record (SHA-256 has no key, and
the head lives in the same file). Against that, record a head printed by ``rtserver
audit-log verify`` somewhere else (a ticket, a mail, a WORM store) and pass it back with
``--expect ID:HASH``: a rewritten or truncated history no longer contains it.

**Folding.** List-type reads that pages poll (:func:`is_folded`) are written once per actor,
action and object per clock minute: the first in a minute is written (before the list is
shown, like every view), later identical ones in the same minute are only counted in memory
(:attr:`AuditLog.folded`, per process, since it started) and never written, so the chain
stays append-only. Logins, failed logins and logouts are never folded.

**Retention.** :meth:`AuditLog.prune` deletes the oldest rows in batches, checking first
that what it deletes is intact (pruning never erases the evidence of tampering), and moves
the anchor to the last row it deleted: verification starts there.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rtserver.store import engine
from rtserver.store.engine import Connection, Row
from rtserver.store.records import Actor
from rtserver.store.transactions import write_transaction

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64  # the prev_hash of the first row ever written
# The first element of every hashed encoding: a later encoding gets a new tag.
HASH_VERSION = "rtserver-audit-1"
FOLD_WINDOW_S = 60.0  # list polling is folded to one row per actor, action and object per minute
MIN_RETENTION_DAYS = 183  # at least six months (EU AI Act Art. 19 and 26(6))
PRUNE_BATCH = 1000  # rows per write transaction: the writer thread is held ~40 ms (measured)
PRUNE_EVERY_S = 3600.0
MAX_DETAIL = 500  # characters: a detail holds ids and enums, never content

# Never folded, whatever a later rule says: each is evidence on its own.
NEVER_FOLDED = frozenset({"login", "login_failed", "logout"})
# The list-type reads that existed before the "list_" prefix convention.
_LIST_READS = frozenset(
    {"list", "view_outcomes", "view_webhooks", "view_decisions", "view_calibrations"}
)

# Columns in the order they are hashed (after HASH_VERSION), sent and exported: wire v1's
# six, then the actor's parts, the object and the chain.
COLUMNS = (
    "id",
    "at",
    "actor",
    "action",
    "session_id",
    "detail",
    "user_id",
    "role",
    "unit",
    "client",
    "object",
    "prev_hash",
    "hash",
)

_SCHEMA = (
    # The first release's table: migrate() adds the columns since, so a new file and a
    # migrated one have the same table.
    """CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        session_id TEXT,
        detail TEXT NOT NULL DEFAULT ''
    )""",
    # One row: the head (last row written) and the anchor (last row pruned; 0 and the
    # genesis hash before any is). ``pruned`` counts every row retention deleted.
    """CREATE TABLE IF NOT EXISTS audit_chain (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        head_id INTEGER NOT NULL,
        head_hash TEXT NOT NULL,
        anchor_id INTEGER NOT NULL,
        anchor_hash TEXT NOT NULL,
        anchor_at REAL,
        pruned INTEGER NOT NULL DEFAULT 0
    )""",
)
# Columns added to the first release's `audit` table, added on open when missing.
_ADDED_COLUMNS = ("user_id", "role", "unit", "client", "object", "prev_hash", "hash")
_INSERT = f"INSERT INTO audit ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
# The session view reads by session_id (30 us more per write). No index on `at`: it would
# cost 80 us more per write (measured: 220 -> 300 us), and the rare exports by period scan
# in id order instead, which `at` follows (it is taken under the write lock).
_INDEXES = ("CREATE INDEX IF NOT EXISTS audit_session ON audit (session_id)",)


class AuditChainBroken(Exception):
    """The chain does not verify where an operation needs it to (pruning)."""


def is_folded(action: str) -> bool:
    """Whether ``action`` is a list-type read, folded to one row per actor, object and
    minute: ``list``, any ``list_*``, and the older list reads (outcomes, webhook
    deliveries, decisions, calibrations). Never a login, failed login or logout."""
    if action in NEVER_FOLDED:
        return False
    return action in _LIST_READS or action.startswith("list_")


def row_hash(row: Any) -> str:
    """SHA-256 (hex) of the row's fields and its ``prev_hash``, encoded as compact JSON
    (UTF-8, in :data:`COLUMNS` order, after :data:`HASH_VERSION`); ``row`` maps column names
    to values (a dict or a store row)."""
    fields = [HASH_VERSION, *(row[name] for name in COLUMNS[:-1])]
    encoded = json.dumps(fields, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(encoded.encode()).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    """What :meth:`AuditLog.verify` found."""

    intact: bool
    rows: int  # rows checked (those after the anchor)
    first_id: int | None
    last_id: int | None
    head_id: int
    head_hash: str
    anchor_id: int  # 0: nothing pruned yet
    anchor_hash: str
    pruned: int
    bad_row: int | None = None  # the first row found wrong (or missing)
    problem: str | None = None
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        if not self.intact:
            return f"audit log BROKEN at row {self.bad_row}: {self.problem}"
        span = f"rows {self.first_id}-{self.last_id}" if self.rows else "no rows"
        anchor = (
            f"anchored at pruned row {self.anchor_id} ({self.pruned} rows pruned)"
            if self.anchor_id
            else "from the first row"
        )
        lines = [
            f"audit log intact: {self.rows} rows ({span}), {anchor}",
            f"head: {self.head_id}:{self.head_hash}",
            "(keep the head somewhere else and check it later with --expect ID:HASH)",
            *self.notes,
        ]
        return "\n".join(lines)


@dataclass
class _Folds:
    """The list reads written this minute, by key, and how many were folded since start."""

    minutes: dict[tuple[Any, ...], int] = field(default_factory=dict)
    folded: int = 0

    def seen(self, key: tuple[Any, ...], minute: int) -> bool:
        if self.minutes.get(key) == minute:
            self.folded += 1
            return True
        return False

    def note(self, key: tuple[Any, ...], minute: int) -> None:
        if len(self.minutes) > 10_000:  # bounded: forget keys of earlier minutes
            self.minutes = {k: m for k, m in self.minutes.items() if m >= minute}
        self.minutes[key] = minute


class AuditLog:
    """The audit log on one store connection (autocommit mode, as ``engine.connect`` makes
    it). Not thread-safe: the owner serialises calls (the Store's lock)."""

    def __init__(self, db: Connection, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock  # unix time (s)
        self._folds = _Folds()
        migrate(db)

    @property
    def folded(self) -> int:
        """List reads folded (not written) by this instance since it was made."""
        return self._folds.folded

    def append(
        self,
        actor: Actor,
        action: str,
        session_id: str | None = None,
        detail: str = "",
        obj: str | None = None,
    ) -> int | None:
        """Writes one row at the chain's head; returns its id, or None when it was folded
        into this minute's row for the same actor, action and object (see the module
        docstring). ``detail`` holds ids and enums only (at most MAX_DETAIL characters)."""
        if len(detail) > MAX_DETAIL:
            raise ValueError(f"an audit detail holds ids, not content ({len(detail)} chars)")
        key = (actor, action, session_id, obj)
        minute = int(self._clock() // FOLD_WINDOW_S)
        folding = is_folded(action)
        if folding and self._folds.seen(key, minute):
            return None
        db = self._db
        with write_transaction(db):
            head_id, head_hash = db.execute(
                "SELECT head_id, head_hash FROM audit_chain WHERE one = 1"
            ).fetchone()
            last = db.execute("SELECT MAX(id) FROM audit").fetchone()[0] or 0
            # Chained to the recorded head, never to whatever row is last: a row deleted at
            # the end then shows as the gap before the next one.
            row: dict[str, Any] = {
                "id": max(head_id, last) + 1,
                "at": self._clock(),  # taken under the write lock: ids and times agree
                "actor": actor.label,
                "user_id": actor.user,
                "role": actor.role,
                "unit": actor.unit,
                "client": actor.client,
                "action": action,
                "session_id": session_id,
                "object": obj,
                "detail": detail,
                "prev_hash": head_hash,
            }
            row["hash"] = row_hash(row)
            db.execute(_INSERT, [row[name] for name in COLUMNS])
            db.execute(
                "UPDATE audit_chain SET head_id = ?, head_hash = ? WHERE one = 1",
                (row["id"], row["hash"]),
            )
        if folding:
            self._folds.note(key, minute)
        return int(row["id"])

    def session_rows(self, session_id: str | None, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest ``limit`` rows (of one session, or of all), newest first."""
        if session_id is None:
            rows = self._db.execute(
                "SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT * FROM audit WHERE session_id = ? ORDER BY id DESC LIMIT ?",
                (session_id, limit),
            ).fetchall()
        return [_wire(row) for row in rows]

    def rows(
        self,
        since: float | None = None,
        until: float | None = None,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Rows with ``since <= at < until`` (unix s; None: unbounded) and an id above
        ``after_id``, oldest first, at most ``limit``: one page of an export."""
        sql = "SELECT * FROM audit WHERE id > ?"
        args: list[float] = [after_id]
        if since is not None:
            sql += " AND at >= ?"
            args.append(since)
        if until is not None:
            sql += " AND at < ?"
            args.append(until)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_wire(row) for row in self._db.execute(sql, args).fetchall()]

    def verify(self, expect: Sequence[tuple[int, str]] = ()) -> ChainReport:
        """Checks the chain from the anchor to the head, in one read snapshot; ``expect``
        holds (id, hash) pairs recorded earlier (a head that ``verify`` printed), each of
        which must still be there."""
        db = self._db
        # One snapshot: appends by others do not move the head meanwhile.
        with engine.read_snapshot(db):
            chain = db.execute("SELECT * FROM audit_chain WHERE one = 1").fetchone()
            rows = db.execute("SELECT * FROM audit ORDER BY id")
            walk = _walk(rows, chain["anchor_id"], chain["anchor_hash"], chain)
            expected = {
                row_id: db.execute("SELECT hash FROM audit WHERE id = ?", (row_id,)).fetchone()
                for row_id, _ in expect
            }
        bad_row, problem = walk.bad_row, walk.problem
        notes: list[str] = []
        for row_id, want in expect:
            if bad_row is not None:
                break
            if row_id == chain["anchor_id"]:
                stored = chain["anchor_hash"]
            elif row_id < chain["anchor_id"]:
                notes.append(f"row {row_id} was pruned by retention: it can no longer be checked")
                continue
            elif row_id > chain["head_id"]:
                bad_row, problem = (
                    row_id,
                    (
                        f"an expected row is gone: the log ends at row {chain['head_id']}"
                        " (rows were deleted at the end and the head record rewritten)"
                    ),
                )
                break
            else:
                hit = expected[row_id]
                stored = hit["hash"] if hit is not None else None
            if stored != want:
                bad_row, problem = (
                    row_id,
                    (
                        "its hash is not the one recorded earlier: the history up to it was"
                        " rewritten"
                    ),
                )
                break
            notes.append(f"row {row_id} has the hash recorded earlier")
        return ChainReport(
            intact=bad_row is None,
            rows=walk.checked,
            first_id=walk.first_id if bad_row is None else None,
            last_id=walk.last_id if bad_row is None else None,
            head_id=chain["head_id"],
            head_hash=chain["head_hash"],
            anchor_id=chain["anchor_id"],
            anchor_hash=chain["anchor_hash"],
            pruned=chain["pruned"],
            bad_row=bad_row,
            problem=problem,
            notes=tuple(notes),
        )

    def prune(self, before: float, batch: int = PRUNE_BATCH) -> int:
        """Deletes up to ``batch`` of the oldest rows written before ``before`` (unix s)
        and moves the anchor to the last of them; returns how many. Raises
        AuditChainBroken, deleting nothing, when those rows or their link to the next one
        do not verify: evidence of tampering is kept for someone to look at."""
        db = self._db
        with write_transaction(db):
            chain = db.execute("SELECT * FROM audit_chain WHERE one = 1").fetchone()
            rows = db.execute(
                "SELECT * FROM audit WHERE id > ? ORDER BY id LIMIT ?",
                (chain["anchor_id"], batch + 1),
            ).fetchall()
            old = 0  # only a run of old rows from the anchor: the chain stays one piece
            while old < min(len(rows), batch) and rows[old]["at"] < before:
                old += 1
            if old == 0:
                return 0
            # The rows to delete, and the next row's link to them (or the head record).
            rest = rows[old : old + 1]
            head = chain if not rest else None
            walk = _walk(rows[:old] + rest, chain["anchor_id"], chain["anchor_hash"], head)
            if walk.bad_row is not None:
                raise AuditChainBroken(f"not pruning: row {walk.bad_row}: {walk.problem}")
            last = rows[old - 1]
            db.execute(
                "DELETE FROM audit WHERE id > ? AND id <= ?", (chain["anchor_id"], last["id"])
            )
            db.execute(
                "UPDATE audit_chain SET anchor_id = ?, anchor_hash = ?, anchor_at = ?,"
                " pruned = pruned + ? WHERE one = 1",
                (last["id"], last["hash"], self._clock(), old),
            )
        return old


@dataclass
class _Walk:
    """What walking the chain found: the rows checked, and the first problem if any."""

    checked: int = 0
    first_id: int | None = None
    last_id: int | None = None
    bad_row: int | None = None
    problem: str | None = None


def _walk(rows: Any, prev_id: int, prev_hash: str, head: Row | None) -> _Walk:
    """Walks ``rows`` (id order) on from row ``prev_id`` whose hash is ``prev_hash`` (the
    anchor); with ``head``, also checks that the last row is the recorded head."""
    walk, anchor_id = _Walk(), prev_id
    for row in rows:
        found = _row_problem(row, anchor_id, prev_id, prev_hash)
        if found is not None:
            walk.bad_row, walk.problem = found
            return walk
        prev_id, prev_hash = row["id"], row["hash"]
        walk.first_id = prev_id if walk.first_id is None else walk.first_id
        walk.last_id = prev_id
        walk.checked += 1
    if head is not None:
        found = _head_problem(head, prev_id, prev_hash)
        if found is not None:
            walk.bad_row, walk.problem = found
    return walk


def _row_problem(row: Row, anchor_id: int, prev_id: int, prev_hash: str) -> tuple[int, str] | None:
    """(the bad row, what is wrong) when ``row`` does not follow row ``prev_id``."""
    row_id = row["id"]
    if row_id <= anchor_id:
        return row_id, "is at or before the anchor: a pruned row was put back"
    if row_id != prev_id + 1:
        gap = (
            f"row {prev_id + 1} is"
            if row_id == prev_id + 2
            else f"rows {prev_id + 1}-{row_id - 1} are"
        )
        return prev_id + 1, f"{gap} missing (deleted) before row {row_id}"
    try:
        computed: str | None = row_hash(row)
    except (TypeError, ValueError):  # a value no row of ours holds (NaN, a blob)
        computed = None
    if row["hash"] != computed:
        return row_id, "its hash does not match its fields: it was edited, or inserted by hand"
    if row["prev_hash"] != prev_hash:
        what = "the anchor" if prev_id == anchor_id and anchor_id else f"row {prev_id}"
        return row_id, f"its prev_hash is not the hash of {what}: a row was replaced or inserted"
    return None


def _head_problem(head: Row, last_id: int, last_hash: str) -> tuple[int, str] | None:
    """(the bad row, what is wrong) when the last row is not the recorded head."""
    head_id = head["head_id"]
    if head_id > last_id:
        gap = f"row {head_id} is" if head_id == last_id + 1 else f"rows {last_id + 1}-{head_id} are"
        return last_id + 1, f"{gap} missing (deleted at the end of the log)"
    if head_id < last_id:
        return head_id + 1, f"is past the recorded head (row {head_id}): inserted at the end"
    if head["head_hash"] != last_hash:
        return last_id, "its hash is not the recorded head's"
    return None


def _wire(row: Row) -> dict[str, Any]:
    """A row as the API sends it, in :data:`COLUMNS` order."""
    return {name: row[name] for name in COLUMNS}


def migrate(db: Connection) -> None:
    """Makes the audit tables, or brings a first-release table up to date: adds the
    columns it lacks and chains its rows, once. Several processes may open the file at once
    (the server and its workers), so all of it runs in one write transaction: the first
    migrates, the others find it done. On PostgreSQL, the versioned migrations make them
    (``engine.prepare_schema``)."""
    engine.prepare_schema(db, lambda: _migrate_sqlite(db))


def _migrate_sqlite(db: Connection) -> None:
    with write_transaction(db):
        for statement in _SCHEMA:
            db.execute(statement)
        present = engine.columns(db, "audit")
        for name in _ADDED_COLUMNS:
            if name not in present:
                db.execute(f"ALTER TABLE audit ADD COLUMN {name} TEXT")
        for statement in _INDEXES:
            db.execute(statement)
        if db.execute("SELECT 1 FROM audit_chain WHERE one = 1").fetchone() is None:
            head_id, head_hash = _chain_unchained(db)
            db.execute(
                "INSERT INTO audit_chain (one, head_id, head_hash, anchor_id, anchor_hash)"
                " VALUES (1, ?, ?, 0, ?)",
                (head_id, head_hash, GENESIS_HASH),
            )


def _chain_unchained(db: Connection) -> tuple[int, str]:
    """Chains the rows a first release wrote (its ``actor`` was ``<user>@<client>``; the
    role and unit were not recorded); returns the head's id and hash."""
    prev_id, prev_hash = 0, GENESIS_HASH
    rows = db.execute("SELECT * FROM audit ORDER BY id").fetchall()
    for old in rows:
        row = dict(old)
        user, at_sign, client = row["actor"].rpartition("@")
        row["user_id"] = row["user_id"] or (user if at_sign else row["actor"])
        row["client"] = row["client"] or (client if at_sign else None)
        row["prev_hash"] = prev_hash
        row["hash"] = row_hash(row)
        db.execute(
            "UPDATE audit SET user_id = ?, client = ?, prev_hash = ?, hash = ? WHERE id = ?",
            (row["user_id"], row["client"], row["prev_hash"], row["hash"], row["id"]),
        )
        prev_id, prev_hash = row["id"], row["hash"]
    if rows:
        log.info("audit log: chained %d rows of an earlier release", len(rows))
    return prev_id, prev_hash


# -- time bounds of exports -----------------------------------------------------------


def parse_bound(text: str, end: bool = False) -> float:
    """An export bound as unix time (s): an ISO 8601 date or date-time (UTC unless it
    says otherwise). A bare date as ``end`` means the end of that day (the bound is
    exclusive), so ``--to 2026-01-31`` takes all of January 31. ValueError otherwise."""
    text = text.strip()
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        day = None
    try:
        if day is not None and len(text) == 10:
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            return (start + dt.timedelta(days=1 if end else 0)).timestamp()
        when = dt.datetime.fromisoformat(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.timestamp()
    except OverflowError as exc:  # the day after 9999-12-31, or past it by a time zone
        raise ValueError(f"{text} is out of range") from exc


# -- retention in the server process ------------------------------------------------------


class AuditPruner:
    """Prunes rows older than the retention period, at start and every PRUNE_EVERY_S, in
    the server process. ``prune(before)`` deletes one batch and returns how many rows it
    deleted (``AsyncStore.prune_audit_log``)."""

    def __init__(
        self,
        prune: Callable[[float], Awaitable[int]],
        retention_days: int,
        every_s: float = PRUNE_EVERY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if retention_days < MIN_RETENTION_DAYS:
            raise ValueError(f"the audit log is kept {MIN_RETENTION_DAYS} days at least")
        self._prune = prune
        self.retention_s = retention_days * 86400.0
        self._every_s = every_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> int:
        """Prunes everything past retention, batch by batch; returns how many rows."""
        before = self._clock() - self.retention_s
        total = 0
        while (pruned := await self._prune(before)) > 0:
            total += pruned
        if total:
            log.info(
                "audit log: pruned %d rows older than %.0f days", total, self.retention_s / 86400
            )
        return total

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-pruner")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except AuditChainBroken as exc:
                log.error("audit log: %s (run `rtserver audit-log verify`)", exc)
            except Exception:
                log.exception("audit log: pruning failed")
            await asyncio.sleep(self._every_s)

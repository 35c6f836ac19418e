"""The store's one connection layer: the same queries on SQLite or on PostgreSQL.

Every store module (``sqlite.py``, ``accounts.py``, ``audit_log.py``, ``encryption.py``,
``outbox.py``) talks to a :class:`Connection`: ``execute(sql, params)`` with ``?``
placeholders (or ``:name`` ones with a mapping), ``executemany``, ``executescript``,
``fetchone``/``fetchall``/``rowcount`` on what ``execute`` returns, rows indexable by
name and by position, ``in_transaction``, ``rollback`` and ``close``. On SQLite that is
the ``sqlite3`` connection itself, as before; on PostgreSQL, :class:`PgConnection` gives
a psycopg 3 connection the same face. The SQL in the store modules is portable (SQLite
3.24+ and PostgreSQL 12+ both take ``INSERT ... ON CONFLICT``); what differs between the
two lives here and nowhere else:

- placeholders (``?`` -> ``%s``, ``:name`` -> ``%(name)s``) and bools bound as 0/1, as
  SQLite stores them;
- the schema: SQLite keeps its ``CREATE TABLE IF NOT EXISTS`` and added-columns path (a
  file of any earlier release still opens); PostgreSQL applies the versioned migrations
  in ``migrations/postgresql/`` (:func:`prepare_schema`);
- write transactions (:func:`write_transaction` in ``transactions.py``): SQLite's
  ``BEGIN IMMEDIATE`` takes the one write lock of the file; PostgreSQL takes one
  transaction-scoped advisory lock, so multi-statement writes (an audit row at the chain's
  head, a data key made once) are serialised across hosts exactly as across processes;
- a read snapshot (``REPEATABLE READ`` on PostgreSQL), the next id of a table,
  a table's columns, and what an erasure does to the files (:func:`scrub`);
- the error families the writer retries (:data:`OPERATIONAL_ERRORS`) and those that are
  broken constraints (:data:`INTEGRITY_ERRORS`).

PostgreSQL connections come from one psycopg_pool pool per process and URL. Each store
object keeps the connection it took (its calls are serialised by its own lock, and the
connection's prepared statements stay warm) and gives it back only when it breaks: the
next statement then takes a fresh one from the pool, which reconnects. While the server
is down, taking one fails after :data:`CONNECT_TIMEOUT_S` with an OperationalError.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool, PoolTimeout

if TYPE_CHECKING:
    from rtserver.config import Config

log = logging.getLogger(__name__)

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")

# A SQLite file, or a PostgreSQL URL (postgresql://user:password@host:5432/db).
StoreTarget = Path | str

# Worker processes write messages and statuses while the server process reads and writes
# sessions and the audit log: WAL lets readers go on during a write, and a writer that
# finds the database locked by another process waits this long before failing (s).
BUSY_TIMEOUT_S = 10.0
# How long taking a PostgreSQL connection may wait (s): a down server fails a read or a
# write attempt after this, not after the TCP default of minutes. The writer retries.
CONNECT_TIMEOUT_S = 3.0
# Connections a process's pool may hold: one per store object it opens (the server: the
# read and write stores, accounts, the outbox; a CLI command: one or two), with room.
POOL_MAX_SIZE = 16
# A peer that vanishes without a FIN/RST (a host that died) is noticed within about
# idle + interval * count seconds instead of the kernel's two hours.
_KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2}
_KEEPALIVE_COUNT = {"keepalives_count": 3, "tcp_user_timeout": 10_000}  # ms

# Write transactions on PostgreSQL take this transaction-scoped advisory lock (any fixed
# 64-bit number: "rtsrvwr1"), migrations another ("rtsrvmg1").
WRITE_LOCK_KEY = 0x72747372_76777231
MIGRATION_LOCK_KEY = 0x72747372_766D6731

OPERATIONAL_ERRORS: tuple[type[Exception], ...] = (
    sqlite3.OperationalError,
    psycopg.OperationalError,
)
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, psycopg.IntegrityError)
STORE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` came from a PostgreSQL connection that broke (a server restart, a
    network cut), so that the same read may pass on a fresh one at once; not when no
    connection could be had at all (the pool timed out: the server is down)."""
    return isinstance(exc, psycopg.OperationalError) and not isinstance(exc, PoolTimeout)


class Row(Protocol):
    """A result row: by column name or position, ``keys()``, iterable (``dict(row)`` and
    unpacking work); ``sqlite3.Row`` and :class:`PgRow` both are one."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> list[str]: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


class Cursor(Protocol):
    """What ``execute`` returns: the rows of a query, or the rows a write changed."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """The face of a store connection (module docstring); not thread-safe: each owner
    serialises its calls with its own lock."""

    dialect: str

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...

    def executescript(self, sql: str, /) -> Any: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


# -- targets --------------------------------------------------------------------------------


def is_postgresql(target: StoreTarget) -> bool:
    return isinstance(target, str) and target.startswith(POSTGRESQL_SCHEMES)


def store_target(config: Config) -> StoreTarget:
    """Where the configured store is: ``config.store`` (a PostgreSQL URL), else the SQLite
    file in the data directory."""
    return config.store or config.db_path


def describe(target: StoreTarget) -> str:
    """The target for messages and logs: a URL without its password."""
    if not is_postgresql(target):
        return str(target)
    parts = urlsplit(str(target))
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{host}"
    return urlunsplit(parts._replace(netloc=netloc, query=""))


def exists(target: StoreTarget) -> bool:
    """Whether a store is there to open without making one: the SQLite file exists, or
    the PostgreSQL database has been migrated (raises OperationalError when unreachable)."""
    if not is_postgresql(target):
        return Path(target).exists()
    with psycopg.connect(str(target), connect_timeout=int(CONNECT_TIMEOUT_S)) as conn:
        row = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
    return row is not None and row[0] is not None


def connect(target: StoreTarget) -> Connection:
    """A connection to the store at ``target``: a SQLite file (made if missing) or a
    PostgreSQL database (its URL)."""
    if is_postgresql(target):
        return PgConnection(str(target))
    return connect_sqlite(Path(target))


# -- SQLite ---------------------------------------------------------------------------------


class SqliteConnection(sqlite3.Connection):
    """``sqlite3.Connection`` as every store module uses it, naming its dialect."""

    dialect = SQLITE


def connect_sqlite(path: Path) -> SqliteConnection:
    """A connection to the database at ``path`` (made if missing) as every process uses it:
    rows by name, autocommit, WAL, and a busy timeout for other processes' writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT_S,
        check_same_thread=False,
        isolation_level=None,
        factory=SqliteConnection,
    )
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    # What a delete or an update frees is overwritten with zeros, not left in free space.
    db.execute("PRAGMA secure_delete=ON")
    return db


# -- PostgreSQL -----------------------------------------------------------------------------


class PgRow:
    """A PostgreSQL row as ``sqlite3.Row`` behaves: by name or position, ``keys()``."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = values
        self._index = index

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._index)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"PgRow({dict(zip(self._index, self._values, strict=True))!r})"


def _row_factory(cursor: psycopg.Cursor[Any]) -> Callable[[Sequence[Any]], PgRow]:
    names = [column.name for column in cursor.description or ()]
    index = {name: i for i, name in enumerate(names)}
    return lambda values: PgRow(values, index)


# One placeholder style for both: SQLite's. A "?" or ":name" in a quoted literal is text;
# every "%" is doubled for psycopg (whose parser knows no quotes); "::" is a cast.
_TOKENS = re.compile(r"'(?:[^']|'')*'|::|\?|:([A-Za-z_]\w*)|%")


@lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """``sql`` with SQLite's placeholders (``?``, ``:name``) in psycopg's (``%s``,
    ``%(name)s``)."""

    def token(match: re.Match[str]) -> str:
        text = match.group(0)
        if text.startswith("'"):
            return text.replace("%", "%%")
        if text == "?":
            return "%s"
        if text == "%":
            return "%%"
        if match.group(1) is not None:
            return f"%({match.group(1)})s"
        return text

    return _TOKENS.sub(token, sql)


def _is_read(sql: str) -> bool:
    return sql.lstrip()[:6].upper() in ("SELECT", "WITH R")


def _bind(parameters: Any) -> Any:
    """Parameters as psycopg takes them; bools as 0/1, which the BIGINT flag columns hold
    on both engines (SQLite has no boolean type)."""
    if isinstance(parameters, Mapping):
        return {k: int(v) if isinstance(v, bool) else v for k, v in parameters.items()}
    return [int(v) if isinstance(v, bool) else v for v in parameters]


@dataclass
class _Pool:
    pool: ConnectionPool[psycopg.Connection[Any]]
    users: int = 0


_pools: dict[tuple[int, str], _Pool] = {}
_pools_lock = threading.Lock()


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.row_factory = _row_factory


def _take_pool(url: str) -> ConnectionPool[psycopg.Connection[Any]]:
    """The process's pool for ``url`` (made on first use; keyed by pid too, so a forked
    worker never shares its parent's sockets)."""
    key = (os.getpid(), url)
    with _pools_lock:
        entry = _pools.get(key)
        if entry is None:
            pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                url,
                min_size=0,
                max_size=POOL_MAX_SIZE,
                kwargs={
                    "autocommit": True,
                    "connect_timeout": int(CONNECT_TIMEOUT_S),
                    **_KEEPALIVE,
                    **_KEEPALIVE_COUNT,
                },
                configure=_configure,
                # A connection handed out is checked first (one round trip, only when a
                # store takes a new one): a server restart leaves idle ones broken.
                check=ConnectionPool.check_connection,
                timeout=CONNECT_TIMEOUT_S,
                reconnect_timeout=CONNECT_TIMEOUT_S,
                num_workers=1,
                name=describe(url),
                open=True,
            )
            entry = _pools[key] = _Pool(pool)
        entry.users += 1
        return entry.pool


def _give_back_pool(url: str) -> None:
    """Closes the pool once no store of this process uses it any more."""
    key = (os.getpid(), url)
    with _pools_lock:
        entry = _pools.get(key)
        if entry is None:
            return
        entry.users -= 1
        if entry.users > 0:
            return
        del _pools[key]
    entry.pool.close(timeout=1.0)


@atexit.register
def _close_pools() -> None:
    with _pools_lock:
        entries = [entry for (pid, _), entry in _pools.items() if pid == os.getpid()]
        _pools.clear()
    for entry in entries:
        entry.pool.close(timeout=1.0)


class PgConnection:
    """A PostgreSQL connection with the face of ``sqlite3.Connection`` the store uses:
    autocommit, SQLite's placeholders, rows by name and position. It keeps the pooled
    connection it took until that breaks (module docstring)."""

    dialect = POSTGRESQL

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool = _take_pool(url)
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        try:
            self._connection()  # fail now (OperationalError) rather than at the first use
        except BaseException:
            self.close()
            raise

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and (conn.broken or conn.closed):
            self._release()
            conn = None
        if conn is None:
            if self._closed:
                raise psycopg.InterfaceError("the store connection is closed")
            conn = self._pool.getconn()
            self._conn = conn
        return conn

    def _release(self) -> None:
        """Gives the connection back (the pool drops a broken one and reconnects)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                self._pool.putconn(conn)
            except Exception:  # the pool is closing: nothing to keep it for
                conn.close()

    @property
    def in_transaction(self) -> bool:
        """A transaction is open, failed, or in an unknown state (the connection broke in
        one): each needs a rollback before the connection is used again."""
        conn = self._conn
        if conn is None:
            return False
        return conn.info.transaction_status != pq.TransactionStatus.IDLE

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        # Without parameters psycopg sends the text as it is: no placeholders to translate.
        query = translate(sql) if parameters else sql
        bound = _bind(parameters) if parameters else None
        conn = self._connection()
        try:
            return conn.execute(query, bound)
        except psycopg.OperationalError:
            # A connection that died while it sat idle (a server restart, a network cut)
            # fails its next statement. A read outside a transaction is tried once more
            # on a fresh one; a write is not (it may have committed): the writer decides.
            if not conn.broken or self._closed or not _is_read(sql) or conn is not self._conn:
                raise
            self._release()
            return self._connection().execute(query, bound)

    def executemany(self, sql: str, parameters: Any, /) -> psycopg.Cursor[Any]:
        cursor = self._connection().cursor()
        cursor.executemany(translate(sql), [_bind(p) for p in parameters])
        return cursor

    def executescript(self, sql: str, /) -> None:
        """Runs several statements (no parameters): PostgreSQL's simple query protocol."""
        self._connection().execute(sql.encode())

    def rollback(self) -> None:
        """Ends a transaction left open; a broken connection is given back instead, so
        the next statement reconnects."""
        conn = self._conn
        if conn is None:
            return
        if conn.broken or conn.closed:
            self._release()
            return
        if self.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except psycopg.OperationalError:
                self._release()
                raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        if conn is not None and not conn.broken and self.in_transaction:
            with suppress(psycopg.Error):
                conn.execute("ROLLBACK")
        self._release()
        _give_back_pool(self.url)


# -- what differs ---------------------------------------------------------------------------


def begin_write(db: Connection) -> None:
    """Begins a write transaction that no other writer of the store (any process, any
    host) runs beside: see the module docstring."""
    if db.dialect == POSTGRESQL:
        db.execute("BEGIN")
        db.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK_KEY,))
    else:
        db.execute("BEGIN IMMEDIATE")


@contextmanager
def read_snapshot(db: Connection) -> Iterator[None]:
    """Runs the block's reads on one snapshot of the store (others' commits meanwhile are
    not seen): SQLite's deferred transaction, PostgreSQL's REPEATABLE READ."""
    if db.dialect == POSTGRESQL:
        db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    else:
        db.execute("BEGIN")
    try:
        yield
    finally:
        db.execute("COMMIT")


def next_id(db: Connection, table: str) -> int:
    """The id an auto-numbered ``table`` gives its next row, never one given before (also
    when the newest rows were deleted); inside a write transaction."""
    if db.dialect == POSTGRESQL:
        row = db.execute("SELECT nextval(pg_get_serial_sequence(?, 'id'))", (table,)).fetchone()
        return int(row[0])
    row = db.execute(
        f"SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = ?), 0),"
        f" COALESCE((SELECT MAX(id) FROM {table}), 0))",
        (table,),
    ).fetchone()
    return int(row[0]) + 1


def columns(db: Connection, table: str) -> set[str]:
    """The column names of ``table``."""
    if db.dialect == POSTGRESQL:
        rows = db.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        )
        return {row[0] for row in rows}
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def may_hold_plaintext(db: Connection) -> bool:
    """Whether rows of a release from before encryption at rest may be here: only a SQLite
    file can be that old (PostgreSQL's sealed columns were BYTEA from the first migration)."""
    return db.dialect == SQLITE


def scrub(db: Connection, session_id: str | None) -> None:
    """After an erasure or a rotation: leaves no copy of what was deleted or replaced in
    the store's files. SQLite: the WAL is checkpointed and emptied (deleted pages are
    already zeroed by secure_delete). PostgreSQL: ``VACUUM data_keys`` drops the dead row
    versions of deleted and re-wrapped data keys; the sealed rows' dead versions stay until
    autovacuum, unreadable without their data key (crypto-shredding). Outside a
    transaction. A reader in the middle of a long read can hold a SQLite checkpoint back:
    then a later one completes it, and it is logged."""
    if db.dialect == POSTGRESQL:
        try:
            db.execute("VACUUM data_keys")
        except psycopg.OperationalError as exc:
            log.warning("VACUUM data_keys failed (%s)", exc, extra={"session": session_id or "-"})
        return
    try:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.OperationalError as exc:
        busy = exc
    if busy:
        log.warning(
            "WAL checkpoint held back (%s): a later one completes it",
            busy,
            extra={"session": session_id or "-"},
        )


# -- schema ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The PostgreSQL migrations, in order: ``migrations/postgresql/NNNN_name.sql``."""
    found = []
    folder = resources.files("rtserver.store").joinpath("migrations", "postgresql")
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration versions must run 1, 2, ...: {[m.version for m in found]}")
    return found


def prepare_schema(db: Connection, sqlite_schema: Callable[[], None]) -> None:
    """Brings the store's schema up to date: on SQLite, ``sqlite_schema`` (the module's
    ``CREATE ... IF NOT EXISTS`` and added columns); on PostgreSQL, every migration not
    applied yet (:func:`migrate_postgresql`), whichever module opens it first."""
    if db.dialect == POSTGRESQL:
        migrate_postgresql(db)
    else:
        sqlite_schema()


def applied_versions(db: Connection) -> list[int]:
    """The migrations recorded in ``schema_migrations`` (none before the first)."""
    row = db.execute("SELECT to_regclass('schema_migrations')").fetchone()
    if row[0] is None:
        return []
    return [int(r[0]) for r in db.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def migrate_postgresql(db: Connection) -> list[int]:
    """Applies the migrations the database lacks, each recorded in ``schema_migrations``,
    all in one transaction under an advisory lock: hosts starting at once wait for the
    first, which migrates; the others find it done. Returns the versions applied here."""
    wanted = migrations()
    if set(applied_versions(db)) >= {m.version for m in wanted}:
        return []  # the usual case: one query, no lock
    done: list[int] = []
    db.execute("BEGIN")
    try:
        db.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK_KEY,))
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY,"
            " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
        applied = set(applied_versions(db))
        for migration in wanted:
            if migration.version in applied:
                continue
            db.executescript(migration.sql)
            db.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
            done.append(migration.version)
        db.execute("COMMIT")
    except BaseException:
        db.rollback()
        raise
    if done:
        log.info("store: applied PostgreSQL migrations %s", done)
    return done

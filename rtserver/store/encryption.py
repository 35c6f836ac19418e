"""Encryption at rest: candidate data sealed with AES-GCM under per-record data keys, each
data key wrapped by a master key (envelope encryption).

- The **keyring** (:class:`Keyring`) holds the master keys (key-encryption keys), one of them
  current. It is read from a JSON file (``master.keys`` in the data directory unless
  ``master_key_file`` says otherwise; mode 0600, made on first use) or from
  ``RTSERVER_MASTER_KEY`` (``Config.master_key``). A master key never enters the database;
  its id does (a fingerprint of the key, so the wrong key is named as such).
- Each **record** has its own random 256-bit data key: one per candidate session
  (:func:`session_record`), and :data:`GLOBAL_RECORD` for rows of no session. The
  ``data_keys`` table holds it wrapped (AES-GCM) by a master key, with that key's id.
  :class:`RecordKeys` unwraps each on first use and keeps a few thousand in memory.
- A **sealed value** is ``VERSION (1 byte) || nonce (12) || ciphertext and tag``, stored as a
  BLOB; older releases stored plaintext TEXT, which is how the migration on open tells them
  apart. Its associated data names the table, column and row, so a value copied to another
  row, column or session fails to open instead of reading as that row's.
- **Erasure** deletes the record's data key with its rows (crypto-shredding): a copy of the
  rows that survives anywhere (a backup, a free page) can no longer be read.
- **Rotation** (:func:`rotate`, ``rtserver keys rotate``) makes a new master key current,
  re-wraps every data key under it in short write transactions while servers run, and then
  removes the old key from the keyring file. A process that meets a key id it does not hold
  reads the keyring file again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import secrets
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rtserver.config import Config
from rtserver.errors import DecryptionFailed, KeyringError, MasterKeyMissing
from rtserver.store import engine
from rtserver.store.engine import Connection, Row, StoreTarget
from rtserver.store.transactions import write_transaction

log = logging.getLogger(__name__)

VERSION = 1  # the first byte of every sealed value, and part of its associated data
NONCE_BYTES = 12  # AES-GCM's standard nonce; random per value (a data key seals ~10^4)
KEY_BYTES = 32  # AES-256, for master keys and data keys alike
GLOBAL_RECORD = "global"  # the data key of rows that belong to no session
KEYRING_FORMAT = "rtserver-keyring-1"
# Unwrapped data keys kept per store connection: more than the sessions one server holds
# live, so the per-second message writes never unwrap.
CACHE_SIZE = 4096
ROTATE_BATCH = 200  # data keys re-wrapped per write transaction: a few ms of lock each
MIGRATION_BATCH = 500  # rows of an older release sealed per write transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS data_keys (
    record TEXT PRIMARY KEY,
    kek_id TEXT NOT NULL,
    wrapped BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS data_keys_by_kek ON data_keys (kek_id);
CREATE TABLE IF NOT EXISTS encryption_migrations (
    name TEXT PRIMARY KEY,
    at REAL NOT NULL
);
"""


def session_record(session_id: str) -> str:
    """The record (data key) a session's rows are sealed under."""
    return f"session:{session_id}"


def key_id(key: bytes) -> str:
    """A master key's id: 16 hex digits of SHA-256 over a label and the key. It names the
    key without revealing it, and another key has another id."""
    return hashlib.sha256(b"rtserver master key id\x00" + key).hexdigest()[:16]


def new_master_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    """A key as ``RTSERVER_MASTER_KEY`` and the keyring file write it (base64)."""
    return base64.b64encode(key).decode()


def decode_key(text: str) -> bytes:
    """A master key from its base64 text; ValueError unless it is 32 bytes."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a master key must be base64") from exc
    if len(key) != KEY_BYTES:
        raise ValueError(f"a master key must be {KEY_BYTES} bytes (base64), not {len(key)}")
    return key


# -- the keyring ----------------------------------------------------------------------------


class Keyring:
    """Master keys by id, one current; thread-safe, shared by a process's stores.

    File-backed keyrings follow their file: :meth:`current` notices a changed file (another
    process rotated), and :meth:`get` reads it again for an id it does not hold.
    """

    def __init__(
        self, keys: dict[str, bytes], current: str | None, path: Path | None = None
    ) -> None:
        self._keys = dict(keys)
        self._current = current
        self._aead = {kid: AESGCM(key) for kid, key in self._keys.items()}
        self.path = path
        self._seen: tuple[int, int, int] | None = None  # the file's (inode, size, mtime)
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path) -> Keyring:
        """The keyring in ``path``; empty (made on first use) when there is no such file."""
        keyring = cls({}, None, path)
        keyring.refresh(force=True)
        return keyring

    @classmethod
    def from_keys(cls, text: str) -> Keyring:
        """The keyring of ``RTSERVER_MASTER_KEY``: base64 keys, comma-separated, current
        first (more than one only while a rotation moves data keys to the first)."""
        try:
            keys = [decode_key(part) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise KeyringError(f"RTSERVER_MASTER_KEY: {exc}") from None
        if not keys:
            raise KeyringError("RTSERVER_MASTER_KEY holds no key")
        return cls({key_id(key): key for key in keys}, key_id(keys[0]))

    @property
    def source(self) -> str:
        """Where the keys come from, for messages."""
        return f"the keyring file {self.path}" if self.path else "RTSERVER_MASTER_KEY"

    def ids(self) -> list[str]:
        """The ids held, current first."""
        with self._lock:
            return sorted(self._keys, key=lambda kid: kid != self._current)

    def current_id(self) -> str | None:
        with self._lock:
            return self._current

    def current(self) -> tuple[str, AESGCM]:
        """The current key's id and cipher, after reading the file again if it changed;
        a file-backed keyring with no file yet makes one (one key, 0600)."""
        if self.path is not None:
            self.refresh()
            if self._current is None:
                self.ensure()
        with self._lock:
            if self._current is None:
                raise MasterKeyMissing(f"{self.source} holds no current master key")
            return self._current, self._aead[self._current]

    def get(self, kid: str) -> AESGCM:
        """The cipher of master key ``kid``; MasterKeyMissing when neither the keys held
        nor the file read again have it."""
        with self._lock:
            found = self._aead.get(kid)
        if found is None and self.path is not None:
            self.refresh(force=True)
            with self._lock:
                found = self._aead.get(kid)
        if found is None:
            raise MasterKeyMissing(
                f"data keys are wrapped by master key {kid}, which {self.source} does not hold"
                f" (it holds {', '.join(self.ids()) or 'none'}): the wrong master key, or a"
                " keyring file from another install"
            )
        return found

    def ensure(self) -> bool:
        """Makes the keyring file with one new key when there is none; True when it did."""
        if self.path is None or self._current is not None:
            return False
        key = new_master_key()
        made = _create_file(self.path, _file_text({key_id(key): key}, key_id(key)))
        self.refresh(force=True)
        if made:
            log.info("new master key %s in %s", key_id(key), self.path)
        return made

    def refresh(self, force: bool = False) -> None:
        """Reads the keyring file again if it changed since it was read (or ``force``)."""
        if self.path is None:
            return
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return  # made on first use; keys already held stay
        except OSError as exc:
            raise KeyringError(f"cannot read {self.source}: {exc}") from exc
        seen = (info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            if seen == self._seen and not force:
                return
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "%s is readable by others (mode %o): chmod 600 it", self.source, info.st_mode
            )
        keys, current = _read_file(self.path)
        with self._lock:
            self._keys, self._current, self._seen = keys, current, seen
            self._aead = {kid: AESGCM(key) for kid, key in keys.items()}


def keyring_for(config: Config) -> Keyring:
    """The configured keyring: ``master_key`` (RTSERVER_MASTER_KEY) when set, else the
    keyring file ``master_key_path``. Every process that opens the database needs it."""
    if config.master_key:
        return Keyring.from_keys(config.master_key)
    return Keyring.from_file(config.master_key_path)


def default_keyring_path(target: StoreTarget) -> Path:
    """The keyring file of a SQLite database opened without one: beside it, as
    ``<data_dir>/master.keys`` is beside ``<data_dir>/rtserver.sqlite3``. A PostgreSQL
    store has no such place: KeyringError (open it with ``keyring_for(config)``)."""
    if engine.is_postgresql(target):
        raise KeyringError(
            f"{engine.describe(target)}: a PostgreSQL store is opened with the configured"
            " keyring (RTSERVER_MASTER_KEY or master_key_file), never a default one"
        )
    return Path(target).parent / "master.keys"


def _file_text(keys: dict[str, bytes], current: str) -> str:
    entries = {kid: {"key": encode_key(key)} for kid, key in keys.items()}
    return json.dumps({"format": KEYRING_FORMAT, "current": current, "keys": entries}, indent=1)


def _read_file(path: Path) -> tuple[dict[str, bytes], str]:
    try:
        data = json.loads(path.read_text())
        if data.get("format") != KEYRING_FORMAT:
            raise ValueError(f"not a keyring (format {data.get('format')!r})")
        keys = {str(kid): decode_key(str(entry["key"])) for kid, entry in data["keys"].items()}
        current = str(data["current"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyringError(f"cannot read the keyring file {path}: {exc}") from exc
    for kid, key in keys.items():
        if key_id(key) != kid:
            raise KeyringError(f"the keyring file {path} is damaged: key {kid} is not that key")
    if current not in keys:
        raise KeyringError(f"the keyring file {path} names a current key it does not hold")
    return keys, current


def _temp_file(path: Path, text: str) -> Path:
    """``text`` in a new 0600 file beside ``path``, flushed to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return temp


def _create_file(path: Path, text: str) -> bool:
    """Writes ``path`` whole unless it exists (two processes starting at once: one wins,
    and neither ever reads half a file); True when this call made it."""
    temp = _temp_file(path, text)
    try:
        os.link(temp, path)
    except FileExistsError:
        return False
    finally:
        temp.unlink()
    _sync_dir(path.parent)
    return True


def _replace_file(path: Path, text: str) -> None:
    """Replaces ``path`` whole (a reader sees the old file or the new, never a mix)."""
    os.replace(_temp_file(path, text), path)
    _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- sealed values --------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """An encrypted column: each of its values is bound to its row (associated data)."""

    table: str
    name: str

    def aad(self, row: str) -> bytes:
        return f"rtserver\x00{VERSION}\x00{self.table}\x00{self.name}\x00{row}".encode()


def _wrap_aad(record: str, kid: str) -> bytes:
    return f"rtserver data key\x00{VERSION}\x00{record}\x00{kid}".encode()


def _wrap(kek: AESGCM, kid: str, record: str, key: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + kek.encrypt(nonce, key, _wrap_aad(record, kid))


class RecordKeys:
    """The data keys of one connection's records: made, wrapped, unwrapped and cached.

    Not thread-safe: its owner (a Store, the Outbox) calls it under the lock that guards
    its connection. A key is made inside a write transaction (BEGIN IMMEDIATE), so that a
    rotation's last check (also one) sees every key made under the old master key.
    """

    def __init__(self, keyring: Keyring, cache_size: int = CACHE_SIZE) -> None:
        self.keyring = keyring
        self._cache: OrderedDict[str, AESGCM] = OrderedDict()
        self._cache_size = cache_size

    def seal(self, db: Connection, record: str, column: Column, row: str, text: str) -> bytes:
        """``text`` sealed for ``column`` of ``row`` under the record's data key (made when
        the record has none)."""
        key = self._key(db, record, create=True)
        assert key is not None
        nonce = os.urandom(NONCE_BYTES)
        return bytes([VERSION]) + nonce + key.encrypt(nonce, text.encode(), column.aad(row))

    def open(
        self, db: Connection, record: str, column: Column, row: str, value: object
    ) -> str | None:
        """The text sealed in ``value``; None when the record's data key is gone (the
        record was erased: its data is unreadable by design). DecryptionFailed for a value
        that is not sealed, or fails its authentication."""
        if not isinstance(value, bytes):
            raise DecryptionFailed(
                f"{column.table}.{column.name} of {row} is not sealed ({type(value).__name__})"
            )
        if len(value) < 1 + NONCE_BYTES + 16 or value[0] != VERSION:
            raise DecryptionFailed(f"{column.table}.{column.name} of {row}: unknown format")
        nonce, sealed = value[1 : 1 + NONCE_BYTES], value[1 + NONCE_BYTES :]
        for attempt in range(2):
            key = self._key(db, record, create=False)
            if key is None:
                return None
            try:
                return key.decrypt(nonce, sealed, column.aad(row)).decode()
            except InvalidTag:
                # A cached key may be stale: the record erased and made again elsewhere.
                self.forget(record)
                if attempt:
                    raise DecryptionFailed(
                        f"{column.table}.{column.name} of {row} failed authentication: changed,"
                        " or moved from another row"
                    ) from None
        raise AssertionError("unreachable")

    def ensure(self, db: Connection, record: str) -> None:
        """Makes the record's data key unless it has one."""
        self._key(db, record, create=True)

    def load(self, db: Connection, records: Iterable[str]) -> None:
        """Unwraps the keys of ``records`` not cached yet, in few queries (for lists)."""
        wanted = [r for r in dict.fromkeys(records) if r not in self._cache]
        for start in range(0, len(wanted), 500):  # SQLite's bound parameters
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT record, kek_id, wrapped FROM data_keys WHERE record IN ({marks})", chunk
            ).fetchall()
            for record, kid, wrapped in rows:
                self._remember(record, self._unwrap(record, kid, wrapped))

    def present(self, db: Connection, records: Iterable[str]) -> set[str]:
        """Which of ``records`` still have a data key in the database; the cached keys of
        the others (erased by another connection) are forgotten."""
        wanted = list(dict.fromkeys(records))
        found: set[str] = set()
        for start in range(0, len(wanted), 500):  # SQLite's bound parameters
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(f"SELECT record FROM data_keys WHERE record IN ({marks})", chunk)
            found.update(row[0] for row in rows)
        for record in wanted:
            if record not in found:
                self.forget(record)
        return found

    def erase(self, db: Connection, record: str) -> None:
        """Deletes the record's data key (inside the caller's transaction)."""
        db.execute("DELETE FROM data_keys WHERE record = ?", (record,))
        self.forget(record)

    def forget(self, record: str) -> None:
        self._cache.pop(record, None)

    def _key(self, db: Connection, record: str, create: bool) -> AESGCM | None:
        cached = self._cache.get(record)
        if cached is not None:
            self._cache.move_to_end(record)
            return cached
        row = self._row(db, record)
        if row is not None:
            try:
                key = self._unwrap(record, row[0], row[1])
            except MasterKeyMissing:
                # Read just before a rotation re-wrapped it and retired that master key:
                # the row now names the new one.
                row = self._row(db, record)
                if row is None:
                    return None
                key = self._unwrap(record, row[0], row[1])
        elif not create:
            return None
        elif db.in_transaction:
            key = self._make(db, record)
        else:
            with write_transaction(db):
                key = self._make(db, record)
        self._remember(record, key)
        return key

    @staticmethod
    def _row(db: Connection, record: str) -> tuple[str, bytes] | None:
        row = db.execute(
            "SELECT kek_id, wrapped FROM data_keys WHERE record = ?", (record,)
        ).fetchone()
        return None if row is None else (str(row[0]), bytes(row[1]))

    def _make(self, db: Connection, record: str) -> AESGCM:
        """The record's key, made now unless another connection made it first."""
        row = self._row(db, record)
        if row is not None:
            return self._unwrap(record, row[0], row[1])
        kid, kek = self.keyring.current()
        key = AESGCM.generate_key(bit_length=8 * KEY_BYTES)
        db.execute(
            "INSERT INTO data_keys (record, kek_id, wrapped, created_at) VALUES (?, ?, ?, ?)",
            (record, kid, _wrap(kek, kid, record, key), time.time()),
        )
        return AESGCM(key)

    def _unwrap(self, record: str, kid: str, wrapped: bytes) -> AESGCM:
        return AESGCM(unwrap(self.keyring, record, kid, wrapped))

    def _remember(self, record: str, key: AESGCM) -> None:
        self._cache[record] = key
        self._cache.move_to_end(record)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def unwrap(keyring: Keyring, record: str, kid: str, wrapped: bytes) -> bytes:
    """The data key of ``record`` wrapped by master key ``kid``; MasterKeyMissing or
    DecryptionFailed when the keyring cannot open it."""
    kek = keyring.get(kid)
    try:
        return kek.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(record, kid))
    except InvalidTag:
        raise DecryptionFailed(
            f"the data key of {record} does not open with master key {kid} of"
            f" {keyring.source}: the wrong key under that id, or a changed data key"
        ) from None


def prepare(db: Connection, keyring: Keyring) -> None:
    """Makes the key tables, and checks that the keyring opens the database's data keys:
    a typed error now (MasterKeyMissing, DecryptionFailed) rather than at the first read."""
    engine.prepare_schema(db, lambda: db.executescript(SCHEMA))
    kids = [row[0] for row in db.execute("SELECT DISTINCT kek_id FROM data_keys")]
    for kid in kids:
        row = db.execute(
            "SELECT record, wrapped FROM data_keys WHERE kek_id = ? LIMIT 1", (kid,)
        ).fetchone()
        if row is not None:  # re-wrapped away meanwhile
            unwrap(keyring, row[0], kid, row[1])


def seal_table(
    db: Connection,
    table: str,
    columns: tuple[str, ...],
    seal_row: Callable[[Row], tuple[bytes, ...]],
    where: str = "1",
    batch: int = MIGRATION_BATCH,
) -> int:
    """Seals in place the rows of ``table`` an older release left in plaintext: every row
    matching ``where`` whose ``columns`` are not all BLOBs (NULL included) gets
    ``seal_row(row)`` (their sealed values, in order). Walks the table by rowid, ``batch``
    rows per write transaction, so a table of millions is read once and other processes
    write in between; each transaction reads its rows afresh, so two processes migrating
    at once never seal a value twice. Returns how many rows it sealed."""
    sets = ", ".join(f"{column} = ?" for column in columns)
    last, sealed = -(2**63), 0
    while True:
        with write_transaction(db):
            rows = db.execute(
                f"SELECT rowid AS _rowid, * FROM {table} WHERE rowid > ? AND ({where})"
                " ORDER BY rowid LIMIT ?",
                (last, batch),
            ).fetchall()
            if not rows:
                return sealed
            last = rows[-1]["_rowid"]
            for row in rows:
                if all(isinstance(row[column], bytes) for column in columns):
                    continue
                db.execute(
                    f"UPDATE {table} SET {sets} WHERE rowid = ?", (*seal_row(row), row["_rowid"])
                )
                sealed += 1


def migrated(db: Connection, name: str) -> bool:
    """Whether the plaintext migration ``name`` has run on this database."""
    row = db.execute("SELECT 1 FROM encryption_migrations WHERE name = ?", (name,)).fetchone()
    return row is not None


def mark_migrated(db: Connection, name: str) -> None:
    db.execute(
        "INSERT INTO encryption_migrations (name, at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (name, time.time()),
    )


# -- rotation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rotation:
    """What :func:`rotate` did."""

    current: str  # the master key every data key is wrapped by now
    rewrapped: int  # data keys re-wrapped
    retired: tuple[str, ...]  # master keys removed from the keyring file
    left: tuple[str, ...]  # keys no data key uses, left to the operator (RTSERVER_MASTER_KEY)

    def to_wire(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "rewrapped": self.rewrapped,
            "retired": list(self.retired),
            "unused": list(self.left),
        }


def rotate(
    db: Connection, keyring: Keyring, batch: int = ROTATE_BATCH, new_key: bool = True
) -> Rotation:
    """Re-wraps every data key of the database under a new current master key, while other
    processes go on reading and writing.

    With a keyring file: a new key is added and made current (``new_key``), the data keys
    are re-wrapped in write transactions of ``batch`` keys, and once none is wrapped by
    another key (checked in a write transaction, which any process making a data key also
    takes) the others leave the file. Processes that hold the file's old contents read it
    again when they meet the new id, or before they make a data key.

    With RTSERVER_MASTER_KEY (no file): the data keys move to its first key; the others are
    reported, for the operator to drop from the variable.
    """
    if keyring.path is None:
        return _rewrap_all(db, keyring, batch)
    with _rotation_lock(keyring.path):
        keyring.refresh(force=True)
        if keyring.current_id() is None:
            raise KeyringError(f"there is no keyring file {keyring.path} to rotate")
        if new_key:
            keys, _ = _read_file(keyring.path)
            key = new_master_key()
            keys[key_id(key)] = key
            _replace_file(keyring.path, _file_text(keys, key_id(key)))
            keyring.refresh(force=True)
        return _rewrap_all(db, keyring, batch)


def _rewrap_all(db: Connection, keyring: Keyring, batch: int) -> Rotation:
    kid, kek = keyring.current()
    rewrapped = 0
    while True:
        with write_transaction(db):
            rows = db.execute(
                "SELECT record, kek_id, wrapped FROM data_keys WHERE kek_id != ? LIMIT ?",
                (kid, batch),
            ).fetchall()
            for record, old_kid, wrapped in rows:
                key = unwrap(keyring, record, old_kid, wrapped)
                db.execute(
                    "UPDATE data_keys SET kek_id = ?, wrapped = ? WHERE record = ? AND kek_id = ?",
                    (kid, _wrap(kek, kid, record, key), record, old_kid),
                )
            rewrapped += len(rows)
            if rows:
                continue  # commits this batch: other processes write in between
            # None left. Retire the others while this transaction keeps every process from
            # making a data key under them (that takes the write lock, and reads the file).
            others = tuple(k for k in keyring.ids() if k != kid)
            if keyring.path is None or not others:
                return Rotation(kid, rewrapped, (), others)
            keys, _ = _read_file(keyring.path)
            _replace_file(keyring.path, _file_text({kid: keys[kid]}, kid))
            keyring.refresh(force=True)
            return Rotation(kid, rewrapped, others, ())


@contextmanager
def _rotation_lock(path: Path) -> Iterator[None]:
    """One rotation at a time per keyring file (an advisory lock on a file beside it)."""
    import fcntl

    fd = os.open(path.with_name(path.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def key_usage(db: Connection) -> dict[str, int]:
    """Data keys by the master key that wraps them."""
    rows = db.execute("SELECT kek_id, COUNT(*) FROM data_keys GROUP BY kek_id").fetchall()
    return {str(kid): int(count) for kid, count in rows}

"""HR accounts: org units, users, their second factors, browser login sessions and API
tokens, in the server's store (SQLite or PostgreSQL, ``engine.py``).

Secrets are never stored as given: passwords as Argon2id hashes (``accounts/passwords.py``),
recovery codes, login-session ids and API-token secrets as SHA-256 hashes (they are random,
so a plain hash is enough to make a stolen database useless for signing in). The TOTP
secrets, which must be read back, are sealed (``encryption.py``: AES-GCM under the data key
of rows of no session, wrapped by the keyring's master key). Account calls
are rare (a login, an admin's change, one lookup per HR request), so this store keeps its
own connection and lock beside the session store's, as the webhook outbox does.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rtserver.accounts.principal import ROOT_UNIT
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
)
from rtserver.store.engine import INTEGRITY_ERRORS, Connection, Row, StoreTarget
from rtserver.store.transactions import write_transaction

# A user's TOTP secret, active (totp_secret) or being enrolled (totp_pending): one label for
# both columns, as enrolment moves the value from one to the other.
TOTP = Column("users", "totp")  # row: the user id

_SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    parent TEXT REFERENCES units(id),
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    name TEXT NOT NULL DEFAULT '',
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    unit TEXT NOT NULL REFERENCES units(id),
    disabled INTEGER NOT NULL DEFAULT 0,
    require_totp INTEGER NOT NULL DEFAULT 0,
    totp_secret TEXT,
    totp_pending TEXT,
    totp_last_step INTEGER,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until REAL,
    created_at REAL NOT NULL,
    last_login_at REAL
);
CREATE TABLE IF NOT EXISTS recovery_codes (
    user_id TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    used_at REAL,
    PRIMARY KEY (user_id, code_hash)
);
CREATE TABLE IF NOT EXISTS login_sessions (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    enrolling INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    unit TEXT NOT NULL REFERENCES units(id),
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL,
    last_used_at REAL
);
"""

TOKEN_PREFIX = "rtk_"  # API tokens are "rtk_<id>.<secret>": never confused with the bootstrap key
LOGIN_IDLE_S = 2 * 3600.0  # a browser login unused this long is over (s)
LOGIN_MAX_S = 12 * 3600.0  # and every browser login is over after this (s)
ENROLLING_MAX_S = 15 * 60.0  # a login that must first enrol its second factor (s)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Unit:
    id: str
    name: str
    parent: str | None

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "parent": self.parent}


@dataclass(frozen=True)
class User:
    id: str
    username: str
    name: str
    role: str
    unit: str
    disabled: bool
    require_totp: bool  # set for this user (admins always need it: accounts/login.py)
    totp_enrolled: bool
    failed_logins: int
    locked_until: float | None
    created_at: float
    last_login_at: float | None

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "name": self.name,
            "role": self.role,
            "unit": self.unit,
            "disabled": self.disabled,
            "require_totp": self.require_totp,
            "totp_enrolled": self.totp_enrolled,
            "locked_until": self.locked_until,
            "created_at": self.created_at,
            "last_login_at": self.last_login_at,
        }


@dataclass(frozen=True)
class LoginSession:
    user: User
    csrf_token: str
    expires_at: float
    enrolling: bool  # signed in with a password only, to enrol a required second factor


@dataclass(frozen=True)
class ApiToken:
    id: str
    name: str
    role: str
    unit: str
    created_at: float
    created_by: str
    expires_at: float
    revoked_at: float | None
    last_used_at: float | None

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "unit": self.unit,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
        }


class AccountStore:
    """Units, users, second factors, login sessions and API tokens; thread-safe."""

    def __init__(self, target: StoreTarget, keyring: Keyring | None = None) -> None:
        if keyring is None:
            keyring = Keyring.from_file(default_keyring_path(target))
        self._keys = RecordKeys(keyring)
        self._db = engine.connect(target)
        self._lock = threading.Lock()
        with self._lock:
            db = self._db
            # CREATE ... IF NOT EXISTS on SQLite: safe in every process.
            engine.prepare_schema(db, lambda: db.executescript(_SCHEMA))
            prepare(db, keyring)
        self._seal_plaintext_totp()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO units (id, name, parent, created_at) VALUES (?, ?, NULL, ?)"
                " ON CONFLICT DO NOTHING",
                (ROOT_UNIT, "Headquarters", time.time()),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One write transaction under the lock (store/transactions.py)."""
        with self._lock, write_transaction(self._db):
            yield self._db

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self._lock:
            yield self._db

    # -- units ------------------------------------------------------------------------

    def add_unit(self, unit_id: str, name: str, parent: str) -> Unit:
        """A new unit under ``parent``. KeyError when the parent is no unit, ValueError when
        ``unit_id`` is taken."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM units WHERE id = ?", (parent,)).fetchone() is None:
                raise KeyError(parent)
            try:
                db.execute(
                    "INSERT INTO units (id, name, parent, created_at) VALUES (?, ?, ?, ?)",
                    (unit_id, name, parent, time.time()),
                )
            except INTEGRITY_ERRORS as exc:
                raise ValueError(f"there is already a unit {unit_id!r}") from exc
        return Unit(unit_id, name, parent)

    def units(self) -> list[Unit]:
        with self._reading() as db:
            rows = db.execute("SELECT id, name, parent FROM units ORDER BY created_at").fetchall()
        return [Unit(row["id"], row["name"], row["parent"]) for row in rows]

    def get_unit(self, unit_id: str) -> Unit | None:
        with self._reading() as db:
            row = db.execute(
                "SELECT id, name, parent FROM units WHERE id = ?", (unit_id,)
            ).fetchone()
        return Unit(row["id"], row["name"], row["parent"]) if row else None

    def scope_of(self, unit_id: str) -> frozenset[str]:
        """``unit_id`` and every unit below it."""
        with self._reading() as db:
            rows = db.execute(
                "WITH RECURSIVE below(id) AS (SELECT ? UNION"
                " SELECT units.id FROM units JOIN below ON units.parent = below.id)"
                " SELECT id FROM below",
                (unit_id,),
            ).fetchall()
        return frozenset(row["id"] for row in rows)

    # -- users ------------------------------------------------------------------------

    def add_user(
        self,
        username: str,
        name: str,
        password_hash: str,
        role: str,
        unit: str,
        require_totp: bool = False,
    ) -> User:
        """A new user. KeyError when the unit does not exist, ValueError when the username is
        taken."""
        user_id = uuid.uuid4().hex
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM units WHERE id = ?", (unit,)).fetchone() is None:
                raise KeyError(unit)
            try:
                db.execute(
                    "INSERT INTO users (id, username, name, password_hash, role, unit,"
                    " require_totp, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (user_id, username, name, password_hash, role, unit, require_totp, time.time()),
                )
            except INTEGRITY_ERRORS as exc:
                raise ValueError(f"there is already a user {username!r}") from exc
        user = self.get_user(user_id)
        assert user is not None
        return user

    def get_user(self, user_id: str) -> User | None:
        with self._reading() as db:
            row = db.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
        return _user(row) if row else None

    def find_user(self, username: str) -> User | None:
        with self._reading() as db:
            row = db.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
        return _user(row) if row else None

    def users(self, units: frozenset[str] | None = None) -> list[User]:
        """Every user, or those of ``units``."""
        with self._reading() as db:
            rows = db.execute("SELECT * FROM users ORDER BY username").fetchall()
        found = [_user(row) for row in rows]
        return found if units is None else [u for u in found if u.unit in units]

    def password_hash(self, user_id: str) -> str | None:
        with self._reading() as db:
            row = db.execute("SELECT password_hash FROM users WHERE id = ?", (user_id,)).fetchone()
        return row["password_hash"] if row else None

    def update_user(self, user_id: str, **fields: Any) -> User:
        """Sets some of: name, role, unit, disabled, require_totp, password_hash. Disabling
        a user or changing their password, role or unit ends their browser logins."""
        allowed = {"name", "role", "unit", "disabled", "require_totp", "password_hash"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)}")
        with self._transaction() as db:
            if (
                "unit" in fields
                and db.execute("SELECT 1 FROM units WHERE id = ?", (fields["unit"],)).fetchone()
                is None
            ):
                raise KeyError(fields["unit"])
            for column, value in fields.items():
                db.execute(f"UPDATE users SET {column} = ? WHERE id = ?", (value, user_id))
            if fields.keys() & {"role", "unit", "disabled", "password_hash"}:
                db.execute("DELETE FROM login_sessions WHERE user_id = ?", (user_id,))
            if "password_hash" in fields:
                db.execute(
                    "UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?",
                    (user_id,),
                )
        user = self.get_user(user_id)
        if user is None:
            raise KeyError(user_id)
        return user

    # -- failed logins and lockout ----------------------------------------------------

    def record_failure(self, user_id: str, max_failures: int, lockout_s: float) -> float | None:
        """Counts a failed login; at ``max_failures`` in a row the account is locked for
        ``lockout_s``. Returns the time it is locked until, or None."""
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "UPDATE users SET failed_logins = failed_logins + 1 WHERE id = ?", (user_id,)
            )
            row = db.execute("SELECT failed_logins FROM users WHERE id = ?", (user_id,)).fetchone()
            if row is None or row["failed_logins"] < max_failures:
                return None
            until = now + lockout_s
            db.execute(
                "UPDATE users SET locked_until = ?, failed_logins = 0 WHERE id = ?",
                (until, user_id),
            )
            return until

    def record_login(self, user_id: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE users SET failed_logins = 0, locked_until = NULL, last_login_at = ?"
                " WHERE id = ?",
                (time.time(), user_id),
            )

    # -- second factor ----------------------------------------------------------------

    def totp_state(self, user_id: str) -> tuple[str | None, str | None, int | None]:
        """(active secret, pending secret, last step used)."""
        with self._reading() as db:
            row = db.execute(
                "SELECT totp_secret, totp_pending, totp_last_step FROM users WHERE id = ?",
                (user_id,),
            ).fetchone()
            if row is None:
                return None, None, None
            active, pending = (
                None if value is None else self._keys.open(db, GLOBAL_RECORD, TOTP, user_id, value)
                for value in (row["totp_secret"], row["totp_pending"])
            )
        return active, pending, row["totp_last_step"]

    def set_pending_totp(self, user_id: str, secret: str) -> None:
        with self._transaction() as db:
            sealed = self._keys.seal(db, GLOBAL_RECORD, TOTP, user_id, secret)
            db.execute("UPDATE users SET totp_pending = ? WHERE id = ?", (sealed, user_id))

    def _seal_plaintext_totp(self) -> None:
        """Seals the TOTP secrets an earlier release stored in plaintext (once)."""
        if not engine.may_hold_plaintext(self._db):
            return
        with self._transaction() as db:
            if migrated(db, "accounts-v1"):
                return
            rows = db.execute(
                "SELECT id, totp_secret, totp_pending FROM users"
                " WHERE typeof(totp_secret) = 'text' OR typeof(totp_pending) = 'text'"
            ).fetchall()
            for user_id, *values in rows:
                db.execute(
                    "UPDATE users SET totp_secret = ?, totp_pending = ? WHERE id = ?",
                    (
                        *(
                            value
                            if not isinstance(value, str)
                            else self._keys.seal(db, GLOBAL_RECORD, TOTP, user_id, value)
                            for value in values
                        ),
                        user_id,
                    ),
                )
            mark_migrated(db, "accounts-v1")
        if rows:
            with self._lock:
                engine.scrub(self._db, None)

    def use_totp_step(self, user_id: str, step: int) -> bool:
        """Marks ``step`` used; False when it (or a later one) already was: a replay."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE users SET totp_last_step = ? WHERE id = ?"
                " AND (totp_last_step IS NULL OR totp_last_step < ?)",
                (step, user_id, step),
            )
        return cursor.rowcount == 1

    def activate_totp(self, user_id: str, step: int, recovery_hashes: list[str]) -> None:
        """The pending secret becomes the active one, with fresh recovery codes; every other
        browser login of the user ends."""
        with self._transaction() as db:
            db.execute(
                "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL,"
                " totp_last_step = ? WHERE id = ? AND totp_pending IS NOT NULL",
                (step, user_id),
            )
            db.execute("DELETE FROM recovery_codes WHERE user_id = ?", (user_id,))
            db.executemany(
                "INSERT INTO recovery_codes (user_id, code_hash) VALUES (?, ?)",
                [(user_id, code_hash) for code_hash in recovery_hashes],
            )

    def reset_totp(self, user_id: str) -> None:
        """Removes the second factor and its recovery codes, and ends the user's logins:
        their next login enrols a new one (when it is required)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE users SET totp_secret = NULL, totp_pending = NULL, totp_last_step = NULL"
                " WHERE id = ?",
                (user_id,),
            )
            db.execute("DELETE FROM recovery_codes WHERE user_id = ?", (user_id,))
            db.execute("DELETE FROM login_sessions WHERE user_id = ?", (user_id,))

    def use_recovery_code(self, user_id: str, code_hash: str) -> bool:
        """Spends a recovery code; False when it is unknown or already spent."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE recovery_codes SET used_at = ? WHERE user_id = ? AND code_hash = ?"
                " AND used_at IS NULL",
                (time.time(), user_id, code_hash),
            )
        return cursor.rowcount == 1

    def recovery_codes_left(self, user_id: str) -> int:
        with self._reading() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM recovery_codes WHERE user_id = ? AND used_at IS NULL",
                (user_id,),
            ).fetchone()
        return int(row[0])

    # -- browser login sessions -------------------------------------------------------

    def start_login(self, user_id: str, enrolling: bool) -> tuple[str, LoginSession]:
        """A new browser login: returns its secret id (the cookie's value, seen only here)
        and the session."""
        session_id = secrets.token_urlsafe(32)
        csrf_token = secrets.token_urlsafe(32)
        now = time.time()
        expires_at = now + (ENROLLING_MAX_S if enrolling else LOGIN_MAX_S)
        with self._transaction() as db:
            db.execute("DELETE FROM login_sessions WHERE expires_at < ?", (now,))
            db.execute(
                "INSERT INTO login_sessions (id_hash, user_id, csrf_token, created_at,"
                " expires_at, last_seen, enrolling) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_sha256(session_id), user_id, csrf_token, now, expires_at, now, enrolling),
            )
        user = self.get_user(user_id)
        assert user is not None
        return session_id, LoginSession(user, csrf_token, expires_at, enrolling)

    def login_session(self, session_id: str) -> LoginSession | None:
        """The live login behind a cookie: None when unknown, expired, idle too long, or its
        user is disabled. Each use moves its idle clock."""
        now = time.time()
        with self._transaction() as db:
            row = db.execute(
                "SELECT * FROM login_sessions WHERE id_hash = ?", (_sha256(session_id),)
            ).fetchone()
            if row is None:
                return None
            if row["expires_at"] < now or row["last_seen"] + LOGIN_IDLE_S < now:
                db.execute("DELETE FROM login_sessions WHERE id_hash = ?", (row["id_hash"],))
                return None
            if now - row["last_seen"] > 60:  # one write a minute at most per login
                db.execute(
                    "UPDATE login_sessions SET last_seen = ? WHERE id_hash = ?",
                    (now, row["id_hash"]),
                )
            user_row = db.execute("SELECT * FROM users WHERE id = ?", (row["user_id"],)).fetchone()
        if user_row is None or user_row["disabled"]:
            return None
        return LoginSession(
            _user(user_row), row["csrf_token"], row["expires_at"], bool(row["enrolling"])
        )

    def end_login(self, session_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM login_sessions WHERE id_hash = ?", (_sha256(session_id),))

    def end_logins_of(self, user_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM login_sessions WHERE user_id = ?", (user_id,))

    # -- API tokens -------------------------------------------------------------------

    def add_token(
        self, name: str, role: str, unit: str, expires_at: float, created_by: str
    ) -> tuple[str, ApiToken]:
        """A new API token: returns its secret (``rtk_<id>.<secret>``, seen only here) and
        its record. KeyError when the unit does not exist."""
        token_id = uuid.uuid4().hex[:16]
        secret = secrets.token_urlsafe(32)
        now = time.time()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM units WHERE id = ?", (unit,)).fetchone() is None:
                raise KeyError(unit)
            db.execute(
                "INSERT INTO api_tokens (id, name, secret_hash, role, unit, created_at,"
                " created_by, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (token_id, name, _sha256(secret), role, unit, now, created_by, expires_at),
            )
        token = ApiToken(token_id, name, role, unit, now, created_by, expires_at, None, None)
        return f"{TOKEN_PREFIX}{token_id}.{secret}", token

    def check_token(self, presented: str) -> ApiToken | None:
        """The live token ``presented`` is: None when malformed, unknown, wrong, expired or
        revoked."""
        if not presented.startswith(TOKEN_PREFIX):
            return None
        token_id, _, secret = presented[len(TOKEN_PREFIX) :].partition(".")
        if not token_id or not secret:
            return None
        now = time.time()
        with self._reading() as db:
            row = db.execute("SELECT * FROM api_tokens WHERE id = ?", (token_id,)).fetchone()
        if row is None or not hmac.compare_digest(row["secret_hash"], _sha256(secret)):
            return None
        if row["revoked_at"] is not None or row["expires_at"] < now:
            return None
        if row["last_used_at"] is None or now - row["last_used_at"] > 60:
            with self._transaction() as db:
                db.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", (now, token_id))
        return _token(row)

    def tokens(self) -> list[ApiToken]:
        with self._reading() as db:
            rows = db.execute("SELECT * FROM api_tokens ORDER BY created_at").fetchall()
        return [_token(row) for row in rows]

    def revoke_token(self, token_id: str) -> ApiToken | None:
        """Revokes a token (it stays listed, revoked); None when there is no such token."""
        with self._transaction() as db:
            db.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), token_id),
            )
            row = db.execute("SELECT * FROM api_tokens WHERE id = ?", (token_id,)).fetchone()
        return _token(row) if row else None


def _user(row: Row) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        name=row["name"],
        role=row["role"],
        unit=row["unit"],
        disabled=bool(row["disabled"]),
        require_totp=bool(row["require_totp"]),
        totp_enrolled=row["totp_secret"] is not None,
        failed_logins=int(row["failed_logins"]),
        locked_until=row["locked_until"],
        created_at=row["created_at"],
        last_login_at=row["last_login_at"],
    )


def _token(row: Row) -> ApiToken:
    return ApiToken(
        id=row["id"],
        name=row["name"],
        role=row["role"],
        unit=row["unit"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )

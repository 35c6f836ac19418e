"""A login, step by step: the password, the account's state, then its second factor.

The refusal says what to do next but never which part was wrong when that would help a guesser:
an unknown user and a wrong password get the same answer in the same time. Five failures in a
row (a wrong password or a wrong code) lock the account for 15 minutes; a locked account is
told so, with the time left, whatever is sent. A disabled account answers as a wrong password.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from rtserver.accounts import passwords, totp
from rtserver.errors import LockedOut, RtServerError, SecondFactorRequired, Unauthorized
from rtserver.store.accounts import AccountStore, User

MAX_FAILURES = 5  # failed logins in a row before the account is locked
LOCKOUT_S = 15 * 60.0  # how long it stays locked (s)
WRONG_CREDENTIALS = "wrong username or password"


@dataclass(frozen=True)
class LoginAttempt:
    username: str
    password: str
    totp_code: str = ""
    recovery_code: str = ""


@dataclass(frozen=True)
class LoggedIn:
    user: User
    enrolling: bool  # the account must enrol a second factor before anything else
    used_recovery_code: bool


class LoginRefused(Exception):
    """A refused login: the typed error to answer with, and whom it was about (for the audit
    log: a user's id, or None for an unknown username)."""

    def __init__(self, error: RtServerError, user_id: str | None, reason: str) -> None:
        super().__init__(error.detail)
        self.error = error
        self.user_id = user_id
        self.reason = reason  # for the audit log: a fixed word, never what was typed


def needs_second_factor(user: User, required_for_everyone: bool) -> bool:
    """Admins always need one; others when their account or the server says so."""
    return user.role == "admin" or user.require_totp or required_for_everyone


def log_in(accounts: AccountStore, attempt: LoginAttempt, required_for_everyone: bool) -> LoggedIn:
    """Checks ``attempt``; raises :class:`LoginRefused` with the answer to give."""
    user = accounts.find_user(attempt.username)
    stored_hash = accounts.password_hash(user.id) if user else None
    # Verified even for an unknown user (against a dummy hash): the same time either way.
    password_ok = passwords.verify_password(stored_hash, attempt.password)
    if user is None:
        raise LoginRefused(Unauthorized(WRONG_CREDENTIALS), None, "unknown_user")
    now = time.time()
    if user.locked_until is not None and user.locked_until > now:
        raise LoginRefused(_locked(user.locked_until - now), user.id, "locked")
    if not password_ok or user.disabled:
        _fail(accounts, user, "wrong_password" if not password_ok else "disabled")
    if passwords.needs_rehash(stored_hash or ""):
        accounts.update_user(user.id, password_hash=passwords.hash_password(attempt.password))
    secret, _, last_step = accounts.totp_state(user.id)
    if secret is None:
        accounts.record_login(user.id)
        return LoggedIn(user, needs_second_factor(user, required_for_everyone), False)
    if attempt.recovery_code:
        if not accounts.use_recovery_code(user.id, totp.hash_recovery_code(attempt.recovery_code)):
            _fail(accounts, user, "wrong_recovery_code")
        accounts.record_login(user.id)
        return LoggedIn(user, False, True)
    if not attempt.totp_code:
        raise LoginRefused(
            SecondFactorRequired("enter the 6-digit code from your authenticator app"),
            user.id,
            "totp_required",
        )
    step = totp.matching_step(secret, attempt.totp_code, last_step, now)
    if step is None or not accounts.use_totp_step(user.id, step):
        _fail(accounts, user, "wrong_totp")
    accounts.record_login(user.id)
    return LoggedIn(user, False, False)


def _fail(accounts: AccountStore, user: User, reason: str) -> None:
    locked_until = accounts.record_failure(user.id, MAX_FAILURES, LOCKOUT_S)
    if locked_until is not None:
        raise LoginRefused(_locked(locked_until - time.time()), user.id, reason)
    detail = "wrong code" if reason in ("wrong_totp", "wrong_recovery_code") else None
    raise LoginRefused(Unauthorized(detail or WRONG_CREDENTIALS), user.id, reason)


def _locked(remaining_s: float) -> LockedOut:
    minutes = max(1, math.ceil(remaining_s / 60))
    return LockedOut(
        f"too many failed logins: this account is locked for {minutes} more minute"
        f"{'s' if minutes > 1 else ''}; try again later or ask an admin",
        retry_after_s=max(1, math.ceil(remaining_s)),
    )

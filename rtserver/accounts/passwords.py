"""Password hashing with Argon2id (``argon2-cffi``'s defaults, RFC 9106's second
recommended profile: 64 MiB, 3 passes, 4 lanes).

A login's verification took 0.27 s on our shared 2-core test machine (and the same for an
unknown user), which is the point: a stolen database costs an attacker that much work per
guess per account. It runs in a thread, off the event loop.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12
MAX_LENGTH = 1024  # Argon2 takes any length; this bounds the work one request can ask for

_hasher = PasswordHasher()

# Verified against when a login names no such user, so that an unknown user takes as long to
# refuse as a wrong password (no user enumeration by timing).
_DUMMY_HASH = _hasher.hash("rtserver: no such user")


class WeakPassword(ValueError):
    """A new password that does not meet the policy; the message says why."""


def check_policy(password: str) -> None:
    """Raises :class:`WeakPassword` unless ``password`` is 12 to 1024 characters."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"a password has at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    """The Argon2id hash of a password that meets the policy (the encoded PHC string)."""
    check_policy(password)
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash``; None (no such user) takes as long."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """Whether a hash was made with weaker parameters than today's (rehash at login)."""
    return _hasher.check_needs_rehash(stored_hash)

"""Two-factor login: TOTP (RFC 6238, 30 s steps, 6 digits, via ``pyotp``) and one-time
recovery codes.

A code is accepted in the step it was made or the one before or after (a phone's clock may be
off by 30 s), and never twice: the last step used is stored, and a code from that step or an
earlier one is refused, so a code seen over a shoulder cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import pyotp
import segno

ISSUER = "rtserver"
STEP_S = 30
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread


def new_secret() -> str:
    """A new TOTP secret (base32, 160 bits as RFC 4226 recommends)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, username: str) -> str:
    """The ``otpauth://`` URI an authenticator app scans."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """The URI as a QR code in SVG (no inline style, so the pages' CSP allows it)."""
    svg: str = segno.make(uri, error="m").svg_inline(scale=5, border=4)
    return svg


def matching_step(secret: str, code: str, last_step: int | None, now: float) -> int | None:
    """The time step ``code`` belongs to (now, or one step either side), or None when it
    matches none or a step already used (``last_step`` or earlier)."""
    code = code.strip().replace(" ", "")
    if not (code.isdecimal() and len(code) == 6):
        return None
    # Any script's decimal digits as ASCII ones (a phone's keyboard may type "٣"):
    # hmac.compare_digest refuses to compare non-ASCII text (TypeError).
    code = "".join(str(int(digit)) for digit in code)
    totp = pyotp.TOTP(secret, interval=STEP_S)
    current = int(now // STEP_S)
    for step in (current - 1, current, current + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.at(step * STEP_S), code):
            return step
    return None


def now_code(secret: str, now: float | None = None) -> str:
    """The code an authenticator shows now (for tests and the CLI's self-check)."""
    return pyotp.TOTP(secret, interval=STEP_S).at(time.time() if now is None else now)


def new_recovery_codes() -> list[str]:
    """Ten one-time recovery codes, ``xxxxx-xxxxx`` (about 49 bits each)."""
    return [
        "-".join("".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(5)) for _ in range(2))
        for _ in range(RECOVERY_CODES)
    ]


def hash_recovery_code(code: str) -> str:
    """What is stored of a recovery code. Codes are random, so SHA-256 is enough; spaces,
    case and the dash are forgiven when typed."""
    normal = code.strip().lower().replace(" ", "").replace("-", "")
    return hashlib.sha256(normal.encode()).hexdigest()

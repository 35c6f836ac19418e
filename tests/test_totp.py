"""Second-factor codes (rtserver/accounts/totp.py ``matching_step``) under hypothesis: any
text a login form sends is a step or None, never an exception; the current code matches in
any script's decimal digits, as a phone keyboard may type it."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from rtserver.accounts import totp

SECRET = totp.new_secret()
NOW = 1_800_000_000.0  # a fixed instant (s): the properties do not depend on the clock
ZEROS = (0x0030, 0x0660, 0x06F0, 0x0966, 0xFF10)  # "0" in ASCII, Arabic-Indic, ..., fullwidth


def in_digits(code: str, zero: int) -> str:
    return "".join(chr(zero + int(d)) for d in code)


@settings(max_examples=500, deadline=None)
@given(
    code=st.text(max_size=20)
    | st.text(st.characters(categories=["Nd", "No"]), min_size=6, max_size=6)
    | st.builds(in_digits, st.text("0123456789", min_size=6, max_size=6), st.sampled_from(ZEROS)),
    last_step=st.none() | st.integers(0, 2**62),
)
def test_any_code_is_a_step_or_none(code: str, last_step: int | None) -> None:
    step = totp.matching_step(SECRET, code, last_step, NOW)
    current = int(NOW // totp.STEP_S)
    assert step is None or (current - 1 <= step <= current + 1 and (last_step or -1) < step)


def test_the_current_code_matches_in_any_digits() -> None:
    """Found by the property above: a code typed in Arabic-Indic digits made
    hmac.compare_digest raise TypeError (a 500 from POST /api/v1/login once the password
    was right); "²" is a digit to str.isdigit but no decimal one."""
    now = time.time()
    code = totp.now_code(SECRET, now)
    current = int(now // totp.STEP_S)
    for zero in ZEROS:
        assert totp.matching_step(SECRET, in_digits(code, zero), None, now) == current
    assert totp.matching_step(SECRET, "²" * 6, None, now) is None

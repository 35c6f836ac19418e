"""HR accounts on a real SQLite file and a fresh PostgreSQL database (``store_target``,
tests/conftest.py): passwords, the login steps, lockout, TOTP replay,
recovery codes, org-unit scope, browser logins and API tokens (rtserver/accounts/,
rtserver/store/accounts.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

from rtserver.accounts import passwords, totp
from rtserver.accounts.login import MAX_FAILURES, LoginAttempt, LoginRefused, log_in
from rtserver.accounts.principal import VIA_COOKIE, Principal
from rtserver.accounts.roles import Permission, allows
from rtserver.errors import LockedOut, SecondFactorRequired, Unauthorized
from rtserver.store import engine
from rtserver.store.accounts import AccountStore
from rtserver.store.encryption import Keyring
from rtserver.store.engine import StoreTarget

PASSWORD = "correct horse battery staple"


@pytest.fixture
def accounts(store_target: StoreTarget, keyring: Keyring) -> Iterator[AccountStore]:
    store = AccountStore(store_target, keyring)
    store.add_unit("north", "North region", "hq")
    store.add_unit("store-1", "Store 1", "north")
    store.add_unit("store-2", "Store 2", "north")
    store.add_unit("south", "South region", "hq")
    yield store
    store.close()


def add(accounts: AccountStore, username: str, role: str = "viewer", unit: str = "hq") -> str:
    return accounts.add_user(username, "", passwords.hash_password(PASSWORD), role, unit).id


def refused(accounts: AccountStore, attempt: LoginAttempt) -> LoginRefused:
    with pytest.raises(LoginRefused) as caught:
        log_in(accounts, attempt, required_for_everyone=False)
    return caught.value


def test_passwords_are_argon2id_and_checked() -> None:
    stored = passwords.hash_password(PASSWORD)
    assert stored.startswith("$argon2id$")
    assert passwords.verify_password(stored, PASSWORD)
    assert not passwords.verify_password(stored, PASSWORD + "!")
    assert not passwords.verify_password(None, PASSWORD)  # no such user: refused all the same
    with pytest.raises(passwords.WeakPassword):
        passwords.hash_password("short")


def test_scope_is_the_unit_and_everything_below(accounts: AccountStore) -> None:
    assert accounts.scope_of("north") == {"north", "store-1", "store-2"}
    assert accounts.scope_of("store-1") == {"store-1"}
    assert accounts.scope_of("hq") == {"hq", "north", "store-1", "store-2", "south"}
    viewer = Principal("u", "u", "viewer", "store-1", accounts.scope_of("store-1"), VIA_COOKIE, "x")
    assert viewer.sees("store-1") and not viewer.sees("store-2") and not viewer.sees(None)
    assert not viewer.sees("")  # "" is no unit (None is the root, for objects before units)


def test_roles_are_ordered() -> None:
    assert allows("admin", Permission.MANAGE) and allows("recruiter", Permission.VIEW)
    assert not allows("viewer", Permission.MANAGE)
    assert not allows("recruiter", Permission.ADMINISTER)
    assert not allows("nobody", Permission.VIEW)


def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(
    accounts: AccountStore,
) -> None:
    add(accounts, "ann")
    wrong = refused(accounts, LoginAttempt("ann", "not the password"))
    unknown = refused(accounts, LoginAttempt("nobody", PASSWORD))
    assert isinstance(wrong.error, Unauthorized) and isinstance(unknown.error, Unauthorized)
    assert wrong.error.detail == unknown.error.detail
    assert (wrong.reason, unknown.reason) == ("wrong_password", "unknown_user")
    assert log_in(accounts, LoginAttempt("ANN", PASSWORD), False).user.username == "ann"


def test_five_failures_lock_the_account_even_against_the_right_password(
    accounts: AccountStore,
) -> None:
    user_id = add(accounts, "ann")
    for _ in range(MAX_FAILURES - 1):
        assert isinstance(refused(accounts, LoginAttempt("ann", "nope")).error, Unauthorized)
    locked = refused(accounts, LoginAttempt("ann", "nope")).error
    assert isinstance(locked, LockedOut) and locked.retry_after_s > 14 * 60
    assert "locked for 15 more minutes" in locked.detail
    assert isinstance(refused(accounts, LoginAttempt("ann", PASSWORD)).error, LockedOut)
    # An admin's password reset unlocks it.
    accounts.update_user(user_id, password_hash=passwords.hash_password(PASSWORD))
    assert log_in(accounts, LoginAttempt("ann", PASSWORD), False).user.id == user_id


def test_a_disabled_user_cannot_sign_in(accounts: AccountStore) -> None:
    user_id = add(accounts, "ann")
    accounts.update_user(user_id, disabled=True)
    assert refused(accounts, LoginAttempt("ann", PASSWORD)).reason == "disabled"


def test_an_admin_without_a_second_factor_may_only_enrol(accounts: AccountStore) -> None:
    add(accounts, "root", role="admin")
    assert log_in(accounts, LoginAttempt("root", PASSWORD), False).enrolling
    add(accounts, "ann")
    assert not log_in(accounts, LoginAttempt("ann", PASSWORD), False).enrolling
    assert log_in(accounts, LoginAttempt("ann", PASSWORD), True).enrolling  # --totp-required all


def enrol(accounts: AccountStore, user_id: str) -> tuple[str, list[str]]:
    secret = totp.new_secret()
    accounts.set_pending_totp(user_id, secret)
    step = totp.matching_step(secret, totp.now_code(secret), None, time.time())
    assert step is not None
    codes = totp.new_recovery_codes()
    accounts.activate_totp(user_id, step, [totp.hash_recovery_code(c) for c in codes])
    return secret, codes


def test_totp_codes_are_needed_checked_and_never_replayed(accounts: AccountStore) -> None:
    user_id = add(accounts, "root", role="admin")
    secret, _ = enrol(accounts, user_id)
    assert isinstance(refused(accounts, LoginAttempt("root", PASSWORD)).error, SecondFactorRequired)
    assert refused(accounts, LoginAttempt("root", PASSWORD, "000000")).reason == "wrong_totp"
    # The enrolment used this step's code: it cannot log in again (replay).
    now_code = pyotp.TOTP(secret).now()
    assert refused(accounts, LoginAttempt("root", PASSWORD, now_code)).reason == "wrong_totp"
    # The next step's code is accepted (a clock 30 s ahead), once.
    later = pyotp.TOTP(secret).at(time.time() + totp.STEP_S)
    assert not log_in(accounts, LoginAttempt("root", PASSWORD, later), False).enrolling
    assert refused(accounts, LoginAttempt("root", PASSWORD, later)).reason == "wrong_totp"


def test_recovery_codes_work_once_each(accounts: AccountStore) -> None:
    user_id = add(accounts, "root", role="admin")
    _, codes = enrol(accounts, user_id)
    assert len(set(codes)) == 10
    typed = codes[3].upper().replace("-", " ")  # case, spaces and the dash forgiven
    assert log_in(accounts, LoginAttempt("root", PASSWORD, recovery_code=typed), False)
    assert accounts.recovery_codes_left(user_id) == 9
    again = refused(accounts, LoginAttempt("root", PASSWORD, recovery_code=codes[3]))
    assert again.reason == "wrong_recovery_code"


def test_reset_2fa_removes_the_factor_and_ends_logins(accounts: AccountStore) -> None:
    user_id = add(accounts, "root", role="admin")
    enrol(accounts, user_id)
    secret, _ = accounts.start_login(user_id, enrolling=False)
    accounts.reset_totp(user_id)
    assert accounts.login_session(secret) is None
    assert log_in(accounts, LoginAttempt("root", PASSWORD), False).enrolling


def test_browser_logins_end_on_logout_disable_and_password_change(
    accounts: AccountStore,
) -> None:
    user_id = add(accounts, "ann")
    first, session = accounts.start_login(user_id, enrolling=False)
    assert session.csrf_token and accounts.login_session(first) is not None
    assert accounts.login_session(first + "x") is None
    accounts.end_login(first)
    assert accounts.login_session(first) is None
    second, _ = accounts.start_login(user_id, enrolling=False)
    accounts.update_user(user_id, disabled=True)
    assert accounts.login_session(second) is None
    accounts.update_user(user_id, disabled=False)
    third, _ = accounts.start_login(user_id, enrolling=False)
    accounts.update_user(user_id, password_hash=passwords.hash_password(PASSWORD + "2"))
    assert accounts.login_session(third) is None


def test_api_tokens_are_hashed_scoped_expiring_and_revocable(
    accounts: AccountStore, store_target: StoreTarget
) -> None:
    secret, token = accounts.add_token("ats", "recruiter", "store-1", time.time() + 60, "admin")
    assert secret.startswith("rtk_")
    db = engine.connect(store_target)
    stored = [tuple(row) for row in db.execute("SELECT * FROM api_tokens").fetchall()]
    db.close()
    assert secret.split(".", 1)[1] not in repr(stored)  # only its hash is stored
    if isinstance(store_target, Path):  # nor is it anywhere in the files
        raw = store_target.read_bytes() + _wal(store_target.parent)
        assert secret.split(".", 1)[1].encode() not in raw
    found = accounts.check_token(secret)
    assert found is not None and (found.role, found.unit) == ("recruiter", "store-1")
    assert accounts.check_token(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert accounts.check_token("rtk_nonsense") is None
    expired, _ = accounts.add_token("old", "viewer", "hq", time.time() - 1, "admin")
    assert accounts.check_token(expired) is None
    accounts.revoke_token(token.id)
    assert accounts.check_token(secret) is None


def _wal(tmp_path: Path) -> bytes:
    wal = tmp_path / "db.sqlite3-wal"
    return wal.read_bytes() if wal.exists() else b""

"""Accounts against a running server: logins with cookies and CSRF, roles, org-unit scope
(404 outside it), API tokens, lockout, the bootstrap key's warning and `rtserver users`.

The org tree: hq -> north -> store-1, store-2. A session is made in each store with the
bootstrap key; users of each role sign in and see only what their unit holds.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pyotp
import pytest
import websockets
from server import ServerProcess

from rtserver.accounts.totp import STEP_S
from rtserver.store import Store

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"


@dataclass
class Org:
    server: ServerProcess
    sessions: dict[str, str]  # session id by unit


@dataclass
class Login:
    cookie: str  # the Cookie header (httpx keeps no Secure cookie over http)
    csrf: str

    def headers(self, csrf: bool = True) -> dict[str, str]:
        return {"Cookie": self.cookie, **({"X-CSRF-Token": self.csrf} if csrf else {})}


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    # Many logins from one address in a minute: the per-address login limit is raised here
    # and tested on its own below.
    options = ["--rate-login", "1000"]
    server = ServerProcess(tmp_path_factory.mktemp("accounts") / "data", options).start()
    hr = server.hr_headers
    base = server.base_url
    try:
        for unit, parent in (("north", "hq"), ("store-1", "north"), ("store-2", "north")):
            made = httpx.post(
                f"{base}/api/v1/units",
                json={"id": unit, "name": unit, "parent": parent},
                headers=hr,
            )
            assert made.status_code == 201, made.text
        for username, role, unit in (
            ("viewer1", "viewer", "store-1"),
            ("recruiter1", "recruiter", "store-1"),
            ("regional", "viewer", "north"),
            ("locked", "viewer", "store-2"),
        ):
            body = {"username": username, "password": PASSWORD, "role": role, "unit": unit}
            made = httpx.post(f"{base}/api/v1/users", json=body, headers=hr)
            assert made.status_code == 201, made.text
        sessions = {}
        for unit in ("store-1", "store-2"):
            made = httpx.post(
                f"{base}/api/v1/sessions", json={"candidate": f"C {unit}", "unit": unit}, headers=hr
            )
            assert made.status_code == 201 and made.json()["id"], made.text
            sessions[unit] = made.json()["id"]
        yield Org(server, sessions)
    finally:
        server.stop()


def login(org: Org, username: str, password: str = PASSWORD, **extra: str) -> Login:
    response = httpx.post(
        f"{org.server.base_url}/api/v1/login",
        json={"username": username, "password": password, **extra},
    )
    assert response.status_code == 200, response.text
    cookie = SimpleCookie(response.headers["set-cookie"])["rtserver_session"]
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"].lower() == "strict"
    return Login(f"rtserver_session={cookie.value}", response.json()["csrf_token"])


def test_the_bootstrap_key_works_and_every_answer_says_to_replace_it(org: Org) -> None:
    base = org.server.base_url
    listed = httpx.get(f"{base}/api/v1/sessions", headers=org.server.hr_headers)
    missing = httpx.get(f"{base}/api/v1/sessions/nope", headers=org.server.hr_headers)
    assert listed.status_code == 200 and missing.status_code == 404
    for response in (listed, missing):
        assert "bootstrap API key" in response.headers["warning"]
    me = login(org, "viewer1")
    assert "warning" not in httpx.get(f"{base}/api/v1/me", headers=me.headers()).headers


def test_a_store_viewer_sees_their_store_only(org: Org) -> None:
    base = org.server.base_url
    viewer = login(org, "viewer1")
    listed = httpx.get(f"{base}/api/v1/sessions", headers=viewer.headers(csrf=False)).json()
    assert [s["id"] for s in listed["sessions"]] == [org.sessions["store-1"]]
    own, other = org.sessions["store-1"], org.sessions["store-2"]
    assert httpx.get(f"{base}/api/v1/sessions/{own}", headers=viewer.headers()).status_code == 200
    for path in ("", "/report", "/audit", "/decision", "/explanation"):
        response = httpx.get(f"{base}/api/v1/sessions/{other}{path}", headers=viewer.headers())
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"] == "not_found"
    # The view is audit-logged with who: the user's id, role, unit and address.
    me = httpx.get(f"{base}/api/v1/me", headers=viewer.headers()).json()
    audit = httpx.get(f"{base}/api/v1/sessions/{own}/audit", headers=viewer.headers()).json()
    views = [e for e in audit["audit"] if e["action"] == "view_session"]
    assert views and (views[0]["user_id"], views[0]["role"], views[0]["unit"]) == (
        f"user:{me['id']}",
        "viewer",
        "store-1",
    )
    assert views[0]["client"] == "127.0.0.1"
    # Watching another store's interview: 404 before any SDP is read.
    watch = httpx.post(
        f"{base}/api/v1/sessions/{other}/watch", json={"sdp": "x", "type": "offer"},
        headers=viewer.headers(),
    )  # fmt: skip
    assert watch.status_code == 404


def test_a_regional_viewer_sees_every_store_below(org: Org) -> None:
    regional = login(org, "regional")
    listed = httpx.get(f"{org.server.base_url}/api/v1/sessions", headers=regional.headers()).json()[
        "sessions"
    ]
    assert {s["id"] for s in listed} == set(org.sessions.values())


async def test_the_signals_websocket_is_scoped_and_same_origin(org: Org) -> None:
    viewer = login(org, "viewer1")
    ws = f"ws://127.0.0.1:{org.server.port}/api/v1/sessions"
    origin = f"http://127.0.0.1:{org.server.port}"
    headers = {"Cookie": viewer.cookie}
    with pytest.raises(websockets.InvalidStatus) as other:
        async with websockets.connect(
            f"{ws}/{org.sessions['store-2']}/signals", additional_headers=headers, origin=origin
        ):
            pass
    assert other.value.response.status_code == 404
    with pytest.raises(websockets.InvalidStatus) as foreign:
        async with websockets.connect(
            f"{ws}/{org.sessions['store-1']}/signals",
            additional_headers=headers,
            origin="http://evil.example",
        ):
            pass
    assert foreign.value.response.status_code == 403
    async with websockets.connect(
        f"{ws}/{org.sessions['store-1']}/signals", additional_headers=headers, origin=origin
    ) as socket:
        assert socket.response.status_code == 101


def test_roles_decide_what_may_be_changed(org: Org) -> None:
    base = org.server.base_url
    viewer = login(org, "viewer1")
    refused = httpx.post(f"{base}/api/v1/sessions", json={}, headers=viewer.headers())
    assert refused.status_code == 403 and "viewer" in refused.json()["detail"]
    assert httpx.get(f"{base}/api/v1/users", headers=viewer.headers()).status_code == 403
    recruiter = login(org, "recruiter1")
    made = httpx.post(f"{base}/api/v1/sessions", json={}, headers=recruiter.headers())
    assert made.status_code == 201 and made.json()["id"]
    created = httpx.get(f"{base}/api/v1/sessions/{made.json()['id']}", headers=viewer.headers())
    assert created.json()["unit"] == "store-1"  # the recruiter's own unit
    elsewhere = httpx.post(
        f"{base}/api/v1/sessions", json={"unit": "store-2"}, headers=recruiter.headers()
    )
    assert elsewhere.status_code == 404  # a unit outside the scope is no unit at all
    other = org.sessions["store-2"]
    assert (
        httpx.delete(f"{base}/api/v1/sessions/{other}", headers=recruiter.headers()).status_code
        == 404
    )


def test_state_changes_from_a_browser_login_need_the_csrf_token(org: Org) -> None:
    base = org.server.base_url
    recruiter = login(org, "recruiter1")
    without = httpx.post(f"{base}/api/v1/sessions", json={}, headers=recruiter.headers(csrf=False))
    assert without.status_code == 403 and without.json()["error"] == "csrf_failed"
    wrong = httpx.post(
        f"{base}/api/v1/sessions", json={},
        headers={"Cookie": recruiter.cookie, "X-CSRF-Token": "forged"},
    )  # fmt: skip
    assert wrong.status_code == 403
    assert (
        httpx.post(f"{base}/api/v1/sessions", json={}, headers=recruiter.headers()).status_code
        == 201
    )


def test_logins_need_json_so_other_sites_cannot_post_one(org: Org) -> None:
    form = httpx.post(
        f"{org.server.base_url}/api/v1/login", data={"username": "viewer1", "password": PASSWORD}
    )
    assert form.status_code == 400 and "application/json" in form.json()["detail"]


def test_logout_ends_the_login(org: Org) -> None:
    base = org.server.base_url
    viewer = login(org, "viewer1")
    assert httpx.get(f"{base}/api/v1/me", headers=viewer.headers()).json()["role"] == "viewer"
    assert httpx.post(f"{base}/api/v1/logout", headers=viewer.headers()).status_code == 204
    assert httpx.get(f"{base}/api/v1/me", headers=viewer.headers()).status_code == 401
    assert httpx.get(f"{base}/api/v1/sessions", headers=viewer.headers()).status_code == 401


def test_repeated_failures_lock_the_account_and_are_audit_logged(org: Org) -> None:
    base = org.server.base_url
    answers = [
        httpx.post(f"{base}/api/v1/login", json={"username": "locked", "password": "wrong!"})
        for _ in range(6)
    ]
    assert [a.status_code for a in answers] == [401, 401, 401, 401, 429, 429]
    assert "locked for 15 more minutes" in answers[-1].json()["detail"]
    assert int(answers[-1].headers["retry-after"]) > 800
    right = httpx.post(f"{base}/api/v1/login", json={"username": "locked", "password": PASSWORD})
    assert right.status_code == 429
    store = Store(org.server.data_dir / "rtserver.sqlite3")
    try:
        entries = store.audit_log(None)
    finally:
        store.close()
    users = httpx.get(f"{base}/api/v1/users", headers=org.server.hr_headers).json()["users"]
    locked_id = next(u["id"] for u in users if u["username"] == "locked")
    failures = [e for e in entries if e["action"] == "login_failed"]
    assert len([e for e in failures if e["user_id"] == f"user:{locked_id}"]) == 7
    assert all(PASSWORD not in str(e) and "wrong!" not in str(e) for e in entries)


def test_api_tokens_act_in_their_unit_and_role_until_revoked(org: Org) -> None:
    base = org.server.base_url
    hr = org.server.hr_headers
    made = httpx.post(
        f"{base}/api/v1/tokens",
        json={"name": "ATS store 2", "role": "recruiter", "unit": "store-2", "expires_in_days": 30},
        headers=hr,
    )
    assert made.status_code == 201, made.text
    token = {"Authorization": f"Bearer {made.json()['token']}"}
    listed = httpx.get(f"{base}/api/v1/sessions", headers=token).json()["sessions"]
    assert org.sessions["store-2"] in {s["id"] for s in listed}
    assert org.sessions["store-1"] not in {s["id"] for s in listed}
    assert httpx.get(f"{base}/api/v1/tokens", headers=token).status_code == 403
    assert "token" not in httpx.get(f"{base}/api/v1/tokens", headers=hr).json()["tokens"][0]
    revoked = httpx.delete(f"{base}/api/v1/tokens/{made.json()['id']}", headers=hr)
    assert revoked.status_code == 204
    assert httpx.get(f"{base}/api/v1/sessions", headers=token).status_code == 401


def test_an_admin_enrols_totp_then_needs_it(org: Org) -> None:
    base = org.server.base_url
    body = {"username": "admin2", "password": PASSWORD, "role": "admin"}
    assert httpx.post(f"{base}/api/v1/users", json=body, headers=org.server.hr_headers).is_success
    first = httpx.post(f"{base}/api/v1/login", json={"username": "admin2", "password": PASSWORD})
    assert first.json()["enrol_totp"] is True
    enrolling = login(org, "admin2")
    # Until enrolled, nothing but enrolment is open to this login.
    assert httpx.get(f"{base}/api/v1/users", headers=enrolling.headers()).status_code == 403
    begun = httpx.post(f"{base}/api/v1/me/totp", headers=enrolling.headers()).json()
    assert begun["otpauth_uri"].startswith("otpauth://totp/") and "<svg" in begun["qr_svg"]
    secret = begun["secret"]
    confirmed = httpx.post(
        f"{base}/api/v1/me/totp/confirm",
        json={"code": pyotp.TOTP(secret).now()},
        headers=enrolling.headers(),
    )
    assert confirmed.status_code == 200 and len(confirmed.json()["recovery_codes"]) == 10
    password_only = httpx.post(
        f"{base}/api/v1/login", json={"username": "admin2", "password": PASSWORD}
    )
    assert password_only.status_code == 401 and password_only.json()["error"] == "totp_required"
    later = pyotp.TOTP(secret).at(time.time() + STEP_S)
    full = login(org, "admin2", totp=later)
    assert httpx.get(f"{base}/api/v1/users", headers=full.headers()).status_code == 200


def test_users_are_added_on_the_command_line_and_logins_are_rate_limited(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = subprocess.run(
        [sys.executable, "-m", "rtserver", "users", "add", "dana", "--role", "recruiter",
         "--data-dir", str(data)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    password = made.stdout.split("password (shown once): ")[1].strip()
    listed = subprocess.run(
        [sys.executable, "-m", "rtserver", "users", "list", "--json", "--data-dir", str(data)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert '"username": "dana"' in listed.stdout and password not in listed.stdout
    server = ServerProcess(data, ["--rate-login", "3"]).start()
    try:
        login = f"{server.base_url}/api/v1/login"
        response = httpx.post(login, json={"username": "dana", "password": password})
        assert response.status_code == 200 and response.json()["user"]["role"] == "recruiter"
        # Three logins a minute from one address: the fourth is refused before any check.
        statuses = [
            httpx.post(login, json={"username": f"guess{i}", "password": "x" * 12}).status_code
            for i in range(3)
        ]
        assert statuses == [401, 401, 429]
    finally:
        server.stop()

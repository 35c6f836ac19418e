"""End to end in a real browser: HR accounts on the login page, the observer and the jobs page.

Headless Debian Chromium, driven by Playwright as in ``test_browser_e2e.py``, against a real
server on loopback (plain HTTP on 127.0.0.1, which Chromium counts as a secure context, so it
keeps the ``Secure`` login cookie). Users and org units are made over the API with the
bootstrap key; everything after that is what a person does in the pages:

- an admin must enrol an authenticator at the first login (QR code, the secret to type, a
  code, the ten recovery codes shown once), then signs in with a code from a later 30 s step,
  and once with a recovery code, which then does not work again;
- a store viewer sees their own store's interviews and not another store's, even by URL (a
  not-found, as the API's 404), and may not create an interview (403 on the jobs page);
- after Sign out the cookie is gone: ``/api/v1/me`` answers 401 and the pages send to /login.

Every page runs under the server's Content-Security-Policy, and no violation or script error
may occur.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pyotp
import pytest
from server import ServerProcess
from test_browser_e2e import CHROMIUM, SCREEN, Problems, Screenshots, assert_security_headers
from test_jobs_browser_e2e import CHROMIUM_ARGS

pytestmark = pytest.mark.e2e

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")

JOB = Path(__file__).parent / "jobs" / "backend_engineer.json"
PASSWORD = "correct horse battery staple"
STEP_S = 30  # TOTP's time step (RFC 6238)
RECOVERY_CODE = re.compile(r"^[a-z2-9]{5}-[a-z2-9]{5}$")
FETCH_STATUS = "async (path) => (await fetch(path, {cache: 'no-store'})).status"
# Opens a websocket from the page (the cookie goes with it, same origin): "open" or "refused".
WEBSOCKET_OUTCOME = """(path) => new Promise((resolve) => {
    const socket = new WebSocket(`ws://${location.host}${path}`);
    socket.onopen = () => { socket.close(); resolve("open"); };
    socket.onclose = () => resolve("refused");
})"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("login-pages") / "data", options=["--emotion", "off"]
    ).start(timeout_s=120)
    # The org tree: headquarters (hq, the root) -> a region -> two stores.
    with httpx.Client(base_url=process.base_url, headers=process.hr_headers) as hr:
        for unit in (
            {"id": "emea", "name": "EMEA region", "parent": "hq"},
            {"id": "store-north", "name": "North store", "parent": "emea"},
            {"id": "store-south", "name": "South store", "parent": "emea"},
        ):
            made = hr.post("/api/v1/units", json=unit)
            assert made.status_code == 201, made.text
    yield process
    process.stop()
    assert "Traceback" not in process.log(), process.log()[-4000:]


def add_user(server: ServerProcess, username: str, role: str, unit: str, name: str) -> None:
    with httpx.Client(base_url=server.base_url, headers=server.hr_headers) as hr:
        made = hr.post(
            "/api/v1/users",
            json={
                "username": username,
                "password": PASSWORD,
                "role": role,
                "unit": unit,
                "name": name,
            },
        )
        assert made.status_code == 201, made.text


async def new_page(playwright: Any, problems: Problems) -> tuple[Any, Any]:
    browser = await playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
    )
    context = await problems.context(browser, viewport=SCREEN)
    return browser, await context.new_page()


async def sign_in(page: Any, username: str, password: str = PASSWORD) -> None:
    """Fills the login page's password step and submits it."""
    await page.wait_for_selector("#login:not([hidden])")
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#login-submit")


async def signed_in_as(page: Any, name: str, role: str, unit_name: str) -> None:
    """The header shows who is signed in, with Sign out (a browser login, not a key)."""
    await page.wait_for_selector(f"#whoami:not([hidden]) .who-unit:has-text('{unit_name}')")
    assert await page.inner_text("#whoami .who-name") == name
    assert await page.inner_text("#whoami .who-role") == role
    assert await page.locator("#sign-out").is_visible()
    assert await page.locator("#forget-key").is_hidden()


async def sign_out(page: Any) -> None:
    await page.click("#sign-out")
    await page.wait_for_url(re.compile(r"/login$"))
    await page.wait_for_selector("#login:not([hidden])")


def wrong_code(secret: str) -> str:
    """Six digits that are no code of the steps around now (each step's code differs)."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    near = {totp.at(now + k * STEP_S) for k in range(-2, 3)}
    return next(c for c in (str(d) * 6 for d in range(10)) if c not in near)


async def test_an_admin_enrols_totp_then_signs_in_with_a_code_and_once_with_a_recovery_code(
    server: ServerProcess,
) -> None:
    add_user(server, "ana", "admin", "emea", "Ana Admin")
    problems = Problems()
    shots = Screenshots("login-totp")
    async with playwright_api.async_playwright() as playwright:
        browser, page = await new_page(playwright, problems)
        try:
            # The observer without a login sends to the login page, and comes back after.
            await page.goto(f"{server.base_url}/observe")
            await page.wait_for_url(re.compile(r"/login\?next=%2Fobserve$"))
            await page.wait_for_selector("#login:not([hidden])")
            response = await page.request.get(f"{server.base_url}/login")
            assert_security_headers(response.headers)
            await problems.prove_csp_is_enforced(page)
            await shots.take(page, "login")

            # A wrong password says so, in words.
            await sign_in(page, "ana", "not the password at all")
            await page.wait_for_selector("#message:has-text('Wrong username or password')")

            # The first login of an admin must enrol an authenticator.
            await sign_in(page, "ana")
            await page.wait_for_selector("#enrol-step:not([hidden])")
            secret = (await page.inner_text("#secret")).replace(" ", "")
            assert re.fullmatch(r"[A-Z2-7]{32}", secret), secret
            # The QR code is an SVG in the SVG namespace (DOMParser'd, not innerHTML), drawn.
            namespace = await page.eval_on_selector("#qr svg", "svg => svg.namespaceURI")
            assert namespace == "http://www.w3.org/2000/svg"
            box = await page.locator("#qr svg").bounding_box()
            assert box is not None and box["width"] >= 150 and box["height"] >= 150, box
            link = await page.get_attribute("#otpauth-link", "href")
            assert link and link.startswith("otpauth://totp/") and f"secret={secret}" in link
            await shots.take(page, "enrol")

            # A wrong code is refused with a clear message; the right one turns 2FA on.
            await page.fill("#enrol-code", wrong_code(secret))
            await page.click("#enrol-submit")
            await page.wait_for_selector("#message:has-text('That code does not match')")
            enrol_step = int(time.time() // STEP_S)
            await page.fill("#enrol-code", pyotp.TOTP(secret).at(enrol_step * STEP_S))
            await page.click("#enrol-submit")
            await page.wait_for_selector("#codes-step:not([hidden])")
            assert await page.locator("#message").is_hidden()
            codes = await page.locator("#recovery-codes code").all_inner_texts()
            assert len(codes) == 10 and len(set(codes)) == 10, codes
            assert all(RECOVERY_CODE.match(c) for c in codes), codes
            await shots.take(page, "recovery-codes")
            await page.click("#codes-saved")

            # On to the observer, signed in; the cookie is HttpOnly, Secure and SameSite=Strict.
            await page.wait_for_url(re.compile(r"/observe$"))
            await signed_in_as(page, "Ana Admin", "admin", "EMEA region")
            await page.wait_for_selector("#list-view:not([hidden])")
            cookies = {c["name"]: c for c in await page.context.cookies()}
            session_cookie = cookies["rtserver_session"]
            assert session_cookie["httpOnly"] and session_cookie["secure"], session_cookie
            assert session_cookie["sameSite"] == "Strict", session_cookie
            assert "rtserver_session" not in await page.evaluate("() => document.cookie")
            await shots.take(page, "observer")
            await sign_out(page)

            # The second login asks for the code. A wrong one is refused; the code of a step
            # after the enrolment's is accepted (the enrolment's own step is spent).
            await sign_in(page, "ana")
            await page.wait_for_selector("#code-step:not([hidden])")
            await page.fill("#code", wrong_code(secret))
            await page.click("#code-submit")
            await page.wait_for_selector("#message:has-text('That code is not right')")
            while int(time.time() // STEP_S) <= enrol_step:
                await asyncio.sleep(0.5)
            code = pyotp.TOTP(secret).now()
            await page.fill("#code", code)
            await page.click("#code-submit")
            await page.wait_for_url(re.compile(r"/observe$"))
            await signed_in_as(page, "Ana Admin", "admin", "EMEA region")
            await sign_out(page)

            # The same code again (seen over a shoulder) does not sign in.
            await sign_in(page, "ana")
            await page.wait_for_selector("#code-step:not([hidden])")
            await page.fill("#code", code)
            await page.click("#code-submit")
            await page.wait_for_selector("#message:has-text('That code is not right')")

            # A recovery code signs in once, and says how many are left.
            await page.click("#use-recovery")
            await page.wait_for_selector("#recovery-step:not([hidden])")
            await page.fill("#recovery-code", codes[0])
            await page.click("#recovery-submit")
            await page.wait_for_selector("#recovered-step:not([hidden])")
            assert "You have 9 recovery codes left" in await page.inner_text("#codes-left")
            await shots.take(page, "recovered")
            await page.click("#recovered-continue")
            await page.wait_for_url(re.compile(r"/observe$"))
            await signed_in_as(page, "Ana Admin", "admin", "EMEA region")
            await sign_out(page)

            # ... and only once.
            await sign_in(page, "ana")
            await page.click("#use-recovery")
            await page.fill("#recovery-code", codes[0])
            await page.click("#recovery-submit")
            await page.wait_for_selector("#message:has-text('has been used already')")
            assert await page.locator("#recovery-step").is_visible()
            assert await page.evaluate(FETCH_STATUS, "/api/v1/me") == 401
            problems.assert_none()
        finally:
            await browser.close()


async def test_a_store_viewer_sees_only_their_store_and_cannot_create_interviews(
    server: ServerProcess,
) -> None:
    add_user(server, "sam", "viewer", "store-north", "Sam North")
    async with httpx.AsyncClient(base_url=server.base_url, headers=server.hr_headers) as hr:
        job = await hr.post("/api/v1/jobs?unit=store-north", json=json.loads(JOB.read_text()))
        assert job.status_code == 201, job.text
        job_id = job.json()["id"]
        made = {}
        for store, candidate in (("store-north", "Nora North"), ("store-south", "Sol South")):
            created = await hr.post(
                "/api/v1/sessions",
                json={"candidate": candidate, "unit": store, "questions": [{"text": "Hello?"}]},
            )
            assert created.status_code == 201, created.text
            made[store] = created.json()["id"]
        sessions_before = len((await hr.get("/api/v1/sessions")).json()["sessions"])
    north, south = made["store-north"], made["store-south"]

    problems = Problems()
    shots = Screenshots("login-scoping")
    async with playwright_api.async_playwright() as playwright:
        browser, page = await new_page(playwright, problems)
        try:
            # The other store's interview, by URL: the login, then a plain not-found.
            await page.goto(f"{server.base_url}/observe/{south}")
            await page.wait_for_url(re.compile(rf"/login\?next=%2Fobserve%2F{south}$"))
            await sign_in(page, "sam")
            await page.wait_for_url(re.compile(rf"/observe/{south}$"))
            await signed_in_as(page, "Sam North", "viewer", "North store")
            await page.wait_for_selector("#error:has-text('There is no interview with this id')")
            assert await page.inner_text("#status") == "Unknown session"
            assert await page.locator("#session-view").is_hidden()
            assert "Sol South" not in await page.inner_text("body")
            await shots.take(page, "other-store")
            # The API says the same with this login's cookie: 404 as for no session at all,
            # and its live signals are refused.
            assert await page.evaluate(FETCH_STATUS, f"/api/v1/sessions/{south}") == 404
            assert await page.evaluate(FETCH_STATUS, f"/api/v1/sessions/{south}/report") == 404
            outcome = await page.evaluate(WEBSOCKET_OUTCOME, f"/api/v1/sessions/{south}/signals")
            assert outcome == "refused"

            # The list holds the own store's interview only.
            await page.goto(f"{server.base_url}/observe")
            await page.wait_for_selector(f"#sessions-body tr[data-id='{north}']")
            assert await page.locator(f"#sessions-body tr[data-id='{south}']").count() == 0
            link = await page.get_attribute(f"#sessions-body tr[data-id='{north}'] a", "href")
            assert link == f"/observe/{north}", link  # no key in the link: the cookie goes

            # The own store's interview opens: its header, the live signals' websocket (with
            # the cookie, no ?token=) and the video's POST /watch (with the CSRF token: the
            # server answers "not live yet", not 403).
            await page.click(f"#sessions-body tr[data-id='{north}'] a")
            await page.wait_for_url(re.compile(rf"/observe/{north}$"))
            await page.wait_for_selector("#candidate-name:has-text('Nora North')")
            await page.wait_for_selector("#status:has-text('Connected, waiting for media')")
            await page.wait_for_selector("#video-state:has-text('Candidate not connected')")
            assert await page.evaluate(FETCH_STATUS, f"/api/v1/sessions/{north}") == 200
            await shots.take(page, "own-store")

            # The jobs page: the store's job is listed, but a viewer may not make an
            # interview for it; the server's 403 is shown.
            await page.goto(f"{server.base_url}/jobs")
            await page.wait_for_selector("body[data-view='jobs'][data-jobs='1']")
            await signed_in_as(page, "Sam North", "viewer", "North store")
            await page.select_option("#interview-job", job_id)
            await page.fill("#interview-candidate", "Not Allowed")
            await page.click("#interview-create")
            await page.wait_for_selector(
                "#interview-error:has-text('your role (viewer) may not do this')"
            )
            assert await page.locator("#interview-made").is_hidden()
            await shots.take(page, "viewer-jobs")
            # Without the CSRF token, the same POST with the cookie is refused before the
            # role is even looked at.
            refused = await page.evaluate(
                """async () => {
                    const r = await fetch("/api/v1/sessions", {
                        method: "POST",
                        headers: {"Content-Type": "application/json"},
                        body: JSON.stringify({candidate: "Forged"}),
                    });
                    return [r.status, (await r.json()).error];
                }"""
            )
            assert refused == [403, "csrf_failed"], refused
            problems.assert_none()
        finally:
            await browser.close()
    async with httpx.AsyncClient(base_url=server.base_url, headers=server.hr_headers) as hr:
        sessions = (await hr.get("/api/v1/sessions")).json()["sessions"]
    assert len(sessions) == sessions_before, sessions


async def test_sign_out_ends_the_login_and_the_pages_send_to_login(
    server: ServerProcess,
) -> None:
    add_user(server, "lee", "recruiter", "hq", "Lee Recruiter")
    async with httpx.AsyncClient(base_url=server.base_url, headers=server.hr_headers) as hr:
        job = await hr.post("/api/v1/jobs", json=json.loads(JOB.read_text()))
        assert job.status_code == 201, job.text
    problems = Problems()
    async with playwright_api.async_playwright() as playwright:
        browser, page = await new_page(playwright, problems)
        try:
            # A ?next= that leaves the site is not followed: the observer instead.
            await page.goto(f"{server.base_url}/login?next={quote('//example.com/x', safe='')}")
            await sign_in(page, "lee")
            await page.wait_for_url(re.compile(r"127\.0\.0\.1:\d+/observe$"))
            await signed_in_as(page, "Lee Recruiter", "recruiter", "Headquarters")
            # Signed in already, the login page goes straight on.
            await page.goto(f"{server.base_url}/login?next=%2Fjobs")
            await page.wait_for_url(re.compile(r"/jobs$"))
            await signed_in_as(page, "Lee Recruiter", "recruiter", "Headquarters")
            assert await page.evaluate(FETCH_STATUS, "/api/v1/me") == 200

            # Signing out and in again in a second tab replaces the cookie and its CSRF
            # token: the first tab's next POST fetches the new token and goes through.
            other = await page.context.new_page()
            await other.goto(f"{server.base_url}/observe")
            await sign_out(other)
            await sign_in(other, "lee")
            await other.wait_for_url(re.compile(r"/observe$"))
            await other.close()
            await page.select_option("#interview-job", job.json()["id"])
            await page.fill("#interview-candidate", "Second Tab")
            await page.click("#interview-create")
            await page.wait_for_selector("#interview-made:not([hidden])")
            assert await page.locator("#interview-error").is_hidden()

            await sign_out(page)
            assert await page.evaluate(FETCH_STATUS, "/api/v1/me") == 401
            names = [c["name"] for c in await page.context.cookies()]
            assert "rtserver_session" not in names, names
            await page.goto(f"{server.base_url}/observe")
            await page.wait_for_url(re.compile(r"/login\?next=%2Fobserve$"))
            await page.goto(f"{server.base_url}/jobs")
            await page.wait_for_url(re.compile(r"/login\?next=%2Fjobs$"))
            await page.wait_for_selector("#login:not([hidden])")
            problems.assert_none()
        finally:
            await browser.close()


async def test_five_wrong_passwords_lock_the_account_with_the_minutes_left(
    server: ServerProcess,
) -> None:
    add_user(server, "kim", "viewer", "store-south", "Kim South")
    problems = Problems()
    async with playwright_api.async_playwright() as playwright:
        browser, page = await new_page(playwright, problems)
        try:
            await page.goto(f"{server.base_url}/login")
            for _ in range(4):
                await sign_in(page, "kim", "a wrong password, again")
                await page.wait_for_selector("#message:has-text('Wrong username or password')")
                await page.evaluate("() => { document.getElementById('message').hidden = true; }")
            await sign_in(page, "kim", "a wrong password, again")
            await page.wait_for_selector("#message:has-text('locked for 15 more minutes')")
            # The right password now is still refused, with the same message.
            await page.evaluate("() => { document.getElementById('message').hidden = true; }")
            await sign_in(page, "kim")
            await page.wait_for_selector("#message:has-text('locked for 15 more minutes')")
            assert await page.evaluate(FETCH_STATUS, "/api/v1/me") == 401
            problems.assert_none()
        finally:
            await browser.close()

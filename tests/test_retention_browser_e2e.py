"""End to end in a real browser: the candidate page's notice of the automated assessment
(NYC Local Law 144) and the candidate's own data, downloaded and erased from the page.

Headless Debian Chromium, driven by Playwright as in ``test_browser_e2e.py``, against a real
server on loopback, every page under the server's Content-Security-Policy with no violation
or script error. The consent notice must name the tool, the job's competencies, how long
the data is kept and whom to ask for an alternative; once the interview is over, the page
must offer the candidate's data as a download and erase it on their confirmation, or say
plainly that a legal hold keeps it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server import ServerProcess
from test_browser_e2e import CHROMIUM, SCREEN, Problems, Screenshots, assert_security_headers

pytestmark = pytest.mark.e2e

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")

JOB = Path(__file__).parent / "jobs" / "backend_engineer.json"
CONTACT = "accommodations@example.com"
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    # Nothing may leave the machine: no background fetches, updates or QUIC probes.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    options = ["--retention-days", "90", "--alternative-process-contact", CONTACT]
    process = ServerProcess(tmp_path_factory.mktemp("notice") / "data", options=options)
    process.start()
    yield process
    process.stop()
    assert "Traceback" not in process.log(), process.log()[-4000:]


def hr_client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers=server.hr_headers, trust_env=False)


async def open_page(playwright: Any, problems: Problems, url: str) -> tuple[Any, Any]:
    browser = await playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
    )
    context = await problems.context(browser, viewport=SCREEN, accept_downloads=True)
    page = await context.new_page()
    response = await page.goto(url)
    assert response is not None and response.ok
    assert_security_headers(await response.all_headers())
    return browser, page


async def test_the_consent_notice_names_the_tool_what_it_assesses_and_the_contact(
    server: ServerProcess,
) -> None:
    with hr_client(server) as hr:
        body = json.loads(JOB.read_text())
        job = hr.post("/api/v1/jobs", json={**body, "retention_days": 30}).json()
        session = hr.post("/api/v1/sessions", json={"candidate": "Ada", "job": job["id"]}).json()
    problems = Problems()
    async with playwright_api.async_playwright() as playwright:
        browser, page = await open_page(playwright, problems, session["candidate_url"])
        try:
            await problems.prove_csp_is_enforced(page)
            await page.wait_for_selector("#aedt-competencies li", timeout=15_000)
            notice = await page.inner_text("#consent-aedt")
            assert "automated employment decision tool" in notice
            assert "spoken answers" in notice and body["title"] in notice
            names = await page.locator("#aedt-competencies li strong").all_inner_texts()
            assert names == [c["name"] for c in body["competencies"]]
            assert "alternative selection process or an accommodation" in notice
            contact = page.locator("#aedt-contact a")
            assert await contact.inner_text() == CONTACT
            assert await contact.get_attribute("href") == f"mailto:{CONTACT}"
            kept = await page.inner_text("#consent-retention")
            assert "30 days after the hiring team's decision" in kept, kept
            assert "legal hold" in kept
            assert await page.is_visible("#agree")  # nothing has started
            assert await page.is_hidden("#my-data")  # offered after the interview
            await Screenshots("retention_notice").take(page, "consent")
            problems.assert_none()
        finally:
            await browser.close()


async def test_the_candidate_downloads_then_erases_their_data(
    server: ServerProcess, tmp_path: Path
) -> None:
    with hr_client(server) as hr:
        session = hr.post("/api/v1/sessions", json={"candidate": "Bo Tester"}).json()
        assert hr.post(f"/api/v1/sessions/{session['id']}/end").status_code == 200
    shots = Screenshots("retention_my_data")
    problems = Problems()
    async with playwright_api.async_playwright() as playwright:
        browser, page = await open_page(playwright, problems, session["candidate_url"])
        try:
            # The interview is over: the page says so and offers the data.
            await page.wait_for_selector("#my-data:not([hidden])", timeout=15_000)
            assert "already been completed" in await page.inner_text("#error")
            assert "90 days after" in await page.inner_text("#my-data-retention")
            await shots.take(page, "offered")

            async with page.expect_download() as caught:
                await page.click("#download-data")
            download = await caught.value
            saved = tmp_path / "export.json"
            await download.save_as(saved)
            exported = json.loads(saved.read_text())
            assert exported["session"]["id"] == session["id"]
            assert exported["session"]["candidate"] == "Bo Tester"
            assert "final" in {m["kind"] for m in exported["messages"]}

            await page.click("#erase-data")
            await page.wait_for_selector("#erase-confirm:not([hidden])")
            await shots.take(page, "confirm")
            await page.click("#erase-confirm-no")  # a change of mind erases nothing
            assert await page.is_hidden("#erase-confirm")
            with hr_client(server) as hr:
                assert hr.get(f"/api/v1/sessions/{session['id']}").status_code == 200

            await page.click("#erase-data")
            await page.click("#erase-confirm-yes")
            await page.wait_for_selector("text=Your interview data has been erased.")
            assert await page.is_hidden("#my-data-actions")
            await shots.take(page, "erased")
            with hr_client(server) as hr:
                assert hr.get(f"/api/v1/sessions/{session['id']}").status_code == 404
            problems.assert_none()
        finally:
            await browser.close()


async def test_a_held_erasure_request_is_explained(server: ServerProcess) -> None:
    with hr_client(server) as hr:
        session = hr.post("/api/v1/sessions", json={"candidate": "Cy"}).json()
        sid = session["id"]
        assert hr.post(f"/api/v1/sessions/{sid}/end").status_code == 200
        hold = hr.put(f"/api/v1/sessions/{sid}/legal-hold", json={"reason": "Claim 99"})
        assert hold.status_code == 200
    problems = Problems()
    async with playwright_api.async_playwright() as playwright:
        browser, page = await open_page(playwright, problems, session["candidate_url"])
        try:
            await page.wait_for_selector("#my-data:not([hidden])", timeout=15_000)
            await page.click("#erase-data")
            await page.click("#erase-confirm-yes")
            await page.wait_for_selector("#my-data-status:has-text('legal hold')")
            status = await page.inner_text("#my-data-status")
            assert "erased as soon as the hold is lifted" in status and "Claim 99" not in status
            assert await page.is_hidden("#erase-data")
            assert await page.is_visible("#download-data")  # still theirs to download
            await Screenshots("retention_held").take(page, "held")
            problems.assert_none()
        finally:
            await browser.close()
    with hr_client(server) as hr:
        record = hr.get(f"/api/v1/sessions/{sid}").json()
    assert record["erasure_requested_at"] is not None

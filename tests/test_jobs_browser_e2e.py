"""End to end in a real browser: HR's jobs page and the observer's report for a job.

Headless Debian Chromium, driven by Playwright as in ``test_browser_e2e.py``, against a real
server on loopback: the job editor (weights that do not sum to 100 % block saving, a saved
job is what was typed, an edit is a new version, the server's problems are listed), a new
interview for a job, and the report of a job session (a bar per competency, the
recommendation in words, delivery for information, a person's decision). Every page runs
under the server's Content-Security-Policy, and no violation or script error may occur.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from media import JOB_ANSWER_SCRIPT, make_speech_wav
from peer import connect_peer, use_loopback_only, wait_open
from server import ServerProcess
from test_browser_e2e import CHROMIUM, SCREEN, Problems, Screenshots, assert_security_headers

pytestmark = pytest.mark.e2e

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")

JOB = Path(__file__).parent / "jobs" / "backend_engineer.json"
# Chromium's flags in test_browser_e2e.py, less the fake capture devices these pages never use.
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
REVIEW = "Review: a person looks again; not a rejection"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("jobs-pages") / "data").start()
    yield process
    process.stop()
    assert "Traceback" not in process.log(), process.log()[-4000:]


async def open_page(playwright: Any, problems: Problems, url: str) -> tuple[Any, Any]:
    browser = await playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
    )
    context = await problems.context(browser, viewport=SCREEN)
    page = await context.new_page()
    response = await page.goto(url)
    assert response is not None and response.ok
    assert_security_headers(await response.all_headers())
    return browser, page


async def fill_competency(page: Any, index: int, name: str, weight: str, skills: str) -> None:
    row = page.locator("#competencies .competency-row").nth(index)
    await row.locator(".c-name").fill(name)
    await row.locator(".c-weight").fill(weight)
    await row.locator(".c-description").fill(f"How well the candidate shows {name.lower()}.")
    for level in (1, 3, 5):
        await row.locator(f".c-anchor[data-level='{level}']").fill(f"{name}: level {level}.")
    await row.locator(".c-skills").fill(skills)


async def tick(page: Any, question: int, competency: str, on: bool = True) -> None:
    row = page.locator("#questions .question-row").nth(question)
    await row.locator(".q-targets label", has_text=competency).locator("input").set_checked(on)


async def test_the_job_editor_saves_versions_and_starts_interviews(server: ServerProcess) -> None:
    shots = Screenshots("jobs_editor")
    problems = Problems()
    async with playwright_api.async_playwright() as playwright:
        browser, page = await open_page(
            playwright, problems, f"{server.base_url}/jobs#token={server.api_key}"
        )
        try:
            await page.wait_for_selector("body[data-view='jobs'][data-jobs='0']")
            assert "#token" not in page.url  # the key left the address bar
            await problems.prove_csp_is_enforced(page)

            await page.fill("#job-title", "Support agent")
            await page.fill("#job-threshold", "60")
            await fill_competency(page, 0, "Customer focus", "60", "Zendesk, email")
            first = page.locator("#competencies .competency-row").first
            assert await first.locator(".c-id").input_value() == "customer_focus"
            await page.click("#add-competency")
            await fill_competency(page, 1, "Problem solving", "30", "")
            await page.locator("#questions .q-text").first.fill("Tell me about an angry customer.")
            await page.locator("#questions .q-seconds").first.fill("90")
            await tick(page, 0, "Customer focus")
            await page.click("#add-question")
            await page.locator("#questions .q-text").nth(1).fill("How do you find a fault?")
            await tick(page, 1, "Customer focus")
            await tick(page, 1, "Problem solving")

            # 60 % + 30 %: saving is blocked, and the page says why.
            total = page.locator("#weight-total")
            await total.wait_for(state="visible")
            assert "90 % of 100 %" in await total.inner_text()
            assert "must add up to 100 %" in await total.inner_text()
            assert await page.locator("#save-job").is_disabled()
            await shots.take(page, "weights-off")
            await page.locator("#competencies .c-weight").nth(1).fill("40")
            assert "must add up" not in await total.inner_text()
            assert await page.locator("#save-job").is_enabled()

            await page.click("#save-job")
            await page.wait_for_selector("body[data-jobs='1']")
            await page.wait_for_selector("#save-status:has-text('version 1')")
            row = page.locator("#jobs-body tr")
            assert "Support agent" in await row.inner_text()
            await shots.take(page, "saved")

            async with httpx.AsyncClient(
                base_url=server.base_url, headers=server.hr_headers, trust_env=False
            ) as hr:
                jobs = (await hr.get("/api/v1/jobs")).json()["jobs"]
                assert len(jobs) == 1
                job = jobs[0]
                assert job["title"] == "Support agent" and job["version"] == 1
                assert job["threshold"] == 60
                competencies = {c["id"]: c for c in job["competencies"]}
                assert set(competencies) == {"customer_focus", "problem_solving"}
                focus = competencies["customer_focus"]
                assert focus["name"] == "Customer focus"
                assert focus["weight"] == pytest.approx(0.6)
                assert competencies["problem_solving"]["weight"] == pytest.approx(0.4)
                assert focus["skills"] == ["Zendesk", "email"]
                assert set(focus["anchors"]) == {"1", "3", "5"}
                assert focus["anchors"]["3"] == "Customer focus: level 3."
                assert job["questions"] == [
                    {
                        "text": "Tell me about an angry customer.",
                        "seconds": 90,
                        "competencies": ["customer_focus"],
                    },
                    {
                        "text": "How do you find a fault?",
                        "seconds": 120,
                        "competencies": ["customer_focus", "problem_solving"],
                    },
                ]

                # Editing: a competency no question rates is refused by the server, whose
                # problems are listed; fixed, the job is saved as version 2.
                await row.get_by_role("button", name="Edit Support agent").click()
                await page.wait_for_selector("#editor-title:has-text('version 1')")
                assert await page.input_value("#job-title") == "Support agent"
                await tick(page, 1, "Problem solving", on=False)
                await page.click("#save-job")
                listed = page.locator("#job-problems li")
                await listed.first.wait_for()
                assert "problem_solving" in await listed.first.inner_text()
                assert "targeted by no question" in await listed.first.inner_text()
                await shots.take(page, "server-problems")
                await tick(page, 1, "Problem solving")
                await page.fill("#job-threshold", "65")
                await page.locator("#questions .q-text").nth(1).fill("How do you find a bug?")
                await page.click("#save-job")
                await page.wait_for_selector("#save-status:has-text('version 2')")
                assert await page.locator("#job-problems-box").is_hidden()
                await page.wait_for_selector("#jobs-body tr td:nth-child(2):text-is('2')")
                latest = (await hr.get(f"/api/v1/jobs/{job['id']}")).json()
                assert latest["version"] == 2 and latest["threshold"] == 65
                assert latest["questions"][1]["text"] == "How do you find a bug?"
                first_version = (await hr.get(f"/api/v1/jobs/{job['id']}?version=1")).json()
                assert first_version["threshold"] == 60

                # A new interview for the job: it takes the job's questions.
                await page.select_option("#interview-job", job["id"])
                await page.fill("#interview-candidate", "Ada Lovelace")
                await page.click("#interview-create")
                made = page.locator("#interview-made")
                await made.wait_for(state="visible")
                session_id = await made.get_attribute("data-session")
                assert session_id
                link = await page.locator("#interview-candidate-link").get_attribute("href")
                assert link and f"/candidate/{session_id}?token=" in link
                observe = await page.locator("#interview-observe-link").get_attribute("href")
                assert observe == f"/observe/{session_id}"
                await shots.take(page, "interview")
                session = (await hr.get(f"/api/v1/sessions/{session_id}")).json()
                assert session["candidate"] == "Ada Lovelace"
                assert session["job"] == job["id"] and session["job_version"] == 2
                assert session["questions"] == [
                    {"text": q["text"], "seconds": q["seconds"]} for q in latest["questions"]
                ]

            # The observer's nav leads here, and back.
            await page.click("#nav-sessions")
            await page.wait_for_selector("body[data-view='list']")
            await page.click("#nav-jobs")
            await page.wait_for_selector("body[data-view='jobs'][data-jobs='1']")
            problems.assert_none()
        finally:
            await browser.close()


async def test_the_report_of_a_job_session_and_a_decision(server: ServerProcess) -> None:
    shots = Screenshots("job_report")
    job_body = json.loads(JOB.read_text())
    async with httpx.AsyncClient(
        base_url=server.base_url, headers=server.hr_headers, trust_env=False
    ) as hr:
        job = (await hr.post("/api/v1/jobs", json=job_body)).json()
        made = await hr.post("/api/v1/sessions", json={"candidate": "Grace", "job": job["id"]})
        session_id = made.json()["id"]
        ended = await hr.post(f"/api/v1/sessions/{session_id}/end")
        assert ended.status_code == 200, ended.text

        problems = Problems()
        async with playwright_api.async_playwright() as playwright:
            browser, page = await open_page(
                playwright,
                problems,
                f"{server.base_url}/observe/{session_id}#token={server.api_key}",
            )
            try:
                await page.wait_for_selector("body[data-view='report']")
                bars = page.locator("#dimensions .competency")
                await bars.first.wait_for()
                assert await bars.count() == len(job_body["competencies"])
                for competency in job_body["competencies"]:
                    bar = page.locator(f"#dimensions [data-competency='{competency['id']}']")
                    assert await bar.locator(".dim-name").inner_text() == competency["name"]
                    weight = round(competency["weight"] * 100)
                    assert await bar.locator(".dim-weight").inner_text() == f"weight {weight}%"
                    assert await bar.locator(".not-answered").is_visible()
                    assert await bar.locator(".dim-bar[role='meter']").count() == 1
                facts = await page.locator("#report-facts").inner_text()
                assert REVIEW in facts
                assert "Backend software engineer (version 1)" in facts
                assert "70 / 100" in facts
                assert await page.inner_text("#score-label") == "job-fit score"

                delivery = page.locator("#delivery")
                assert await delivery.is_visible()
                assert "Delivery (for information)" in await delivery.inner_text()
                assert "0\u00a0%" in await page.inner_text("#delivery-weight")
                await shots.take(page, "report")

                # Advancing against "review" without a reason: the server refuses, and says why.
                decision = page.locator("#decision")
                assert await decision.is_visible()
                assert await page.locator("#decision-none").is_visible()
                await page.check("#decision-form input[value='advance']")
                assert await page.locator("#decision-reason-required").is_visible()
                await page.fill("#decision-reviewer", "Sam")
                await page.click("#decision-submit")
                refusal = page.locator("#decision-error")
                await refusal.wait_for(state="visible")
                assert "needs a reason" in await refusal.inner_text()
                assert await page.locator("#decision-list li").count() == 0

                await page.fill("#decision-reason", "A strong referral; worth a conversation.")
                await page.click("#decision-submit")
                await page.wait_for_selector("body[data-decisions='1']")
                listed = await page.locator("#decision-list li").inner_text()
                assert "Advance" in listed and "Sam" in listed
                assert "A strong referral; worth a conversation." in listed
                assert await refusal.is_hidden()
                await shots.take(page, "decided")
                problems.assert_none()
            finally:
                await browser.close()

        recorded = (await hr.get(f"/api/v1/sessions/{session_id}/decision")).json()
        assert [(d["decision"], d["reviewer"], d["reason"]) for d in recorded["decisions"]] == [
            ("advance", "Sam", "A strong referral; worth a conversation.")
        ]
        assert recorded["decisions"][0]["recommendation"] == "review"


async def test_a_quote_in_the_report_shows_its_moment(tmp_path: Path) -> None:
    """A real aiortc peer answers the first question with espeak speech; in the report, a
    competency's quote moves the charts' cursor to when it was said and marks the transcript
    line that holds it."""
    use_loopback_only()
    answer = make_speech_wav(tmp_path / "answer.wav", JOB_ANSWER_SCRIPT, voice="en-us+f2")
    server = ServerProcess(tmp_path / "data", transcribe=True).start()
    problems = Problems()
    try:
        async with httpx.AsyncClient(
            base_url=server.base_url, headers=server.hr_headers, trust_env=False, timeout=30.0
        ) as hr:
            job = (await hr.post("/api/v1/jobs", json=json.loads(JOB.read_text()))).json()
            made = await hr.post("/api/v1/sessions", json={"candidate": "Ada", "job": job["id"]})
            session = made.json()
            peer = await connect_peer(
                server.base_url,
                session["id"],
                session["join_token"],
                None,
                answer.path,
                client=hr,
                channels=("control",),
            )
            await wait_open(peer, "control")
            peer.channels["control"].send(json.dumps({"type": "question", "index": 0, "at": 0.0}))
            await peer.wait_media_ended(answer.duration_s + 15)
            await asyncio.sleep(1.0)
            await peer.close()
            final = None
            async with asyncio.timeout(90):
                while final is None:
                    report = await hr.get(f"/api/v1/sessions/{session['id']}/report")
                    final = report.json().get("final") if report.status_code == 200 else None
                    await asyncio.sleep(0.5)
        solving = final["competencies"]["problem_solving"]
        assert solving["answered"] and solving["evidence"], solving

        async with playwright_api.async_playwright() as playwright:
            browser, page = await open_page(
                playwright,
                problems,
                f"{server.base_url}/observe/{session['id']}#token={server.api_key}",
            )
            try:
                await page.wait_for_selector("body[data-view='report']")
                bar = page.locator("#dimensions [data-competency='problem_solving']")
                assert await bar.locator(".not-answered").count() == 0
                quote = bar.locator("button.quote").first
                await quote.wait_for()
                t = float(await quote.get_attribute("data-t") or "nan")
                assert t == pytest.approx(solving["evidence_times"][0]["start"])
                said = solving["evidence"][0]
                assert said in await quote.inner_text()
                await quote.click()
                await page.wait_for_selector("body[data-cursor-t]")
                assert float(await page.get_attribute("body", "data-cursor-t") or "nan") == t
                line = page.locator("#transcript-report .t-line[aria-current='time']")
                await line.wait_for()
                start = float(await line.get_attribute("data-start") or "nan")
                end = float(await line.get_attribute("data-end") or "nan")
                assert start - 0.05 <= t <= end, (start, t, end)
                assert said in await line.inner_text()
                cursor = await page.evaluate("() => window.rtObserverLayout.cursor()")
                assert cursor["t"] == t
                assert await page.locator("#cursor-readout").is_visible()
                await Screenshots("job_report_quote").take(page, "quote")
                problems.assert_none()
            finally:
                await browser.close()
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()[-4000:]


async def test_the_jobs_page_shows_a_jobs_bias_audit(tmp_path: Path) -> None:
    """The Audit button of a job with a hiring history: its tables and the charts with the
    0.8 line, the planted gap flagged, under the page's CSP (no inline style or script)."""
    from test_audit_api_e2e import planted_candidates

    from bench.hiring_history import job_body, seed_history
    from rtserver.store import Store

    data = tmp_path / "data"
    store = Store(data / "rtserver.sqlite3")
    job = store.save_job(job_body(), "hr@test")
    seed_history(store, job, planted_candidates())
    store.close()
    audited = ServerProcess(data).start()
    problems = Problems()
    shots = Screenshots("jobs-audit")
    try:
        async with playwright_api.async_playwright() as playwright:
            browser, page = await open_page(
                playwright, problems, f"{audited.base_url}/jobs#token={audited.api_key}"
            )
            await page.click(f"tr[data-job='{job.id}'] button:has-text('Audit')")
            await page.wait_for_selector("#audit-report svg.impact-chart", timeout=15_000)
            await shots.take(page, "jobs-audit")
            report = await page.inner_text("#audit-report")
            flagged = await page.locator("#audit-report tr.below").count()
            lines = await page.locator("#audit-report line.four-fifths").count()
            bar_fill = await page.evaluate(
                "getComputedStyle(document.querySelector('#audit-report rect.bar')).fill"
            )
            await page.fill("#audit-from", "2999-01-01")
            await page.click("#audit-run")
            await page.wait_for_selector("#audit-error:not([hidden])")
            refused = await page.inner_text("#audit-error")
            await browser.close()
    finally:
        audited.stop()
    problems.assert_none()
    assert "Female" in report and "Male" in report, report
    assert flagged >= 1 and lines >= 3  # women's ratio of 0.5; a chart per dimension
    # /audit.css loaded: the report's own colours (SVG's default fill is black).
    assert bar_fill in ("rgb(74, 120, 181)", "rgb(192, 57, 43)"), bar_fill
    assert "no decided, scored sessions" in refused

"""End to end in a real browser: headless Chromium runs the candidate and observer pages.

Chromium's fake capture devices play the generated face video and speech, so the whole path
is real: getUserMedia, the page's RTCPeerConnection, the server, the observer websocket.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from media import SpeechTrack
from peer import create_session
from server import ServerProcess

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")

if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)


def chromium_args(video: Path, audio: Path) -> list[str]:
    return [
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
        f"--use-file-for-fake-audio-capture={audio}",
        "--allow-loopback-in-peer-connection",
        # Nothing may leave the machine: no background fetches, updates or QUIC probes.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
    ]


QUESTIONS = [
    {"text": "Tell us about a project you are proud of", "seconds": 40},
    {"text": "What would you change about it now?", "seconds": 40},
]


async def launch(playwright: Any, video: Path, audio: Path, *extra: str) -> Any:
    return await playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[*chromium_args(video, audio), *extra],
        headless=True,
    )


async def test_interview_in_chromium_with_a_live_observer(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    """The candidate consents, answers two questions and finishes; an HR observer in a
    second context sees the relayed video and at least 10 live chart updates, then the
    report with the score."""
    server = ServerProcess(tmp_path / "data").start()
    errors: list[str] = []
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            session = await create_session(
                client, server.base_url, server.api_key, candidate="Ada", job="Engineer",
                questions=QUESTIONS,
            )  # fmt: skip
        async with playwright_api.async_playwright() as playwright:
            browser = await launch(playwright, face_video, speech_wav.path)
            candidate_context = await browser.new_context()
            await candidate_context.grant_permissions(["camera", "microphone"])
            observer_context = await browser.new_context()
            candidate = await candidate_context.new_page()
            observer = await observer_context.new_page()
            for page in (candidate, observer):
                page.on("pageerror", lambda error: errors.append(str(error)))

            # Consent first: nothing is captured before it.
            await candidate.goto(session["candidate_url"])
            consent = await candidate.inner_text("#consent")
            assert "not stored" in consent.lower() or "not recorded" in consent.lower(), consent
            assert "expression" in consent.lower() and "pace" in consent.lower(), consent
            assert await candidate.evaluate("document.querySelector('#preview').srcObject") is None
            await candidate.click("#agree")
            # Device check: a live preview and a moving microphone meter.
            await candidate.wait_for_function(
                "document.querySelector('#preview').videoWidth > 0", timeout=15_000
            )
            await candidate.wait_for_selector("#start:not([disabled])", timeout=15_000)
            await candidate.click("#start")
            await candidate.wait_for_function(
                "document.querySelector('#question-text').textContent.includes('proud of')",
                timeout=20_000,
            )

            await observer.goto(f"{server.base_url}/observe/{session['id']}#token={server.api_key}")
            # The relayed video plays in the observer, and frames advance.
            await observer.wait_for_function(
                "document.querySelector('#video').videoWidth > 0", timeout=30_000
            )
            first = await observer.evaluate("document.querySelector('#video').currentTime")
            await observer.wait_for_timeout(1500)
            later = await observer.evaluate("document.querySelector('#video').currentTime")
            assert later > first, (first, later)
            # What the charts took so far includes the backfill; live updates come on top.
            backfilled = await observer.evaluate("Number(document.body.dataset.chartUpdates || 0)")

            await candidate.wait_for_timeout(5000)
            await candidate.click("#next")
            await candidate.wait_for_function(
                "document.querySelector('#question-text').textContent.includes('change')",
                timeout=10_000,
            )
            assert "2" in await candidate.inner_text("#question-index")
            await observer.wait_for_function(
                f"Number(document.body.dataset.chartUpdates || 0) >= {backfilled + 10}",
                timeout=30_000,
            )
            await candidate.wait_for_timeout(3000)
            await candidate.click("#next")  # the last question's button finishes
            await candidate.wait_for_selector("#summary:not([hidden])", timeout=40_000)
            strengths = await candidate.inner_text("#strengths")
            summary_text = await candidate.inner_text("#summary")

            await observer.wait_for_selector("#report:not([hidden])", timeout=30_000)
            score_text = await observer.inner_text("#report-score")
            dimensions_text = await observer.inner_text("#dimensions")
            await browser.close()

        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            report = await client.get(
                f"{server.base_url}/api/v1/sessions/{session['id']}/report",
                headers=server.hr_headers,
            )
    finally:
        server.stop()

    assert errors == []
    assert report.status_code == 200, report.text
    final, signals = report.json()["final"], report.json()["signals"]
    assert final["end_reason"] == "ended_by_candidate"
    # The page shows the score rounded to a whole number (JavaScript rounds halves up).
    assert abs(float(score_text) - final["score"]) <= 0.5, (score_text, final["score"])
    assert "presence" in dimensions_text.lower()
    # The candidate sees strengths and things to work on, never the HR score.
    assert strengths.strip()
    assert f"{final['score']:.1f}" not in summary_text
    assert "/100" not in summary_text and "overall" not in summary_text.lower()
    # The page's question boundaries reached the server and the report.
    assert [s["t"] for s in signals] == list(range(len(signals)))
    asked = [s["question"] for s in signals if s.get("question") is not None]
    assert asked and asked[0] == 0 and asked[-1] == 1 and sorted(asked) == asked
    assert [q["index"] for q in final["questions"]] == [0, 1]
    assert final["questions"][1]["text"] == QUESTIONS[1]["text"]
    analysed = [s for s in signals if s["video"]["fps"] > 0]
    assert len(analysed) >= 5
    assert sum(s["video"]["face"] for s in analysed) / len(analysed) > 0.8
    assert any(s["audio"]["speech"] > 0.5 for s in signals)


async def test_candidate_page_explains_what_went_wrong(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    """A wrong link, a used link and a denied camera each get a clear message."""
    server = ServerProcess(tmp_path / "data").start()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            base, key = server.base_url, server.api_key
            session = await create_session(client, base, key, candidate="Bo")
            used = await create_session(client, base, key, candidate="Cy")
            ended = await client.post(f"{base}/api/v1/sessions/{used['id']}/end",
                                      headers=server.hr_headers)  # fmt: skip
            assert ended.status_code == 200
        async with playwright_api.async_playwright() as playwright:
            browser = await launch(playwright, face_video, speech_wav.path)
            page = await browser.new_page()
            await page.goto(f"{base}/candidate/{session['id']}?token=not-the-token")
            await page.wait_for_selector("#error:not([hidden])", timeout=10_000)
            assert "not valid" in (await page.inner_text("#error")).lower()
            await page.goto(used["candidate_url"])
            await page.wait_for_selector("#error:not([hidden])", timeout=10_000)
            assert "already" in (await page.inner_text("#error")).lower()
            await browser.close()
            # Without the fake-UI flag and with no permission granted, getUserMedia is
            # refused, as when a candidate clicks "Block".
            args = [a for a in chromium_args(face_video, speech_wav.path) if "fake-ui" not in a]
            denied = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=args, headless=True
            )
            page = await (await denied.new_context(permissions=[])).new_page()
            await page.goto(session["candidate_url"])
            await page.click("#agree")
            await page.wait_for_selector("#error:not([hidden])", timeout=15_000)
            message = (await page.inner_text("#error")).lower()
            assert "camera" in message or "microphone" in message, message
            await denied.close()
    finally:
        server.stop()

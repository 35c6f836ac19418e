"""End to end in a real browser: headless Chromium runs the candidate and observer pages.

Chromium's fake capture devices play the generated face video and speech, so the whole path
is real: getUserMedia, the page's RTCPeerConnection, the server, the observer websocket.
"""

from __future__ import annotations

import shutil
from pathlib import Path

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


async def test_candidate_and_observer_pages_in_chromium(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    server = ServerProcess(tmp_path / "data").start()
    errors: list[str] = []
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            session = await create_session(
                client,
                server.base_url,
                server.api_key,
                candidate="Ada",
                questions=[{"text": "Tell us about a project you are proud of", "seconds": 60}],
            )
        async with playwright_api.async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=chromium_args(face_video, speech_wav.path)
            )
            context = await browser.new_context()
            await context.grant_permissions(["camera", "microphone"])
            candidate = await context.new_page()
            observer = await context.new_page()
            for page in (candidate, observer):
                page.on("pageerror", lambda error: errors.append(str(error)))

            await candidate.goto(session["candidate_url"])
            assert "not recorded" in await candidate.inner_text("#consent")
            await candidate.click("#agree")
            await candidate.wait_for_selector("#connect:not([disabled])", timeout=10_000)
            assert "project you are proud of" in await candidate.inner_text("#questions")
            await candidate.click("#connect")
            await observer.goto(f"{session['observe_url']}#token={server.api_key}")
            # A few seconds of live signals, then the candidate hangs up.
            await observer.wait_for_function(
                "document.querySelectorAll('tbody tr').length >= 4", timeout=20_000
            )
            await candidate.click("#hangup")
            await observer.wait_for_selector("#final:not([hidden])", timeout=15_000)
            score_text = await observer.inner_text("#final-score")
            await candidate.wait_for_function(
                "document.querySelector('#status').textContent.toLowerCase().includes('ended')",
                timeout=10_000,
            )
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
    assert [s["t"] for s in signals] == list(range(len(signals)))
    analysed = [s for s in signals if s["video"]["fps"] > 0]
    assert len(analysed) >= 3
    assert sum(s["video"]["face"] for s in analysed) / len(analysed) > 0.8
    assert any(s["audio"]["speech"] > 0.5 for s in signals)

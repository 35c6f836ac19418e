"""End to end in a real browser: headless Chromium runs the candidate and observer pages.

Chromium's fake capture devices play the generated face video and speech, so the whole path
is real: getUserMedia, the page's RTCPeerConnection, the server, the observer websocket.

Every page runs under the server's Content-Security-Policy; each test records Chromium's
``securitypolicyviolation`` events and its console's CSP errors, and asserts there are none
(after checking, once, that an injected inline script is blocked and reported, so the
recorder is known to work). Screenshots of each step go to ``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from media import INTERVIEW_SCRIPT, SpeechTrack
from peer import connect_peer, create_session, end_session, use_loopback_only
from server import ServerProcess

from rtserver.store import Store

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")

if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SCREEN = {"width": 1280, "height": 900}  # the observer's window (CSS px)
NAVIGATION_TYPE = "() => performance.getEntriesByType('navigation')[0].type"  # "reload" after one
# A4's width less the observer's print margins (12 mm each side), in CSS pixels (96/in).
A4_PRINTABLE_PX = round((210 - 2 * 12) / 25.4 * 96)
WITHOUT_WEBSOCKETS = [
    sys.executable,
    str(Path(__file__).resolve().parent / "serve_without_websockets.py"),
]


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


async def consent_and_start(page: Any) -> None:
    """On the candidate page: consents, waits for the device check to pass, and starts the
    interview."""
    await page.click("#agree")
    await page.wait_for_selector("#start:not([disabled])", timeout=15_000)
    await page.click("#start")


# ------------------------------------------------------------------ what went wrong in pages

# Runs in every page before its own scripts (as a DevTools init script, outside the CSP).
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.__rtCspViolation(
    `${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`
  );
});
"""


@dataclass
class Problems:
    """What went wrong in the pages of the contexts made by :meth:`context`: uncaught script
    errors, CSP violation events, and CSP or Permissions-Policy errors on the console."""

    errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    async def context(self, browser: Any, **options: Any) -> Any:
        context = await browser.new_context(**options)
        await context.expose_binding(
            "__rtCspViolation", lambda source, text: self.violations.append(text)
        )
        await context.add_init_script(CSP_LISTENER)
        context.on("console", self._console)
        context.on("weberror", lambda error: self.errors.append(str(error.error)))
        return context

    def _console(self, message: Any) -> None:
        # CSP errors, and errors in the Permissions-Policy header (an unknown feature name).
        if re.search(r"Content.Security.Policy|Permissions.Policy", message.text, re.I):
            self.violations.append(f"console {message.type}: {message.text}")

    async def prove_csp_is_enforced(self, page: Any) -> None:
        """An inline script injected into the page must not run, and must be reported: the
        proof that the policy holds and that this recorder would see a violation."""
        before = len(self.violations)
        ran = await page.evaluate(
            """() => new Promise((resolve) => {
                 const script = document.createElement("script");
                 script.textContent = "window.__inlineRan = true";
                 document.body.append(script);
                 setTimeout(() => resolve(window.__inlineRan === true), 300);
               })"""
        )
        assert ran is False
        for _ in range(50):
            if len(self.violations) > before:
                break
            await asyncio.sleep(0.05)
        caught = self.violations[before:]
        assert any("script-src" in v for v in caught), caught
        del self.violations[before:]  # the one this check caused on purpose

    def assert_none(self) -> None:
        assert self.errors == [], self.errors
        assert self.violations == [], self.violations


def assert_security_headers(headers: dict[str, str]) -> None:
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp, csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert "camera=(self)" in headers["permissions-policy"]
    assert "microphone=(self)" in headers["permissions-policy"]


class Screenshots:
    """Full-page screenshots of one test's steps, numbered in order, in tests/artifacts/."""

    def __init__(self, name: str) -> None:
        self.folder = ARTIFACTS / name
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.count = 0

    async def take(self, page: Any, step: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{step}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path


def clock(seconds: float) -> str:
    """The observer page's m:ss, to the nearest second (halves up, as JavaScript rounds)."""
    s = math.floor(seconds + 0.5)
    return f"{s // 60}:{s % 60:02d}"


def pdf_pages(pdf: bytes) -> int:
    """Pages in a PDF Chromium wrote (its page objects, not the /Pages tree node)."""
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf))


# ------------------------------------------------------------------ tests


async def test_interview_in_chromium_with_a_live_observer(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    """The candidate consents, answers two questions and finishes; an HR observer in a
    second context sees the relayed video and at least 10 live chart updates, then the
    report with the score as soon as the final arrives on the websocket. Every step is
    screenshotted; the pages run under the CSP with no violation."""
    server = ServerProcess(tmp_path / "data").start()
    problems = Problems()
    shots = Screenshots("interview")
    watch_posts: list[float] = []
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            session = await create_session(
                client, server.base_url, server.api_key, candidate="Ada", job="Engineer",
                questions=QUESTIONS,
            )  # fmt: skip
        async with playwright_api.async_playwright() as playwright:
            browser = await launch(playwright, face_video, speech_wav.path)
            candidate_context = await problems.context(browser)
            await candidate_context.grant_permissions(["camera", "microphone"])
            observer_context = await problems.context(browser, viewport=SCREEN)
            candidate = await candidate_context.new_page()
            observer = await observer_context.new_page()
            observer.on(
                "request",
                lambda r: (
                    watch_posts.append(time.monotonic())
                    if r.method == "POST" and r.url.endswith("/watch")
                    else None
                ),
            )

            # Consent first: nothing is captured before it, and it says what is true.
            response = await candidate.goto(session["candidate_url"])
            assert_security_headers(await response.all_headers())
            await problems.prove_csp_is_enforced(candidate)
            consent = (await candidate.inner_text("#consent")).lower()
            assert "nothing is recorded" in consent, consent
            assert "turned recording on" not in consent and "unless" not in consent, consent
            assert "watch and listen to the interview live" in consent, consent
            assert "erase" in consent and "logged" in consent, consent
            assert "facial expression" in consent and "pace" in consent, consent
            assert await candidate.evaluate("document.querySelector('#preview').srcObject") is None
            await shots.take(candidate, "candidate-consent")
            await candidate.click("#agree")
            # Device check: a live preview and a moving microphone meter.
            await candidate.wait_for_function(
                "() => document.querySelector('#preview').videoWidth > 0", timeout=15_000
            )
            await candidate.wait_for_selector("#start:not([disabled])", timeout=15_000)
            await shots.take(candidate, "candidate-device-check")
            await candidate.click("#start")
            await candidate.wait_for_function(
                "() => document.querySelector('#question-text').textContent.includes('proud of')",
                timeout=20_000,
            )
            await shots.take(candidate, "candidate-interview")

            await observer.goto(f"{server.base_url}/observe/{session['id']}#token={server.api_key}")
            # The relayed video plays in the observer, and frames advance.
            await observer.wait_for_function(
                "() => document.querySelector('#video').videoWidth > 0", timeout=30_000
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
                "() => document.querySelector('#question-text').textContent.includes('change')",
                timeout=10_000,
            )
            assert "2" in await candidate.inner_text("#question-index")
            await observer.wait_for_function(
                f"() => Number(document.body.dataset.chartUpdates || 0) >= {backfilled + 10}",
                timeout=30_000,
            )
            # The expression tile names how clearly the model read it, never "% sure".
            await observer.wait_for_function(
                "() => /\\((clear|mixed|unclear)\\)/.test(document.querySelector('#now-emotion')"
                ".textContent)",
                timeout=10_000,
            )
            tile = await observer.inner_text("#now-emotion")
            assert "sure" not in tile and "%" not in tile, tile
            markers = await observer.evaluate("window.rtObserverLayout.markers()")
            await shots.take(observer, "observer-live")
            await candidate.wait_for_timeout(3000)
            await candidate.click("#next")  # the last question's button finishes
            finished_at = time.monotonic()
            await candidate.wait_for_selector("#summary:not([hidden])", timeout=40_000)
            # The candidate's own data: to download or erase, once the interview is over.
            await candidate.wait_for_selector("#my-data:not([hidden])", timeout=5_000)
            download = await candidate.get_attribute("#download-data", "href")
            assert download is not None and "/export?token=" in download, download
            await shots.take(candidate, "candidate-summary")
            strengths = await candidate.inner_text("#strengths")
            summary_text = await candidate.inner_text("#summary")

            # The report replaces the live view without a reload, from the websocket's final.
            await observer.wait_for_selector("#report:not([hidden])", timeout=30_000)
            report_after_s = time.monotonic() - finished_at
            ws_attempts = await observer.evaluate("Number(document.body.dataset.wsAttempts)")
            navigations = await observer.evaluate(NAVIGATION_TYPE)
            score_text = await observer.inner_text("#report-score")
            dimensions_text = await observer.inner_text("#dimensions")
            breakdown_text = await observer.inner_text("#questions-breakdown")
            async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
                record = (
                    await client.get(
                        f"{server.base_url}/api/v1/sessions/{session['id']}",
                        headers=server.hr_headers,
                    )
                ).json()
            length = clock(record["ended_at"] - record["started_at"])
            await observer.wait_for_function(
                "(length) => [...document.querySelectorAll('#report-facts div')].some("
                "(d) => d.textContent.startsWith('Length') && d.textContent.endsWith(length))",
                arg=length,
                timeout=10_000,
            )
            report_shown_at = time.monotonic()
            await shots.take(observer, "observer-report")

            # Printed: the charts take the page's width and share one page. On paper the
            # layout is as wide as the printable area: A4 less the page's 12 mm margins.
            pdf = await observer.pdf(format="A4", print_background=True)
            (shots.folder / "observer-report.pdf").write_bytes(pdf)
            await observer.set_viewport_size({"width": A4_PRINTABLE_PX, "height": 1000})
            await observer.emulate_media(media="print")
            await observer.wait_for_timeout(500)
            print_layout = await observer.evaluate("window.rtObserverLayout.print()")
            await shots.take(observer, "observer-report-print")
            await observer.emulate_media(media="screen")
            await observer.set_viewport_size(SCREEN)

            # The list shows the same length as the report.
            await observer.wait_for_timeout(4000)  # /watch would have been retried by now
            await observer.click("#nav-sessions")
            row = f"#sessions-body tr[data-id='{session['id']}']"
            await observer.wait_for_selector(row, timeout=10_000)
            list_length = await observer.inner_text(f"{row} .duration")
            await shots.take(observer, "observer-list")
            await browser.close()

        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            report = await client.get(
                f"{server.base_url}/api/v1/sessions/{session['id']}/report",
                headers=server.hr_headers,
            )
    finally:
        server.stop()

    problems.assert_none()
    assert report.status_code == 200, report.text
    final, signals = report.json()["final"], report.json()["signals"]
    assert final["end_reason"] == "ended_by_candidate"
    # The report came live: one websocket, no reload, within seconds of the end; then no
    # more /watch tries.
    assert ws_attempts == 1 and navigations == "navigate", (ws_attempts, navigations)
    assert report_after_s < 15, report_after_s
    assert [t for t in watch_posts if t > report_shown_at] == []
    # One length, one rounding: the list and the report agree with the record.
    assert list_length == length, (list_length, length)
    # The page shows the score rounded to a whole number (JavaScript rounds halves up).
    assert abs(float(score_text) - final["score"]) <= 0.5, (score_text, final["score"])
    assert "presence" in dimensions_text.lower()
    speaking = final["dimensions"]["speaking"]["evidence"]
    assert speaking in dimensions_text and "speech time" in speaking.lower()
    assert "%" in breakdown_text and " s (" in breakdown_text, breakdown_text
    # Question markers sit in their own band above the plot, clear of every axis label.
    assert any(chart["labels"] for chart in markers), markers
    for chart in markers:
        for label in chart["labels"]:
            assert label["bottom"] <= chart["plotTop"], chart
            assert chart["plotLeft"] <= label["left"] and label["right"] <= chart["plotRight"]
    # Printed: every chart as wide as the page's printable area, the whole report on at most
    # two A4 pages, the charts together on the second; a transcript, if any, after them (this
    # short one on one page).
    assert all(w >= 0.95 * print_layout["printWidth"] for w in print_layout["chartWidths"])
    assert pdf_pages(pdf) <= (3 if final.get("transcript") else 2), pdf_pages(pdf)
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
    problems = Problems()
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
            page = await (await problems.context(browser)).new_page()
            await page.goto(f"{base}/candidate/{session['id']}?token=not-the-token")
            await page.wait_for_selector("#error:not([hidden])", timeout=10_000)
            assert "not valid" in (await page.inner_text("#error")).lower()
            assert await page.is_hidden("#my-data")  # nothing is offered to a wrong token
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
            page = await (await problems.context(denied, permissions=[])).new_page()
            await page.goto(session["candidate_url"])
            await page.click("#agree")
            await page.wait_for_selector("#error:not([hidden])", timeout=15_000)
            message = (await page.inner_text("#error")).lower()
            assert "camera" in message or "microphone" in message, message
            await denied.close()
    finally:
        server.stop()
    problems.assert_none()


async def test_observer_copes_with_a_server_that_refuses_websockets(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    """Issue 12, part 0, from the observer's side: uvicorn without a WebSocket library
    answers 404 to the signals websocket. The page says so, stops after a bounded number of
    tries (no loop), shows the report when the interview ends without a reload, and stops
    POSTing /watch once it has ended."""
    use_loopback_only()
    server = ServerProcess(tmp_path / "data", program=WITHOUT_WEBSOCKETS).start()
    problems = Problems()
    shots = Screenshots("observer-without-websockets")
    watch_posts: list[float] = []
    sockets: list[str] = []
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            session = await create_session(
                client, server.base_url, server.api_key, candidate="Di", questions=QUESTIONS
            )
        async with playwright_api.async_playwright() as playwright:
            browser = await launch(playwright, face_video, speech_wav.path)
            observer = await (await problems.context(browser)).new_page()
            observer.on("websocket", lambda socket: sockets.append(socket.url))
            observer.on(
                "request",
                lambda r: (
                    watch_posts.append(time.monotonic())
                    if r.method == "POST" and r.url.endswith("/watch")
                    else None
                ),
            )
            await observer.goto(f"{server.base_url}/observe/{session['id']}#token={server.api_key}")
            peer = await connect_peer(
                server.base_url, session["id"], session["join_token"], face_video,
                speech_wav.path, channels=["control"],
            )  # fmt: skip
            try:
                await peer.wait_connected()
                # The page gives the websocket up with a clear status, and says why.
                await observer.wait_for_function(
                    "() => document.body.dataset.signals === 'unavailable'", timeout=40_000
                )
                status = await observer.inner_text("#status")
                error = await observer.inner_text("#error")
                await shots.take(observer, "observer-signals-unavailable")
                await asyncio.sleep(3)
            finally:
                async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
                    token = session["join_token"]
                    ended = await end_session(client, server.base_url, session["id"], token)
                    # 409: the server ended it already (its media ran out long ago).
                    assert ended.status_code in (200, 409), ended.text
                ended_at = time.monotonic()
                await peer.close()
            # The report appears over REST, without a reload.
            await observer.wait_for_selector("#report:not([hidden])", timeout=20_000)
            report_after_s = time.monotonic() - ended_at
            report_shown_at = time.monotonic()
            await shots.take(observer, "observer-report")
            tries_then = len(sockets)
            await observer.wait_for_timeout(8000)
            navigations = await observer.evaluate(NAVIGATION_TYPE)
            await browser.close()
    finally:
        server.stop()
    problems.assert_none()
    assert "unavailable" in status.lower(), status
    assert "websocket" in error.lower() and "report" in error.lower(), error
    assert 1 <= len(sockets) <= 5 and len(sockets) == tries_then, sockets
    assert report_after_s < 12, report_after_s
    assert navigations == "navigate"
    assert [t for t in watch_posts if t > report_shown_at] == [], watch_posts


async def test_observer_takes_a_key_added_to_the_url_later(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    """HR opens /observe with no key and then adds #token= in the same tab: the list opens
    at once, and the key leaves the address bar. The home page links to the observer."""
    server = ServerProcess(tmp_path / "data").start()
    problems = Problems()
    shots = Screenshots("observer-key")
    try:
        async with playwright_api.async_playwright() as playwright:
            browser = await launch(playwright, face_video, speech_wav.path)
            page = await (await problems.context(browser)).new_page()
            home = await page.goto(server.base_url + "/")
            assert_security_headers(await home.all_headers())
            assert "text/html" in (await home.all_headers())["content-type"]
            await shots.take(page, "home")
            await page.click("a[href='/observe']")
            await page.wait_for_selector("#login:not([hidden])", timeout=10_000)
            await problems.prove_csp_is_enforced(page)
            await page.evaluate(f"location.hash = '#token={server.api_key}'")
            await page.wait_for_selector("#list-view:not([hidden])", timeout=10_000)
            await page.wait_for_function(
                "() => document.querySelector('#list-count').textContent.includes('interview')",
                timeout=10_000,
            )
            url = page.url
            await shots.take(page, "observer-list")
            await browser.close()
    finally:
        server.stop()
    problems.assert_none()
    assert server.api_key not in url and url.endswith("/observe"), url


async def test_consent_leaves_expression_out_when_emotion_is_off(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    """With --emotion off, the consent does not say that expression is analysed."""
    server = ServerProcess(tmp_path / "data", options=["--emotion", "off"]).start()
    problems = Problems()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            session = await create_session(client, server.base_url, server.api_key)
        async with playwright_api.async_playwright() as playwright:
            browser = await launch(playwright, face_video, speech_wav.path)
            page = await (await problems.context(browser)).new_page()
            await page.goto(session["candidate_url"])
            await page.wait_for_function(
                "() => document.querySelector('#analysed-video').textContent"
                ".includes('not analysed')",
                timeout=10_000,
            )
            video = await page.inner_text("#analysed-video")
            await browser.close()
    finally:
        server.stop()
    problems.assert_none()
    assert "expression is not analysed" in video and "and your facial expression" not in video


# Records every RTCPeerConnection the page makes, so a test can make one look lost.
PEER_RECORDER = """
(() => {
  const Native = window.RTCPeerConnection;
  window.__rtPeers = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      window.__rtPeers.push(this);
    }
  };
})();
"""

# What the page sees when its network drops: the connection reports "failed". (Chromium
# cannot drop a loopback connection on its own; everything after this event is real: the
# page sets the connection aside, its media stops, and it re-offers to the real server.)
LOSE_CONNECTION = """
() => {
  const pc = window.__rtPeers[window.__rtPeers.length - 1];
  Object.defineProperty(pc, "connectionState", { get: () => "failed" });
  pc.dispatchEvent(new Event("connectionstatechange"));
}
"""


def server_supports(flag: str) -> bool:
    """Whether `rtserver serve` has ``flag`` (parts of the server land in parallel)."""
    import subprocess

    usage = subprocess.run(
        [sys.executable, "-m", "rtserver", "serve", "--help"], capture_output=True, text=True
    ).stdout
    return flag in usage


async def test_candidate_rejoins_with_its_resume_secret(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    """After a lost connection the page re-offers on its own with the `resume` secret of its
    first answer (api.md item 4), and the interview goes on with no gap in the timeline. The
    secret never reaches storage, cookies or the URL."""
    server = ServerProcess(tmp_path / "data").start()
    problems = Problems()
    shots = Screenshots("candidate-reconnect")
    offers: list[dict[str, Any]] = []
    answers: list[tuple[int, dict[str, Any]]] = []

    async def on_response(response: Any) -> None:
        if response.request.method == "POST" and response.url.endswith("/offer"):
            answers.append((response.status, await response.json()))

    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            session = await create_session(
                client, server.base_url, server.api_key, candidate="Eve", questions=QUESTIONS
            )
        async with playwright_api.async_playwright() as playwright:
            browser = await launch(playwright, face_video, speech_wav.path)
            context = await problems.context(browser)
            await context.grant_permissions(["camera", "microphone"])
            await context.add_init_script(PEER_RECORDER)
            page = await context.new_page()
            page.on(
                "request",
                lambda r: (
                    offers.append(r.post_data_json)
                    if r.method == "POST" and r.url.endswith("/offer")
                    else None
                ),
            )
            page.on("response", on_response)
            await page.goto(session["candidate_url"])
            await consent_and_start(page)
            await page.wait_for_function(
                "() => document.querySelector('#status').textContent === 'Connected'",
                timeout=20_000,
            )
            await page.wait_for_timeout(3000)
            await page.evaluate(LOSE_CONNECTION)
            await page.wait_for_function(
                "() => document.querySelector('#status').textContent.startsWith('Reconnecting')",
                timeout=5_000,
            )
            await shots.take(page, "candidate-reconnecting")
            await page.wait_for_function(
                "() => document.querySelector('#status').textContent === 'Connected'"
                " && window.__rtPeers.length >= 2",
                timeout=30_000,
            )
            await page.wait_for_timeout(3000)
            stored = await page.evaluate(
                "() => JSON.stringify([{...localStorage}, {...sessionStorage}, document.cookie,"
                " location.href])"
            )
            await page.click("#next")
            await page.wait_for_timeout(2000)
            await page.click("#next")
            await page.wait_for_selector("#summary:not([hidden])", timeout=40_000)
            await browser.close()
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            report = await client.get(
                f"{server.base_url}/api/v1/sessions/{session['id']}/report",
                headers=server.hr_headers,
            )
    finally:
        server.stop()
    problems.assert_none()
    assert len(offers) >= 2 and "resume" not in offers[0], offers
    accepted = [body for status, body in answers if status == 200]
    assert len(accepted) >= 2, answers
    secret = accepted[0].get("resume")
    if secret:  # a server that issues the secret (api.md item 4)
        assert all(offer.get("resume") == secret for offer in offers[1:]), offers
        assert secret not in stored, stored
    else:
        assert all("resume" not in offer for offer in offers[1:]), offers
    signals = report.json()["signals"]
    assert [s["t"] for s in signals] == list(range(len(signals)))  # no gap, no repeat
    assert report.json()["final"]["end_reason"] == "ended_by_candidate"


async def test_a_second_window_cannot_take_over_a_live_interview(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    """The same link opened in a second browser while the interview runs: its offer is
    refused (401 resume_required where the server asks for the secret, else 409), and the
    page says the interview is under way in another window; the first goes on."""
    server = ServerProcess(tmp_path / "data").start()
    problems = Problems()
    shots = Screenshots("candidate-second-window")
    refused: list[tuple[int, Any]] = []

    async def on_response(response: Any) -> None:
        offer = response.request.method == "POST" and response.url.endswith("/offer")
        if offer and response.status != 200:
            refused.append((response.status, await response.json()))

    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            session = await create_session(
                client, server.base_url, server.api_key, candidate="Fay", questions=QUESTIONS
            )
        async with playwright_api.async_playwright() as playwright:
            browser = await launch(playwright, face_video, speech_wav.path)
            pages = []
            for _ in range(2):
                context = await problems.context(browser)
                await context.grant_permissions(["camera", "microphone"])
                pages.append(await context.new_page())
            first, second = pages
            await first.goto(session["candidate_url"])
            await consent_and_start(first)
            await first.wait_for_function(
                "() => document.querySelector('#status').textContent === 'Connected'",
                timeout=20_000,
            )
            second.on("response", on_response)
            await second.goto(session["candidate_url"])
            await consent_and_start(second)
            await second.wait_for_selector("#error:not([hidden])", timeout=20_000)
            message = await second.inner_text("#error")
            await shots.take(second, "second-window-refused")
            first_status = await first.inner_text("#status")
            await browser.close()
    finally:
        server.stop()
    problems.assert_none()
    assert refused, "the second window's offer was accepted"
    status, body = refused[0]
    assert "another window" in message.lower(), message
    if status == 401:
        assert body["error"] == "resume_required", body
        assert "under way" in message.lower(), message
    else:
        assert status == 409, (status, body)
    assert first_status == "Connected"


async def test_an_expired_link_says_so(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    """A join link past its expiry (api.md items 1 and 3: 410 "expired") gets a plain
    message and a way forward, before anything is captured."""
    server = ServerProcess(tmp_path / "data").start()
    problems = Problems()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            session = await create_session(client, server.base_url, server.api_key, expires_in=1)
        if "expires_at" not in session:
            pytest.skip("this server's links do not expire yet (expires_in is not supported)")
        await asyncio.sleep(1.5)
        async with playwright_api.async_playwright() as playwright:
            browser = await launch(playwright, face_video, speech_wav.path)
            page = await (await problems.context(browser)).new_page()
            await page.goto(session["candidate_url"])
            await page.wait_for_selector("#error:not([hidden])", timeout=10_000)
            message = await page.inner_text("#error")
            consent_hidden = await page.evaluate("() => document.querySelector('#consent').hidden")
            # The link opens no interview any more, but the candidate's data is still theirs.
            my_data_shown = await page.is_visible("#my-data")
            await browser.close()
    finally:
        server.stop()
    problems.assert_none()
    assert "expired" in message.lower() and "new link" in message.lower(), message
    assert consent_hidden and my_data_shown


async def test_an_interview_at_the_maximum_length_ends_plainly(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    """With --max-interview 8, the interview ends after 8 s (end_reason max_length) and the
    candidate page says it reached its maximum length, then shows the summary."""
    if not server_supports("--max-interview"):
        pytest.skip("this server has no --max-interview yet")
    server = ServerProcess(tmp_path / "data", options=["--max-interview", "8"]).start()
    problems = Problems()
    shots = Screenshots("candidate-max-length")
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            session = await create_session(
                client, server.base_url, server.api_key, candidate="Gus", questions=QUESTIONS
            )
        async with playwright_api.async_playwright() as playwright:
            browser = await launch(playwright, face_video, speech_wav.path)
            context = await problems.context(browser)
            await context.grant_permissions(["camera", "microphone"])
            page = await context.new_page()
            await page.goto(session["candidate_url"])
            limits = await page.inner_text("#consent-limits")
            await consent_and_start(page)
            await page.wait_for_selector("#summary:not([hidden])", timeout=40_000)
            intro = await page.inner_text("#summary-intro")
            await shots.take(page, "candidate-summary-max-length")
            # The voluntary self-identification form, offered only now it has ended.
            await page.wait_for_selector("#self-id:not([hidden])", timeout=5_000)
            await page.select_option("#self-id-sex", "Female")
            await page.select_option("#self-id-race", "Asian")
            await page.click("#self-id-send")
            # A selector, not a script: the page's CSP forbids eval, wait_for_function's way.
            await page.wait_for_selector("#self-id-status:has-text('saved')", timeout=10_000)
            await browser.close()
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            record = (
                await client.get(
                    f"{server.base_url}/api/v1/sessions/{session['id']}",
                    headers=server.hr_headers,
                )
            ).json()
            summary = (
                await client.get(
                    f"{server.base_url}/api/v1/sessions/{session['id']}/summary",
                    params={"token": session["join_token"]},
                )
            ).json()
    finally:
        server.stop()
    problems.assert_none()
    assert "ends automatically after 8 seconds" in limits, limits
    assert "maximum length" in intro.lower(), intro
    assert record["end_reason"] == "max_length", record
    assert summary["end_reason"] == "max_length", summary
    store = Store(server.data_dir / "rtserver.sqlite3")
    try:
        answered = store.self_identification_for_audit([session["id"]])
        actions = [entry["action"] for entry in store.audit_log(session["id"])]
    finally:
        store.close()
    assert answered == {session["id"]: ("Female", "Asian")}
    assert "self_identify" in actions
    # Only the bias audit reads them: nothing HR or the candidate reads returns them.
    assert "Asian" not in json.dumps(record) and "Asian" not in json.dumps(summary)


# ------------------------------------------------------------------ the transcript (issue 14)

# What the fake microphone says (tests/media.py INTERVIEW_SCRIPT), sentence by sentence; the
# wav loops, so the candidate says them again and again.
SPOKEN = [s for s in INTERVIEW_SCRIPT if isinstance(s, str)]


def words_of(text: str) -> list[str]:
    """Lower-case words without punctuation, as a transcript line is compared."""
    return re.findall(r"[a-z0-9']+", text.lower())


def share_heard(line: str, sentence: str) -> float:
    """The share (0-1) of `sentence`'s words that `line` contains."""
    heard = set(words_of(line))
    said = words_of(sentence)
    return sum(w in heard for w in said) / len(said)


# The observer page's transcript lines: each line's text, time, start and end, and the heading
# of the question group it sits under.
TRANSCRIPT_LINES = """
(selector) => [...document.querySelectorAll(`${selector} .t-line`)].map((b) => ({
  key: b.dataset.key,
  start: Number(b.dataset.start),
  end: Number(b.dataset.end),
  time: b.querySelector(".t-time").textContent,
  text: b.querySelector(".t-text").textContent,
  heading: b.closest(".t-group").querySelector(".t-heading").textContent,
}))
"""


# Records every WebSocket the page opens, so a test can drop one as a network would.
SOCKET_RECORDER = """
(() => {
  const Native = window.WebSocket;
  window.__rtSockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.__rtSockets.push(this);
    }
  };
})();
"""


async def test_observer_shows_what_the_candidate_says(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    """Issue 14, the pages: the candidate's consent says that speech is transcribed. While the
    fake microphone speaks INTERVIEW_SCRIPT, the observer's live panel shows transcript lines
    from the real server's messages, once each (backfill included), under the question's
    heading; clicking a line, or pressing Enter on one, moves the charts' cursor to that
    moment. After the end, the report shows the final's transcript under question headings."""
    if not server_supports("--transcribe"):
        pytest.skip("this server does not transcribe yet (no --transcribe)")
    server = ServerProcess(tmp_path / "data", options=["--transcribe", "on"]).start()
    problems = Problems()
    shots = Screenshots("transcript")
    received: list[dict[str, Any]] = []  # the transcript messages the observer's socket got

    def on_socket(socket: Any) -> None:
        def frame(payload: str | bytes) -> None:
            try:
                message = json.loads(payload)
            except ValueError:
                return
            if isinstance(message, dict) and message.get("type") == "transcript":
                received.append(message)

        socket.on("framereceived", frame)

    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            session = await create_session(
                client, server.base_url, server.api_key, candidate="Hal", questions=QUESTIONS
            )
        async with playwright_api.async_playwright() as playwright:
            browser = await launch(playwright, face_video, speech_wav.path)
            candidate_context = await problems.context(browser)
            await candidate_context.grant_permissions(["camera", "microphone"])
            candidate = await candidate_context.new_page()
            observer_context = await problems.context(browser, viewport=SCREEN)
            await observer_context.add_init_script(SOCKET_RECORDER)
            observer = await observer_context.new_page()
            observer.on("websocket", on_socket)

            await candidate.goto(session["candidate_url"])
            words = await candidate.inner_text("#analysed-words")
            kept = await candidate.inner_text("#consent-kept")
            await consent_and_start(candidate)
            await candidate.wait_for_function(
                "() => document.querySelector('#question-text').textContent.includes('proud of')",
                timeout=20_000,
            )
            await observer.goto(f"{server.base_url}/observe/{session['id']}#token={server.api_key}")

            # A line of the first question that holds most of a sentence the candidate said.
            first_heading = f"Question 1: {QUESTIONS[0]['text']}"
            line = None
            deadline = time.monotonic() + 60
            while line is None and time.monotonic() < deadline:
                await observer.wait_for_timeout(500)
                for shown in await observer.evaluate(TRANSCRIPT_LINES, "#transcript-live"):
                    if shown["heading"] == first_heading and any(
                        share_heard(shown["text"], s) >= 0.6 for s in SPOKEN
                    ):
                        line = shown
                        break
            live_lines = await observer.evaluate(TRANSCRIPT_LINES, "#transcript-live")
            assert line is not None, [(x["heading"], x["text"]) for x in live_lines]
            await shots.take(observer, "observer-live-transcript")

            # Click it: the charts' cursor moves to that moment, on every chart.
            button = observer.locator(f"#transcript-live .t-line[data-key='{line['key']}']")
            await button.click()
            clicked = await observer.evaluate("window.rtObserverLayout.cursor()")
            current = await button.get_attribute("aria-current")
            readout = await observer.inner_text("#cursor-readout")
            await shots.take(observer, "observer-cursor")
            # The keyboard does the same: another line, focused, and Enter.
            await observer.wait_for_function(
                "() => document.querySelectorAll('#transcript-live .t-line').length >= 2",
                timeout=30_000,
            )
            other = observer.locator(
                f"#transcript-live .t-line:not([data-key='{line['key']}'])"
            ).first
            await other.focus()
            focused = float(await other.get_attribute("data-start") or "nan")
            await observer.keyboard.press("Enter")
            by_key = await observer.evaluate("window.rtObserverLayout.cursor()")

            # The socket drops; the page reconnects and the backfill brings every message
            # again: still one line each.
            await observer.evaluate("() => window.__rtSockets.at(-1).close()")
            await observer.wait_for_function(
                "() => Number(document.body.dataset.wsAttempts) >= 2", timeout=20_000
            )
            await observer.wait_for_timeout(3000)
            reconnected = await observer.evaluate(TRANSCRIPT_LINES, "#transcript-live")

            await candidate.click("#next")
            await candidate.wait_for_timeout(6000)
            await candidate.click("#next")  # the last question's button finishes
            await candidate.wait_for_selector("#summary:not([hidden])", timeout=40_000)
            await observer.wait_for_selector("#report:not([hidden])", timeout=60_000)
            report_lines = await observer.evaluate(TRANSCRIPT_LINES, "#transcript-report")
            missing_shown = await observer.evaluate(
                "() => !document.querySelector('#transcript-missing').hidden"
            )
            missing_text = await observer.inner_text("#transcript-missing")
            await observer.evaluate("() => window.scrollTo(0, 0)")
            await shots.take(observer, "observer-report-transcript")
            await observer.locator("#transcript-report .t-line").last.click()
            from_report = await observer.evaluate("window.rtObserverLayout.cursor()")
            await browser.close()

        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            report = await client.get(
                f"{server.base_url}/api/v1/sessions/{session['id']}/report",
                headers=server.hr_headers,
            )
    finally:
        server.stop()

    problems.assert_none()
    # The consent says that the answers are transcribed, and that the transcript is kept.
    assert "transcribed" in words.lower() and "not transcribed" not in words.lower(), words
    assert "transcript" in kept.lower(), kept

    # The line came from the server's own messages, under the question the server gave it.
    sent = [m for m in received if m["start"] == line["start"] and m["end"] == line["end"]]
    assert sent and sent[0]["question"] == 0, (line, received)
    assert line["text"] == sent[0]["text"].strip()
    assert line["time"] == clock(math.floor(line["start"])), line
    # One line per message, in order, whatever the socket brought twice.
    keys = [x["key"] for x in live_lines]
    assert len(keys) == len(set(keys)), live_lines
    assert [x["start"] for x in live_lines] == sorted(x["start"] for x in live_lines)
    unique = {(m["start"], m["end"]) for m in received}
    assert len(received) > len(unique), received  # the backfill did send them again
    assert len(unique) >= len(reconnected) >= len(live_lines), (reconnected, received)
    assert len({x["key"] for x in reconnected}) == len(reconnected), reconnected

    # The cursor stands at the line's start, inside every chart's plot, and the legends show
    # that second.
    assert clicked["t"] == line["start"], clicked
    assert current == "time"
    assert clock(math.floor(line["start"])) in readout, readout
    for chart in clicked["charts"]:
        assert chart["plotLeft"] <= chart["x"] <= chart["plotRight"], chart
        assert chart["legendTime"] == clock(math.floor(line["start"])), chart
    assert by_key["t"] == focused, (focused, by_key)

    # The report: the final's transcript, in order, under question headings.
    assert report.status_code == 200, report.text
    final = report.json()["final"]
    assert final["transcription"] == "on"
    segments = [s for s in final["transcript"] if s["text"].strip() or s["words"]]
    assert len(report_lines) == len(final["transcript"]), (report_lines, final["transcript"])
    assert [x["start"] for x in report_lines] == [s["start"] for s in final["transcript"]]
    assert any(
        x["heading"] == first_heading and share_heard(x["text"], s) >= 0.6
        for x in report_lines
        for s in SPOKEN
    ), report_lines
    for shown, segment in zip(report_lines, final["transcript"], strict=True):
        index = segment["question"]
        if index is None:
            assert shown["heading"] == "Before the first question"
        else:
            assert shown["heading"] == f"Question {index + 1}: {QUESTIONS[index]['text']}"
    assert segments, final["transcript"]
    assert missing_shown == (not final["transcript_complete"]), (missing_text, final)
    assert from_report["t"] == report_lines[-1]["start"], from_report


async def test_pages_say_when_speech_is_not_transcribed(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    """With --transcribe off, the consent says the words are not transcribed, the observer's
    live panel says there is no transcript, and the report says so instead of an empty
    section."""
    if not server_supports("--transcribe"):
        pytest.skip("this server does not transcribe yet (no --transcribe)")
    server = ServerProcess(tmp_path / "data", options=["--transcribe", "off"]).start()
    problems = Problems()
    shots = Screenshots("transcript-off")
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            session = await create_session(
                client, server.base_url, server.api_key, candidate="Ida", questions=QUESTIONS
            )
        async with playwright_api.async_playwright() as playwright:
            browser = await launch(playwright, face_video, speech_wav.path)
            page = await (await problems.context(browser)).new_page()
            await page.goto(session["candidate_url"])
            await page.wait_for_function(
                "() => document.querySelector('#analysed-words').textContent"
                ".includes('not transcribed')",
                timeout=10_000,
            )
            words = await page.inner_text("#analysed-words")
            kept = await page.inner_text("#consent-kept")
            observer = await (await problems.context(browser, viewport=SCREEN)).new_page()
            await observer.goto(f"{server.base_url}/observe/{session['id']}#token={server.api_key}")
            peer = await connect_peer(
                server.base_url, session["id"], session["join_token"], face_video,
                speech_wav.path,
            )  # fmt: skip
            try:
                await peer.wait_connected()
                await observer.wait_for_function(
                    "() => Number(document.body.dataset.chartUpdates || 0) >= 4", timeout=30_000
                )
                live_note = await observer.inner_text("#transcript-live-empty")
                await shots.take(observer, "observer-live")
            finally:
                async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
                    token = session["join_token"]
                    ended = await end_session(client, server.base_url, session["id"], token)
                    assert ended.status_code in (200, 409), ended.text
                await peer.close()
            await observer.wait_for_selector("#report:not([hidden])", timeout=30_000)
            note = await observer.inner_text("#transcript-note")
            lines = await observer.locator(".t-line").count()
            await shots.take(observer, "observer-report")
            await browser.close()
    finally:
        server.stop()
    problems.assert_none()
    assert "not transcribed" in words, words
    assert "transcript" not in kept.lower(), kept
    assert "not transcribed" in live_note, live_note
    assert "not transcribed" in note and "off" in note, note
    assert lines == 0

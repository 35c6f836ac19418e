"""TURN end to end, against a real coturn on loopback (see tests/turnserver.py for its
configuration and why each setting is there).

- coturn accepts the credentials rtserver makes from the shared secret, and refuses a wrong
  or an expired one;
- the server's own aiortc peers allocate a relay with their credential;
- the pages get the servers: ``/questions`` (join token) and ``/api/v1/ice-servers`` (HR
  key) hand out fresh credentials that coturn accepts, and the secret never reaches a log;
- a Chromium candidate with ``iceTransportPolicy: "relay"`` completes an interview through
  coturn (its selected candidate pair is a relay one, by getStats) while signals arrive, and
  the observer page's live video comes through the relay too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aioice import stun
from aioice.turn import TurnClientUdpProtocol
from aiortc import RTCPeerConnection
from media import SpeechTrack
from peer import collect_signals, create_session, signals_url, use_loopback_only
from server import ServerProcess
from turnserver import TURNSERVER, TurnServer

from rtserver.config import load_config
from rtserver.media.ingest import ice_configuration
from rtserver.media.turn import SERVER_TURN_ID, turn_credential

pytestmark = pytest.mark.e2e

if TURNSERVER is None:
    pytest.skip("coturn is not installed (.ci/run installs it)", allow_module_level=True)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

QUESTIONS = [
    {"text": "Tell us about a project you are proud of", "seconds": 40},
    {"text": "What would you change about it now?", "seconds": 40},
]

# The newest connected peer's configuration and selected candidate pair (getStats), among the
# peers test_browser_e2e.PEER_RECORDER keeps.
SELECTED_PAIR = """
async () => {
  const pc = [...window.__rtPeers].reverse().find((p) => p.connectionState === "connected");
  if (!pc) return null;
  const reports = new Map();
  (await pc.getStats()).forEach((r) => reports.set(r.id, r));
  let pair = null;
  for (const r of reports.values()) {
    if (r.type === "transport" && r.selectedCandidatePairId) {
      pair = reports.get(r.selectedCandidatePairId);
    }
  }
  if (!pair) return null;
  const local = reports.get(pair.localCandidateId);
  const remote = reports.get(pair.remoteCandidateId);
  const config = pc.getConfiguration();
  return {
    state: pair.state,
    local: local.candidateType,
    localAddress: local.address,
    localUrl: local.url || null,
    remote: remote.candidateType,
    bytesSent: pair.bytesSent,
    bytesReceived: pair.bytesReceived,
    policy: config.iceTransportPolicy,
    servers: config.iceServers.map((s) => ({ urls: s.urls, username: s.username })),
    answerHasRelay: pc.remoteDescription.sdp.includes(" typ relay"),
  };
}
"""


@pytest.fixture(scope="module")
def turn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TurnServer]:
    server = TurnServer(tmp_path_factory.mktemp("coturn")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, turn: TurnServer) -> Iterator[ServerProcess]:
    """rtserver with coturn as its only ICE server and the pages on relay only; the secret
    comes from the environment, as the README advises. Two workers: the sessions' peers run
    in worker processes, which get the secret from the server process, as by default."""
    process = ServerProcess(
        tmp_path_factory.mktemp("turn-api") / "data",
        options=["--ice-server", turn.url, "--ice-transport-policy", "relay"],
        env=dict(os.environ, RTSERVER_TURN_SECRET=turn.secret),
        workers=2,
    ).start()
    yield process
    process.stop()
    log = process.log()
    assert "Traceback" not in log, log[-4000:]
    assert turn.secret not in log


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=15.0) as http:
        yield http


@contextlib.asynccontextmanager
async def turn_client(turn: TurnServer, username: str, password: str) -> AsyncIterator[Any]:
    """aioice's TURN client with one allocation on ``turn``; raises stun.TransactionFailed
    when coturn refuses it. The allocation is deleted on exit."""
    server_address = ("127.0.0.1", turn.port)
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: TurnClientUdpProtocol(server_address, username, password, 600, 300),
        remote_addr=server_address,
    )
    try:
        await protocol.connect()
        yield protocol
        await protocol.delete()
    finally:
        transport.close()


async def allocate(turn: TurnServer, username: str, password: str) -> tuple[str, int] | int:
    """The relayed address coturn allocates with these credentials, or its error code."""
    try:
        async with turn_client(turn, username, password) as client:
            relayed: tuple[str, int] = client.relayed_address
            return relayed
    except stun.TransactionFailed as exc:
        return int(exc.response.attributes["ERROR-CODE"][0])


async def test_coturn_takes_our_credentials_and_refuses_wrong_or_expired_ones(
    turn: TurnServer,
) -> None:
    now = time.time()
    good = turn_credential(turn.secret, "probe", ttl_s=600, now=now)
    relayed = await allocate(turn, good.username, good.credential)
    assert isinstance(relayed, tuple) and relayed[0] == "127.0.0.1", relayed

    wrong = turn_credential("not-the-secret", "probe", ttl_s=600, now=now)
    assert await allocate(turn, wrong.username, wrong.credential) == 401
    expired = turn_credential(turn.secret, "probe", ttl_s=-60, now=now)
    assert await allocate(turn, expired.username, expired.credential) == 401
    # A valid credential for another user name is no key to this one.
    assert await allocate(turn, good.username + "x", good.credential) == 401


async def test_the_test_coturn_relays_to_loopback_only(turn: TurnServer) -> None:
    """Loopback peers need allow-loopback-peers; any other address is refused, so nothing
    the tests relay can leave the machine."""
    good = turn_credential(turn.secret, "probe", ttl_s=600, now=time.time())
    async with turn_client(turn, good.username, good.credential) as client:
        await client.send_data(b"ping", ("127.0.0.1", 9))  # permission granted
        for outside in (("10.1.2.3", 9), ("192.0.2.1", 9), ("8.8.8.8", 53)):
            with pytest.raises(stun.TransactionFailed) as refused:
                await client.send_data(b"ping", outside)
            assert refused.value.response.attributes["ERROR-CODE"][0] == 403


async def test_server_peers_allocate_a_relay_with_their_credential(turn: TurnServer) -> None:
    """The server's aiortc peers (ingest and relay) gather a relay candidate from coturn;
    with a wrong secret they get none."""
    use_loopback_only()  # as the server's --ice-address 127.0.0.1 does

    async def offer_sdp(secret: str) -> str:
        config = load_config({"ice_servers": [turn.url], "turn_secret": secret}, {})
        pc = RTCPeerConnection(ice_configuration(config))
        try:
            pc.addTransceiver("audio", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            return str(pc.localDescription.sdp)
        finally:
            await pc.close()

    assert " typ relay " in await offer_sdp(turn.secret)
    assert " typ relay " not in await offer_sdp("not-the-secret")
    allocated = re.findall(r"username=<(\d+):([^>]*)>, lifetime", turn.log())
    assert any(user == SERVER_TURN_ID for _, user in allocated), turn.log()[-2000:]


async def test_pages_get_fresh_credentials_that_coturn_accepts(
    server: ServerProcess, turn: TurnServer, client: httpx.AsyncClient
) -> None:
    base = server.base_url
    session = await create_session(client, base, server.api_key, questions=QUESTIONS)
    questions_url = f"{base}/api/v1/sessions/{session['id']}/questions"

    candidate = await client.get(questions_url, params={"token": session["join_token"]})
    assert candidate.status_code == 200, candidate.text
    assert candidate.headers["cache-control"] == "no-store"
    body = candidate.json()
    assert [q["text"] for q in body["questions"]] == [q["text"] for q in QUESTIONS]
    assert body["ice_transport_policy"] == "relay"
    (entry,) = body["ice_servers"]
    assert entry["urls"] == [turn.url]
    expiry, _, user = entry["username"].partition(":")
    assert user == session["id"]
    assert 0 < int(expiry) - time.time() <= 4 * 3600 + 5  # the default lifetime
    assert isinstance(await allocate(turn, entry["username"], entry["credential"]), tuple)
    # The join token guards them.
    denied = await client.get(questions_url, params={"token": "wrong"})
    assert denied.status_code == 401

    assert (await client.get(f"{base}/api/v1/ice-servers")).status_code == 401
    observer = await client.get(f"{base}/api/v1/ice-servers", headers=server.hr_headers)
    assert observer.status_code == 200, observer.text
    assert observer.headers["cache-control"] == "no-store"
    assert observer.json()["ice_transport_policy"] == "relay"
    (entry,) = observer.json()["ice_servers"]
    assert entry["urls"] == [turn.url] and entry["username"].endswith(":hr")
    assert isinstance(await allocate(turn, entry["username"], entry["credential"]), tuple)
    wrong = turn_credential("not-the-secret", "hr", 600, time.time())
    assert await allocate(turn, wrong.username, wrong.credential) == 401


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
async def test_chromium_candidate_interviews_through_the_turn_relay(
    server: ServerProcess,
    turn: TurnServer,
    client: httpx.AsyncClient,
    face_video: Path,
    speech_wav: SpeechTrack,
) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    from test_browser_e2e import PEER_RECORDER, consent_and_start, launch

    base, key = server.base_url, server.api_key
    session = await create_session(
        client, base, key, candidate="Relay", job="Engineer", questions=QUESTIONS
    )
    url = signals_url(base, session["id"], key)
    signals = asyncio.create_task(collect_signals(url, timeout=120))
    errors: list[str] = []
    async with playwright_api.async_playwright() as playwright:
        browser = await launch(playwright, face_video, speech_wav.path)
        try:
            candidate_context = await browser.new_context()
            await candidate_context.grant_permissions(["camera", "microphone"])
            observer_context = await browser.new_context()
            for context in (candidate_context, observer_context):
                await context.add_init_script(PEER_RECORDER)
            candidate = await candidate_context.new_page()
            observer = await observer_context.new_page()
            for page in (candidate, observer):
                page.on("pageerror", lambda error: errors.append(str(error)))

            await candidate.goto(session["candidate_url"])
            await consent_and_start(candidate)
            await candidate.wait_for_function(
                "() => document.querySelector('#question-text').textContent.includes('proud of')",
                timeout=20_000,
            )
            candidate_pair = await selected_pair(candidate)

            await observer.goto(f"{base}/observe/{session['id']}#token={key}")
            await observer.wait_for_function(
                "() => document.querySelector('#video').videoWidth > 0", timeout=30_000
            )
            observer_pair = await selected_pair(observer)

            await candidate.wait_for_timeout(4000)
            await candidate.click("#next")
            await candidate.wait_for_function(
                "() => document.querySelector('#question-text').textContent.includes('change')",
                timeout=10_000,
            )
            await candidate.wait_for_timeout(3000)
            # Media kept flowing through the relay all along.
            later_pair = await selected_pair(candidate)
            await candidate.click("#next")  # the last question's button finishes
            await candidate.wait_for_selector("#summary:not([hidden])", timeout=40_000)
        finally:
            await browser.close()
    messages = await signals

    assert errors == []
    for pair in (candidate_pair, observer_pair, later_pair):
        assert pair["state"] == "succeeded", pair
        assert pair["local"] == "relay" and pair["localAddress"] == "127.0.0.1", pair
        assert pair["policy"] == "relay", pair
        (configured,) = pair["servers"]
        assert configured["urls"] == [turn.url], configured
        # The server's answer offered its own relay candidate (its credential worked).
        assert pair["answerHasRelay"], pair
    assert candidate_pair["servers"][0]["username"].endswith(":" + session["id"])
    assert observer_pair["servers"][0]["username"].endswith(":hr")
    assert later_pair["bytesSent"] > candidate_pair["bytesSent"] > 0
    assert observer_pair["bytesReceived"] > 0
    # coturn made the candidate page's allocation with its session's credential.
    allocated = re.findall(r"username=<(\d+):([^>]*)>, lifetime", turn.log())
    assert session["id"] in {user for _, user in allocated}, turn.log()[-3000:]

    seconds = [m for m in messages if m["type"] == "signal"]
    final = messages[-1]
    assert final["type"] == "final" and final["end_reason"] == "ended_by_candidate", final
    assert [s["t"] for s in seconds] == list(range(len(seconds)))
    assert len(seconds) >= 8, len(seconds)
    analysed = [s for s in seconds if s["video"]["fps"] > 0]
    assert sum(s["video"]["face"] for s in analysed) / len(analysed) > 0.8
    assert any(s["audio"]["speech"] > 0.5 for s in seconds)


async def selected_pair(page: Any, timeout_s: float = 15.0) -> dict[str, Any]:
    """The page's selected candidate pair, once it has one that succeeded."""
    deadline = time.monotonic() + timeout_s
    while True:
        pair = await page.evaluate(SELECTED_PAIR)
        if pair is not None and pair["state"] == "succeeded":
            return dict(pair)
        if time.monotonic() > deadline:
            raise AssertionError(f"no selected candidate pair: {pair}")
        await asyncio.sleep(0.25)

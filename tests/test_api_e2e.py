"""The v1 API's refusals, against a running server: each gets its status and a reason.

Malformed input, wrong tokens, unknown sessions, sessions in the wrong state, oversized
bodies and a full server each get a 4xx or 503 with ``{"error", "detail"}``, and the
server stays healthy afterwards.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiortc.contrib.media import MediaPlayer
from media import SpeechTrack
from peer import (
    OfferRejected,
    Peer,
    collect_signals,
    connect_peer,
    create_session,
    new_peer_connection,
    open_peer,
    signals_url,
)
from server import ServerProcess
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

pytestmark = pytest.mark.e2e

NO_MEDIA_SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with room for one live session and a 3 s media timeout."""
    process = ServerProcess(
        tmp_path_factory.mktemp("api") / "data",
        options=["--max-sessions", "1", "--media-timeout", "3"],
    ).start()
    yield process
    process.stop()
    assert "Traceback" not in process.log(), process.log()[-4000:]


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=15.0) as http:
        yield http


async def new_session(client: httpx.AsyncClient, server: ServerProcess) -> dict[str, Any]:
    return await create_session(client, server.base_url, server.api_key, candidate="Test")


async def real_offer_sdp() -> str:
    """A genuine aiortc offer with audio and video m-lines (the peer is closed after)."""
    pc = new_peer_connection()
    pc.addTransceiver("video", direction="sendonly")
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]


async def post_offer(
    client: httpx.AsyncClient, server: ServerProcess, session_id: str, **body: Any
) -> httpx.Response:
    return await client.post(f"{server.base_url}/api/v1/sessions/{session_id}/offer", **body)


async def test_offer_refusals(server: ServerProcess, client: httpx.AsyncClient) -> None:
    session = await new_session(client, server)
    sid, token = session["id"], session["join_token"]
    sdp = await real_offer_sdp()

    garbled = await post_offer(client, server, sid, content=b"{not json")
    assert_error(garbled, 400, "bad_request")
    not_object = await post_offer(client, server, sid, json=["offer"])
    assert_error(not_object, 400, "bad_request")
    answer_type = await post_offer(
        client, server, sid, json={"sdp": sdp, "type": "answer", "token": token}
    )
    assert_error(answer_type, 400, "bad_request")
    malformed = await post_offer(
        client, server, sid, json={"sdp": "hello\r\nworld", "type": "offer", "token": token}
    )
    assert_error(malformed, 400, "bad_sdp")
    no_media = await post_offer(
        client, server, sid, json={"sdp": NO_MEDIA_SDP, "type": "offer", "token": token}
    )
    assert_error(no_media, 400, "bad_sdp")
    wrong_token = await post_offer(
        client, server, sid, json={"sdp": sdp, "type": "offer", "token": "nope"}
    )
    assert_error(wrong_token, 401, "unauthorized")
    unknown = await post_offer(
        client, server, "f" * 32, json={"sdp": sdp, "type": "offer", "token": token}
    )
    assert_error(unknown, 404, "not_found")
    huge = await post_offer(
        client,
        server,
        sid,
        json={"sdp": sdp + "a=x:" + "y" * 70_000, "type": "offer", "token": token},
    )
    assert_error(huge, 413, "payload_too_large")

    # None of that used the session up: it can still be ended, and then never joined.
    ended = await client.post(f"{server.base_url}/api/v1/sessions/{sid}/end", json={"token": token})
    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    again = await post_offer(
        client, server, sid, json={"sdp": sdp, "type": "offer", "token": token}
    )
    assert_error(again, 409, "conflict")
    assert server.healthy()


async def test_hr_endpoints_need_the_key(server: ServerProcess, client: httpx.AsyncClient) -> None:
    base = server.base_url
    assert_error(await client.post(f"{base}/api/v1/sessions", json={}), 401, "unauthorized")
    wrong = {"Authorization": "Bearer wrong"}
    assert_error(
        await client.post(f"{base}/api/v1/sessions", json={}, headers=wrong), 401, "unauthorized"
    )
    bad_questions = await client.post(
        f"{base}/api/v1/sessions", headers=server.hr_headers, json={"questions": [{"text": 3}]}
    )
    assert_error(bad_questions, 400, "bad_request")
    session = await new_session(client, server)
    for path in ("", "/report", "/audit"):
        response = await client.get(f"{base}/api/v1/sessions/{session['id']}{path}")
        assert_error(response, 401, "unauthorized")
    not_ended = await client.get(
        f"{base}/api/v1/sessions/{session['id']}/report", headers=server.hr_headers
    )
    assert_error(not_ended, 409, "conflict")
    missing = await client.get(f"{base}/api/v1/sessions/{'0' * 32}", headers=server.hr_headers)
    assert_error(missing, 404, "not_found")
    candidate_end = await client.post(
        f"{base}/api/v1/sessions/{session['id']}/end", json={"token": "wrong"}
    )
    assert_error(candidate_end, 401, "unauthorized")

    # Websocket observers: a wrong key or an unknown session is refused before the upgrade.
    for url, status in (
        (signals_url(base, session["id"], "wrong-key"), 401),
        (signals_url(base, "0" * 32, server.api_key), 404),
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(url, proxy=None, open_timeout=5):
                pass
        assert refused.value.response.status_code == status
    assert server.healthy()


async def test_live_conflict_capacity_and_media_timeout(
    server: ServerProcess,
    client: httpx.AsyncClient,
    face_video: Path,
    speech_wav: SpeechTrack,
) -> None:
    first = await new_session(client, server)
    second = await new_session(client, server)
    base = server.base_url
    observer = asyncio.create_task(collect_signals(signals_url(base, first["id"], server.api_key)))
    peer = await connect_peer(
        base, first["id"], first["join_token"], face_video, speech_wav.path, client=client
    )
    try:
        await peer.wait_connected()
        # A second offer for the live session: without its resume secret, refused as a
        # takeover; with it, refused while the connection it would replace carries media.
        with pytest.raises(OfferRejected) as takeover:
            await connect_peer(
                base, first["id"], first["join_token"], face_video, None, client=client
            )
        assert takeover.value.status == 401
        assert takeover.value.body["error"] == "resume_required"
        with pytest.raises(OfferRejected) as live:
            await connect_peer(
                base, first["id"], first["join_token"], face_video, None, client=client,
                resume=peer.resume,
            )  # fmt: skip
        assert live.value.status == 409
        with pytest.raises(OfferRejected) as full:
            await connect_peer(
                base, second["id"], second["join_token"], face_video, None, client=client
            )
        assert full.value.status == 503
        assert full.value.body["error"] == "at_capacity"
        # Retry-After is checked on a raw request, since the peer helper keeps only the body.
        raw = await post_offer(
            client,
            server,
            second["id"],
            json={"sdp": await real_offer_sdp(), "type": "offer", "token": second["join_token"]},
        )
        assert_error(raw, 503, "at_capacity")
        assert int(raw.headers["retry-after"]) > 0
        await asyncio.sleep(2.0)
    finally:
        # Stop sending without hanging up: the server must notice the silence by itself.
        for track in peer.tracks:
            track.stop()
    messages = await asyncio.wait_for(observer, 30)
    await peer.close()
    final = messages[-1]
    assert final["type"] == "final" and final["end_reason"] == "media_timeout"
    signals = [m for m in messages if m["type"] == "signal"]
    assert [s["t"] for s in signals] == list(range(len(signals)))
    assert len(signals) >= 2

    # The capacity is free again: the second session can join now.
    metrics = (await client.get(f"{base}/metrics", headers=server.hr_headers)).text
    assert "rtserver_live_sessions 0" in metrics
    assert "rtserver_signal_lag_seconds_count" in metrics
    assert 'rtserver_rejected_total{code="at_capacity"} 2' in metrics
    assert server.healthy()


async def test_garbled_offers_get_400_or_an_answer_never_a_crash(
    server: ServerProcess, client: httpx.AsyncClient
) -> None:
    """Every one-line deletion and random corruption of a real offer is handled cleanly."""
    lines = (await real_offer_sdp()).split("\r\n")
    variants = ["\r\n".join(lines[:i] + lines[i + 1 :]) for i in range(len(lines))]
    rng = random.Random(7)
    for _ in range(20):
        corrupted = list(lines)
        i = rng.randrange(len(corrupted))
        cut = rng.randrange(len(corrupted[i]) + 1)
        corrupted[i] = corrupted[i][:cut] + rng.choice(["\x00", "ÿ", ":", " ", "-1", "999999999"])
        variants.append("\r\n".join(corrupted))
    statuses = []
    for sdp in variants:
        session = await new_session(client, server)
        response = await post_offer(
            client,
            server,
            session["id"],
            json={"sdp": sdp, "type": "offer", "token": session["join_token"]},
        )
        statuses.append(response.status_code)
        if response.status_code == 200:
            ended = await client.post(
                f"{server.base_url}/api/v1/sessions/{session['id']}/end", headers=server.hr_headers
            )
            assert ended.status_code == 200
        else:
            assert_error(response, 400, "bad_sdp")
    assert set(statuses) <= {200, 400}
    assert 400 in statuses and 200 in statuses
    assert server.healthy()


async def post_offer_of(
    client: httpx.AsyncClient, server: ServerProcess, session: dict[str, Any], peer: Peer
) -> httpx.Response:
    """Offers ``peer``'s complete offer for ``session``; the raw response."""
    await peer.pc.setLocalDescription(await peer.pc.createOffer())
    offer = peer.pc.localDescription
    body = {"sdp": offer.sdp, "type": offer.type, "token": session["join_token"]}
    return await post_offer(client, server, session["id"], json=body)


@pytest.mark.parametrize("extra", ["video", "audio"])
async def test_offers_with_extra_tracks_are_refused(
    server: ServerProcess,
    client: httpx.AsyncClient,
    face_video: Path,
    speech_wav: SpeechTrack,
    extra: str,
) -> None:
    """An offer with a second audio or video m-line gets 400 bad_sdp: its media would never
    be drained, and aiortc's receive queue is unbounded."""
    session = await new_session(client, server)
    peer = open_peer(face_video, speech_wav.path)
    player = MediaPlayer(str(face_video if extra == "video" else speech_wav.path))
    peer.players.append(player)
    track = player.video if extra == "video" else player.audio
    assert track is not None
    peer.tracks.append(track)
    peer.pc.addTransceiver(track, direction="sendonly")
    try:
        response = await post_offer_of(client, server, session, peer)
    finally:
        await peer.close()
    assert_error(response, 400, "bad_sdp")
    assert f"more than one {extra} m-line" in response.json()["detail"]
    record = await client.get(
        f"{server.base_url}/api/v1/sessions/{session['id']}", headers=server.hr_headers
    )
    assert record.json()["status"] == "created"  # the refused offer did not start it
    assert server.healthy()


async def test_join_links_expire(server: ServerProcess, client: httpx.AsyncClient) -> None:
    base = server.base_url
    default = await new_session(client, server)
    record = (
        await client.get(f"{base}/api/v1/sessions/{default['id']}", headers=server.hr_headers)
    ).json()
    assert record["expires_at"] == default["expires_at"]
    assert abs(record["expires_at"] - record["created_at"] - 7 * 24 * 3600) < 1.0
    for bad in (0, -5, "60", True, 400 * 24 * 3600):
        refused = await client.post(
            f"{base}/api/v1/sessions", headers=server.hr_headers, json={"expires_in": bad}
        )
        assert_error(refused, 400, "bad_request")
        assert "expires_in" in refused.json()["detail"]

    created_at = time.time()
    short = await create_session(client, base, server.api_key, expires_in=2)
    sid, token = short["id"], short["join_token"]
    assert created_at + 1.5 < short["expires_at"] < time.time() + 2.5
    questions = await client.get(f"{base}/api/v1/sessions/{sid}/questions?token={token}")
    assert questions.status_code == 200, questions.text
    body = questions.json()
    assert body["expires_at"] == short["expires_at"]
    assert body["emotion"] == "on" and body["max_interview_s"] == 3600
    assert body["transcription"] == "off"  # the test servers' default (tests/server.py)
    assert body["status"] == "created" and body["questions"] == []

    await asyncio.sleep(max(0.0, short["expires_at"] - time.time()) + 0.3)
    sdp = await real_offer_sdp()
    expired = [
        await client.get(f"{base}/api/v1/sessions/{sid}/questions?token={token}"),
        await client.get(f"{base}/api/v1/sessions/{sid}/summary?token={token}"),
        await post_offer(client, server, sid, json={"sdp": sdp, "type": "offer", "token": token}),
    ]
    for response in expired:
        assert_error(response, 410, "expired")
    # Without the right token, the link's state is nobody's business: 401 as ever.
    wrong = await client.get(f"{base}/api/v1/sessions/{sid}/questions?token=nope")
    assert_error(wrong, 401, "unauthorized")
    # A link that has not expired works as before.
    fresh = await client.get(
        f"{base}/api/v1/sessions/{default['id']}/questions?token={default['join_token']}"
    )
    assert fresh.status_code == 200
    assert server.healthy()


async def test_health_and_metrics_need_the_key_for_details(
    server: ServerProcess, client: httpx.AsyncClient
) -> None:
    base = server.base_url
    public = await client.get(f"{base}/healthz")
    assert public.status_code == 200 and public.json() == {"status": "ok"}
    wrong = await client.get(f"{base}/healthz", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 200 and wrong.json() == {"status": "ok"}
    full = (await client.get(f"{base}/healthz", headers=server.hr_headers)).json()
    assert full["status"] == "ok" and full["emotion"] == "on" and "live_sessions" in full
    assert full["transcription"] == "off"  # the test servers' default (tests/server.py)
    assert "face_detector" in full["backends"]

    assert_error(await client.get(f"{base}/metrics"), 401, "unauthorized")
    assert_error(
        await client.get(f"{base}/metrics", headers={"Authorization": "Bearer wrong"}),
        401,
        "unauthorized",
    )
    page = await client.get(f"{base}/metrics", headers=server.hr_headers)
    assert page.status_code == 200 and "rtserver_live_sessions " in page.text
    assert "session=" not in page.text

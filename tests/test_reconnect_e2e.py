"""End to end: a candidate whose network drops comes back to the same session, or does not.

Real aiortc candidates over loopback. A drop is simulated by closing the candidate's ICE
sockets (``watcher.drop_network``): the server hears nothing more, as when Wi-Fi dies, and
must notice by itself (ICE consent checks fail within seconds).

- Comes back: the server notices the drop and waits; the candidate reconnects with its join
  token and a new peer. It drops again, and this time reconnects before the server noticed
  (its media had stopped). The timeline has no gap and no repeat, the seconds without a
  connection carry no media, an observer watching all along sees the candidate again after
  each reconnect, and one final comes at the end.
- Does not come back: the final arrives after the grace, with end_reason "connection_lost",
  and the link cannot be used again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from media import SpeechTrack
from peer import (
    OfferRejected,
    Peer,
    collect_signals,
    connect_peer,
    create_session,
    end_session,
    signals_url,
    use_loopback_only,
)
from server import ServerProcess
from watcher import drop_network, watch_session

pytestmark = pytest.mark.e2e

DROP_NOTICED = "connection dropped; waiting"  # the server's log line when it notices


async def wait_for_log(server: ServerProcess, text: str, count: int, timeout: float) -> float:
    """Waits until ``text`` is in the server's log ``count`` times; returns the wait (s)."""
    started = time.monotonic()
    while server.log().count(text) < count:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{text!r} not logged {count} times:\n{server.log()[-3000:]}")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def rejoin(
    client: httpx.AsyncClient,
    base: str,
    session: dict[str, Any],
    video: Path,
    audio: Path,
    resume: str | None,
    timeout: float = 10.0,
) -> tuple[Peer, int]:
    """Offers again every 0.5 s with the resume secret, as the candidate page does, until
    the server takes the new connection; returns it and how many offers were refused with
    409 first."""
    refused = 0
    deadline = time.monotonic() + timeout
    while True:
        try:
            peer = await connect_peer(
                base,
                session["id"],
                session["join_token"],
                video,
                audio,
                client=client,
                resume=resume,
            )
            return peer, refused
        except OfferRejected as rejected:
            assert rejected.status == 409, rejected.body
            refused += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def test_candidate_reconnects_to_the_same_session(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    use_loopback_only()
    server = ServerProcess(tmp_path / "data", options=["--reconnect-grace", "20"]).start()
    peers: list[Peer] = []
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            base, key = server.base_url, server.api_key
            session = await create_session(client, base, key, candidate="Wobbly Wi-Fi")
            sid = session["id"]
            signals_task = asyncio.create_task(
                collect_signals(signals_url(base, sid, key), timeout=90)
            )
            first = await connect_peer(
                base, sid, session["join_token"], face_video, speech_wav.path, client=client
            )
            peers.append(first)
            observer = await watch_session(client, base, sid, key)
            await asyncio.sleep(3.0)

            # Drop 1: the server notices by itself and keeps the session for the candidate.
            await drop_network(first)
            dropped_at = time.monotonic()
            noticed_s = await wait_for_log(server, DROP_NOTICED, 1, timeout=12)
            status = await client.get(f"{base}/api/v1/sessions/{sid}", headers=server.hr_headers)
            assert status.json()["status"] == "live"
            assert first.resume
            second, refused_second = await rejoin(
                client, base, session, face_video, speech_wav.path, first.resume
            )
            peers.append(second)
            back_at = time.monotonic()
            await asyncio.sleep(4.0)

            # Drop 2: the candidate is back before the server noticed: its page saw the drop
            # first. The server takes the new offer once the old connection has gone silent.
            await drop_network(second)
            third, refused_third = await rejoin(
                client, base, session, face_video, speech_wav.path, second.resume
            )
            peers.append(third)
            back_again_at = time.monotonic()
            await third.wait_media_ended(speech_wav.duration_s + 10)
            await asyncio.sleep(0.5)
            ended = await end_session(client, base, sid, session["join_token"])
            assert ended.status_code == 200, ended.text
            messages = await asyncio.wait_for(signals_task, 30)
            await asyncio.wait_for(observer.ended.wait(), 10)
            metrics = (await client.get(f"{base}/metrics", headers=server.hr_headers)).text
            audit = await client.get(
                f"{base}/api/v1/sessions/{sid}/audit", headers=server.hr_headers
            )
            await observer.close()
    finally:
        for peer in peers:
            await peer.close()
        server.stop()
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
    assert 2.0 < noticed_s < 9.0, noticed_s  # ICE consent checks, well before 10 s silence
    assert refused_second == 0  # the drop was noticed: the first new offer is taken
    assert 1 <= refused_third <= 6, refused_third  # refused while the old one was fresh

    # One timeline: every second once, in order, and a single final at the end.
    signals = [m for m in messages if m["type"] == "signal"]
    assert [s["t"] for s in signals] == list(range(len(signals)))
    assert [m["type"] for m in messages].count("final") == 1 and messages[-1]["type"] == "final"
    final = messages[-1]
    assert final["end_reason"] == "ended_by_candidate"
    assert final["duration_s"] == len(signals)
    # Seconds 0-2 from the first peer; then silence while disconnected; then media again.
    with_video = [s["t"] for s in signals if s["video"]["frames"] > 0]
    with_audio = [s["t"] for s in signals if s["audio"]["hops"] > 0]
    gap = [s for s in signals if 4 <= s["t"] <= 1.5 + noticed_s]  # ends before the rejoin
    assert gap and all(s["video"]["frames"] == 0 and s["audio"]["hops"] == 0 for s in gap), gap
    total_s = time.monotonic() - dropped_at
    assert with_video[0] <= 1 and with_audio[0] <= 1
    assert max(with_video) >= len(signals) - 3 and max(with_audio) >= len(signals) - 3
    media_s = 3 + 4 + speech_wav.duration_s  # what the three peers sent, about
    assert len(with_video) >= media_s - 4, (len(with_video), media_s, with_video)
    assert len(signals) <= total_s + 5, (len(signals), total_s)
    faces = [s["video"]["face"] for s in signals if s["video"]["fps"] > 0]
    assert sum(faces) / len(faces) > 0.8, faces

    # The observer kept its connection and saw the candidate after each reconnect.
    assert len(observer.video_after(back_at + 1.0)) >= 10
    assert len(observer.video_after(back_again_at + 1.0)) >= 10
    assert "rtserver_reconnects_total 2" in metrics
    actions = [entry["action"] for entry in audit.json()["audit"]]
    assert actions.count("rejoin") == 2 and actions.count("join") == 1, actions
    # One resume secret for the whole session, handed back on every answer.
    assert first.resume == second.resume == third.resume


async def test_candidate_who_does_not_come_back(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    use_loopback_only()
    server = ServerProcess(tmp_path / "data", options=["--reconnect-grace", "3"]).start()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            base, key = server.base_url, server.api_key
            session = await create_session(client, base, key, candidate="Gone")
            sid, token = session["id"], session["join_token"]
            signals_task = asyncio.create_task(collect_signals(signals_url(base, sid, key)))
            peer = await connect_peer(base, sid, token, face_video, speech_wav.path, client=client)
            await asyncio.sleep(3.0)
            await drop_network(peer)
            dropped_at = time.monotonic()
            messages = await asyncio.wait_for(signals_task, 30)
            final_after_s = time.monotonic() - dropped_at
            with pytest.raises(OfferRejected) as too_late:
                await connect_peer(base, sid, token, face_video, None, client=client)
            await peer.close()
    finally:
        server.stop()
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
    final = messages[-1]
    assert final["type"] == "final" and final["end_reason"] == "connection_lost", final
    # Noticed within seconds (ICE consent), then the 3 s grace: not the 10 s media timeout.
    assert 3.0 + 2.0 < final_after_s < 3.0 + 9.0, final_after_s
    signals = [m for m in messages if m["type"] == "signal"]
    assert [s["t"] for s in signals] == list(range(len(signals)))
    assert too_late.value.status == 409
    assert too_late.value.body["detail"] == "session has already ended"


async def test_a_rejoin_needs_the_resume_secret(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    """Holding the join link is not enough to take over a live session: a rejoin must carry
    the resume secret of the first answer. Checked by the server process while a worker
    process runs the session (``--workers 2``)."""
    use_loopback_only()
    server = ServerProcess(tmp_path / "data", workers=2).start(timeout_s=180.0)
    peers: list[Peer] = []
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            base, key = server.base_url, server.api_key
            session = await create_session(client, base, key, candidate="Careful")
            sid, token = session["id"], session["join_token"]
            signals_task = asyncio.create_task(collect_signals(signals_url(base, sid, key)))
            candidate = await connect_peer(
                base, sid, token, face_video, speech_wav.path, client=client
            )
            peers.append(candidate)
            secret = candidate.resume
            assert isinstance(secret, str) and len(secret) >= 32, secret
            await asyncio.sleep(2.0)
            # The candidate's media stops while its connection stays up (a frozen page). Past
            # 2 s of silence, a new offer replaces the connection: only with the secret.
            for track in candidate.tracks:
                track.stop()
            await asyncio.sleep(3.0)
            with pytest.raises(OfferRejected) as without:
                await connect_peer(base, sid, token, face_video, speech_wav.path, client=client)
            with pytest.raises(OfferRejected) as wrong:
                await connect_peer(
                    base, sid, token, face_video, speech_wav.path, client=client,
                    resume=secret[::-1],
                )  # fmt: skip
            back = await connect_peer(
                base, sid, token, face_video, speech_wav.path, client=client, resume=secret
            )
            peers.append(back)
            await asyncio.sleep(3.0)
            ended = await end_session(client, base, sid, token)
            assert ended.status_code == 200, ended.text
            messages = await asyncio.wait_for(signals_task, 30)
            audit = await client.get(
                f"{base}/api/v1/sessions/{sid}/audit", headers=server.hr_headers
            )
    finally:
        for peer in peers:
            await peer.close()
        server.stop()
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
    for refused in (without.value, wrong.value):
        assert refused.status == 401 and refused.body["error"] == "resume_required", refused
    assert back.resume == secret
    entries = audit.json()["audit"]
    actions = [entry["action"] for entry in entries]
    assert actions.count("join") == 1 and actions.count("rejoin") == 1, actions
    assert actions.count("rejoin_refused") == 2, actions
    # The session went on with its candidate, on one timeline.
    signals = [m for m in messages if m["type"] == "signal"]
    assert [s["t"] for s in signals] == list(range(len(signals)))
    assert messages[-1]["type"] == "final"
    assert messages[-1]["end_reason"] == "ended_by_candidate"
    assert any(s["video"]["frames"] > 0 for s in signals[-3:]), signals[-3:]
    # The secret is stored hashed, and never logged.
    assert secret not in log
    for path in (tmp_path / "data").glob("rtserver.sqlite3*"):
        assert secret.encode() not in path.read_bytes(), path

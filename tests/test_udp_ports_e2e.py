"""End to end: ``--udp-ports`` bounds the UDP ports of the server's peers, against a running
server (two worker processes, as production runs one per core) and real aiortc peers.

The range holds two ports. A candidate joins (one port: the test peer bundles audio, video
and data on one transport with rtcp-mux, so one ICE component) and an HR observer watches
(the second port); every candidate line of both answers names a port in the range. A
second candidate is then refused with 503 ``no_udp_port`` and its reason, whichever worker
it lands on, while the first session goes on. Once the observer has left, its port is free
and the second candidate joins, on it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from media import SpeechTrack
from peer import OfferRejected, Peer, connect_peer, create_session, use_loopback_only
from server import ServerProcess, free_udp_range
from watcher import watch_session

pytestmark = pytest.mark.e2e

QUESTIONS = [{"text": "Tell us about a project you are proud of.", "seconds": 60}]


def candidate_ports(sdp: str) -> list[int]:
    """The port of every ``a=candidate`` line of an SDP (RFC 8839: the 6th field)."""
    return [int(line.split()[5]) for line in sdp.splitlines() if line.startswith("a=candidate:")]


async def join(server: ServerProcess, client: httpx.AsyncClient, face: Path, speech: Path) -> Peer:
    session = await create_session(client, server.base_url, server.api_key, questions=QUESTIONS)
    return await connect_peer(
        server.base_url, session["id"], session["join_token"], face, speech, client=client
    )


async def test_peers_bind_in_the_port_range_and_a_full_range_refuses(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    use_loopback_only()
    first, last = free_udp_range(2)
    server = ServerProcess(
        tmp_path / "data", options=["--udp-ports", f"{first}-{last}"], workers=2
    ).start()
    peers: list[Peer] = []
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=30.0) as client:
            base, key = server.base_url, server.api_key
            session = await create_session(client, base, key, questions=QUESTIONS)
            sid = session["id"]
            candidate = await connect_peer(
                base, sid, session["join_token"], face_video, speech_wav.path, client=client
            )
            peers.append(candidate)
            assert candidate.answer is not None
            (candidate_port,) = set(candidate_ports(candidate.answer.sdp))
            assert first <= candidate_port <= last

            observer = await watch_session(client, base, sid, key)
            remote = observer.pc.remoteDescription
            (observer_port,) = set(candidate_ports(remote.sdp))
            assert {candidate_port, observer_port} == {first, last}

            # The range is full: the next peer is refused, with the reason, whichever worker
            # would run it (each worker binds from the same range; the kernel arbitrates).
            second = await create_session(client, base, key, questions=QUESTIONS)
            for _ in range(3):
                with pytest.raises(OfferRejected) as refused:
                    await connect_peer(
                        base, second["id"], second["join_token"], face_video, speech_wav.path,
                        client=client,
                    )  # fmt: skip
                assert refused.value.status == 503
                assert refused.value.body["error"] == "no_udp_port"
                assert f"{first}-{last}" in refused.value.body["detail"]
            assert server.healthy()

            # The observer leaves; its port is free again once the server has closed its peer.
            await observer.close()
            joined = await join_when_a_port_frees(server, client, second, face_video, speech_wav)
            peers.append(joined)
            assert joined.answer is not None
            assert set(candidate_ports(joined.answer.sdp)) == {observer_port}
            # The first session was never touched: its candidate still sends media.
            assert candidate.pc.connectionState == "connected"
            assert "rtserver_live_sessions 2" in server.metrics()
    finally:
        for peer in peers:
            await peer.close()
        server.stop()


async def join_when_a_port_frees(
    server: ServerProcess,
    client: httpx.AsyncClient,
    session: dict[str, str],
    face: Path,
    speech: SpeechTrack,
    timeout_s: float = 20.0,
) -> Peer:
    """Joins ``session``, retrying while its offer is refused ``no_udp_port``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await connect_peer(
                server.base_url, session["id"], session["join_token"], face, speech.path,
                client=client,
            )  # fmt: skip
        except OfferRejected as exc:
            if exc.body.get("error") != "no_udp_port" or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)

"""End to end: one deployment on two "hosts" (tests/cluster.py), with real parts throughout:
two front ends and two media nodes on their own loopback addresses, a private Redis, a fresh
PostgreSQL database, and real aiortc candidates sending VP8 and Opus.

- a candidate on host A is observed live through host B's front end, with no gap or
  duplicate at the switch from the store's backfill to Redis, and watched (video) through it;
- a candidate whose network dropped rejoins through the other host's front end;
- placement spreads sessions over both nodes;
- SIGKILL of host A's node ends its sessions with ``node_lost`` (observers told, finals from
  what was stored) while host B's go on untouched; node A started again ends nothing of B's;
- a Redis restart during a session loses no stored second, and observers resume from the
  store.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cluster import Deployment, Host, wait_for
from media import make_face_video, make_noise_wav
from peer import (
    Peer,
    collect_signals,
    connect_peer,
    create_session,
    signals_url,
    use_loopback_only,
)
from postgres import create_database, drop_database, unreachable_reason
from redis_server import RedisServer
from test_reconnect_e2e import rejoin
from watcher import drop_network, watch_session
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.e2e

MEDIA_S = 45.0  # long enough to outlive a node loss or a Redis restart mid-session


@pytest.fixture(scope="module")
def long_media(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    media = tmp_path_factory.mktemp("cluster-media")
    return (
        make_face_video(media / "face.y4m", MEDIA_S),
        make_noise_wav(media / "noise.wav", MEDIA_S, dbfs=-30.0),
    )


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    reason = unreachable_reason()
    if reason is not None:
        pytest.skip(reason)
    use_loopback_only()
    store_url = create_database()
    redis = RedisServer(tmp_path / "redis").start()
    deployment = Deployment(tmp_path, store_url, redis)
    try:
        yield deployment
    finally:
        deployment.stop()
        redis.stop()
        drop_database(store_url)


def two_hosts(deployment: Deployment) -> tuple[Host, Host]:
    return deployment.add_host("host-a", "127.0.0.2"), deployment.add_host("host-b", "127.0.0.3")


async def session_on(
    client: httpx.AsyncClient, host: Host, media: tuple[Path, Path]
) -> tuple[dict[str, Any], Peer, str]:
    """A session created and joined through ``host``'s front end: it, the candidate, and
    the node it was placed on."""
    base, key = host.front.base_url, host.front.api_key
    session = await create_session(client, base, key)
    peer = await connect_peer(base, session["id"], session["join_token"], *media)
    record = await get_session(client, host, session["id"])
    return session, peer, record["node"]


async def get_session(client: httpx.AsyncClient, host: Host, session_id: str) -> dict[str, Any]:
    response = await client.get(
        f"{host.front.base_url}/api/v1/sessions/{session_id}", headers=host.front.hr_headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def end_as_hr(client: httpx.AsyncClient, host: Host, session_id: str) -> None:
    response = await client.post(
        f"{host.front.base_url}/api/v1/sessions/{session_id}/end",
        headers=host.front.hr_headers,
        json={},
    )
    assert response.status_code == 200, response.text


def assert_whole(messages: list[dict[str, Any]], end_reason: str | None = None) -> None:
    """Every message once, in order (seq 0..n), every second of signals, one final last."""
    assert [m["seq"] for m in messages] == list(range(len(messages)))
    signals = [m for m in messages if m["type"] == "signal"]
    assert [s["t"] for s in signals] == list(range(len(signals)))
    assert messages[-1]["type"] == "final"
    assert sum(1 for m in messages if m["type"] == "final") == 1
    if end_reason is not None:
        assert messages[-1]["end_reason"] == end_reason


async def observe_resuming(url: str, timeout_s: float) -> tuple[list[dict[str, Any]], int]:
    """An observer that reconnects whenever its stream is cut (1013: fell behind, or the bus
    was lost), as the observer page does, until the final: every message it got (by seq,
    once each) and how many times it reconnected."""
    seen: dict[int, dict[str, Any]] = {}
    reconnects = 0
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                async with ws_connect(url, proxy=None, open_timeout=10.0) as ws:
                    async for raw in ws:
                        message = json.loads(raw)
                        seen[message["seq"]] = message
                        if message["type"] == "final":
                            return [seen[k] for k in sorted(seen)], reconnects
            except (ConnectionClosed, InvalidStatus, OSError):
                pass
            reconnects += 1
            await asyncio.sleep(0.5)


async def test_a_candidate_on_host_a_is_observed_live_through_host_b(
    deployment: Deployment, long_media: tuple[Path, Path]
) -> None:
    a, b = two_hosts(deployment)
    async with httpx.AsyncClient(trust_env=False, timeout=30.0) as client:
        session, peer, node = await session_on(client, a, long_media)
        assert node == "host-a"  # both idle: the tie goes by id
        from_start = asyncio.create_task(
            collect_signals(signals_url(a.front.base_url, session["id"], a.front.api_key), 90)
        )
        await asyncio.sleep(5.0)  # the observer on B comes in mid-session
        url_b = signals_url(b.front.base_url, session["id"], b.front.api_key)
        through_b = asyncio.create_task(collect_signals(url_b, timeout=90))
        # HR on host B watches the video, relayed by node A.
        watcher = await watch_session(client, b.front.base_url, session["id"], b.front.api_key)
        await asyncio.sleep(4.0)
        assert len(watcher.video) > 20, "no video reached the watcher through host B"
        await watcher.pc.close()
        await end_as_hr(client, b, session["id"])  # reaches node A through Redis
        messages_b, messages_a = await through_b, await from_start
        await peer.close()
    assert_whole(messages_b, "ended_by_hr")
    assert messages_b == messages_a  # the same log whichever front end serves it
    assert len([m for m in messages_b if m["type"] == "signal"]) >= 8


async def test_a_candidate_rejoins_through_the_other_front_end(
    deployment: Deployment, long_media: tuple[Path, Path]
) -> None:
    """The candidate's Wi-Fi drops; the page offers again, and the load balancer sends it to
    host B's front end: the rejoin reaches the node that runs the session, on host A."""
    a, b = two_hosts(deployment)
    async with httpx.AsyncClient(trust_env=False, timeout=30.0) as client:
        session, first, node = await session_on(client, a, long_media)
        url = signals_url(b.front.base_url, session["id"], b.front.api_key)
        observer = asyncio.create_task(collect_signals(url, timeout=90))
        await asyncio.sleep(3.0)
        await drop_network(first)
        second, _ = await rejoin(
            client, b.front.base_url, session, *long_media, first.resume, timeout=25
        )
        await asyncio.sleep(4.0)
        record = await get_session(client, b, session["id"])
        assert (record["status"], record["node"]) == ("live", node)
        await end_as_hr(client, b, session["id"])
        messages = await observer
        await first.close()
        await second.close()
    assert_whole(messages, "ended_by_hr")
    assert "candidate reconnected" in a.node.log()  # on the node that ran it, through B


async def test_placement_spreads_sessions_over_both_nodes(
    deployment: Deployment, long_media: tuple[Path, Path]
) -> None:
    a, b = two_hosts(deployment)
    async with httpx.AsyncClient(trust_env=False, timeout=30.0) as client:
        # Four joins at once, through both front ends, as a busy hour's would arrive.
        placed = await asyncio.gather(
            *(session_on(client, front, long_media) for front in (a, b, a, b))
        )
        nodes = sorted(node for _, _, node in placed)
        assert nodes == ["host-a", "host-a", "host-b", "host-b"]
        health = await wait_for(
            client,
            f"{b.front.base_url}/healthz",
            b.front.hr_headers,
            lambda body: body["live_sessions"] == 4,
            timeout_s=5,
        )
        assert {n["node"]: n["live_sessions"] for n in health["nodes"]} == {
            "host-a": 2,
            "host-b": 2,
        }
        for session, peer, _ in placed:
            await end_as_hr(client, a, session["id"])
            await peer.close()


async def test_a_killed_node_s_sessions_end_as_node_lost_and_no_other_s(
    deployment: Deployment, long_media: tuple[Path, Path]
) -> None:
    a, b = two_hosts(deployment)
    async with httpx.AsyncClient(trust_env=False, timeout=30.0) as client:
        on_a, peer_a, node_a = await session_on(client, a, long_media)
        on_b, peer_b, node_b = await session_on(client, a, long_media)
        assert (node_a, node_b) == ("host-a", "host-b")
        url = signals_url(b.front.base_url, on_a["id"], b.front.api_key)
        lost_observer = asyncio.create_task(collect_signals(url, timeout=60))
        await asyncio.sleep(3.0)
        deployment.kill_node(a)
        messages = await lost_observer  # told, through host B, by whichever front end reaped
        assert_whole(messages, "node_lost")
        record = await get_session(client, b, on_a["id"])
        assert (record["status"], record["end_reason"]) == ("ended", "node_lost")

        # Host B's session goes on: live, and its seconds keep coming.
        assert (await get_session(client, b, on_b["id"]))["status"] == "live"
        before = await observed_seconds(b, on_b["id"])
        # Node A comes back with its id: it ends its own leftovers only (none are left).
        a.node = deployment.start_node("host-a", a.address)
        await asyncio.sleep(3.0)
        after = await observed_seconds(b, on_b["id"])
        assert after > before, "host B's session stopped publishing"
        assert (await get_session(client, a, on_b["id"]))["status"] == "live"
        await end_as_hr(client, a, on_b["id"])
        final_b = await collect_signals(
            signals_url(b.front.base_url, on_b["id"], b.front.api_key), 30
        )
        await peer_a.close()
        await peer_b.close()
    assert_whole(final_b, "ended_by_hr")


async def observed_seconds(host: Host, session_id: str) -> int:
    """The seconds of signals a fresh observer gets in its backfill (what was stored)."""
    url = signals_url(host.front.base_url, session_id, host.front.api_key)
    messages = await collect_signals(url, until_final=False, timeout=2.0)
    return sum(1 for m in messages if m["type"] == "signal")


async def test_a_redis_restart_loses_no_stored_second(
    deployment: Deployment, long_media: tuple[Path, Path]
) -> None:
    a, b = two_hosts(deployment)
    async with httpx.AsyncClient(trust_env=False, timeout=30.0) as client:
        session, peer, _ = await session_on(client, a, long_media)
        url = signals_url(b.front.base_url, session["id"], b.front.api_key)
        observer = asyncio.create_task(observe_resuming(url, timeout_s=90))
        await asyncio.sleep(4.0)
        deployment.redis.restart(kill=True)  # an empty Redis: no registry, streams or calls
        # The nodes announce themselves again; nobody declares them lost meanwhile.
        await wait_for(
            client,
            f"{b.front.base_url}/healthz",
            b.front.hr_headers,
            lambda body: len(body["nodes"]) == 2,
            timeout_s=10,
        )
        await asyncio.sleep(6.0)  # seconds published after the restart
        assert (await get_session(client, b, session["id"]))["status"] == "live"
        await end_as_hr(client, a, session["id"])  # a call through the new Redis
        messages, reconnects = await observer
        stored = await collect_signals(url, timeout=15)  # the store's whole log, after the end
        await peer.close()
    assert reconnects >= 1  # the observer was cut off when Redis went, and came back
    assert_whole(messages, "ended_by_hr")
    assert messages == stored
    assert len([m for m in messages if m["type"] == "signal"]) >= 9

"""End to end: a burst of candidates is met by the CPU budget, not by dropped connections.

A real server with two worker processes is told that a session costs 0.6 cores before any
is measured (``--session-cpu``), with the default budget of 0.9 of the machine's cores. Six
real aiortc peers join at once: the server process admits what fits in the budget (1 to 3 on
a 2-core machine, by how busy it already is) and answers every other offer 503
``overloaded``, naming the CPU budget, with Retry-After. The admitted sessions run on to
their finals with every second present.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest
from media import SpeechTrack
from peer import (
    OfferRejected,
    collect_signals,
    connect_peer,
    create_session,
    signals_url,
    use_loopback_only,
)
from server import ServerProcess

pytestmark = pytest.mark.e2e

JOINS = 6
SESSION_CORES = 0.6


async def settled_busy_cores(
    client: httpx.AsyncClient, base: str, headers: dict[str, str], below: float
) -> float:
    """The server's reading of the machine's busy cores, once under `below` (or after 60 s)."""
    busy = float("inf")
    for _ in range(120):
        metrics = (await client.get(f"{base}/metrics", headers=headers)).text
        readings = [
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("rtserver_cpu_busy_cores ")
        ]
        busy = readings[0] if readings else busy
        if busy < below:
            return busy
        await asyncio.sleep(0.5)
    return busy


async def test_a_burst_past_the_cpu_budget_is_refused_and_the_admitted_run_on(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    use_loopback_only()
    cores = len(os.sched_getaffinity(0))
    budget = ["--max-cpu", "0.9", "--session-cpu", str(SESSION_CORES)]
    server = ServerProcess(tmp_path / "data", workers=2, options=budget).start(timeout_s=180.0)
    base, key = server.base_url, server.api_key
    peers = []
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=30.0) as client:
            # The budget counts everything the machine does: wait for it to settle after the
            # workers' start (and whatever the test before this one left winding down).
            busy = await settled_busy_cores(client, base, server.hr_headers, below=0.5)
            assert busy < 0.5, f"the machine stayed busy ({busy:.2f} cores) with no session"
            sessions = [await create_session(client, base, key) for _ in range(JOINS)]
            observers = [
                asyncio.create_task(collect_signals(signals_url(base, s["id"], key), timeout=90))
                for s in sessions
            ]
            outcomes = await asyncio.gather(
                *(
                    connect_peer(base, s["id"], s["join_token"], face_video, speech_wav.path)
                    for s in sessions
                ),
                return_exceptions=True,
            )
            peers = [o for o in outcomes if not isinstance(o, BaseException)]
            refused = [o for o in outcomes if isinstance(o, OfferRejected)]
            assert len(peers) + len(refused) == JOINS, outcomes
            most = int(0.9 * cores / SESSION_CORES)
            assert 1 <= len(peers) <= most, (len(peers), most)
            for refusal in refused:
                assert refusal.status == 503
                assert refusal.body["error"] == "overloaded"
                assert "CPU budget" in refusal.body["detail"], refusal.body

            metrics = (await client.get(f"{base}/metrics", headers=server.hr_headers)).text
            assert "rtserver_cpu_busy_cores" in metrics
            assert "rtserver_cpu_headroom_sessions" in metrics

            for peer in peers:
                await peer.wait_connected()
            await asyncio.sleep(4.0)
            for peer in peers:
                await peer.close()
            finished = []
            for session, observer, outcome in zip(sessions, observers, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    observer.cancel()
                    continue
                messages = await asyncio.wait_for(observer, 90)
                signals = [m for m in messages if m["type"] == "signal"]
                assert len(signals) >= 3, session["id"]
                assert [s["t"] for s in signals] == list(range(len(signals)))
                finished.append(messages[-1])
            assert [f["type"] for f in finished] == ["final"] * len(peers)
            assert all(f["end_reason"] == "hangup" for f in finished), finished
    finally:
        for peer in peers:
            await peer.close()
        server.stop()

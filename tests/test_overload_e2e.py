"""Admission control: a process that falls behind takes no new session.

The readings are real: every worker samples its event loop's lag from its first join on,
and the lag of the signals it publishes. The test only sets one limit so low (1 us) that any
real process exceeds it. With two workers, the first join lands on worker 0 and the second on
the idle worker 1; once both have run a few seconds, the third finds both over the limit: 503
``overloaded`` with the reason and Retry-After, while the two sessions already live run on
to their finals. Then the unit: the loop monitor's figure follows a loop that is blocked,
and comes back down once it is not.
"""

from __future__ import annotations

import asyncio
import time
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

from rtserver.server.loop_lag import LoopLagMonitor


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (["--max-loop-lag", "0.000001", "--max-signal-lag", "0"], "its event loop runs"),
        (["--max-loop-lag", "0", "--max-signal-lag", "0.000001"], "its signals go out"),
    ],
    ids=["event-loop", "signals"],
)
async def test_overloaded_workers_refuse_new_sessions_and_keep_theirs(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack, limits: list[str], reason: str
) -> None:
    use_loopback_only()
    server = ServerProcess(tmp_path / "data", workers=2, options=limits).start(timeout_s=180.0)
    base, key = server.base_url, server.api_key
    peers = []
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            sessions = [
                await create_session(client, base, key, candidate=f"C{i}") for i in range(3)
            ]
            observers = [
                asyncio.create_task(collect_signals(signals_url(base, s["id"], key), timeout=60))
                for s in sessions[:2]
            ]
            for session in sessions[:2]:
                peer = await connect_peer(
                    base, session["id"], session["join_token"], face_video, speech_wav.path
                )
                peers.append(peer)
                await peer.wait_connected()
            await asyncio.sleep(3.0)  # both workers publish signals and sample their loops

            with pytest.raises(OfferRejected) as refused:
                await connect_peer(
                    base, sessions[2]["id"], sessions[2]["join_token"], face_video, None
                )
            assert refused.value.status == 503
            body = refused.value.body
            assert body["error"] == "overloaded"
            assert "every worker is overloaded" in body["detail"]
            assert reason in body["detail"] and "ms late (limit 0.001 ms)" in body["detail"]

            # Retry-After, on a raw request (the peer helper keeps only the body).
            offer = await client.post(
                f"{base}/api/v1/sessions/{sessions[2]['id']}/offer",
                json={"sdp": peers[0].pc.localDescription.sdp, "type": "offer",
                      "token": sessions[2]["join_token"]},
            )  # fmt: skip
            assert offer.status_code == 503 and int(offer.headers["retry-after"]) > 0

            for peer in peers:
                await peer.close()
            for observer in observers:
                messages = await asyncio.wait_for(observer, 60)
                signals = [m for m in messages if m["type"] == "signal"]
                assert len(signals) >= 3
                assert [s["t"] for s in signals] == list(range(len(signals)))
                assert messages[-1]["type"] == "final"
            metrics = (await client.get(f"{base}/metrics", headers=server.hr_headers)).text
            assert 'rtserver_rejected_total{code="overloaded"} 2' in metrics
            # One reading each, the most loaded worker's: the workers keep theirs up to
            # date in the shared metrics (the server process runs no admission control).
            lags = {
                name: float(value)
                for name, _, value in (line.partition(" ") for line in metrics.splitlines())
                if name in ("rtserver_event_loop_lag_seconds", "rtserver_recent_signal_lag_seconds")
            }
            assert lags["rtserver_event_loop_lag_seconds"] > 0, lags
            assert lags["rtserver_recent_signal_lag_seconds"] >= 0, lags
        assert server.healthy()
    finally:
        for peer in peers:
            await peer.close()
        server.stop()


async def test_the_monitor_follows_a_blocked_loop() -> None:
    monitor = LoopLagMonitor(period_s=0.02, window_s=0.2)
    monitor.start()
    try:
        await asyncio.sleep(0.3)
        idle = monitor.lag_s
        for _ in range(6):
            time.sleep(0.08)  # the loop is held: every wake-up comes late
            await asyncio.sleep(0)
        busy = monitor.lag_s
        await asyncio.sleep(0.4)
        recovered = monitor.lag_s
    finally:
        await monitor.stop()
    assert idle < 0.02
    assert busy > 0.03
    assert recovered < busy / 2

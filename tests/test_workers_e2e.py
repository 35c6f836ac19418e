"""End to end: a server with two worker processes (``--workers 2``) and real aiortc peers.

Three candidates are placed across both workers; observers on the server process receive
every second once and one final each; an HR observer watches a session that runs on a
worker; POST /end reaches the owning worker; and no worker outlives the server. A worker
killed with SIGKILL has its session ended with a final (``worker_restart``), is started
again, and the server keeps taking new sessions.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from media import SpeechTrack
from peer import collect_signals, connect_peer, create_session, signals_url, use_loopback_only
from server import ServerProcess
from watcher import watch_session

pytestmark = pytest.mark.e2e


def child_pids(parent: int) -> list[int]:
    """The processes whose parent is ``parent``, from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            children.append(int(entry.name))
    return children


def running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (zombies count as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def metrics_page(client: httpx.AsyncClient, server: ServerProcess) -> str:
    response = await client.get(f"{server.base_url}/metrics", headers=server.hr_headers)
    assert response.status_code == 200
    return response.text


def sample(page: str, name: str) -> float:
    """The value of the sample ``name`` (with its labels, if any) on a Prometheus text page."""
    lines = (line.partition(" ") for line in page.splitlines())
    values = [float(value) for found, _, value in lines if found == name]
    assert len(values) == 1, (name, page)
    return values[0]


def assert_contiguous(messages: list[dict[str, Any]]) -> None:
    signals = [m for m in messages if m["type"] == "signal"]
    assert [s["t"] for s in signals] == list(range(len(signals)))
    assert [m["seq"] for m in messages] == list(range(len(messages)))
    assert messages[-1]["type"] == "final"
    assert sum(1 for m in messages if m["type"] == "final") == 1


async def health(client: httpx.AsyncClient, server: ServerProcess) -> dict[str, Any]:
    response = await client.get(f"{server.base_url}/healthz", headers=server.hr_headers)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_sessions_run_across_two_workers(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    use_loopback_only()
    server = ServerProcess(tmp_path / "data", workers=2).start()
    assert server.process is not None
    server_pid = server.process.pid
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            base, key = server.base_url, server.api_key
            started = await health(client, server)
            # Worker pids and the rest are for HR only: without the key, only the status.
            public = await client.get(f"{base}/healthz")
            assert public.status_code == 200 and public.json() == {"status": "ok"}
            workers = started["workers"]
            assert [w["index"] for w in workers] == [0, 1] and all(w["ready"] for w in workers)
            worker_pids = sorted(w["pid"] for w in workers)
            assert sorted(child_pids(server_pid)) == worker_pids

            sessions = [await create_session(client, base, key) for _ in range(3)]
            observers = [
                asyncio.create_task(collect_signals(signals_url(base, s["id"], key)))
                for s in sessions
            ]
            await asyncio.sleep(0.5)
            peers = await asyncio.gather(
                *(
                    connect_peer(base, s["id"], s["join_token"], face_video, speech_wav.path)
                    for s in sessions
                )
            )
            live = await health(client, server)
            assert live["live_sessions"] == 3
            assert sorted(w["live_sessions"] for w in live["workers"]) == [1, 2], live

            # The session placed alone on its worker is watched live, through that worker.
            alone = next(w for w in live["workers"] if w["live_sessions"] == 1)
            watched = sessions[1] if alone["index"] == 1 else sessions[0]
            observer = await watch_session(client, base, watched["id"], key)
            await asyncio.sleep(3.0)
            status = await client.get(
                f"{base}/api/v1/sessions/{watched['id']}", headers=server.hr_headers
            )
            figures = status.json()
            assert figures["status"] == "live" and figures["live"] is True, figures
            assert isinstance(figures["signals"], int) and figures["signals"] >= 1, figures
            metrics = (await client.get(f"{base}/metrics", headers=server.hr_headers)).text

            await asyncio.gather(*(p.wait_media_ended(speech_wav.duration_s + 15) for p in peers))
            await asyncio.sleep(0.5)
            ended = await client.post(
                f"{base}/api/v1/sessions/{sessions[0]['id']}/end", headers=server.hr_headers
            )
            assert ended.status_code == 200, ended.text
            assert ended.json()["end_reason"] == "ended_by_hr"
            for peer in peers:
                await peer.close()  # the others hang up
            results = await asyncio.gather(*(asyncio.wait_for(o, 60) for o in observers))
            await asyncio.wait_for(observer.ended.wait(), 15)
            await observer.close()
            after = await health(client, server)
    finally:
        server.stop()
    log = server.log()

    for messages in results:
        assert_contiguous(messages)
        assert len([m for m in messages if m["type"] == "signal"]) >= speech_wav.duration_s - 2
    reasons = [messages[-1]["end_reason"] for messages in results]
    assert reasons[0] == "ended_by_hr", reasons
    assert len(observer.video) >= 10, (len(observer.video), log[-3000:])
    assert after["live_sessions"] == 0 and all(w["restarts"] == 0 for w in after["workers"])
    # Both workers' metrics, added up under one HELP and TYPE per family (three sessions
    # live: two on one worker, one on the other), none labelled with its process.
    assert "rtserver_live_sessions 3.0" in metrics.splitlines(), metrics
    assert metrics.count("# TYPE rtserver_live_sessions ") == 1
    assert "pid=" not in metrics and "worker=" not in metrics

    # No worker outlives the server.
    deadline = time.monotonic() + 10.0
    while any(running(pid) for pid in worker_pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not any(running(pid) for pid in worker_pids), log[-3000:]


async def test_a_killed_worker_ends_its_sessions_and_is_replaced(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    use_loopback_only()
    server = ServerProcess(tmp_path / "data", workers=2).start()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            base, key = server.base_url, server.api_key
            doomed = await create_session(client, base, key)
            doomed_obs = asyncio.create_task(collect_signals(signals_url(base, doomed["id"], key)))
            await asyncio.sleep(0.5)
            peer = await connect_peer(
                base, doomed["id"], doomed["join_token"], face_video, speech_wav.path
            )
            await asyncio.sleep(3.0)
            before = await health(client, server)
            metrics_before = await metrics_page(client, server)
            owner = next(w for w in before["workers"] if w["live_sessions"] == 1)
            os.kill(owner["pid"], signal.SIGKILL)
            killed_msgs = await asyncio.wait_for(doomed_obs, 30)
            await peer.close()
            record = (
                await client.get(
                    f"{base}/api/v1/sessions/{doomed['id']}", headers=server.hr_headers
                )
            ).json()

            # The server keeps taking sessions, on the surviving worker at once.
            fresh = await create_session(client, base, key)
            fresh_obs = asyncio.create_task(collect_signals(signals_url(base, fresh["id"], key)))
            await asyncio.sleep(0.5)
            fresh_peer = await connect_peer(
                base, fresh["id"], fresh["join_token"], face_video, speech_wav.path
            )
            await asyncio.sleep(3.0)
            ended = await client.post(
                f"{base}/api/v1/sessions/{fresh['id']}/end", headers=server.hr_headers
            )
            assert ended.status_code == 200, ended.text
            await fresh_peer.close()
            fresh_msgs = await asyncio.wait_for(fresh_obs, 30)

            # The killed worker comes back.
            deadline = time.monotonic() + 90.0
            while time.monotonic() < deadline:
                replaced = next(
                    w
                    for w in (await health(client, server))["workers"]
                    if w["index"] == owner["index"]
                )
                if replaced["ready"]:
                    break
                await asyncio.sleep(0.5)
            metrics_after = await metrics_page(client, server)
    finally:
        server.stop()
    log = server.log()

    assert_contiguous(killed_msgs)
    final = killed_msgs[-1]
    assert final["end_reason"] == "worker_restart", final
    assert final["signals"] == len(killed_msgs) - 1 >= 1, log[-3000:]
    assert record["status"] == "ended" and record["end_reason"] == "worker_restart", record
    assert_contiguous(fresh_msgs)
    assert fresh_msgs[-1]["end_reason"] == "ended_by_hr"
    assert replaced["ready"] and replaced["restarts"] == 1, replaced
    assert replaced["pid"] != owner["pid"]
    assert not running(owner["pid"])
    # The killed worker never said its session ended; its gauges went with it all the
    # same, and its counts stay in the totals.
    assert sample(metrics_before, "rtserver_live_sessions") == 1, metrics_before
    assert sample(metrics_after, "rtserver_live_sessions") == 0, metrics_after
    started = 'rtserver_sessions_total{outcome="started"}'
    assert sample(metrics_before, started) == 1 and sample(metrics_after, started) == 2

"""End to end: PostgreSQL goes away under a running server (``--store postgresql://…``).

The database is a private PostgreSQL server of this test alone (initdb and pg_ctl in a
temporary directory, on a free loopback port: tests/postgres.py), stopped with a fast
shutdown (every connection cut) while a real aiortc candidate is live, and started again.
While it is down, a new session and a candidate's offer are answered 503
``store_unavailable`` with Retry-After, within seconds; the live session goes on, its
seconds held by the store's writer (up to ``WRITE_QUEUE_BOUND`` writes for the process,
then in the session itself, for as long as the interview lasts: store/async_store.py).
Once PostgreSQL is back, every second is in the store, in order, seq contiguous.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from media import SpeechTrack
from peer import connect_peer, create_session, use_loopback_only
from postgres import PG_BIN, PrivatePostgres, create_database
from server import ServerProcess, free_port

from rtserver.store import Store
from rtserver.store.async_store import HTTP_WRITE_DEADLINE_S, WRITE_QUEUE_BOUND
from rtserver.store.encryption import Keyring

pytestmark = pytest.mark.e2e

OUTAGE_S = 4.0  # how long PostgreSQL stays down while the candidate talks
# A refusal comes within the write deadline plus one connection attempt (3 s), with room
# for a loaded machine.
REFUSED_WITHIN_S = HTTP_WRITE_DEADLINE_S + 3.0 + 4.0


async def test_postgresql_down_refuses_new_sessions_and_the_live_one_keeps_its_seconds(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL server binaries in {PG_BIN} (apt-get install postgresql)")
    use_loopback_only()
    assert WRITE_QUEUE_BOUND >= 100  # an outage of seconds fits in the writer's queue
    pg = PrivatePostgres.make(free_port())
    try:
        await run_outage(pg, tmp_path, face_video, speech_wav)
    finally:
        pg.remove()


async def run_outage(
    pg: PrivatePostgres, tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    pg.start()
    url = create_database(pg.admin_url)
    server = ServerProcess(tmp_path / "data", options=["--store", url]).start()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=30.0) as client:
            base, key, hr = server.base_url, server.api_key, server.hr_headers
            live = await create_session(client, base, key, candidate="Ada")
            waiting = await create_session(client, base, key, candidate="Bo")
            peer = await connect_peer(
                base, live["id"], live["join_token"], face_video, speech_wav.path, client=client
            )
            await asyncio.sleep(2.0)  # a few seconds stored before the outage

            await asyncio.to_thread(pg.stop)
            down_at = time.monotonic()
            started = time.monotonic()
            refused = await client.post(f"{base}/api/v1/sessions", json={}, headers=hr)
            refused_after_s = time.monotonic() - started
            started = time.monotonic()
            offer = await client.post(
                f"{base}/api/v1/sessions/{waiting['id']}/offer",
                json={"sdp": "v=0", "type": "offer", "token": waiting["join_token"]},
            )
            offer_after_s = time.monotonic() - started
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
            await asyncio.to_thread(pg.start)

            await peer.wait_media_ended(speech_wav.duration_s + 30)
            await asyncio.sleep(0.5)
            await peer.close()  # the candidate hangs up
            status = None
            for _ in range(120):
                got = await client.get(f"{base}/api/v1/sessions/{live['id']}", headers=hr)
                status = got.json().get("status") if got.status_code == 200 else None
                if status == "ended":
                    break
                await asyncio.sleep(0.5)
    finally:
        server.stop()
        if not pg.running():
            pg.start()
    log = server.log()

    for response, took in ((refused, refused_after_s), (offer, offer_after_s)):
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "store_unavailable", response.text
        assert int(response.headers["Retry-After"]) > 0
        assert took < REFUSED_WITHIN_S, took
    assert status == "ended"
    assert "store write failed" in log  # the writer did meet the outage, and retried

    store = Store(url, Keyring.from_file(tmp_path / "data" / "master.keys"))
    try:
        messages = store.messages(live["id"])
        record = store.get_session(live["id"])
    finally:
        store.close()
    assert record is not None and record.status == "ended"
    assert [m.seq for m in messages] == list(range(len(messages)))  # contiguous, in order
    signals = [m for m in messages if m.kind == "signal"]
    assert [m.payload["t"] for m in signals] == list(range(len(signals)))
    assert messages[-1].kind == "final"
    # Every second of the media is there, the ones spoken while PostgreSQL was down too.
    assert len(signals) >= int(speech_wav.duration_s) - 1, len(signals)

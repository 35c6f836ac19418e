"""End to end: what bounds a live session, against a running server and real aiortc peers.

- The `control` channel: a candidate flooding it with repeats, garbage, unknown and earlier
  question indices changes the timeline only for real question changes, gets each refusal
  answered on the channel, counted in ``rtserver_control_messages_refused_total{reason}``,
  and logged at most once for the session.
- The interview's length: ``--max-interview`` ends a session with ``end_reason``
  ``max_length`` and its final, as any other end.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import pytest
from media import SpeechTrack
from peer import Peer, collect_signals, connect_peer, create_session, signals_url, use_loopback_only
from server import ServerProcess

pytestmark = pytest.mark.e2e

QUESTIONS = [{"text": f"Question {i + 1}?", "seconds": 60} for i in range(3)]


async def wait_open(peer: Peer, label: str, timeout: float = 10.0) -> None:
    channel = peer.channels[label]
    async with asyncio.timeout(timeout):
        while channel.readyState != "open":
            await asyncio.sleep(0.05)


def question(index: int, at: float = 0.0) -> str:
    return json.dumps({"type": "question", "index": index, "at": at})


def refused_counts(metrics: str) -> dict[str, float]:
    """``rtserver_control_messages_refused_total`` by reason."""
    counts = {}
    pattern = re.compile(r'^rtserver_control_messages_refused_total\{reason="(\w+)"\} (\S+)$')
    for line in metrics.splitlines():
        match = pattern.match(line)
        if match:
            counts[match[1]] = float(match[2])
    return counts


async def test_a_flooded_control_channel_stays_bounded(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    use_loopback_only()
    server = ServerProcess(tmp_path / "data").start()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            base, key = server.base_url, server.api_key
            session = await create_session(client, base, key, questions=QUESTIONS)
            sid = session["id"]
            observer = asyncio.create_task(collect_signals(signals_url(base, sid, key)))
            await asyncio.sleep(0.3)
            peer = await connect_peer(
                base, sid, session["join_token"], face_video, speech_wav.path,
                client=client, channels=("control",),
            )  # fmt: skip
            await wait_open(peer, "control")
            control = peer.channels["control"]
            control.send(question(0))
            for _ in range(500):  # the page re-states its question after a reconnect
                control.send(question(0, 0.5))
            for _ in range(300):
                control.send("{not json")
            for _ in range(200):
                control.send(question(99))
            for _ in range(100):
                control.send(json.dumps({"type": "hello"}))
            # Pauses long enough for the reply buffer to drain on a loaded machine (aiortc's
            # SCTP is Python: under a full CI run 1.5 s was once not enough).
            await asyncio.sleep(3.0)
            control.send(question(1, 1.5))
            for _ in range(100):
                control.send(question(0, 1.6))  # back to an earlier question
            await asyncio.sleep(3.0)
            control.send(question(2, 3.0))
            for _ in range(50):
                control.send(question(3, 3.1))  # one past the last
            await peer.wait_media_ended(speech_wav.duration_s + 10)
            await asyncio.sleep(0.5)
            metrics = (await client.get(f"{base}/metrics", headers=server.hr_headers)).text
            await peer.close()
            messages = await asyncio.wait_for(observer, 30)
    finally:
        server.stop()
    log = server.log()
    assert "Traceback" not in log, log[-4000:]

    assert refused_counts(metrics) == {
        "not_json": 300,
        "unknown_question": 250,
        "malformed": 100,
        "backwards": 100,
    }, metrics
    # Refusals are answered on the channel while its send buffer is small: the first of a
    # burst, and those after a pause, at least; a flood may outrun the rest.
    errors = [m for m in peer.received.get("control", []) if m.get("type") == "error"]
    reasons = {m.get("reason") for m in errors}
    assert {"not_json", "backwards", "unknown_question"} <= reasons, reasons
    assert all(m["error"] == "bad_request" and m["detail"] for m in errors)
    assert 3 <= len(errors) <= 750
    # One log line for the whole flood, and one per question actually begun.
    assert len(re.findall(r"control message refused", log)) == 1, log[-3000:]
    assert len(re.findall(r"question \d+ began", log)) == 3, log[-3000:]

    signals = [m for m in messages if m["type"] == "signal"]
    asked = [s["question"] for s in signals if s["question"] is not None]
    assert asked and asked == sorted(asked) and set(asked) <= {0, 1, 2}, asked
    final = messages[-1]
    assert final["type"] == "final"
    assert [q["index"] for q in final["questions"]] == [0, 1, 2], final["questions"]


async def test_an_interview_ends_at_its_maximum_length(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    use_loopback_only()
    server = ServerProcess(tmp_path / "data", options=["--max-interview", "4"]).start()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            base, key = server.base_url, server.api_key
            session = await create_session(client, base, key)
            sid = session["id"]
            questions = await client.get(
                f"{base}/api/v1/sessions/{sid}/questions",
                params={"token": session["join_token"]},
            )
            observer = asyncio.create_task(collect_signals(signals_url(base, sid, key)))
            await asyncio.sleep(0.3)
            peer = await connect_peer(
                base, sid, session["join_token"], face_video, speech_wav.path, client=client
            )
            joined_at = time.monotonic()
            messages = await asyncio.wait_for(observer, 30)
            final_after_s = time.monotonic() - joined_at
            record = (
                await client.get(f"{base}/api/v1/sessions/{sid}", headers=server.hr_headers)
            ).json()
            await asyncio.sleep(1.0)
            peer_state = peer.pc.connectionState
            await peer.close()
    finally:
        server.stop()
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
    assert questions.json()["max_interview_s"] == 4

    final = messages[-1]
    assert final["type"] == "final" and final["end_reason"] == "max_length", final
    signals = [m for m in messages if m["type"] == "signal"]
    assert [s["t"] for s in signals] == list(range(len(signals)))
    assert 3 <= final["duration_s"] <= 5 and final["duration_s"] == len(signals), final
    # Ended at 4 s of the interview, well before its 9 s of media ran out.
    assert 3.5 < final_after_s < 8.0, final_after_s
    assert record["status"] == "ended" and record["end_reason"] == "max_length", record
    assert peer_state == "closed"  # the server hung up

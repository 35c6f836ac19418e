"""End to end: a real aiortc peer speaks an answer (espeak-ng, Opus over loopback); the
observer receives its transcript, utterance by utterance, and the final and the report carry
it; erasing the session erases it."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from media import SpeechTrack, make_speech_wav
from peer import collect_signals, connect_peer, create_session, signals_url, use_loopback_only
from server import ServerProcess
from wer import word_error_rate

pytestmark = pytest.mark.e2e

ANSWER = (
    0.5,
    "I have worked as a software engineer for five years.",
    1.2,
    "I led a small team that built a video platform for schools.",
    1.0,
    "We shipped it on time and the teachers liked it.",
    0.8,
)
SPOKEN = " ".join(part for part in ANSWER if isinstance(part, str))
TIMING_SLACK_S = 0.35  # the words' times against the spans espeak spoke, either side
# Issue 14's bound. Hearing each utterance alone on a short encoder window, tiny.en heard
# 1 word in 32 wrong here ("I learned a small team"); with faster-whisper's 30 s windows it
# had heard 25-34 % wrong.
MAX_WER = 0.15


@pytest.fixture(scope="module")
def answer_wav(tmp_path_factory: pytest.TempPathFactory) -> SpeechTrack:
    # One clear espeak-ng voice: this test checks the live path (cutting, queueing, timing,
    # publishing) end to end. How well Whisper tiny.en hears each voice, in noise too, is
    # bench/asr.py's to measure; with the default en-us voice, tiny.en already misses words
    # reading the wav directly (9-22 % WER on this answer at 130-170 wpm).
    path = tmp_path_factory.mktemp("transcript") / "answer.wav"
    return make_speech_wav(path, ANSWER, voice="en-us+f2")


def inside_speech(track: SpeechTrack, start: float, end: float) -> bool:
    return any(
        a - TIMING_SLACK_S <= start and end <= b + TIMING_SLACK_S for a, b in track.intervals
    )


async def test_the_observer_receives_what_the_candidate_said(
    tmp_path: Path, answer_wav: SpeechTrack
) -> None:
    use_loopback_only()
    server = ServerProcess(tmp_path / "data", transcribe=True).start()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            base, key = server.base_url, server.api_key
            session = await create_session(
                client, base, key, candidate="Ada", questions=[{"text": "Tell us about you."}]
            )
            observer = asyncio.create_task(
                collect_signals(signals_url(base, session["id"], key), timeout=90.0)
            )
            await asyncio.sleep(0.3)
            peer = await connect_peer(
                base, session["id"], session["join_token"], None, answer_wav.path, client=client
            )
            await peer.wait_media_ended(answer_wav.duration_s + 15)
            await asyncio.sleep(1.0)
            await peer.close()  # the candidate hangs up
            messages = await observer
            late = await collect_signals(signals_url(base, session["id"], key), timeout=20.0)
            report = await client.get(
                f"{base}/api/v1/sessions/{session['id']}/report", headers=server.hr_headers
            )
            metrics = (await client.get(f"{base}/metrics", headers=server.hr_headers)).text
            erased = await client.delete(
                f"{base}/api/v1/sessions/{session['id']}", headers=server.hr_headers
            )
            after = await client.get(
                f"{base}/api/v1/sessions/{session['id']}/report", headers=server.hr_headers
            )
    finally:
        server.stop()

    transcripts = [m for m in messages if m["type"] == "transcript"]
    assert transcripts, f"no transcript among {[m['type'] for m in messages]}"
    heard = " ".join(m["text"] for m in transcripts)
    assert word_error_rate(SPOKEN, heard) <= MAX_WER, heard
    # The later sentences, which tiny.en hears well alone, come through word for word.
    assert "we shipped it on time and the teachers liked it" in heard.lower()

    # In order, each once, in the session's log order, before the final.
    assert [m["seq"] for m in messages] == sorted(m["seq"] for m in messages)
    assert messages[-1]["type"] == "final"
    starts = [m["start"] for m in transcripts]
    assert starts == sorted(starts)
    for earlier, later in itertools.pairwise(transcripts):
        assert earlier["end"] <= later["start"] + 1e-6
    for message in transcripts:
        assert message["v"] == 1 and message["session"] == session["id"]
        assert message["question"] is None  # this peer opened no control channel
        assert message["lag_ms"] >= 0
        assert message["start"] < message["end"]
        for word in message["words"]:
            assert set(word) == {"w", "start", "end", "p"}
            assert 0.0 <= word["p"] <= 1.0
            # On the signals' clock, inside the spans espeak spoke.
            assert inside_speech(answer_wav, word["start"], word["end"]), word

    # The final lists the same segments; a late observer gets them all in the backfill.
    final = messages[-1]
    segments = [
        {k: m[k] for k in ("question", "start", "end", "text", "words")} for m in transcripts
    ]
    assert final["transcript"] == segments
    assert final["transcript_complete"] is True and final["transcript_missing"] == []
    assert final["transcription"] == "on"
    assert [m for m in late if m["type"] == "transcript"] == transcripts

    assert report.status_code == 200
    body: dict[str, Any] = report.json()
    assert body["transcript"] == transcripts
    assert body["final"]["transcript"] == segments

    assert "rtserver_transcripts_total " + f"{len(transcripts)}.0" in metrics
    assert "rtserver_asr_backlog_seconds 0.0" in metrics

    # Erasure takes the transcript with everything else.
    assert erased.status_code == 204 and after.status_code == 404
    with sqlite3.connect(tmp_path / "data" / "rtserver.sqlite3") as db:
        left = db.execute(
            "SELECT COUNT(*) FROM messages WHERE session_id = ?", (session["id"],)
        ).fetchone()
    assert left == (0,)


async def test_transcription_off_sends_no_transcript(
    tmp_path: Path, answer_wav: SpeechTrack
) -> None:
    use_loopback_only()
    server = ServerProcess(tmp_path / "data").start()  # the tests' default: --transcribe off
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            base, key = server.base_url, server.api_key
            session = await create_session(client, base, key)
            observer = asyncio.create_task(
                collect_signals(signals_url(base, session["id"], key), timeout=60.0)
            )
            await asyncio.sleep(0.3)
            peer = await connect_peer(
                base, session["id"], session["join_token"], None, answer_wav.path, client=client
            )
            await peer.wait_media_ended(answer_wav.duration_s + 15)
            await peer.close()
            messages = await observer
            health = await client.get(f"{base}/healthz", headers=server.hr_headers)
    finally:
        server.stop()
    assert not [m for m in messages if m["type"] == "transcript"]
    assert messages[-1]["transcription"] == "off" and messages[-1]["transcript"] == []
    assert "asr" not in health.json()["backends"]

"""End to end: an HR observer watches the candidate live through the server's relay, and
the candidate's questions are tracked per second and in the final.

A real aiortc candidate sends the face video and speech (VP8 + Opus) with a `control`
channel on which it opens question 0, then question 1 a few seconds later. A real aiortc
observer posts a recvonly offer to `/watch` and must receive the candidate's picture
(decoded, re-encoded by the server, decoded again) and sound. Refusals: 401 without the
key, 409 before the candidate connects, 400 for an offer that would send, 503 over the
per-session cap of observers. The observer's connection closes when the session
ends. The candidate's summary is pending, then live, then made of plain sentences.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from media import SpeechTrack
from peer import (
    ApiError,
    Peer,
    collect_signals,
    connect_peer,
    create_session,
    end_session,
    new_peer_connection,
    signals_url,
    use_loopback_only,
)
from server import ServerProcess
from watcher import watch_session

pytestmark = pytest.mark.e2e

QUESTIONS = [
    {"text": "Tell us about a project you are proud of.", "seconds": 60},
    {"text": "Why would you like this role?", "seconds": 60},
]
SECOND_QUESTION_AFTER_S = 4.0


def source_luma(path: Path) -> tuple[float, list[np.ndarray]]:
    """Mean luma (0-255) of every frame of a video file, and each frame's luma, 1 px in 4."""
    means, pictures = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            luma = frame.to_ndarray(format="gray")
            means.append(float(luma.mean()))
            pictures.append(luma[::4, ::4].astype(np.float64))
    return float(np.mean(means)), pictures


def best_match(picture: np.ndarray, sources: list[np.ndarray]) -> float:
    """The highest correlation of ``picture`` with any source picture (same size)."""
    shown = picture.astype(np.float64).ravel()
    return max(float(np.corrcoef(shown, source.ravel())[0, 1]) for source in sources)


async def wait_open(peer: Peer, label: str, timeout: float = 10.0) -> None:
    channel = peer.channels[label]
    async with asyncio.timeout(timeout):
        while channel.readyState != "open":
            await asyncio.sleep(0.05)


async def recvonly_offer(direction: str = "recvonly") -> dict[str, str]:
    pc = new_peer_connection()
    pc.addTransceiver("video", direction=direction)
    pc.addTransceiver("audio", direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
    await pc.close()
    return offer


async def test_observer_watches_live_and_questions_are_tracked(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    use_loopback_only()
    server = ServerProcess(tmp_path / "data", options=["--max-watchers", "1"]).start()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            base, key = server.base_url, server.api_key
            session = await create_session(client, base, key, questions=QUESTIONS)
            sid, token = session["id"], session["join_token"]
            watch_url = f"{base}/api/v1/sessions/{sid}/watch"
            summary_url = f"{base}/api/v1/sessions/{sid}/summary"

            # Refusals before the candidate is there.
            offer = await recvonly_offer()
            no_key = await client.post(watch_url, json=offer)
            assert no_key.status_code == 401, no_key.text
            with pytest.raises(ApiError) as not_live:
                await watch_session(client, base, sid, key)
            assert not_live.value.status == 409
            assert not_live.value.body == {"error": "conflict", "detail": "session is not live"}
            sending = await client.post(
                watch_url, json=await recvonly_offer("sendrecv"), headers=server.hr_headers
            )
            assert sending.status_code == 400 and sending.json()["error"] == "bad_sdp"
            unknown = await client.post(
                f"{base}/api/v1/sessions/{'0' * 32}/watch", json=offer, headers=server.hr_headers
            )
            assert unknown.status_code == 404
            pending = await client.get(summary_url, params={"token": token})
            assert pending.json() == {"status": "pending", "strengths": [], "improvements": []}
            wrong = await client.get(summary_url, params={"token": "wrong"})
            assert wrong.status_code == 401

            signals_task = asyncio.create_task(collect_signals(signals_url(base, sid, key)))
            candidate = await connect_peer(
                base, sid, token, face_video, speech_wav.path, client=client, channels=("control",)
            )
            await wait_open(candidate, "control")
            control = candidate.channels["control"]
            control.send(json.dumps({"type": "question", "index": 0, "at": 0.0}))
            observer = await watch_session(client, base, sid, key)
            with pytest.raises(ApiError) as crowded:  # one observer at most on this server
                await watch_session(client, base, sid, key)
            live = (await client.get(summary_url, params={"token": token})).json()
            await asyncio.sleep(SECOND_QUESTION_AFTER_S)
            control.send(
                json.dumps({"type": "question", "index": 1, "at": SECOND_QUESTION_AFTER_S})
            )

            await candidate.wait_media_ended(speech_wav.duration_s + 10)
            await asyncio.sleep(0.5)
            ended = await end_session(client, base, sid, token)  # the page's "Finish"
            assert ended.status_code == 200, ended.text
            await candidate.close()
            messages = await asyncio.wait_for(signals_task, 30)
            await asyncio.wait_for(observer.ended.wait(), 10)  # the server closed it
            summary = await client.get(summary_url, params={"token": token})
            audit = await client.get(
                f"{base}/api/v1/sessions/{sid}/audit", headers=server.hr_headers
            )
            await observer.close()
    finally:
        server.stop()
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
    assert live == {"status": "live", "strengths": [], "improvements": []}
    assert crowded.value.status == 503 and crowded.value.body["error"] == "at_capacity"

    # The observer saw the candidate's picture: right size, same brightness, same content.
    video = observer.video
    assert len(video) >= 10, (len(video), log[-3000:])
    assert all((s.width, s.height) == (320, 240) for s in video), {
        (s.width, s.height) for s in video
    }
    mean, sources = source_luma(face_video)
    shown = float(np.mean([s.mean_luma for s in video]))
    assert abs(shown - mean) < 6.0, (shown, mean)
    matches = [best_match(picture, sources) for picture in observer.pictures[-10:]]
    assert min(matches) > 0.9, matches
    # ... and heard the sound: Opus frames of 20 ms, for most of the media.
    assert len(observer.audio) >= 0.5 * speech_wav.duration_s / 0.02, len(observer.audio)

    # Each second says which question was in force when it began.
    signals = [m for m in messages if m["type"] == "signal"]
    assert [s["t"] for s in signals] == list(range(len(signals)))
    final = messages[-1]
    assert final["type"] == "final" and final["end_reason"] == "ended_by_candidate"
    asked = [s["question"] for s in signals]
    first_zero, first_one = asked.index(0), asked.index(1)
    assert first_zero <= 1, asked  # question 0 opened as the media began
    assert all(q is None for q in asked[:first_zero]), asked
    assert set(asked[first_zero:first_one]) == {0} and set(asked[first_one:]) == {1}, asked
    assert abs(first_one - first_zero - SECOND_QUESTION_AFTER_S) <= 1.5, asked

    # The final breaks the interview down by question, with the questions' texts.
    questions: list[dict[str, Any]] = final["questions"]
    assert [q["index"] for q in questions] == [0, 1]
    assert [q["text"] for q in questions] == [q["text"] for q in QUESTIONS]
    for entry, index in zip(questions, (0, 1), strict=True):
        seconds = [s for s in signals if s["question"] == index]
        assert entry["seconds"] == len(seconds)
        assert entry["start_s"] == seconds[0]["t"] and entry["end_s"] == seconds[-1]["t"] + 1
        assert set(entry) >= {
            "speech_ratio",
            "rate_sps",
            "syllables",
            "pause_count",
            "face",
            "dominant_emotion",
        }
        assert entry["face"] is not None and entry["face"] > 0.8, entry
        assert entry["speech_ratio"] is not None and 0 < entry["speech_ratio"] <= 1, entry
        assert entry["syllables"] is not None and entry["syllables"] > 0, entry
        assert entry["dominant_emotion"] == "happy", entry  # the smiling astronaut

    # The candidate's summary: plain sentences, no score and no figures.
    assert summary.status_code == 200
    body = summary.json()
    assert body["status"] == "ended"
    assert 1 <= len(body["strengths"]) <= 3 and 1 <= len(body["improvements"]) <= 3, body
    for sentence in body["strengths"] + body["improvements"]:
        assert isinstance(sentence, str) and sentence
        assert not re.search(r"\d", sentence), sentence
    assert "score" not in json.dumps(body).lower()

    actions = [entry["action"] for entry in audit.json()["audit"]]
    assert {"join", "watch", "view_summary", "end"} <= set(actions), actions

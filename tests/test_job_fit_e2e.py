"""A live interview for a job, end to end: a real aiortc peer answers the job's first
question with espeak-ng speech; the final carries the job-fit, its competencies with
quotes from what was said, and a recommendation, never a rejection."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from media import JOB_ANSWER_SCRIPT, SpeechTrack, make_speech_wav
from peer import collect_signals, connect_peer, signals_url, use_loopback_only, wait_open
from server import ServerProcess

pytestmark = pytest.mark.e2e

JOB = Path(__file__).parent / "jobs" / "backend_engineer.json"


@pytest.fixture(scope="module")
def answer_wav(tmp_path_factory: pytest.TempPathFactory) -> SpeechTrack:
    path = tmp_path_factory.mktemp("job") / "answer.wav"
    return make_speech_wav(path, JOB_ANSWER_SCRIPT, voice="en-us+f2")


async def test_a_live_answer_is_rated_against_the_job(
    tmp_path: Path, answer_wav: SpeechTrack
) -> None:
    use_loopback_only()
    server = ServerProcess(tmp_path / "data", transcribe=True).start()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=30.0) as client:
            base, hr = server.base_url, server.hr_headers
            job = (
                await client.post(
                    f"{base}/api/v1/jobs", json=json.loads(JOB.read_text()), headers=hr
                )
            ).json()
            made = await client.post(
                f"{base}/api/v1/sessions", json={"candidate": "Ada", "job": job["id"]}, headers=hr
            )
            session = made.json()
            observer = asyncio.create_task(
                collect_signals(signals_url(base, session["id"], server.api_key), timeout=120.0)
            )
            await asyncio.sleep(0.3)
            peer = await connect_peer(
                base,
                session["id"],
                session["join_token"],
                None,
                answer_wav.path,
                client=client,
                channels=("control",),
            )
            await wait_open(peer, "control")
            peer.channels["control"].send(json.dumps({"type": "question", "index": 0, "at": 0.0}))
            await peer.wait_media_ended(answer_wav.duration_s + 15)
            await asyncio.sleep(1.0)
            await peer.close()
            messages = await observer
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()[-4000:]

    final = messages[-1]
    assert final["type"] == "final"
    said = " ".join(m["text"] for m in messages if m["type"] == "transcript")
    assert said, "nothing was transcribed"
    assert final["job"] == {"id": job["id"], "version": 1, "title": job["title"]}
    assert final["threshold"] == job["threshold"]
    assert final["recommendation"] in ("advance", "review")
    assert final["recommendation"] == (
        "advance" if final["score"] >= job["threshold"] else "review"
    )

    competencies = final["competencies"]
    assert set(competencies) == {c["id"] for c in job["competencies"]}
    solving = competencies["problem_solving"]
    assert solving["answered"] and solving["score"] > 0, solving
    # Quotes are the candidate's own words, as transcribed, with when they were said.
    assert solving["evidence"], solving
    for quote, timed in zip(solving["evidence"], solving["evidence_times"], strict=True):
        assert quote in said, (quote, said)
        assert timed["start"] is not None and timed["start"] < timed["end"]
    # The other questions were never asked: their competencies count 0 and are named.
    assert set(final["not_answered"]) >= {"code_quality", "collaboration"}
    assert final["dimensions"].keys() == competencies.keys()
    weights = {c["id"]: c["weight"] for c in job["competencies"]}
    expected = round(sum(weights[k] * v["score"] for k, v in competencies.items()), 1)
    assert final["score"] == expected
    # How the candidate came across is shown, and carries no weight by default.
    assert final["delivery"]["weight"] == 0 and "speaking" in final["delivery"]["dimensions"]

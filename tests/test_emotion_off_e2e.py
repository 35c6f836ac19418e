"""End to end with emotion inference switched off, as EU recruitment deployments need it.

A real aiortc peer sends a real face and speech; the server must still find the face, but
run no emotion model, send `emotion: null` in every signal, and leave expression out of
the final score, saying why.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from media import SpeechTrack
from peer import collect_signals, connect_peer, create_session, signals_url, use_loopback_only
from server import ServerProcess

pytestmark = pytest.mark.e2e


async def test_emotion_off_runs_no_emotion_model(
    tmp_path: Path, face_video: Path, speech_wav: SpeechTrack
) -> None:
    use_loopback_only()
    server = ServerProcess(tmp_path / "data", ["--emotion", "off"]).start()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            base, key = server.base_url, server.api_key
            health = (await client.get(f"{base}/healthz", headers=server.hr_headers)).json()
            session = await create_session(client, base, key, candidate="Eve")
            questions = await client.get(
                f"{base}/api/v1/sessions/{session['id']}/questions",
                params={"token": session["join_token"]},
            )
            observer = asyncio.create_task(collect_signals(signals_url(base, session["id"], key)))
            await asyncio.sleep(0.3)
            peer = await connect_peer(
                base, session["id"], session["join_token"], face_video, speech_wav.path,
                client=client,
            )  # fmt: skip
            await peer.wait_media_ended(speech_wav.duration_s + 10)
            await peer.close()
            messages = await observer
    finally:
        server.stop()

    assert health["emotion"] == "off"
    # The candidate page learns it where it reads its questions (no HR key there).
    assert questions.status_code == 200 and questions.json()["emotion"] == "off"
    assert "emotion" not in health["backends"]  # the model was never even loaded
    assert "emotion inference is off" in server.log()
    signals = [m for m in messages if m["type"] == "signal"]
    assert len(signals) >= speech_wav.duration_s - 1.5
    assert all(s["emotion"] is None for s in signals)
    # Faces are still found: presence does not depend on emotion inference.
    analysed = [s for s in signals if s["video"]["fps"] > 0]
    assert sum(s["video"]["face"] for s in analysed) / len(analysed) > 0.8
    final = messages[-1]
    assert final["type"] == "final" and final["emotion_analysis"] == "off"
    assert "expression" not in final["dimensions"]
    assert any("Art. 5(1)(f)" in note for note in final["notes"])

"""End to end: live hints reach a real aiortc candidate over the `feedback` data channel.

Two candidates at once, over loopback, each an audio-only aiortc peer sending real Opus:
- one talks very fast for about 13 s, then says nothing for 10 s, with a `control` channel on
  which it opens question 0 (and also sends a garbled message, which is answered with an
  error): it must get `pace_fast`, then `long_silence`;
- one talks far too quietly, opening the `feedback` channel itself and no control
  channel (so its whole session counts as one open question): it must get `too_quiet`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from media import make_speech_wav
from peer import Peer, connect_peer, create_session, use_loopback_only, wait_open
from server import ServerProcess

pytestmark = pytest.mark.e2e

FAST_SCRIPT = (
    0.5,
    "I built the ingest service, then I rewrote the scheduler, and we shipped it in a week.",
    0.15,
    "After that we measured every stage, removed two copies, and halved the latency.",
    0.15,
    "The team liked it, so we kept going and moved the decoder onto its own thread pool.",
    0.15,
    "Finally we documented everything and trained the support engineers on the new tools.",
    0.15,
    "Then we planned the next release together and wrote down what we had learned so far.",
    10.0,
)
QUIET_SCRIPT = (
    0.5,
    "I think my main strength is that I listen carefully before I start to build anything.",
    0.2,
    "I also like to write things down, so the whole team knows what we agreed to do.",
    1.0,
)


def hint_codes(peer: Peer) -> list[str]:
    return [m["code"] for m in peer.received.get("feedback", []) if m.get("type") == "hint"]


async def test_hints_reach_the_candidate(tmp_path: Path, media_dir: Path) -> None:
    fast = make_speech_wav(media_dir / "fast.wav", FAST_SCRIPT, words_per_minute=330)
    quiet = make_speech_wav(media_dir / "quiet.wav", QUIET_SCRIPT, speech_dbfs=-50.0)
    use_loopback_only()
    server = ServerProcess(tmp_path / "data").start()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            base, key = server.base_url, server.api_key
            one = await create_session(client, base, key, candidate="Fast")
            two = await create_session(client, base, key, candidate="Quiet")
            talker, whisperer = await asyncio.gather(
                connect_peer(base, one["id"], one["join_token"], None, fast.path,
                             client=client, channels=("control",)),
                connect_peer(base, two["id"], two["join_token"], None, quiet.path,
                             client=client, channels=("feedback",)),
            )  # fmt: skip
            await wait_open(talker, "control")
            control = talker.channels["control"]
            control.send("{not json")
            control.send(json.dumps({"type": "question", "index": 0, "at": 0.0}))
            await asyncio.gather(
                talker.wait_media_ended(fast.duration_s + 10),
                whisperer.wait_media_ended(quiet.duration_s + 10),
            )
            await asyncio.sleep(1.5)  # the last seconds' signals, and their hints
            metrics = (await client.get(f"{base}/metrics", headers=server.hr_headers)).text
            await talker.close()
            await whisperer.close()
    finally:
        server.stop()

    errors = [m for m in talker.received.get("control", []) if m.get("type") == "error"]
    assert len(errors) == 1 and errors[0]["error"] == "bad_request", talker.received
    codes = hint_codes(talker)
    assert "pace_fast" in codes, (talker.received, server.log()[-2000:])
    assert "long_silence" in codes, talker.received
    assert codes.index("pace_fast") < codes.index("long_silence")
    for message in talker.received["feedback"]:
        assert set(message) >= {"type", "code", "text"} and message["text"]
    assert hint_codes(whisperer) == ["too_quiet"], whisperer.received
    assert 'rtserver_hints_total{code="too_quiet"} 1' in metrics

"""Live hint rules, and the control-channel messages they depend on."""

import itertools
import json

import pytest

from rtserver.errors import BadRequest
from rtserver.live.hints import PACE_AFTER_S, RATE_LIMIT_S, SILENCE_AFTER_S, HintRules
from rtserver.media.ingest import MAX_CONTROL_BYTES, parse_control
from rtserver.messages import AudioSecond, SignalMessage, VideoSecond


def signal(t: int, speech: float, dbfs: float = -22.0, rate: float | None = None) -> SignalMessage:
    fluency = None
    if rate is not None:
        fluency = {"rate_sps": rate, "speech_ratio": 0.8, "syllables": 4, "score": 50.0}
    return SignalMessage(
        session="s",
        t=t,
        video=VideoSecond(fps=10, face=1.0, box=None),
        audio=AudioSecond(speech=speech, loudness_dbfs=dbfs, pitch_hz=150.0, hops=100),
        lag_ms=40.0,
        fluency=fluency,
    )


Sent = list[tuple[int, str]]


def run(rules: HintRules, signals: list[SignalMessage], open_: bool = True) -> Sent:
    return [(s.t, h.code) for s in signals for h in rules.on_second(s, open_)]


def test_fast_pace_after_ten_seconds_then_rate_limited() -> None:
    sent = run(HintRules(), [signal(t, 0.9, rate=7.5) for t in range(60)])
    fast = [t for t, code in sent if code == "pace_fast"]
    assert fast[0] == PACE_AFTER_S - 1  # the tenth fast second
    assert all(b - a >= RATE_LIMIT_S for a, b in itertools.pairwise(fast))
    assert len(fast) >= 2


def test_a_second_in_the_band_resets_the_pace_count() -> None:
    rates = [1.5] * 9 + [4.0] + [1.5] * 9
    sent = run(HintRules(), [signal(t, 0.9, rate=r) for t, r in enumerate(rates)])
    assert sent == []
    slow = run(HintRules(), [signal(t, 0.9, rate=1.5) for t in range(12)])
    assert "pace_slow" in [code for _, code in slow]


def test_long_silence_only_while_a_question_is_open() -> None:
    quiet = [signal(t, 0.0, dbfs=-70.0) for t in range(12)]
    assert run(HintRules(), quiet) == [(SILENCE_AFTER_S - 1, "long_silence")]
    assert run(HintRules(), quiet, open_=False) == []
    broken = [signal(t, 0.8 if t % 5 == 0 else 0.0) for t in range(30)]
    assert run(HintRules(), broken) == []  # speech every 5 s: never 8 s of silence


def test_too_quiet_needs_five_quiet_spoken_seconds() -> None:
    sent = run(HintRules(), [signal(t, 0.8, dbfs=-46.0) for t in range(6)])
    assert sent == [(4, "too_quiet")]
    assert run(HintRules(), [signal(t, 0.8, dbfs=-25.0) for t in range(10)]) == []


def test_control_messages_are_parsed_or_refused_with_a_reason() -> None:
    message = parse_control(json.dumps({"type": "question", "index": 2, "at": 31.5}))
    assert (message.index, message.at) == (2, 31.5)
    bad = [
        b"\xff\xfe",
        "not json",
        "[]",
        json.dumps({"type": "answer"}),
        json.dumps({"type": "question", "index": -1, "at": 0}),
        json.dumps({"type": "question", "index": True, "at": 0}),
        json.dumps({"type": "question", "index": 0, "at": "soon"}),
        json.dumps({"type": "question", "index": 0, "at": 1, "pad": "x" * MAX_CONTROL_BYTES}),
    ]
    for data in bad:
        with pytest.raises(BadRequest):
            parse_control(data)

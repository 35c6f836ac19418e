"""The candidate's summary (``scoring/summary.py``): chosen from the final's dimension scores,
worded from their evidence, never showing a score, a weight or any figure.

The endpoint itself is exercised end to end in ``test_relay_e2e.py``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from rtserver.messages import AudioSecond, SignalMessage, VideoSecond
from rtserver.scoring.rubric import Interview, score_interview
from rtserver.scoring.summary import (
    FALLBACK_IMPROVEMENT,
    FALLBACK_STRENGTH,
    IMPROVEMENTS,
    STRENGTHS,
    summarise,
)


def second(
    t: int, face: float = 1.0, speech: float = 0.6, loudness: float | None = -22.0, frames: int = 15
) -> SignalMessage:
    return SignalMessage(
        session="s",
        t=t,
        video=VideoSecond(fps=10.0 if frames else 0.0, face=face, box=None, frames=frames),
        audio=AudioSecond(speech=speech, loudness_dbfs=loudness, pitch_hz=None, hops=100),
        lag_ms=50.0,
    )


def fluent(signal: SignalMessage, syllables: int, score: float = 90.0) -> SignalMessage:
    return replace(
        signal,
        fluency={
            "syllables": syllables,
            "rate_sps": float(syllables),
            "pause_count": 0,
            "pause_s": 0.0,
            "speech_ratio": signal.audio.speech,
            "score": score,
        },
    )


def final_of(signals: list[SignalMessage], emotion_on: bool = True) -> dict[str, Any]:
    return score_interview(Interview("s", signals, "hangup", emotion_on)).to_wire()


def assert_plain(sentences: tuple[str, ...]) -> None:
    """No figure of any kind, and no mention of scores or weights."""
    for sentence in sentences:
        assert sentence and not re.search(r"\d", sentence), sentence
        assert "score" not in sentence.lower() and "weight" not in sentence.lower(), sentence


def test_strong_candidate_gets_strengths_best_first_and_a_general_tip() -> None:
    final = final_of([fluent(second(t), syllables=4) for t in range(30)])
    summary = summarise(final)
    assert len(summary.strengths) == 3
    assert set(summary.strengths) <= set(STRENGTHS.values())
    assert summary.improvements == (FALLBACK_IMPROVEMENT,)
    assert_plain(summary.strengths + summary.improvements)


def test_weak_dimensions_become_things_to_work_on_weakest_first() -> None:
    # Face in view 60 % of the time, and quiet: presence and audibility are weak.
    signals = [second(t, face=0.6, loudness=-44.0) for t in range(30)]
    final = final_of(signals)
    summary = summarise(final)
    dims = final["dimensions"]
    assert dims["audibility"]["score"] < dims["presence"]["score"] < 75
    assert summary.improvements[:2] == (
        IMPROVEMENTS["audibility_quiet"],
        IMPROVEMENTS["presence"],
    )
    assert STRENGTHS["presence"] not in summary.strengths
    assert STRENGTHS["speaking"] in summary.strengths  # 60 % talk is in the band
    assert_plain(summary.strengths + summary.improvements)


def test_direction_comes_from_the_evidence() -> None:
    loud = summarise(final_of([second(t, loudness=-3.0) for t in range(20)]))
    assert IMPROVEMENTS["audibility_loud"] in loud.improvements
    nonstop = summarise(final_of([second(t, speech=1.0) for t in range(20)]))
    assert IMPROVEMENTS["speaking_more"] in nonstop.improvements
    terse = summarise(final_of([second(t, speech=0.1) for t in range(20)]))
    assert IMPROVEMENTS["speaking_less"] in terse.improvements
    fast = summarise(final_of([fluent(second(t), syllables=8, score=30) for t in range(20)]))
    assert IMPROVEMENTS["fluency_fast"] in fast.improvements
    slow = summarise(final_of([fluent(second(t), syllables=1, score=30) for t in range(20)]))
    assert IMPROVEMENTS["fluency_slow"] in slow.improvements
    for summary in (loud, nonstop, terse, fast, slow):
        assert_plain(summary.strengths + summary.improvements)


def test_at_most_three_of_each_and_never_expression() -> None:
    # Everything weak: no face, no speech, camera dropping out, a gloomy expression.
    signals = [
        replace(
            second(t, face=0.0, speech=0.0, loudness=-70.0, frames=15 if t % 2 else 0),
            emotion={"valence": -0.8, "dominant": "sad", "frames": 5},
        )
        for t in range(20)
    ]
    final = final_of(signals)
    summary = summarise(final)
    assert len(summary.improvements) == 3
    assert summary.strengths == (FALLBACK_STRENGTH,)
    assert not any("express" in s.lower() or "smile" in s.lower() for s in summary.improvements)
    assert_plain(summary.strengths + summary.improvements)


def test_nothing_measured_still_reads_plainly() -> None:
    summary = summarise(final_of([]))
    assert 1 <= len(summary.strengths) <= 3 and 1 <= len(summary.improvements) <= 3
    assert_plain(summary.strengths + summary.improvements)
    empty = summarise({"dimensions": {}})
    assert empty.strengths == (FALLBACK_STRENGTH,)
    assert empty.improvements == (FALLBACK_IMPROVEMENT,)


def test_no_figure_from_the_final_leaks() -> None:
    final = final_of([fluent(second(t, face=0.7, loudness=-35.0), syllables=6) for t in range(25)])
    summary = summarise(final)
    text = " ".join(summary.strengths + summary.improvements)
    figures = [final["score"]] + [
        value for d in final["dimensions"].values() for value in (d["score"], d["weight"])
    ]
    for figure in figures:
        assert str(figure) not in text and str(round(figure)) not in text
    assert not any(d["evidence"] in text for d in final["dimensions"].values())

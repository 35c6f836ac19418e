"""The candidate's summary (``scoring/summary.py``): chosen from the final's dimension scores,
worded from their evidence, never showing a score, a weight or any figure, never telling the
candidate one thing and its opposite.

The endpoint itself is exercised end to end in ``test_relay_e2e.py``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from typing import Any

import pytest

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


def fluent(
    signal: SignalMessage,
    syllables: int,
    score: float = 90.0,
    pause_s: float = 0.0,
    pitch_var_st: float | None = 3.0,
) -> SignalMessage:
    return replace(
        signal,
        fluency={
            "syllables": syllables,
            "rate_sps": float(syllables),
            "pause_count": 1 if pause_s else 0,
            "pause_s": pause_s,
            "speech_ratio": signal.audio.speech,
            "pitch_var_st": pitch_var_st,
            "score": score,
        },
    )


STRENGTH_TEXTS = {advice.text for advice in STRENGTHS.values()}


def tip(name: str) -> str:
    return IMPROVEMENTS[name].text


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
    assert set(summary.strengths) <= STRENGTH_TEXTS
    assert summary.improvements == (FALLBACK_IMPROVEMENT,)
    assert_plain(summary.strengths + summary.improvements)


def test_weak_dimensions_become_things_to_work_on_weakest_first() -> None:
    # The face is gone in 20 of 30 s, and the voice is quiet: presence and audibility are weak.
    signals = [second(t, face=0.0 if t < 20 else 1.0, loudness=-50.0) for t in range(30)]
    final = final_of(signals)
    summary = summarise(final)
    dims = final["dimensions"]
    assert dims["audibility"]["score"] < dims["presence"]["score"] < 75
    assert summary.improvements[:2] == (tip("audibility_quiet"), tip("presence_absent"))
    assert STRENGTHS["presence"].text not in summary.strengths
    assert STRENGTHS["speaking"].text in summary.strengths  # 60 % talk is in the band
    assert_plain(summary.strengths + summary.improvements)


@pytest.mark.parametrize(
    ("faces", "asked"),
    [
        # A face found in 60 % of the frames of every second: weak presence, yet a face was
        # there each second; the detector may have missed it in the other frames.
        ([0.6] * 30, False),
        # No face in any frame for 10 of 30 s (a third): not most of the interview.
        ([0.0] * 10 + [1.0] * 20, False),
        # No face at all in 16 of 30 s: truly away for most of it.
        ([0.0] * 16 + [0.4] * 14, True),
        # Never any face: truly absent.
        ([0.0] * 30, True),
    ],
)
def test_face_tip_only_after_a_long_absence(faces: list[float], asked: bool) -> None:
    final = final_of([second(t, face=f) for t, f in enumerate(faces)])
    assert final["dimensions"]["presence"]["score"] < 75
    summary = summarise(final)
    assert (tip("presence_absent") in summary.improvements) is asked
    assert not any("face" in s.lower() for s in summary.strengths)
    # Seconds without analysed video (no frames) are not absences of the face.
    unseen = [second(t, face=0.0, frames=0) for t in range(20)]
    visible = [second(t, face=0.6) for t in range(20, 30)]
    assert tip("presence_absent") not in summarise(final_of(unseen + visible)).improvements


def test_direction_comes_from_the_evidence() -> None:
    loud = summarise(final_of([second(t, loudness=-3.0) for t in range(20)]))
    assert tip("audibility_loud") in loud.improvements
    nonstop = summarise(final_of([second(t, speech=1.0) for t in range(20)]))
    assert tip("speaking_more") in nonstop.improvements
    terse = summarise(final_of([second(t, speech=0.1) for t in range(20)]))
    assert tip("speaking_less") in terse.improvements
    fast = summarise(final_of([fluent(second(t), syllables=8, score=30) for t in range(20)]))
    assert tip("fluency_fast") in fast.improvements
    slow = summarise(final_of([fluent(second(t), syllables=1, score=30) for t in range(20)]))
    assert tip("fluency_slow") in slow.improvements
    paused = [fluent(second(t), syllables=3, score=40, pause_s=0.4) for t in range(20)]
    assert tip("fluency_pauses") in summarise(final_of(paused)).improvements
    flat = [fluent(second(t), syllables=4, score=60, pitch_var_st=0.8) for t in range(20)]
    assert tip("fluency_monotone") in summarise(final_of(flat)).improvements
    other = [fluent(second(t), syllables=4, score=60) for t in range(20)]
    assert tip("fluency") in summarise(final_of(other)).improvements
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
    assert tip("presence_absent") in summary.improvements  # no face in any second
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


# What a sentence speaks about, read from its words alone (not from the summary's own topic
# tags), so that the check below judges the sentences a candidate actually reads.
TOPIC_WORDS = {
    "pauses": r"\bpaus",
    "pace": r"\bpace\b|\bslow|\bfast|\brush|\bflow",
    "amount": r"\bsay (a little )?more\b|\bfull answers\b|\blength\b",
    "loudness": r"\bloud|\bquiet|\bspeak up\b|\blevel\b|\bhear",
    "view": r"\bface\b|\bin view\b",
    "connection": r"\bconnect|\bdropped out\b",
}


def topics_of(sentence: str) -> set[str]:
    return {topic for topic, words in TOPIC_WORDS.items() if re.search(words, sentence.lower())}


def grid_of_finals() -> list[dict[str, Any]]:
    """Finals over a grid of candidates: face presence, talk share, loudness, pace, pauses,
    pitch spread, fluency score and drop-outs, in every combination."""
    finals = []
    for face, speech, loudness, rate, pause_s, spread, score, drops in itertools.product(
        (0.0, 0.5, 1.0),  # face share in each second
        (0.1, 0.5, 0.95),  # share of each second with speech
        (-45.0, -22.0, -5.0),  # loudness (dBFS)
        (None, 1, 4, 7),  # syllables per second; None: no fluency measured
        (0.0, 0.45),  # pause time in each second (s)
        (0.8, 3.0),  # pitch spread (semitones)
        (30.0, 60.0, 90.0),  # each second's fluency score
        (False, True),  # the camera drops out every other second
    ):
        signals = []
        for t in range(20):
            signal = second(
                t, face=face, speech=speech, loudness=loudness, frames=0 if drops and t % 2 else 15
            )
            if rate is not None:
                signal = fluent(signal, rate, score, pause_s=pause_s, pitch_var_st=spread)
            signals.append(signal)
        finals.append(final_of(signals))
    return finals


def test_strengths_and_things_to_work_on_never_contradict() -> None:
    """No topic is praised and criticised at once, and no two tips pull the same topic in
    different directions ("good balance of talking and pausing" beside "fewer long
    pauses", or "leave short pauses" beside "keep long pauses short")."""
    finals = grid_of_finals()
    assert len(finals) == 3 * 3 * 3 * 4 * 2 * 2 * 3 * 2
    for final in finals:
        summary = summarise(final)
        praised = set().union(*(topics_of(s) for s in summary.strengths))
        criticised = [topics_of(s) for s in summary.improvements]
        assert not praised & set().union(*criticised), (summary, final["dimensions"])
        for first, later in itertools.combinations(criticised, 2):
            assert not first & later, (summary, final["dimensions"])
        assert_plain(summary.strengths + summary.improvements)

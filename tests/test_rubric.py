import re
from dataclasses import replace

import pytest

from rtserver.messages import AudioSecond, SignalMessage, VideoSecond, signal_from_wire
from rtserver.scoring.rubric import (
    EXPRESSION_WEIGHT,
    FLUENCY_WEIGHT,
    WEIGHTS,
    Interview,
    score_interview,
    speech_time,
)


def second(t: int, face: float, speech: float, loudness: float | None) -> SignalMessage:
    return SignalMessage(
        session="s",
        t=t,
        video=VideoSecond(fps=10.0, face=face, box=None, frames=15),
        audio=AudioSecond(speech=speech, loudness_dbfs=loudness, pitch_hz=None, hops=100),
        lag_ms=50.0,
    )


def test_engaged_candidate_scores_high_with_evidence() -> None:
    signals = [second(t, 1.0, 0.6, -22.0) for t in range(30)]
    final = score_interview(Interview("s", signals, "hangup"))
    assert final.score >= 95
    assert final.duration_s == 30 and final.signals == 30
    assert abs(sum(d.weight for d in final.dimensions.values()) - 1.0) < 1e-9
    assert set(final.dimensions) == set(WEIGHTS)
    assert "100%" in final.dimensions["presence"].evidence


def test_absent_silent_candidate_scores_low() -> None:
    signals = [second(t, 0.0, 0.0, -70.0) for t in range(30)]
    final = score_interview(Interview("s", signals, "media_timeout"))
    assert final.dimensions["presence"].score == 0
    assert final.dimensions["speaking"].score == 0
    assert final.score < 20
    assert final.end_reason == "media_timeout"


def test_scores_are_monotonic_in_presence() -> None:
    low = score_interview(Interview("s", [second(t, 0.4, 0.5, -20.0) for t in range(10)], ""))
    high = score_interview(Interview("s", [second(t, 0.9, 0.5, -20.0) for t in range(10)], ""))
    assert high.score > low.score


def test_no_media_gives_zero_with_reasons() -> None:
    final = score_interview(Interview("s", [], "ended_by_hr"))
    assert final.score == 0 and final.duration_s == 0
    assert all(d.evidence for d in final.dimensions.values())


def with_emotion(signal: SignalMessage, valence: float, dominant: str) -> SignalMessage:
    return replace(signal, emotion={"valence": valence, "dominant": dominant, "frames": 10})


def test_expression_counts_when_emotion_is_on_and_measured() -> None:
    calm = [with_emotion(second(t, 1.0, 0.6, -22.0), 0.3, "happy") for t in range(8)]
    tense = [with_emotion(second(t, 1.0, 0.6, -22.0), -0.5, "angry") for t in range(8, 10)]
    final = score_interview(Interview("s", calm + tense, "hangup", emotion_on=True))
    assert set(final.dimensions) == {*WEIGHTS, "expression"}
    assert abs(sum(d.weight for d in final.dimensions.values()) - 1.0) < 1e-9
    assert final.dimensions["expression"].weight == EXPRESSION_WEIGHT
    assert final.dimensions["expression"].score == 80.0
    assert "80%" in final.dimensions["expression"].evidence
    assert "happy" in final.dimensions["expression"].evidence
    assert final.emotion_analysis == "on"
    assert not any("expression" in note for note in final.notes)


def test_emotion_off_leaves_expression_out_and_says_why() -> None:
    signals = [with_emotion(second(t, 1.0, 0.6, -22.0), -0.9, "angry") for t in range(10)]
    off = score_interview(Interview("s", signals, "hangup", emotion_on=False))
    assert set(off.dimensions) == set(WEIGHTS)
    assert off.emotion_analysis == "off"
    assert any("Art. 5(1)(f)" in note for note in off.notes)
    on = score_interview(Interview("s", signals, "hangup", emotion_on=True))
    assert on.score < off.score  # the negative expression counted only when on


def test_no_measured_expression_is_noted_not_scored_as_zero() -> None:
    signals = [second(t, 0.0, 0.6, -22.0) for t in range(10)]
    final = score_interview(Interview("s", signals, "hangup", emotion_on=True))
    assert "expression" not in final.dimensions
    assert any("No face" in note for note in final.notes)


def with_fluency(signal: SignalMessage, score: float, syllables: int, pauses: int) -> SignalMessage:
    fluency = {
        "syllables": syllables,
        "rate_sps": 4.0,
        "articulation_sps": 5.0,
        "pause_count": pauses,
        "pause_s": 0.5 * pauses,
        "speech_ratio": 0.6,
        "pitch_var_st": 3.0,
        "score": score,
    }
    return replace(signal, fluency=fluency)


def test_fluency_joins_the_score_with_its_evidence() -> None:
    signals = [with_fluency(second(t, 1.0, 0.6, -22.0), 90.0, 4, t % 2) for t in range(10)]
    final = score_interview(Interview("s", signals, "hangup", emotion_on=False))
    assert set(final.dimensions) == {*WEIGHTS, "fluency"}
    assert final.dimensions["fluency"].weight == FLUENCY_WEIGHT
    assert final.dimensions["fluency"].score == 90.0
    evidence = final.dimensions["fluency"].evidence
    assert "40 syllables" in evidence and "5 pauses" in evidence
    assert abs(sum(d.weight for d in final.dimensions.values()) - 1.0) < 1e-9
    # A poorer fluency lowers the total.
    worse = [with_fluency(s, 30.0, 4, 0) for s in signals]
    assert score_interview(Interview("s", worse, "hangup", False)).score < final.score


def test_both_optional_dimensions_share_the_weights() -> None:
    signals = [
        with_emotion(with_fluency(second(t, 1.0, 0.6, -22.0), 80.0, 3, 0), 0.2, "neutral")
        for t in range(10)
    ]
    final = score_interview(Interview("s", signals, "hangup", emotion_on=True))
    assert set(final.dimensions) == {*WEIGHTS, "fluency", "expression"}
    assert abs(sum(d.weight for d in final.dimensions.values()) - 1.0) < 1e-9
    assert final.dimensions["presence"].weight == pytest.approx(0.30 * 0.7)
    assert final.notes == ()


def test_questions_are_broken_down_from_the_seconds_that_carry_them() -> None:
    signals = []
    for t in range(12):
        signal = with_fluency(second(t, 1.0 if t < 6 else 0.5, 0.6, -22.0), 80.0, 4, t % 2)
        signal = with_emotion(signal, 0.3, "happy" if t < 8 else "neutral")
        signals.append(replace(signal, question=None if t < 2 else (0 if t < 6 else 2)))
    texts = ["First?", "Second?", "Third?"]
    final = score_interview(Interview("s", signals, "hangup", emotion_on=True, questions=texts))
    first, third = final.questions
    assert first == {
        "index": 0,
        "text": "First?",
        "start_s": 2.0,
        "end_s": 6.0,
        "seconds": 4,
        "speech_ratio": 0.6,
        "speech_s": 2.4,
        "rate_sps": 4.0,
        "syllables": 16,
        "pause_count": 2,
        "face": 1.0,
        "dominant_emotion": "happy",
    }
    assert (third["index"], third["text"], third["start_s"], third["end_s"]) == (2, "Third?", 6, 12)
    assert third["face"] == 0.5 and third["dominant_emotion"] == "neutral"
    assert signal_from_wire(signals[3].to_wire()).question == 0  # as stored, e.g. for recovery
    # Without question messages, or with an index the session has no text for.
    assert score_interview(Interview("s", signals[:2], "hangup")).questions == ()
    unknown = score_interview(Interview("s", signals, "hangup", questions=["Only one?"]))
    assert unknown.questions[1]["text"] is None
    # No audio and no video measured: the figures are None, not zero.
    silent = replace(
        signals[3],
        video=VideoSecond(fps=0.0, face=0.0, box=None),
        audio=AudioSecond(speech=0.0, loudness_dbfs=None, pitch_hz=None, hops=0),
        fluency=None,
        emotion=None,
    )
    (entry,) = score_interview(Interview("s", [silent], "hangup")).questions
    assert entry["speech_ratio"] is None and entry["rate_sps"] is None
    assert entry["speech_s"] is None
    assert entry["syllables"] is None and entry["face"] is None
    assert entry["dominant_emotion"] is None and entry["seconds"] == 1


def test_one_definition_of_speech_time_in_every_figure() -> None:
    """HR read "Spoke for 14 of 30 s" beside "over 18 spoken seconds": two definitions of
    speech. Now every figure is the speech time of :func:`speech_time` (each second's speech
    fraction weighted by the audio it held), and the evidence says so."""
    signals = []
    for t in range(30):
        signal = with_fluency(second(t, 1.0, 0.7 if t % 3 else 0.2, -22.0), 80.0, 3, t % 4 == 0)
        if t == 29:  # the last second is partial: 0.4 s of audio
            signal = replace(signal, audio=replace(signal.audio, hops=40))
        signals.append(replace(signal, question=0 if t < 12 else 1))
    speech_s, heard_s = speech_time(signals)
    assert speech_s == pytest.approx(sum(s.audio.speech * s.audio.hops for s in signals) / 100)
    assert heard_s == pytest.approx(29.4)
    final = score_interview(Interview("s", signals, "hangup", emotion_on=False))
    speaking = final.dimensions["speaking"].evidence
    assert f"Speech time {speech_s:.0f} s of {heard_s:.0f} s heard" in speaking
    assert f"speaking share {speech_s / heard_s:.0%}" in speaking
    fluency = final.dimensions["fluency"].evidence
    assert f"over {speech_s:.0f} s of speech time" in fluency
    assert f"in {heard_s:.0f} s heard" in fluency
    # The loudness evidence names which seconds it used without a second count of speech.
    audibility = final.dimensions["audibility"].evidence
    assert not re.search(r"\d+ (s|seconds)\b", audibility), audibility
    assert "at least 30% speech" in audibility
    # The per-question speech times add up to the same total.
    assert sum(q["speech_s"] for q in final.questions) == pytest.approx(speech_s, abs=0.1)
    assert final.questions[0]["speech_ratio"] == pytest.approx(
        sum(s.audio.speech for s in signals[:12]) / 12, abs=1e-3
    )

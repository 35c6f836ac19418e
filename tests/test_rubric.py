from rtserver.messages import AudioSecond, SignalMessage, VideoSecond
from rtserver.scoring.rubric import WEIGHTS, Interview, score_interview


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

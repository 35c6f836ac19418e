"""The per-second fluency field: rates, pauses and pitch spread over a 5 s window, and the
documented score."""

import math

import numpy as np
import pytest

from rtserver.scoring.fluency import (
    LONG_PAUSE_COST,
    RATE_BAND_SPS,
    FluencySecond,
    FluencyWindow,
    fluency_score,
    semitone_spread,
)


def second(
    speech_hops: int,
    syllables: int,
    pause_hops: int = 0,
    starts: int = 0,
    pitches: tuple[float, ...] = (),
    longest: float = 0.0,
    hops: int = 100,
) -> FluencySecond:
    return FluencySecond(hops, speech_hops, syllables, pause_hops, starts, longest, pitches)


def test_window_rates_ratio_and_pauses() -> None:
    window = FluencyWindow()
    voiced = tuple(float(f) for f in np.linspace(100, 140, 50))
    out = None
    for _ in range(5):
        out = window.summarise(second(60, 3, pause_hops=30, starts=1, pitches=voiced))
    assert out is not None
    assert out["syllables"] == 3
    assert out["rate_sps"] == pytest.approx(15 / 5.0)  # syllables per second of the window
    assert out["articulation_sps"] == pytest.approx(15 / 3.0)  # per second of speech
    assert out["speech_ratio"] == pytest.approx(0.6)
    assert out["pause_count"] == 1 and out["pause_s"] == pytest.approx(0.3)
    expected_spread = np.std(12 * np.log2(np.array(voiced) / np.median(voiced)))
    assert out["pitch_var_st"] == pytest.approx(expected_spread, abs=0.01)
    assert 0 <= out["score"] <= 100


def test_the_window_forgets_after_five_seconds() -> None:
    window = FluencyWindow()
    window.summarise(second(100, 20))  # a very fast second...
    for _ in range(5):
        out = window.summarise(second(100, 4))
    assert out is not None and out["rate_sps"] == pytest.approx(4.0)  # ...is out of the window


def test_a_second_without_audio_has_no_fluency() -> None:
    assert FluencyWindow().summarise(second(0, 0, hops=0)) is None


def test_semitone_spread() -> None:
    assert semitone_spread([100.0] * 5) is None  # too few voiced hops to say
    assert semitone_spread([100.0] * 20) == pytest.approx(0.0)
    octave = [100.0] * 10 + [200.0] * 10  # half an octave either side of the median
    assert semitone_spread(octave) == pytest.approx(6.0, abs=1e-9)


def test_score_prefers_a_normal_rate_and_penalises_pauses_and_monotone() -> None:
    low, high = RATE_BAND_SPS
    best = fluency_score((low + high) / 2, 3.0, 0.1, 0.5, 3.0)
    assert best == 100.0
    assert fluency_score(low - 1, 3.0, 0.1, 0.5, 3.0) < best
    assert fluency_score(high + 1, 3.0, 0.1, 0.5, 3.0) < best
    assert fluency_score(10.0, 3.0, 0.1, 0.5, 3.0) == 0.0
    assert fluency_score(4.0, 3.0, 0.5, 0.5, 3.0) == pytest.approx(70.0)  # pauses 50 %
    assert fluency_score(4.0, 3.0, 0.1, 3.0, 3.0) == 100.0 - LONG_PAUSE_COST
    assert fluency_score(4.0, 3.0, 0.1, 0.5, 0.5) == pytest.approx(85.0)  # monotone
    assert fluency_score(4.0, 0.2, 0.1, 0.5, 3.0) == 0.0  # too little speech to judge
    scores = [
        fluency_score(r, s, p, lp, sp)
        for r in (0, 2, 4, 7, 12) for s in (0, 1, 5) for p in (0, 0.5, 1) for lp in (0, 5)
        for sp in (None, 0.0, 4.0)
    ]  # fmt: skip
    assert all(0.0 <= v <= 100.0 and not math.isnan(v) for v in scores)

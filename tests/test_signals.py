"""The per-second aggregator: which seconds are ready, and what each one says."""

import numpy as np
import pytest

from rtserver.kernels.audio import HopFeatures
from rtserver.scoring.signals import FaceResult, SecondAggregator


def hops(n: int, dbfs: float, speech: bool, pitch: float = 0.0) -> HopFeatures:
    features = HopFeatures.empty(n)
    features.rms_dbfs[:] = dbfs
    features.speech[:] = speech
    features.pitch_hz[:] = pitch
    return features


def test_second_waits_for_every_live_track_then_publishes() -> None:
    agg = SecondAggregator()
    agg.video.active = agg.audio.active = True
    agg.video.done_until = 1.05
    assert agg.ready(elapsed=1.1, max_wait_s=1.5) == []  # audio has not passed t=1 yet
    agg.audio.done_until = 2.0
    assert agg.ready(elapsed=1.1, max_wait_s=1.5) == [0]


def test_stalled_track_delays_by_at_most_max_wait() -> None:
    agg = SecondAggregator()
    agg.video.active = agg.audio.active = True
    agg.audio.done_until = 5.0
    assert agg.ready(elapsed=2.4, max_wait_s=1.5) == []
    assert agg.ready(elapsed=2.5, max_wait_s=1.5) == [0]
    assert agg.ready(elapsed=3.5, max_wait_s=1.5) == [0, 1]


def test_no_track_no_seconds_until_deadline() -> None:
    agg = SecondAggregator()
    assert agg.ready(elapsed=0.5, max_wait_s=1.5) == []


def test_summary_of_a_second() -> None:
    agg = SecondAggregator()
    for i in range(15):
        agg.add_frame(i / 15)
    happy = np.array([0.0, 0.0, 0.0, 0.8, 0.0, 0.0, 0.2], np.float32)
    neutral = np.array([0.0, 0.0, 0.0, 0.2, 0.0, 0.0, 0.8], np.float32)
    results = [
        FaceResult((1, 2, 3, 4), (0.5, 0.2), happy),
        FaceResult(None),
        FaceResult((5, 6, 7, 8), (0.7, 0.1), neutral),
        FaceResult((5, 6, 7, 8), crop_dropped=True),
        FaceResult(None),
    ]
    for i, result in enumerate(results):
        agg.add_face_result(i * 0.2, result)
    # 50 hops of speech at -20 dBFS, 50 of silence-ish at -60 dBFS.
    agg.add_hops(0.0, hops(50, -20.0, True, pitch=200.0))
    agg.add_hops(0.5, hops(50, -60.0, False))
    second = agg.take(0)
    video, audio = second.video, second.audio
    assert (video.fps, video.face, video.box, video.frames) == (5.0, 0.6, (5, 6, 7, 8), 15)
    assert video.exposure == {"brightness": 0.6, "contrast": 0.15}
    assert video.crops_dropped == 1
    emotion = second.emotion
    assert emotion is not None and emotion["frames"] == 2
    assert emotion["probs"]["happy"] == pytest.approx(0.5)
    assert emotion["probs"]["neutral"] == pytest.approx(0.5)
    assert sum(emotion["probs"].values()) == pytest.approx(1.0, abs=1e-3)
    assert audio.speech == pytest.approx(0.5)
    assert audio.hops == 100
    expected = 10 * np.log10((50 * 10**-2 + 50 * 10**-6) / 100)
    assert audio.loudness_dbfs == pytest.approx(expected, abs=0.01)
    assert audio.pitch_hz == pytest.approx(200.0)


def test_empty_second_still_summarises_with_zero_fps() -> None:
    agg = SecondAggregator()
    second = agg.take(0)
    video, audio = second.video, second.audio
    assert second.emotion is None
    assert video.fps == 0.0 and video.face == 0.0 and video.box is None
    assert audio.loudness_dbfs is None and audio.pitch_hz is None and audio.speech == 0.0


def test_late_results_are_counted_not_misfiled() -> None:
    agg = SecondAggregator()
    agg.take(0)
    agg.add_face_result(0.5, FaceResult((1, 1, 1, 1)))
    agg.add_hops(0.9, hops(5, -20.0, True))  # hops at 0.905..0.945 belong to second 0
    assert agg.late_results == 6
    with pytest.raises(ValueError):
        agg.take(5)
    assert agg.take(1).video.fps == 0.0


@pytest.mark.parametrize("split", [300, 7, 95, 150])
def test_pauses_and_syllables_are_counted_whatever_the_blocks(split: int) -> None:
    # 3 s: speech 0-0.6 s, silence 0.6-1.4 s (a pause, marked from its 25th hop on, as
    # PauseTracker marks it), speech 1.4-2.1 s, then a 0.1 s gap (no pause), then speech.
    features = hops(300, -20.0, True, pitch=120.0)
    features.speech[60:140] = False
    features.speech[210:220] = False
    features.pause[60 + 24 : 140] = True
    features.syllable[[10, 30, 50, 150, 170, 250]] = True
    agg = SecondAggregator()
    for start in range(0, 300, split):
        part = features.slice(start, min(300, start + split))
        agg.add_hops(start * 0.01, part)
    seconds = [agg.take(t) for t in range(3)]
    fluency = [s.fluency for s in seconds]
    assert all(f is not None for f in fluency)
    assert [f["syllables"] for f in fluency] == [3, 2, 1]  # type: ignore[index]
    assert [f["pause_count"] for f in fluency] == [1, 0, 0]  # type: ignore[index]
    # The pause's 0.8 s is all counted, its first 0.24 s at the hop that revealed it.
    assert sum(f["pause_s"] for f in fluency) == pytest.approx(0.8)  # type: ignore[index]
    assert seconds[0].audio.speech == pytest.approx(0.6)


def test_only_seconds_held_by_analysis_measure_load() -> None:
    """Admission control reads the lag of seconds that analysis held back, not of seconds
    that waited for media that stopped coming."""
    agg = SecondAggregator()
    assert not agg.lag_measures_load(0)  # no track yet
    for track in (agg.video, agg.audio):
        track.active = True
        track.received_until = 1.4
    agg.video.done_until = agg.audio.done_until = 1.05
    assert agg.lag_measures_load(0)  # complete when published
    agg.audio.done_until = 0.8
    assert not agg.lag_measures_load(0)  # waits for audio that stopped at 1.4 s
    agg.video.received_until = agg.audio.received_until = 2.3
    assert agg.lag_measures_load(0)  # media went on a second past it: analysis is behind
    agg.audio.ended = True
    agg.video.done_until = 0.5
    assert agg.lag_measures_load(0)  # an ended track no longer counts
    agg.video.ended = True
    assert not agg.lag_measures_load(0)

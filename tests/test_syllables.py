"""SyllableDetector: streaming against its reference, and its accuracy on the fluency set."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
from fluency_set import (
    Accuracy,
    Clip,
    evaluate,
    groups,
    hangover,
    hop_features,
    load_set,
    span_of_hops,
)

from rtserver.kernels.audio import HopAnalyzer, HopFeatures
from rtserver.perception.syllables import (
    LOUDNESS_WINDOW_HOPS,
    MAX_PENDING_HOPS,
    SyllableDetector,
    count_nuclei,
    warm_up,
)
from rtserver.perception.syllables_reference import loudness_threshold_ref, syllable_nuclei_ref

# The targets: mean absolute percentage error of the syllable count and of the
# speech rate (syllables per second from the first speech to the last), per clip.
SYLLABLE_MAPE_MAX = 5.0  # %
RATE_MAPE_MAX = 5.0  # %

Features = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture(scope="module", autouse=True)
def compiled() -> None:
    warm_up()


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Clip]:
    """The whole fluency set, generated once per session (test_fluency_set shares it)."""
    return load_set(tmp_path_factory.getbasetemp() / "fluency_set")


@pytest.fixture(scope="session")
def features(clips: list[Clip]) -> list[HopFeatures]:
    return [hop_features(clip) for clip in clips]


def random_features(rng: np.random.Generator, n: int) -> Features:
    """A contour with many peaks, ties and plateaus, and random pitch, voicing and speech."""
    walk = -40.0 + np.cumsum(rng.normal(0.0, 2.0, n))
    # Rounded to 0.5 dB so that neighbours are often equal (plateaus, ties at the dip).
    intensity = np.round(np.clip(walk, -100.0, 5.0) * 2.0) / 2.0
    pitch = np.where(rng.random(n) < 0.5, 0.0, rng.uniform(80.0, 300.0, n))
    voicing = rng.random(n)
    # Speech in runs, as a gate gives it.
    speech = np.repeat(rng.random(n // 7 + 1) < 0.7, 7)[:n]
    return (
        intensity.astype(np.float32),
        pitch.astype(np.float32),
        voicing.astype(np.float32),
        speech,
    )


def stream(
    detector: SyllableDetector, feats: Features, sizes: Sequence[int]
) -> list[npt.NDArray[np.bool_]]:
    """Feed ``feats`` in chunks of the given sizes (cycled); the outputs of every call."""
    outputs = []
    i = 0
    step = 0
    while True:
        size = sizes[step % len(sizes)]
        outputs.append(detector.process(*(f[i : i + size] for f in feats)))
        i += size
        step += 1
        if i >= feats[0].shape[0]:
            return outputs


def assert_streams_like_reference(feats: Features, sizes: Sequence[int]) -> np.ndarray:
    """Streaming in chunks then flushing equals the reference; returns the flags."""
    detector = SyllableDetector()
    flags = np.concatenate([*stream(detector, feats, sizes), detector.flush()])
    expected = syllable_nuclei_ref(*feats)
    assert flags.dtype == np.bool_
    np.testing.assert_array_equal(flags, expected)
    return flags


# -- streaming against the reference ----------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 17, 160, 999])
@pytest.mark.parametrize("sizes", [[1], [7], [0, 3, 1, 50], [10_000]])
def test_random_streams_match_reference(n: int, sizes: list[int]) -> None:
    rng = np.random.default_rng(n * 31 + len(sizes))
    assert_streams_like_reference(random_features(rng, n), sizes)


def test_every_prefix_matches_reference() -> None:
    """After each call the flags so far are the reference's final hops of that prefix."""
    rng = np.random.default_rng(5)
    feats = random_features(rng, 400)
    detector = SyllableDetector()
    got: list[np.ndarray] = []
    fed = 0
    for size in [0, 1, 2, 9, 30, 1, 57, 100, 200]:
        got.append(detector.process(*(f[fed : fed + size] for f in feats)))
        fed += size
        flags = np.concatenate(got)
        x, pitch, voicing, speech = (f[:fed] for f in feats)
        np.testing.assert_array_equal(
            flags, syllable_nuclei_ref(x, pitch, voicing, speech, final=False)
        )
        assert flags.shape[0] + detector.pending == fed
        assert detector.pending <= MAX_PENDING_HOPS


def syllables(*shape: tuple[float, int]) -> np.ndarray:
    """A contour in straight dB ramps: (level, hops to reach it) after each other."""
    points = [-100.0]
    for level, hops in shape:
        points.extend(np.linspace(points[-1], level, hops + 1)[1:])
    return np.asarray(points[1:], np.float32)


@pytest.mark.parametrize(
    ("contour", "expected"),
    [
        # Two vowels with a 6 dB dip between them: two nuclei, at the peaks.
        (syllables((-20, 10), (-26, 5), (-22, 5), (-60, 10)), [9, 19]),
        # A dip of 1.5 dB, then a 2.5 dB rise: the second peak is a candidate before the
        # first dipped 2 dB, so only the second is a nucleus (de Jong's rule).
        (syllables((-20, 10), (-21.5, 5), (-19, 5), (-60, 10)), [19]),
        # A bump that rises 1 dB after a 4 dB dip is no candidate: one nucleus.
        (syllables((-20, 10), (-24, 5), (-23, 5), (-60, 10)), [9]),
        # A bump that rises 0.5 dB after a 1 dB dip neither counts nor stops the first peak.
        (syllables((-20, 10), (-21, 5), (-20.5, 5), (-60, 10)), [9]),
        # A peak 30 dB under the loud speech: under the threshold.
        (syllables((-20, 10), (-70, 10), (-50, 10), (-90, 10)), [9]),
        # A vowel held 0.6 s falling 1.5 dB: kept when its time is up.
        (syllables((-20, 10), (-21.5, 60), (-60, 5)), [9]),
    ],
)
def test_hand_made_contours(contour: np.ndarray, expected: list[int]) -> None:
    n = contour.shape[0]
    voiced = (np.full(n, 150.0, np.float32), np.ones(n, np.float32), np.ones(n, np.bool_))
    flags = assert_streams_like_reference((contour, *voiced), [1])
    assert list(np.flatnonzero(flags)) == expected


def test_unvoiced_or_non_speech_peaks_are_not_nuclei() -> None:
    contour = syllables((-20, 10), (-30, 10), (-20, 10), (-30, 10), (-20, 10), (-60, 10))
    n = contour.shape[0]
    pitch = np.full(n, 150.0, np.float32)
    voicing = np.ones(n, np.float32)
    speech = np.ones(n, np.bool_)
    # The second vowel unvoiced around its contour's centre (hops 26-28 for the peak at 29).
    pitch[26:29] = 0.0
    voicing[26:29] = 0.3
    # The third outside speech at the hop its contour is centred on (47 for the peak at 49).
    speech[47] = False
    flags = assert_streams_like_reference((contour, pitch, voicing, speech), [4])
    assert list(np.flatnonzero(flags)) == [9]


def test_pending_is_bounded() -> None:
    """Hop by hop, a held vowel or a random contour never keeps more than the cap pending."""
    rng = np.random.default_rng(11)
    held = syllables((-20, 10), (-21.5, 80), (-60, 5))
    n = held.shape[0]
    cases = [
        (held, np.full(n, 150.0, np.float32), np.ones(n, np.float32), np.ones(n, np.bool_)),
        random_features(rng, 2000),
    ]
    for feats in cases:
        detector = SyllableDetector()
        for i in range(feats[0].shape[0]):
            detector.process(*(f[i : i + 1] for f in feats))
            assert detector.pending <= MAX_PENDING_HOPS


def test_loudness_window_wraps() -> None:
    """More speech hops than the loudness window holds: the oldest leave the histogram."""
    rng = np.random.default_rng(9)
    n = LOUDNESS_WINDOW_HOPS + 400
    _, pitch, voicing, _ = random_features(rng, n)
    # Syllable-like ripples, 10 dB louder in the first 300 hops: the threshold must come
    # down once those have left the window.
    k = np.arange(n)
    intensity = -35.0 + 6.0 * np.sin(2 * np.pi * k / 17) + rng.normal(0.0, 0.5, n)
    intensity[:300] += 10.0
    intensity = intensity.astype(np.float32)
    speech = np.ones(n, np.bool_)
    threshold = loudness_threshold_ref(intensity, speech)
    assert threshold[-1] < threshold[299] - 5.0
    assert threshold[LOUDNESS_WINDOW_HOPS] > threshold[-1] + 5.0  # still in the window
    assert_streams_like_reference((intensity, pitch, voicing, speech), [333])


def test_real_speech_matches_reference(clips: list[Clip], features: list[HopFeatures]) -> None:
    for clip, f in list(zip(clips, features, strict=True))[::5]:
        feats = (f.intensity_db, f.pitch_hz, f.voicing, clip.speech_hops(len(f)))
        for sizes in ([1], [13], [100]):
            flags = assert_streams_like_reference(feats, sizes)
        assert flags.shape[0] == len(f)


def test_silence_gives_no_nuclei() -> None:
    f = HopAnalyzer().process(np.zeros(16000, np.float32))
    feats = (f.intensity_db, f.pitch_hz, f.voicing, np.ones(len(f), np.bool_))
    flags = assert_streams_like_reference(feats, [7])
    assert not flags.any() and flags.shape[0] == 100


def test_clipped_speech(clips: list[Clip]) -> None:
    """Speech driven 30 dB into clipping: the detector still streams like its reference."""
    clip = next(c for c in clips if c.spec.condition == "clean")
    f = HopAnalyzer().process(np.clip(clip.audio * 30.0, -1.0, 1.0))
    feats = (f.intensity_db, f.pitch_hz, f.voicing, clip.speech_hops(len(f)))
    flags = assert_streams_like_reference(feats, [1, 64])
    # Clipping flattens the loudest vowels, but most nuclei still stand out.
    assert flags.sum() >= 0.7 * clip.syllables


def test_full_scale_square_and_non_finite() -> None:
    """A constant contour at full scale has no peak; NaN and inf read as silence / 0 dB."""
    n = 50
    ones = np.ones(n, np.float32)
    speech = np.ones(n, np.bool_)
    square = (np.zeros(n, np.float32), 200 * ones, ones, speech)
    assert not assert_streams_like_reference(square, [3]).any()
    odd = np.array([-30, -20, np.nan, -10, np.inf, -5, -np.inf, -40, -20, -30], np.float32)
    feats = (odd, 200 * ones[:10], ones[:10], speech[:10])
    assert_streams_like_reference(feats, [1])


def test_flush_resets_and_empty_calls() -> None:
    detector = SyllableDetector()
    empty = np.zeros(0, np.float32)
    assert detector.process(empty, empty, empty, np.zeros(0, np.bool_)).shape == (0,)
    assert detector.flush().shape == (0,)
    rng = np.random.default_rng(3)
    feats = random_features(rng, 300)
    first = np.concatenate([*stream(detector, feats, [40]), detector.flush()])
    again = np.concatenate([*stream(detector, feats, [41]), detector.flush()])
    np.testing.assert_array_equal(first, again)
    assert count_nuclei(*feats) == int(first.sum())


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        SyllableDetector().process(np.zeros(3), np.zeros(3), np.zeros(2), np.zeros(3, bool))


# -- accuracy on the fluency set --------------------------------------------------------------


def accuracy(clips: list[Clip], counts: list[int], spans: list[float]) -> dict[str, Accuracy]:
    """Accuracy per group of clips (see fluency_set.groups)."""
    return {
        name: evaluate(
            [clips[i] for i in index], [counts[i] for i in index], [spans[i] for i in index]
        )
        for name, index in groups(clips).items()
    }


def test_accuracy_with_true_speech(clips: list[Clip], features: list[HopFeatures]) -> None:
    """The issue's targets, with the truth's speech segments as the speech decision.

    (The speech gate replaces them once it lands; its errors then add to these.)
    """
    masks = [clip.speech_hops(len(f)) for clip, f in zip(clips, features, strict=True)]
    counts = [
        count_nuclei(f.intensity_db, f.pitch_hz, f.voicing, mask)
        for f, mask in zip(features, masks, strict=True)
    ]
    result = accuracy(clips, counts, [span_of_hops(m) for m in masks])
    for group in ("all", "clean", "noisy"):
        assert result[group].syllable_mape <= SYLLABLE_MAPE_MAX, (group, result[group])
        assert result[group].rate_mape <= RATE_MAPE_MAX, (group, result[group])
    assert result["no speech"].false_syllables == 0


def test_accuracy_live_path(clips: list[Clip]) -> None:
    """The same through the 48 kHz live path (Resampler48kTo16k, then HopAnalyzer)."""
    counts = []
    for clip in clips:
        f = hop_features(clip, live=True)
        counts.append(count_nuclei(f.intensity_db, f.pitch_hz, f.voicing, clip.speech_hops(len(f))))
    result = accuracy(clips, counts, [c.speech_span_s for c in clips])
    assert result["all"].syllable_mape <= SYLLABLE_MAPE_MAX, result["all"]
    assert result["all"].rate_mape <= RATE_MAPE_MAX, result["all"]


def test_accuracy_with_kernel_speech_on_clean_clips(
    clips: list[Clip], features: list[HopFeatures]
) -> None:
    """With HopFeatures.speech held 200 ms, the targets hold on clean speech, and noise and
    hum make no nuclei. (That decision fails in 5-10 dB noise: the speech gate's job.)"""
    masks = [hangover(f.speech) for f in features]
    counts = [
        count_nuclei(f.intensity_db, f.pitch_hz, f.voicing, mask)
        for f, mask in zip(features, masks, strict=True)
    ]
    result = accuracy(clips, counts, [span_of_hops(m) for m in masks])
    assert result["clean"].syllable_mape <= SYLLABLE_MAPE_MAX, result["clean"]
    assert result["clean"].rate_mape <= RATE_MAPE_MAX, result["clean"]
    assert result["no speech"].false_syllables == 0

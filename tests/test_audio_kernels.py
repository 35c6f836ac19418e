"""The Numba audio kernels against their NumPy references, on tones, noise and real speech."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile
from scipy.signal import resample_poly

from rtserver.kernels.audio import (
    HOP,
    INPUT_RATE,
    RATE,
    HopAnalyzer,
    HopFeatures,
    Resampler48kTo16k,
    warm_up,
)
from rtserver.kernels.audio_reference import (
    hop_features_ref,
    intensity_envelope_ref,
    resample_ref,
    yin_ref,
)

SENTENCE = "Thank you for having me. I have worked on real time systems for five years."


@pytest.fixture(scope="module", autouse=True)
def compiled() -> None:
    warm_up()


def random_chunks(rng: np.random.Generator, x: np.ndarray, most: int) -> list[np.ndarray]:
    """``x`` split at random points, with empty and one-sample chunks mixed in."""
    chunks = []
    i = 0
    while i < len(x):
        n = int(rng.choice([0, 1, 2, int(rng.integers(0, most))]))
        chunks.append(x[i : i + n])
        i += n
    return chunks


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def level_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2)))


def assert_features_equal(a: HopFeatures, b: HopFeatures) -> None:
    assert len(a) == len(b)
    for name in ("rms_dbfs", "zcr", "pitch_hz", "voicing", "speech", "intensity_db"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.fixture(scope="module")
def speech16(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """espeak-ng speech at 16 kHz, through resample_poly to 48 kHz and our resampler.

    Half a second of digital silence comes first, as when a microphone opens.
    """
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed: no speech to test the speech detector on")
    wav = Path(tmp_path_factory.mktemp("speech")) / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), SENTENCE], check=True, capture_output=True)
    rate, samples = wavfile.read(wav)
    x48 = resample_poly(samples.astype(np.float64) / 32768, INPUT_RATE, rate)
    x16 = Resampler48kTo16k().process(x48.astype(np.float32))
    return np.concatenate([np.zeros(RATE // 2, np.float32), x16])


# -- resampler ---------------------------------------------------------------------------------


def test_resampler_matches_reference() -> None:
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal(INPUT_RATE // 2 + 7)).astype(np.float32)
    got = Resampler48kTo16k().process(x)
    want = resample_ref(x)
    assert got.dtype == np.float32
    assert got.shape == want.shape == ((len(x) + 2) // 3,)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("stereo", [False, True])
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_resampler_streaming_equals_one_call(stereo: bool, dtype: type) -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.9, 0.9, (INPUT_RATE // 4, 2 if stereo else 1))
    if not stereo:
        x = x[:, 0]
    if dtype is np.int16:
        x = x * 32767
    x = x.astype(dtype)
    whole = Resampler48kTo16k().process(x)
    resampler = Resampler48kTo16k()
    parts = [resampler.process(c) for c in random_chunks(rng, x, 1500)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_resampler_downmix_and_int16_scale() -> None:
    rng = np.random.default_rng(2)
    left = rng.integers(-20000, 20000, 3000).astype(np.int16)
    right = rng.integers(-20000, 20000, 3000).astype(np.int16)
    stereo = np.column_stack([left, right])
    mono = (left.astype(np.float64) + right) / 2 / 32768
    np.testing.assert_allclose(
        Resampler48kTo16k().process(stereo), resample_ref(mono), rtol=0, atol=1e-6
    )


def test_resampler_passband_and_stopband() -> None:
    settle = 200  # output samples: skip the filter's start-up transient
    passed = Resampler48kTo16k().process(tone(1000, 0.5, INPUT_RATE))[settle:]
    assert abs(level_db(passed) - level_db(tone(1000, 0.5, INPUT_RATE))) < 0.1
    # 10 kHz would alias to 6 kHz at 16 kHz: it must be attenuated by 60 dB or more.
    aliased = Resampler48kTo16k().process(tone(10000, 0.5, INPUT_RATE))[settle:]
    assert level_db(aliased) - level_db(tone(10000, 0.5, INPUT_RATE)) <= -60.0


def test_empty_input() -> None:
    out = Resampler48kTo16k().process(np.empty(0, np.int16))
    assert out.dtype == np.float32 and out.shape == (0,)
    out = Resampler48kTo16k().process(np.empty((0, 2), np.float32))
    assert out.shape == (0,)
    features = HopAnalyzer().process(np.empty(0, np.float32))
    assert len(features) == 0
    assert len(HopAnalyzer().process(np.zeros(HOP - 1, np.float32))) == 0
    assert len(hop_features_ref(np.empty(0, np.float32))) == 0


def test_resampler_rejects_other_sample_types() -> None:
    with pytest.raises(TypeError):
        Resampler48kTo16k().process(np.zeros(10, np.int32))
    with pytest.raises(ValueError):
        Resampler48kTo16k().process(np.zeros((2, 3, 4), np.float32))


# -- hop features --------------------------------------------------------------------------------


def test_silence() -> None:
    features = HopAnalyzer().process(np.zeros(RATE, np.float32))
    assert len(features) == RATE // HOP
    np.testing.assert_array_equal(features.rms_dbfs, -100.0)
    np.testing.assert_array_equal(features.pitch_hz, 0.0)
    np.testing.assert_array_equal(features.zcr, 0.0)
    assert not features.speech.any()
    assert_features_equal(features, hop_features_ref(np.zeros(RATE, np.float32)))


def test_clipping_full_scale_square_wave() -> None:
    period = INPUT_RATE // 200
    square48 = np.where(np.arange(INPUT_RATE) % period < period // 2, 32767, -32768)
    square48 = np.column_stack([square48, square48]).astype(np.int16)
    x16 = Resampler48kTo16k().process(square48)
    features = HopAnalyzer().process(x16)
    assert np.all(np.abs(features.rms_dbfs[5:]) < 0.5)  # low-passed, so a hair under 0 dBFS
    square16 = np.where(np.arange(RATE) % 80 < 40, 1.0, -1.0).astype(np.float32)
    direct = HopAnalyzer().process(square16)
    np.testing.assert_allclose(direct.rms_dbfs, 0.0, atol=1e-5)
    np.testing.assert_allclose(direct.pitch_hz[5:], 200.0, rtol=0.01)


@pytest.mark.parametrize("freq", [100.0, 220.0, 440.0])
def test_yin_on_pure_tones(freq: float) -> None:
    x = tone(freq, 0.5, RATE, amplitude=0.3)
    features = HopAnalyzer().process(x)
    steady = features.pitch_hz[10:]  # once the window holds only the tone
    np.testing.assert_allclose(steady, freq, rtol=0.01)
    assert np.all(features.voicing[10:] > 0.9)
    pitch, voicing = yin_ref(x[-1000:], RATE, 60.0, 500.0, 0.15)
    assert pitch == pytest.approx(freq, rel=0.01)
    assert voicing > 0.9


def test_yin_reference_unvoiced_on_noise() -> None:
    rng = np.random.default_rng(3)
    pitch, voicing = yin_ref(rng.standard_normal(800), RATE, 60.0, 500.0, 0.15)
    assert pitch == 0.0
    assert 0.0 <= voicing < 0.7


def test_hop_features_match_reference_on_random_signal() -> None:
    rng = np.random.default_rng(4)
    # Noise, a tone and silence mixed, so every branch of the kernel runs.
    x = np.concatenate(
        [
            0.05 * rng.standard_normal(3000),
            tone(150, 0.3, RATE),
            np.zeros(1234),
            tone(300, 0.2, RATE, 0.05) + 0.01 * rng.standard_normal(int(0.2 * RATE)),
        ]
    ).astype(np.float32)
    got = HopAnalyzer().process(x)
    want = hop_features_ref(x)
    assert len(got) == len(want) == len(x) // HOP
    np.testing.assert_allclose(got.rms_dbfs, want.rms_dbfs, atol=1e-4)
    np.testing.assert_array_equal(got.zcr, want.zcr)
    np.testing.assert_allclose(got.pitch_hz, want.pitch_hz, rtol=1e-4)
    np.testing.assert_allclose(got.voicing, want.voicing, atol=1e-5)
    np.testing.assert_array_equal(got.speech, want.speech)


def test_hop_features_streaming_equals_one_call(speech16: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    whole = HopAnalyzer().process(speech16)
    analyzer = HopAnalyzer()
    parts = [analyzer.process(c) for c in random_chunks(rng, speech16, 700)]
    assert_features_equal(HopFeatures.concat(parts), whole)


def test_pitch_on_speech_matches_reference(speech16: np.ndarray) -> None:
    got = HopAnalyzer().process(speech16)
    want = hop_features_ref(speech16)
    voiced = (got.pitch_hz > 0) & (want.pitch_hz > 0)
    assert voiced.sum() > 50
    # The two must also agree on which hops are voiced, up to a rare threshold tie.
    assert np.mean((got.pitch_hz > 0) == (want.pitch_hz > 0)) > 0.99
    np.testing.assert_allclose(got.pitch_hz[voiced], want.pitch_hz[voiced], rtol=0.01)
    assert 70 < np.median(got.pitch_hz[voiced]) < 250  # a plausible speaking voice
    np.testing.assert_allclose(got.rms_dbfs, want.rms_dbfs, atol=1e-4)
    assert np.mean(got.speech == want.speech) > 0.99


# -- speech detector -----------------------------------------------------------------------------


def test_speech_detected_in_spoken_parts(speech16: np.ndarray) -> None:
    features = HopAnalyzer().process(speech16)
    lead = RATE // 2 // HOP
    assert not features.speech[:lead].any()
    spoken = features.rms_dbfs > -40.0  # espeak is loud: -40 dBFS and up is the voice
    assert spoken.sum() > 100
    assert features.speech[spoken].mean() > 0.8


def test_steady_noise_is_not_speech() -> None:
    rng = np.random.default_rng(6)
    noise = (10 ** (-30 / 20) * rng.standard_normal(3 * RATE)).astype(np.float32)
    for x in (noise, np.concatenate([np.zeros(RATE // 2, np.float32), noise])):
        features = HopAnalyzer().process(x)
        assert abs(np.median(features.rms_dbfs[-100:]) + 30.0) < 1.0
        assert not features.speech[RATE // HOP :].any()


def test_silence_gap_inside_speech_is_not_speech(speech16: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    gap = (10 ** (-70 / 20) * rng.standard_normal(RATE)).astype(np.float32)  # a quiet room
    x = np.concatenate([speech16, gap, speech16[RATE // 2 :]])
    features = HopAnalyzer().process(x)
    start = len(speech16) // HOP + 1
    in_gap = features.speech[start : start + RATE // HOP - 1]
    assert not in_gap.any()
    assert features.speech[start + RATE // HOP :].mean() > 0.4  # speech again after the gap


def test_intensity_envelope_matches_reference_and_streams() -> None:
    rng = np.random.default_rng(11)
    # Bursts of a loud tone between stretches of quiet noise: syllable-like peaks.
    x = 0.003 * rng.standard_normal(RATE * 2)
    for start in (0.2, 0.7, 1.3):
        burst = slice(int(start * RATE), int((start + 0.15) * RATE))
        x[burst] += tone(200.0, 0.15, RATE, amplitude=0.3)[: burst.stop - burst.start]
    x = x.astype(np.float32)
    whole = HopAnalyzer().process(x)
    np.testing.assert_allclose(
        whole.intensity_db, intensity_envelope_ref(whole.rms_dbfs), atol=1e-4
    )
    analyzer = HopAnalyzer()
    parts = [analyzer.process(x[i : i + 777]) for i in range(0, len(x), 777)]
    np.testing.assert_array_equal(HopFeatures.concat(parts).intensity_db, whole.intensity_db)
    # The contour is smoother than the hop levels and peaks inside each burst.
    assert np.abs(np.diff(whole.intensity_db)).max() < np.abs(np.diff(whole.rms_dbfs)).max()
    for start in (0.2, 0.7, 1.3):
        inside = whole.intensity_db[int(start * 100) + 5 : int(start * 100) + 15]
        assert inside.min() > -20.0
    assert np.median(whole.intensity_db[100:120]) < -40.0  # the quiet between bursts


def test_intensity_envelope_of_silence_is_the_floor() -> None:
    features = HopAnalyzer().process(np.zeros(RATE // 2, np.float32))
    np.testing.assert_array_equal(features.intensity_db, -100.0)

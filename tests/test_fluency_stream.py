"""FluencyStream holds hops back only for the speech gate's lookahead: each syllable nucleus
is counted at the hop that confirmed it (never lost, at most 300 ms after its peak), and
the split of the stream into calls changes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from vad_speech import VOICES, speech_clip

from rtserver.kernels.audio import RATE, HopAnalyzer, HopFeatures
from rtserver.perception.fluency_stream import FluencyStream
from rtserver.perception.speech import LOOKAHEAD_HOPS
from rtserver.perception.syllables import MAX_PENDING_HOPS, SyllableDetector
from rtserver.perception.vad import SileroVad

HOP_SAMPLES = RATE // 100  # 10 ms at 16 kHz


@pytest.fixture(scope="module")
def vad(models_dir: Path) -> SileroVad:
    return SileroVad(models_dir / "vad.onnx")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """About 9 s of real espeak-ng speech with pauses, 16 kHz float32, whole hops."""
    samples = speech_clip(seed=7, voice=VOICES[0], wpm=170, level_dbfs=-24.0).samples
    return samples[: len(samples) // HOP_SAMPLES * HOP_SAMPLES].astype(np.float32)


def run_stream(
    vad: SileroVad, samples: np.ndarray, block_hops: int
) -> tuple[HopFeatures, list[int]]:
    """All hops out of one FluencyStream fed ``block_hops`` at a time, and how many hops
    were still held after each call."""
    stream, hops = FluencyStream(vad), HopAnalyzer()
    parts, held, fed = [], [], 0
    step = block_hops * HOP_SAMPLES
    for start in range(0, len(samples), step):
        block = samples[start : start + step]
        features = hops.process(block)
        fed += len(features)
        parts.append(stream.process(block, features))
        held.append(fed - sum(len(p) for p in parts))
    parts.append(stream.flush())
    return HopFeatures.concat(parts), held


def test_hops_wait_only_for_the_gate(vad: SileroVad, speech: np.ndarray) -> None:
    out, held = run_stream(vad, speech, block_hops=10)
    # Once the gate is primed, every call leaves exactly its lookahead behind: no hop waits
    # for a syllable's dip, even in the middle of a vowel.
    assert held[5:] == [LOOKAHEAD_HOPS] * len(held[5:])
    assert len(out) == len(speech) // HOP_SAMPLES


def test_every_nucleus_is_counted_near_its_peak(vad: SileroVad, speech: np.ndarray) -> None:
    out, _ = run_stream(vad, speech, block_hops=10)
    # The detector itself, on the very hops and speech decisions the stream emitted,
    # flags each nucleus at its peak.
    detector = SyllableDetector()
    peaks = np.concatenate(
        [
            detector.process(out.intensity_db, out.pitch_hz, out.voicing, out.speech),
            detector.flush(),
        ]
    )
    credited = np.flatnonzero(out.syllable)
    at_peaks = np.flatnonzero(peaks)
    assert len(at_peaks) >= 15  # real speech: the check below is not vacuous
    assert len(credited) == len(at_peaks)
    # Counted where the dip after the peak confirmed it: after the peak, within the
    # detector's wait (MAX_PENDING_HOPS).
    shift = credited - at_peaks
    assert shift.min() >= 1
    assert shift.max() <= MAX_PENDING_HOPS


@pytest.mark.parametrize("block_hops", [1, 7, 50])
def test_any_split_gives_the_same_hops(vad: SileroVad, speech: np.ndarray, block_hops: int) -> None:
    reference, _ = run_stream(vad, speech, block_hops=10)
    out, _ = run_stream(vad, speech, block_hops=block_hops)
    np.testing.assert_array_equal(out.speech, reference.speech)
    np.testing.assert_array_equal(out.pause, reference.pause)
    np.testing.assert_array_equal(out.syllable, reference.syllable)

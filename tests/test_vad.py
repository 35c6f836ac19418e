"""Silero VAD through ONNX Runtime: agreement with silero's own feeding, hop alignment, splits."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort
import pytest
from vad_speech import VOICES, speech_clip

from rtserver.kernels.audio import HOP, RATE, HopAnalyzer
from rtserver.models.sources import VAD_SOURCE
from rtserver.perception.vad import (
    CHUNK,
    CONTEXT,
    SileroVad,
    hop_chunk,
    hop_staleness_samples,
)

# Where a copy of the pinned silero-vad wheel may lie (never downloaded by the tests).
_WHEEL_DIRS = (Path("/tmp/wheels"), Path(__file__).parents[1] / ".models" / "sources")


@pytest.fixture(scope="module")
def vad_path(models_dir: Path) -> Path:
    return models_dir / "vad.onnx"


@pytest.fixture(scope="module")
def vad(vad_path: Path) -> SileroVad:
    return SileroVad(vad_path)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """About 9 s of real speech, pauses and silence at 16 kHz, float32."""
    return speech_clip(seed=3, voice=VOICES[1], wpm=160, level_dbfs=-26.0).samples.astype(
        np.float32
    )


def reference_chunk_probs(path: Path, x: np.ndarray) -> np.ndarray:
    """Silero's OnnxWrapper feeding, plainly: every complete 512-sample chunk of ``x``, with
    the previous chunk's last 64 samples (zeros first) in front, state carried from zeros."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, 64), np.float32)
    probs = []
    for start in range(0, x.shape[0] - 511, 512):
        chunk = np.asarray(x[start : start + 512], np.float32)[None, :]
        model_input = np.concatenate([context, chunk], axis=1)
        out, state = session.run(
            None, {"input": model_input, "state": state, "sr": np.array(16000, np.int64)}
        )
        context = model_input[:, -64:]
        probs.append(float(out[0, 0]))
    return np.array(probs, np.float32)


def expected_per_hop(chunk_probs: np.ndarray, hops: int) -> np.ndarray:
    """Hop k gets the last chunk completed by the end of hop k, 0.0 before the first."""
    chunks = np.array([hop_chunk(k) for k in range(hops)])
    padded = np.concatenate([[0.0], chunk_probs]).astype(np.float32)
    return padded[chunks + 1]


def test_hop_chunk_alignment() -> None:
    # Hop k ends at sample 160 (k + 1); chunk c ends at 512 (c + 1).
    assert [hop_chunk(k) for k in range(8)] == [-1, -1, -1, 0, 0, 0, 1, 1]
    for k in range(200):
        end = HOP * (k + 1)
        c = hop_chunk(k)
        assert CHUNK * (c + 1) <= end < CHUNK * (c + 2)
        assert hop_staleness_samples(k) == end - CHUNK * (c + 1)
        assert 0 <= hop_staleness_samples(k) < CHUNK


def test_matches_plain_reference(vad: SileroVad, vad_path: Path, speech: np.ndarray) -> None:
    reference = reference_chunk_probs(vad_path, speech)
    got = vad.stream().process(speech)
    assert got.dtype == np.float32
    assert got.shape == (speech.shape[0] // HOP,)
    np.testing.assert_allclose(got, expected_per_hop(reference, got.shape[0]), atol=1e-6)
    # Real speech and silence: the model is confident both ways somewhere in the clip.
    assert got.max() > 0.9 and got.min() < 0.1


def _silero_wheel() -> Path | None:
    """A local copy of the pinned silero-vad wheel, checked against its pinned sha256."""
    name = f"silero_vad-{VAD_SOURCE.version}-py3-none-any.whl"
    for folder in _WHEEL_DIRS:
        wheel = folder / name
        if wheel.is_file():
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            if digest == VAD_SOURCE.wheel_sha256:
                return wheel
    return None


def _load_utils_vad(wheel: Path, into: Path) -> ModuleType:
    """silero_vad/utils_vad.py of the wheel, imported from an extracted copy (needs torch)."""
    with zipfile.ZipFile(wheel) as archive:
        source = into / "silero_utils_vad.py"
        source.write_bytes(archive.read("silero_vad/utils_vad.py"))
    spec = importlib.util.spec_from_file_location("silero_utils_vad", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules.pop("silero_utils_vad", None)
    return module


def test_matches_silero_onnx_wrapper(vad: SileroVad, vad_path: Path, tmp_path: Path) -> None:
    """Silero's own OnnxWrapper, from the pinned wheel, gives the same chunk probabilities."""
    wheel = _silero_wheel()
    if wheel is None:
        pytest.skip(f"no local silero-vad {VAD_SOURCE.version} wheel in {_WHEEL_DIRS}")
    torch = pytest.importorskip("torch")
    utils_vad = _load_utils_vad(wheel, tmp_path)
    wrapper = utils_vad.OnnxWrapper(str(vad_path), force_onnx_cpu=True)
    rng = np.random.default_rng(7)
    x = np.concatenate(
        [
            rng.normal(0.0, 0.05, RATE).astype(np.float32),
            speech_clip(seed=5, voice=VOICES[2], wpm=190, level_dbfs=-22.0).samples[: 3 * RATE],
        ]
    ).astype(np.float32)
    theirs = np.array(
        [
            float(wrapper(torch.from_numpy(x[s : s + CHUNK].copy()), RATE))
            for s in range(0, x.shape[0] - CHUNK + 1, CHUNK)
        ],
        np.float32,
    )
    ours = vad.stream().process(x)
    np.testing.assert_allclose(ours, expected_per_hop(theirs, ours.shape[0]), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_split_gives_the_same_probabilities(
    vad: SileroVad, speech: np.ndarray, seed: int
) -> None:
    whole = vad.stream().process(speech)
    rng = np.random.default_rng(seed)
    # Empty, one-sample, sub-hop, odd and multi-chunk pieces.
    sizes = rng.choice([0, 1, 7, 159, 160, 161, 511, 512, 513, 960, 3001], size=400)
    stream = vad.stream()
    hops = HopAnalyzer()
    parts: list[np.ndarray] = []
    at = 0
    while at < speech.shape[0]:
        piece = speech[at : at + int(sizes[len(parts) % sizes.shape[0]])]
        at += piece.shape[0]
        got = stream.process(piece)
        # Exactly as many values as the hop analyser gives for the same piece.
        assert got.shape[0] == len(hops.process(piece))
        parts.append(got)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert stream.hops_done == whole.shape[0]


def test_float64_input_and_edge_signals(vad: SileroVad) -> None:
    silence = np.zeros(RATE, np.float64)
    probs = vad.stream().process(silence)
    assert probs.shape == (RATE // HOP,) and np.all(probs < 0.1)
    assert vad.stream().process(np.zeros(0, np.float32)).shape == (0,)
    # A clipped full-scale square wave: finite probabilities in 0-1.
    square = np.sign(np.sin(2 * np.pi * 200 * np.arange(RATE) / RATE)).astype(np.float32)
    probs = vad.stream().process(square)
    assert np.all(np.isfinite(probs)) and probs.min() >= 0.0 and probs.max() <= 1.0
    with pytest.raises(ValueError, match="mono"):
        vad.stream().process(np.zeros((10, 2), np.float32))


def test_batch_equals_separate_streams(vad: SileroVad, vad_path: Path, speech: np.ndarray) -> None:
    """Streams batched into one call evolve exactly as when each runs alone."""
    rng = np.random.default_rng(11)
    signals = [speech[: 20 * CHUNK], rng.normal(0, 0.1, 20 * CHUNK).astype(np.float32)]
    signals.append(speech[5 * CHUNK : 25 * CHUNK])
    batch = len(signals)
    state = np.zeros((2, batch, 128), np.float32)
    context = np.zeros((batch, CONTEXT), np.float32)
    batched = []
    for c in range(20):
        chunk = np.stack([s[c * CHUNK : (c + 1) * CHUNK] for s in signals])
        rows = np.concatenate([context, chunk], axis=1)
        probs, state = vad.run_batch(rows, state)
        assert probs.shape == (batch,) and state.shape == (2, batch, 128)
        context = rows[:, -CONTEXT:]
        batched.append(probs)
    for b, signal in enumerate(signals):
        alone = reference_chunk_probs(vad_path, signal)
        np.testing.assert_allclose([p[b] for p in batched], alone, atol=1e-5)


def test_runner_matches_run_batch(vad: SileroVad, speech: np.ndarray) -> None:
    """The pre-bound runner (what VadStream uses) advances B streams exactly as run_batch."""
    batch = 3
    runner = vad.runner(batch)
    state = np.zeros((2, batch, 128), np.float32)
    rng = np.random.default_rng(5)
    for c in range(12):
        rows = np.stack(
            [
                speech[c * CHUNK : c * CHUNK + CONTEXT + CHUNK],
                speech[(c + 9) * CHUNK : (c + 9) * CHUNK + CONTEXT + CHUNK],
                rng.normal(0.0, 0.2, CONTEXT + CHUNK).astype(np.float32),
            ]
        )
        runner.rows[:] = rows
        got = runner.run()
        want, state = vad.run_batch(rows, state)
        np.testing.assert_allclose(got, want, atol=1e-6)
        np.testing.assert_allclose(runner.state, state, atol=1e-6)
    with pytest.raises(ValueError, match="batch"):
        vad.runner(0)


def test_run_batch_checks_shapes(vad: SileroVad) -> None:
    with pytest.raises(ValueError, match="chunks"):
        vad.run_batch(np.zeros((1, CHUNK), np.float32), np.zeros((2, 1, 128), np.float32))
    with pytest.raises(ValueError, match="state"):
        vad.run_batch(np.zeros((2, CONTEXT + CHUNK), np.float32), np.zeros((2, 1, 128)))


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="vad"):
        SileroVad(tmp_path / "vad.onnx")


@pytest.fixture(scope="module")
def sequence_vad(vad_path: Path, models_dir: Path) -> SileroVad:
    return SileroVad(vad_path, sequence_path=models_dir / "vad_sequence.onnx")


@pytest.mark.parametrize("seed", [0, 1])
def test_sequence_export_gives_the_same_probabilities(
    vad: SileroVad, sequence_vad: SileroVad, speech: np.ndarray, seed: int
) -> None:
    """The server runs Silero's sequence export (several chunks per call); every hop's
    probability must equal the named model's (silero_vad.onnx, one chunk per call), for
    any split of the stream, including blocks holding many chunks."""
    want = vad.stream().process(speech)
    stream = sequence_vad.stream()
    rng = np.random.default_rng(seed)
    parts, start = [], 0
    while start < len(speech):
        size = int(rng.choice([1, 160, 511, 1600, 16000]))
        parts.append(stream.process(speech[start : start + size]))
        start += size
    got = np.concatenate(parts)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert want.max() > 0.9  # real speech in the clip: the comparison covers both states

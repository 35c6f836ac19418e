"""The models on every GPU backend against ONNX Runtime on the CPU: equivalence, then faces/s.

Part of ``bench/gpu_check.sh`` (``bench.gpu_check`` calls :func:`check_models`). For each
converted model in the models directory (``emotion.onnx``, ``face_detector.onnx``) and each
GPU backend of ``rtserver.inference.engine`` (TensorRT, ONNX Runtime CUDA, torch CUDA):

1. builds the backend, or records why it cannot run here (no package, no device);
2. runs it and ``onnxruntime-cpu`` on the same inputs (random, in the model's input range)
   at batch 64 and reports the largest absolute difference over all outputs; the check
   fails above 1e-3 (TensorRT runs in FP16, where 1e-3 on probabilities is the usual
   bound);
3. measures items per second (faces for the emotion model, frames for the detector) at
   batch 1, 64 and 256: the median wall time of one ``run`` call after a warm-up, including
   both host-device copies. The CPU baseline is measured in the same run, on one thread,
   as the server runs it.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtserver.inference.engine import Backend, BackendUnavailable, EngineOptions, make_backend

GPU_BACKENDS = ("tensorrt", "onnxruntime-cuda", "torch-cuda")
TOLERANCE = 1e-3
MODELS = {
    "emotion": ("emotion.onnx", (1, 64, 64)),
    "face_detector": ("face_detector.onnx", (1, 128, 128)),
}


@dataclass
class BackendResult:
    """One model on one backend: equivalence with the CPU and throughput by batch."""

    model: str
    backend: str
    skipped: str = ""  # why it did not run here; empty when it ran
    max_abs_diff: float | None = None
    ok: bool = False
    items_per_s: dict[int, float] = field(default_factory=dict)  # batch -> items per second


def median_seconds(backend: Backend, batch: np.ndarray, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        backend.run(batch)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        backend.run(batch)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def throughput(
    backend: Backend, shape: tuple[int, ...], batches: tuple[int, ...], quick: bool
) -> dict[int, float]:
    rng = np.random.default_rng(7)
    rates = {}
    for size in batches:
        batch = rng.uniform(-1, 1, (size, *shape)).astype(np.float32)
        seconds = median_seconds(
            backend, batch, warmup=1 if quick else 5, repeats=2 if quick else 30
        )
        rates[size] = size / seconds
    return rates


def max_difference(backend: Backend, reference: Backend, shape: tuple[int, ...]) -> float:
    batch = np.random.default_rng(11).uniform(-1, 1, (64, *shape)).astype(np.float32)
    got, want = backend.run(batch), reference.run(batch)
    if len(got) != len(want):
        return float("inf")
    return max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))


def check_models(models_dir: Path, quick: bool = False) -> list[BackendResult]:
    """Every model on every GPU backend, plus the CPU baseline rows."""
    batches = (1, 4) if quick else (1, 64, 256)
    results: list[BackendResult] = []
    with tempfile.TemporaryDirectory(prefix="trt-cache-") as cache:
        options = EngineOptions(cache_dir=Path(cache), cpu_threads=1, max_batch=256)
        for model, (file_name, shape) in MODELS.items():
            path = models_dir / file_name
            if not path.exists():
                results.append(BackendResult(model, "all", skipped=f"{path} is missing"))
                continue
            cpu = make_backend("onnxruntime-cpu", path, options)
            baseline = BackendResult(model, cpu.name, max_abs_diff=0.0, ok=True)
            baseline.items_per_s = throughput(cpu, shape, batches, quick)
            results.append(baseline)
            for name in GPU_BACKENDS:
                result = BackendResult(model, name)
                try:
                    backend = make_backend(name, path, options)
                except (BackendUnavailable, ImportError) as exc:
                    result.skipped = str(exc) or type(exc).__name__
                    results.append(result)
                    continue
                result.max_abs_diff = max_difference(backend, cpu, shape)
                result.ok = result.max_abs_diff <= TOLERANCE
                result.items_per_s = throughput(backend, shape, batches, quick)
                results.append(result)
    return results


def print_results(results: list[BackendResult]) -> None:
    print(f"{'model':<14} {'backend':<18} {'max |diff|':>11}  items/s by batch")
    for r in results:
        if r.skipped:
            print(f"{r.model:<14} {r.backend:<18} {'skipped':>11}  {r.skipped}")
            continue
        rates = "  ".join(f"b{b}: {rate:,.0f}" for b, rate in r.items_per_s.items())
        verdict = "" if r.ok else "  FAIL"
        print(f"{r.model:<14} {r.backend:<18} {r.max_abs_diff:>11.2g}  {rates}{verdict}")
    print(f"(tolerance {TOLERANCE:g} against onnxruntime-cpu; median wall time per run call,")
    print(" including host-device copies; the CPU rows run on one thread, as the server does)")

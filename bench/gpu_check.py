"""CUDA face crops against the CPU kernel: correctness, then crops per second by batch size;
then the models on every GPU backend against ONNX Runtime on the CPU (``bench.gpu_models``).

    python -m bench.gpu_check [--quick] [--json out.json] [--models DIR]

(``bench/gpu_check.sh`` builds the Cython kernel in place first, then runs this.)

1. Prints the device, then the largest absolute difference between CudaFaceCropper and
   CpuFaceCropper on random 640x480 strided planes with realistic face boxes (some crossing
   the frame's edges); exits 1 when it is over 1e-4 (normalised units, -1..1).
2. For batches of 1, 64 and 1024 faces (one face per frame, as the model batcher sends them:
   every frame its own plane), prints crops per second of each cropper: the median over
   repeats after a warm-up, each repeat one whole ``crop`` call (CUDA: staging, host to
   device, kernel, device to host). The CPU cropper runs on this one thread.

Exits 0 with a skip note when there is no CUDA device. ``--quick`` shrinks everything (48x64
planes, 8x8 crops, batches 1, 4, 16) so that it runs under Numba's CUDA simulator
(NUMBA_ENABLE_CUDASIM=1) in seconds; its timings mean nothing. Imports only
``rtserver.kernels`` modules, so a GPU machine needs numpy, numba(-cuda) and the built kernel.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench.gpu_models import BackendResult, check_models, print_results
from rtserver.kernels.crops import CpuFaceCropper, FaceCropper, cuda_available

TOLERANCE = 1e-4  # normalised units (-1..1); one grey level is 2/255 = 0.0078


@dataclass(frozen=True)
class Scale:
    """Sizes of one run: full on a GPU, tiny under the simulator."""

    height: int  # plane height (pixels)
    width: int  # plane width (pixels)
    pad: int  # bytes of row padding, as a PyAV plane's line_size adds
    size: int  # crop side (pixels)
    batches: tuple[int, ...]
    check_faces: int  # faces in the correctness check
    pool: int  # distinct random planes, reused across the frames of a batch
    warmup: int
    min_repeats: int
    max_repeats: int
    min_seconds: float  # each timing repeats until at least this long (seconds)


FULL = Scale(480, 640, 64, 64, (1, 64, 1024), 512, 32, 3, 7, 200, 1.0)
QUICK = Scale(48, 64, 8, 8, (1, 4, 16), 24, 4, 1, 2, 2, 0.0)


@dataclass
class BatchResult:
    """Timings of one batch size; rates in crops per second, times in milliseconds."""

    batch: int
    cuda_crops_per_s: float
    cuda_ms_median: float
    cpu_crops_per_s: float
    cpu_ms_median: float
    speedup: float


@dataclass
class Report:
    """Everything the check prints, as written by --json."""

    device: str
    numba: str
    quick: bool
    plane: str
    crop_size: int
    max_abs_diff: float | None = None  # None when skipped
    tolerance: float = TOLERANCE
    ok: bool = False
    skipped: str = ""
    batches: list[BatchResult] = field(default_factory=list)
    models: list[BackendResult] = field(default_factory=list)


def strided_planes(rng: np.random.Generator, scale: Scale, count: int) -> list[np.ndarray]:
    """``count`` random (H, W) uint8 views whose rows are ``pad`` bytes longer than W."""
    planes = []
    for _ in range(count):
        buf = rng.integers(0, 256, size=(scale.height, scale.width + scale.pad), dtype=np.uint8)
        planes.append(buf[:, : scale.width])
    return planes


def face_boxes(rng: np.random.Generator, scale: Scale, n: int) -> np.ndarray:
    """(n, 4) float32 face boxes (x, y, w, h): a face detector's output on a webcam frame.

    Faces are 1/6 to 1/2 of the frame height, a little taller than wide, centred anywhere a
    head can be, so about one in ten crosses an edge of the frame.
    """
    side = rng.uniform(scale.height / 6, scale.height / 2, n)
    aspect = rng.uniform(1.0, 1.3, n)  # h / w
    cx = rng.uniform(0.05, 0.95, n) * scale.width
    cy = rng.uniform(0.1, 0.9, n) * scale.height
    w, h = side, side * aspect
    return np.column_stack([cx - w / 2, cy - h / 2, w, h]).astype(np.float32)


def device_name() -> str:
    """The current CUDA device as "name (compute capability)", or the simulator."""
    from numba import cuda

    from rtserver.kernels.frame_cuda import simulated

    if simulated():
        return "Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1), no GPU"
    device = cuda.get_current_device()
    name = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
    major, minor = device.compute_capability
    return f"{name} (compute capability {major}.{minor})"


def numba_version() -> str:
    """numba's version, plus numba-cuda's when that package provides numba.cuda."""
    import numba

    version = f"numba {numba.__version__}"
    try:
        from importlib.metadata import version as dist_version

        version += f", numba-cuda {dist_version('numba-cuda')}"
    except Exception:
        version += " (built-in numba.cuda)"
    return version


def check(cuda_cropper: FaceCropper, scale: Scale, rng: np.random.Generator) -> float:
    """Largest |CUDA - CPU| over a batch of realistic and edge boxes (normalised units)."""
    planes = strided_planes(rng, scale, scale.pool)
    boxes = face_boxes(rng, scale, scale.check_faces)
    h, w = scale.height, scale.width
    edge = np.array(
        [
            [-w / 8, -h / 8, w / 4, h / 4],  # past the top-left corner
            [w * 7 / 8, h * 7 / 8, w / 4, h / 4],  # past the bottom-right corner
            [-2 * w, -2 * h, 5 * w, 5 * h],  # larger than the frame
            [w / 2, h / 2, 0.5, 0.5],  # tiny: enlarged
            [3 * w, h / 2, w / 8, h / 8],  # outside
        ],
        dtype=np.float32,
    )
    boxes = np.concatenate([boxes, edge])
    index = rng.integers(0, len(planes), len(boxes))
    want = np.empty((len(boxes), scale.size, scale.size), np.float32)
    got = np.full_like(want, np.nan)
    CpuFaceCropper().crop(planes, boxes, index, want)
    cuda_cropper.crop(planes, boxes, index, got)
    return float(np.abs(got - want).max())  # NaN (a crop never written) fails the check


def median_seconds(
    cropper: FaceCropper,
    planes: list[np.ndarray],
    boxes: np.ndarray,
    index: np.ndarray,
    out: np.ndarray,
    scale: Scale,
) -> float:
    """Median wall time of one ``crop`` call (seconds), after ``scale.warmup`` untimed calls."""
    for _ in range(scale.warmup):
        cropper.crop(planes, boxes, index, out)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < scale.max_repeats and (
        len(times) < scale.min_repeats or time.perf_counter() - started < scale.min_seconds
    ):
        t0 = time.perf_counter()
        cropper.crop(planes, boxes, index, out)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_batch(
    cuda_cropper: FaceCropper, scale: Scale, batch: int, rng: np.random.Generator
) -> BatchResult:
    """Crops per second of both croppers for ``batch`` faces, one per frame."""
    pool = strided_planes(rng, scale, min(scale.pool, batch))
    # Every frame is its own list entry (its own plane to stage), as in the model batcher;
    # reusing a few random planes only saves this script's memory.
    planes = [pool[k % len(pool)] for k in range(batch)]
    boxes = face_boxes(rng, scale, batch)
    index = np.arange(batch)
    out = np.empty((batch, scale.size, scale.size), np.float32)
    cuda_s = median_seconds(cuda_cropper, planes, boxes, index, out, scale)
    cpu_s = median_seconds(CpuFaceCropper(), planes, boxes, index, out, scale)
    return BatchResult(
        batch=batch,
        cuda_crops_per_s=batch / cuda_s,
        cuda_ms_median=cuda_s * 1e3,
        cpu_crops_per_s=batch / cpu_s,
        cpu_ms_median=cpu_s * 1e3,
        speedup=cpu_s / cuda_s,
    )


def write_json(path: Path | None, report: Report) -> None:
    """Writes ``report`` to ``path`` as JSON, when a path was given."""
    if path is not None:
        path.write_text(json.dumps(asdict(report), indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the simulator")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--models", type=Path, default=Path(".models"), help="converted models (make models)"
    )
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else FULL
    report = Report(
        device="none",
        numba=numba_version(),
        quick=args.quick,
        plane=f"{scale.width}x{scale.height} uint8, row stride {scale.width + scale.pad}",
        crop_size=scale.size,
    )

    if not cuda_available():
        report.skipped = "no CUDA device"
        print("no CUDA device: numba.cuda found no usable GPU; skipping the GPU check")
        write_json(args.json, report)
        return 0

    from rtserver.kernels.frame_cuda import CudaFaceCropper

    report.device = device_name()
    print(f"device: {report.device}")
    print(f"{report.numba}; planes {report.plane}; crops {scale.size}x{scale.size}")
    rng = np.random.default_rng(2024)
    cuda_cropper = CudaFaceCropper()

    t0 = time.perf_counter()
    diff = check(cuda_cropper, scale, rng)
    report.max_abs_diff = diff
    report.ok = diff <= TOLERANCE  # False for NaN too
    verdict = "OK" if report.ok else "FAIL"
    print(
        f"correctness: max |CUDA - CPU| = {diff:.3g} over "
        f"{scale.check_faces + 5} faces (tolerance {TOLERANCE:g}): {verdict} "
        f"({time.perf_counter() - t0:.1f} s, first call compiles the kernel)"
    )
    if not report.ok:
        write_json(args.json, report)
        return 1

    print(f"{'batch':>6} {'CUDA crops/s':>14} {'CUDA ms':>10} {'CPU crops/s':>13} {'CPU ms':>10}")
    for batch in scale.batches:
        result = bench_batch(cuda_cropper, scale, batch, rng)
        report.batches.append(result)
        print(
            f"{result.batch:>6} {result.cuda_crops_per_s:>14,.0f} {result.cuda_ms_median:>10.3f}"
            f" {result.cpu_crops_per_s:>13,.0f} {result.cpu_ms_median:>10.3f}"
            f"   x{result.speedup:.2f}"
        )
    print("(median per call after warm-up; CUDA includes staging and both transfers;")
    print(" CPU is CpuFaceCropper on one thread)")

    print()
    report.models = check_models(args.models, args.quick)
    print_results(report.models)
    write_json(args.json, report)
    return 0 if all(r.ok or r.skipped for r in report.models) else 1


if __name__ == "__main__":
    sys.exit(main())

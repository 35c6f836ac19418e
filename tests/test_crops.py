"""Batched face croppers (rtserver.kernels.crops): CPU against the per-frame kernel and the
NumPy reference, CUDA against CPU under Numba's simulator, and on a real device when present."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from rtserver.kernels import crops
from rtserver.kernels.crops import CpuFaceCropper, cuda_available, make_cropper
from rtserver.kernels.frame import crop_resize_normalize
from rtserver.kernels.frame_reference import crop_resize_normalize_ref, square_box

CROP_TOL = 1e-4  # normalised units (-1..1); one grey level is 2/255 = 0.0078
ROOT = Path(__file__).resolve().parent.parent


def strided_plane(rng: np.random.Generator, h: int, w: int, pad: int = 11) -> np.ndarray:
    """A read-only (h, w) uint8 view with a row stride of w + pad, like a PyAV Y plane."""
    buf = rng.integers(0, 256, size=(h, w + pad), dtype=np.uint8)
    buf.flags.writeable = False
    return buf[:, :w]


def random_boxes(rng: np.random.Generator, h: int, w: int, n: int) -> np.ndarray:
    """(n, 4) float32 boxes, some reaching past the plane's edges, from tiny to plane-sized."""
    return np.column_stack(
        [
            rng.uniform(-0.3 * w, w, n),
            rng.uniform(-0.3 * h, h, n),
            rng.uniform(0, 1.2 * w, n),
            rng.uniform(0, 1.2 * h, n),
        ]
    ).astype(np.float32)


def edge_boxes(h: int, w: int) -> np.ndarray:
    """Boxes crossing every edge and corner, fully outside, huge and tiny."""
    s = max(4.0, min(h, w) / 3)
    return np.array(
        [
            [-s / 2, -s / 2, s, s],
            [w - s / 3, h - s / 3, s, s],
            [-5 * s, h / 3, s, 1.5 * s],
            [w + 3 * s, h / 2, s, s],
            [w / 2, h + 7.5, s, 2 * s],
            [-4 * w, -4 * h, 9 * w, 9 * h],
            [w / 2, h / 2, 0.0, 0.25],
        ],
        dtype=np.float32,
    )


def frames_and_boxes(seed: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Strided planes of different sizes and boxes on them, frames interleaved."""
    rng = np.random.default_rng(seed)
    sizes = [(17, 33), (48, 64), (120, 160), (1, 1), (33, 17)]
    planes = [strided_plane(rng, h, w) for h, w in sizes]
    boxes, index = [], []
    for f, (h, w) in enumerate(sizes):
        for b in (random_boxes(rng, h, w, 5), edge_boxes(h, w)):
            boxes.append(b)
            index.extend([f] * len(b))
    box_arr = np.concatenate(boxes)
    frame_index = np.asarray(index, dtype=np.int32)
    # Shuffled, so each frame's boxes are neither contiguous nor in order.
    order = rng.permutation(len(box_arr))
    return planes, box_arr[order], frame_index[order]


def per_frame(
    planes: list[np.ndarray], boxes: np.ndarray, index: np.ndarray, size: int, margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """The per-frame Cython kernel and the NumPy reference, box by box."""
    kernel = np.empty((len(boxes), size, size), dtype=np.float32)
    ref = np.empty_like(kernel)
    for n, (box, f) in enumerate(zip(boxes, index, strict=True)):
        crop_resize_normalize(planes[f], box[None], kernel[n : n + 1], margin)
        ref[n] = crop_resize_normalize_ref(planes[f], box[None], size, margin)[0]
    return kernel, ref


@pytest.mark.parametrize(("size", "margin"), [(64, 10.0), (7, 0.0), (1, 3.5)])
def test_cpu_cropper_matches_per_frame_kernel_and_reference(size: int, margin: float) -> None:
    planes, boxes, index = frames_and_boxes(size)
    out = np.full((len(boxes), size, size), np.nan, dtype=np.float32)
    got = CpuFaceCropper(margin).crop(planes, boxes, index, out)
    assert got is out
    kernel, ref = per_frame(planes, boxes, index, size, margin)
    # Same kernel, same boxes: grouping by frame must not change a single bit.
    np.testing.assert_array_equal(out, kernel)
    np.testing.assert_allclose(out, ref, rtol=0, atol=CROP_TOL)


def test_cpu_cropper_frames_grouped_in_order() -> None:
    """The usual layout (each frame's boxes together, in order) is written in place."""
    planes, boxes, index = frames_and_boxes(3)
    order = np.argsort(index, kind="stable")
    boxes, index = boxes[order], index[order].astype(np.int64)
    out = np.empty((len(boxes), 16, 16), dtype=np.float32)
    CpuFaceCropper().crop(planes, boxes, index, out)
    kernel, _ = per_frame(planes, boxes, index, 16, 10.0)
    np.testing.assert_array_equal(out, kernel)


def test_cpu_cropper_empty_batch() -> None:
    out = np.empty((0, 64, 64), dtype=np.float32)
    cropper = CpuFaceCropper()
    assert cropper.crop([], np.empty((0, 4), np.float32), np.empty(0, np.int32), out) is out
    rng = np.random.default_rng(0)
    planes = [strided_plane(rng, 10, 10)]
    assert cropper.crop(planes, np.empty((0, 4)), np.empty(0, np.int64), out) is out


def test_cpu_cropper_refuses_bad_batches() -> None:
    rng = np.random.default_rng(0)
    planes = [strided_plane(rng, 10, 12)]
    box = np.array([[1, 1, 4, 4]], np.float32)
    out = np.empty((1, 8, 8), np.float32)
    cropper = CpuFaceCropper()
    with pytest.raises(ValueError, match="frame_index"):
        cropper.crop(planes, box, np.array([1]), out)
    with pytest.raises(ValueError, match="frame_index"):
        cropper.crop(planes, box, np.array([0.0]), out)
    with pytest.raises(ValueError, match="finite"):
        cropper.crop(planes, np.array([[np.nan, 1, 4, 4]], np.float32), np.array([0]), out)
    with pytest.raises(ValueError, match="out must be"):
        cropper.crop(planes, box, np.array([0]), np.empty((1, 8, 8), np.float64))
    with pytest.raises(ValueError, match="out must be"):
        cropper.crop(planes, box, np.array([0]), np.empty((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="empty"):
        cropper.crop([np.empty((0, 5), np.uint8)], box, np.array([0]), out)
    with pytest.raises(ValueError, match="uint8"):
        cropper.crop([np.zeros((4, 4), np.float32)], box, np.array([0]), out)


def test_source_rects_match_square_box() -> None:
    from rtserver.kernels.frame_cuda import source_rects

    _, boxes, _ = frames_and_boxes(5)
    for margin in (10.0, 0.0, 2.5):
        got = source_rects(boxes.astype(np.float64), margin)
        want = np.array([square_box(b, margin) for b in boxes])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


def test_make_cropper_picks_by_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = make_cropper("cpu", margin=4.0)
    assert isinstance(cpu, CpuFaceCropper)
    assert cpu.margin == 4.0
    with pytest.raises(ValueError, match="device"):
        make_cropper("tpu")
    monkeypatch.setattr(crops, "cuda_available", lambda: False)
    assert isinstance(make_cropper("auto"), CpuFaceCropper)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        make_cropper("cuda")


def test_a_cuda_cropper_that_cannot_launch_is_caught_at_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A GPU whose kernel cannot run (seen: numba-cuda against a NumPy it does not know)
    falls back to the CPU under "auto" with a warning, and fails "cuda" at once, instead of
    failing every batch later."""
    pytest.importorskip("numba.cuda")
    from rtserver.kernels import frame_cuda

    class Unlaunchable:
        def __init__(self, margin: float) -> None:
            self.margin = margin

        def crop(self, *args: object) -> np.ndarray:
            raise AttributeError("module 'numpy' has no attribute 'row_stack'")

    monkeypatch.setattr(crops, "cuda_available", lambda: True)
    monkeypatch.setattr(frame_cuda, "CudaFaceCropper", Unlaunchable)
    with caplog.at_level("WARNING", logger="rtserver.kernels.crops"):
        cropper = make_cropper("auto", margin=6.0)
    assert isinstance(cropper, CpuFaceCropper) and cropper.margin == 6.0
    assert "row_stack" in caplog.text and "cropping on the CPU" in caplog.text
    with pytest.raises(RuntimeError, match=r"failed their first launch.*row_stack"):
        make_cropper("cuda")


def test_make_cropper_on_this_machine() -> None:
    available = cuda_available()
    assert isinstance(available, bool)
    if available:
        from rtserver.kernels.frame_cuda import CudaFaceCropper

        assert isinstance(make_cropper("auto"), CudaFaceCropper)
    else:
        assert isinstance(make_cropper("auto"), CpuFaceCropper)
        with pytest.raises(RuntimeError, match="no CUDA device"):
            make_cropper("cuda")


def run_python(code: str, simulator: bool = False, timeout: float = 60.0) -> None:
    """Runs ``code`` in a fresh interpreter (warnings as errors) and asserts it exits 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Numba reads NUMBA_ENABLE_CUDASIM once, at import: only a fresh process can switch it.
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_importing_crops_loads_no_numba() -> None:
    run_python(
        """
        import sys
        import rtserver.kernels.crops
        assert "numba" not in sys.modules, "crops must not import numba"
        """
    )


SIMULATOR_CHECK = """
    import numpy as np
    from rtserver.kernels.crops import CpuFaceCropper, cuda_available, make_cropper
    from rtserver.kernels.frame_cuda import CudaFaceCropper

    assert cuda_available()
    assert isinstance(make_cropper("auto"), CudaFaceCropper)
    rng = np.random.default_rng(7)
    planes = []
    for h, w in [(30, 40), (27, 41), (1, 1), (2, 9)]:
        buf = rng.integers(0, 256, size=(h, w + 9), dtype=np.uint8)
        planes.append(buf[:, :w])
    boxes = np.array(
        [
            [5, 4, 10, 12],  # inside
            [-8, -3, 9, 6],  # past the top-left corner
            [30, 20, 15, 15],  # past the bottom-right corner
            [-100, -100, 400, 300],  # huge
            [12.3, 7.7, 0.2, 0.1],  # tiny
            [0, 0, 1, 1],
            [-3, 5, 2, 30],
            [1e6, -1e6, 5, 5],  # far outside
        ],
        np.float32,
    )
    index = np.array([0, 1, 0, 1, 0, 2, 3, 1])
    worst = 0.0
    for size, margin in ((8, 10.0), (3, 0.0)):
        cuda_cropper = CudaFaceCropper(margin)
        for sub in (slice(0, 3), slice(0, 8)):  # the second call grows the buffers
            want = np.empty((len(boxes[sub]), size, size), np.float32)
            got = np.full_like(want, np.nan)
            CpuFaceCropper(margin).crop(planes, boxes[sub], index[sub], want)
            assert cuda_cropper.crop(planes, boxes[sub], index[sub], got) is got
            worst = max(worst, float(np.abs(got - want).max()))
    # A real device warns "low occupancy" when a small batch is launched (the simulator does
    # not): the cropper must swallow exactly that, even with warnings as errors.
    import warnings
    from rtserver.kernels import frame_cuda

    class WarnsLikeADevice:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, config):
            warnings.warn(
                f"Grid size {config[0]} will likely result in GPU under-utilization due to "
                "low occupancy.",
                RuntimeWarning,
            )
            return self.kernel[config]

    frame_cuda.crop_kernel = WarnsLikeADevice(frame_cuda.crop_kernel)
    one = np.empty((1, 8, 8), np.float32)
    CudaFaceCropper().crop(planes, boxes[:1], index[:1], one)
    empty = np.empty((0, 8, 8), np.float32)
    assert CudaFaceCropper().crop(planes, np.empty((0, 4)), np.empty(0, int), empty) is empty
    print("max abs diff", worst)
    raise SystemExit(0 if worst <= 1e-4 else 1)
"""


def test_cuda_cropper_matches_cpu_under_simulator() -> None:
    start = time.monotonic()
    run_python(SIMULATOR_CHECK, simulator=True)
    assert time.monotonic() - start < 30.0


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="no CUDA device")
def test_cuda_cropper_matches_cpu_on_device() -> None:
    from rtserver.kernels.frame_cuda import CudaFaceCropper, simulated

    if simulated():
        pytest.skip("CUDA simulator: 64x64 crops of 640x480 frames would take minutes")

    rng = np.random.default_rng(11)
    planes = [strided_plane(rng, 480, 640, pad=64) for _ in range(8)]
    n = 64
    centre = rng.uniform([-40, -40], [680, 520], (n, 2))
    side = rng.uniform(40, 320, n)
    aspect = rng.uniform(0.8, 1.25, n)
    boxes = np.column_stack(
        [centre[:, 0] - side / 2, centre[:, 1] - side / 2, side, side * aspect]
    ).astype(np.float32)
    index = rng.integers(0, len(planes), n)
    want = np.empty((n, 64, 64), np.float32)
    got = np.full_like(want, np.nan)
    CpuFaceCropper().crop(planes, boxes, index, want)
    CudaFaceCropper().crop(planes, boxes, index, got)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=CROP_TOL)

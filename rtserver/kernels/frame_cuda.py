"""Face crops on a CUDA device through Numba: every box of many frames in one kernel launch.

The maths is ``frame.pyx``'s ``crop_resize_normalize`` (see its module docstring), done per
output pixel instead of as two separable passes: each thread works out the taps and weights
of its own column and row (in float64 positions and float32 weights, as the CPU kernel does)
and sums the source pixels under them. Weights are computed where they are used; no weight
matrix is built on the host or the device.

One call moves data once each way: the boxes' source rectangles, per-box plane layout and the
pixels go to the device in one copy from a pinned staging buffer, and the crops come back in
one copy. Only the part of each plane that its boxes can read is staged (the bounding
rectangle of their source rectangles, clipped to the plane), so a 640x480 frame with one face
moves tens of kilobytes instead of 300.

Importing this module imports Numba but neither starts the CUDA driver nor compiles: the
first :class:`CudaFaceCropper` and its first launch do. ``crops`` imports it only on demand.
"""

from __future__ import annotations

import importlib
import math
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from rtserver.kernels.crops import check_batch

# Staging layout per box, in front of the pixels: GEOM float64 then META int64 values.
GEOM = 4  # x, y, w, h of the source rectangle (pixels, float64)
META = 7  # pixel offset, region width (= row stride), region height, plane width,
#           plane height, region x0, region y0 (all in pixels)
THREADS_PER_BLOCK = 128
_FEW_BLOCKS = 128  # Numba's low-occupancy warning fires below this many blocks per grid

# numba ships partial type hints that do not describe its kernel intrinsics; Any keeps mypy
# out of code that only Numba's compiler reads. A module global (not a local) because Numba's
# CUDA simulator swaps the kernel's global `cuda` for its own. Importing numba.cuda neither
# starts the driver nor compiles anything: that waits for the first launch.
# numba-cuda registers an overload of np.row_stack when its CUDA target first loads (at the
# first launch); NumPy 2.5 removed that old alias of np.vstack, so on such a machine every
# launch fails with "module 'numpy' has no attribute 'row_stack'". Put the alias back.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack
cuda: Any = importlib.import_module("numba.cuda")
# Past this many pixels float64 rounding of start + i * scale can exceed the one-pixel slack
# of the staged region, so such a box stages its whole plane instead (only absurd boxes).
_EXACT_LIMIT = 2.0**24
# The CPU kernel's horizontal gain: <float>(2.0 / 255.0), used in float64 arithmetic there.
_GAIN_X = float(np.float32(2.0 / 255.0))
# A pixel index inside a kernel: Numba types both as int64.
Index = int | np.int64


def simulated() -> bool:
    """Whether ``numba.cuda`` is Numba's CPU simulator (NUMBA_ENABLE_CUDASIM=1), not a GPU."""
    # numba.config and numba-cuda's own config read the same variable at import.
    return bool(getattr(importlib.import_module("numba").config, "ENABLE_CUDASIM", 0))


def source_rects(boxes: np.ndarray, margin: float) -> np.ndarray:
    """(N, 4) float64 source rectangles (x, y, w, h) in pixels of (N, 4) float64 face boxes.

    The same operations in the same order as ``frame.pyx``'s ``_crop_one``: the shorter side
    elongated about the centre, ``margin`` pixels added on every side, then grown to at least
    one pixel about the centre. Doing them in the same order keeps the rectangles bit-equal.
    """
    x, y, w, h = (boxes[:, k].astype(np.float64) for k in range(4))
    taller = h > w
    wider = w > h
    x, w = np.where(taller, x - (h - w) / 2.0, x), np.where(taller, w + (h - w), w)
    y, h = np.where(wider, y - (w - h) / 2.0, y), np.where(wider, h + (w - h), h)
    x, y, w, h = x - margin, y - margin, w + 2.0 * margin, h + 2.0 * margin
    x, w = np.where(w < 1.0, x + (w - 1.0) / 2.0, x), np.maximum(w, 1.0)
    y, h = np.where(h < 1.0, y + (h - 1.0) / 2.0, y), np.maximum(h, 1.0)
    return np.column_stack([x, y, w, h])


def _read_range(start: np.ndarray, length: np.ndarray, n_in: np.ndarray) -> np.ndarray:
    """(N, 2) int64 first and last source index (inclusive) a span can read, clipped to n_in.

    One pixel of slack each side covers bilinear's neighbour and rounding of the span ends.
    """
    lo = np.floor(start) - 1.0
    hi = np.ceil(start + length) + 1.0
    huge = (np.abs(start) + length) > _EXACT_LIMIT
    lo = np.where(huge, 0.0, lo)
    hi = np.where(huge, n_in - 1.0, hi)
    # Clipped as float64 first, so enormous coordinates never overflow the int cast.
    lo = np.clip(lo, 0.0, n_in - 1.0)
    hi = np.clip(hi, 0.0, n_in - 1.0)
    return np.column_stack([lo, hi]).astype(np.int64)


# Numba's CUDA target types math.floor and math.ceil of a float as a float (CPython and
# Numba's CPU target return an int), hence the explicit np.int64 of every index below.


@cuda.jit(device=True)
def floor_index(v: float, n: int) -> Index:
    """floor(v) clamped to [0, n-1], compared as a float so it never overflows."""
    if v < 1.0:
        return 0
    if v >= n - 1:
        return n - 1
    return np.int64(math.floor(v))


@cuda.jit(device=True)
def ceil_index_minus_one(v: float, n: int) -> Index:
    """ceil(v) - 1 clamped to [0, n-1], compared as a float so it never overflows."""
    if v <= 1.0:
        return 0
    if v > n - 1:
        return n - 1
    return np.int64(math.ceil(v)) - 1


@cuda.jit(device=True)
def max_taps(scale: float, n: int) -> Index:
    """frame.pyx's _max_taps: most source pixels one output pixel may touch."""
    if scale < 1.0:
        return 2 if n > 2 else n
    # ceil(scale) + 2 >= n exactly when scale > n - 3.
    if scale > n - 3:
        return n
    return np.int64(math.ceil(scale)) + 2


@cuda.jit(device=True)
def overlap(k: int, a: float, b: float, n: int) -> float:
    """Length of [a, b) inside pixel k's interval; edge pixels reach to infinity."""
    left = -math.inf if k == 0 else float(k)
    right = math.inf if k == n - 1 else float(k + 1)
    o = min(b, right) - max(a, left)
    return o if o > 0.0 else 0.0


@cuda.jit(device=True)
def axis_taps(start: float, length: float, n_out: int, n_in: int, i: int, gain: float) -> Any:
    """Taps of output pixel i of one axis, as frame.pyx's _axis_taps lays them out.

    Returns (first, count, mode, a, b, mult): mode 0 is area averaging (tap k weighs
    float32(overlap) * mult), 1 a single tap of weight `gain`, 2 bilinear with fraction `a`.
    """
    scale = length / n_out
    if scale >= 1.0:
        a = start + i * scale
        b = start + (i + 1) * scale
        lo = floor_index(a, n_in)
        hi = ceil_index_minus_one(b, n_in)
        most = max_taps(scale, n_in)
        if hi - lo + 1 > most:
            hi = lo + most - 1
        total = 0.0
        for k in range(lo, hi + 1):
            # The CPU kernel stores each overlap as float32 but sums them in float64.
            total += overlap(k, a, b, n_in)
        if total > 0.0:
            return lo, hi - lo + 1, 0, a, b, gain / total
        # Only when rounding made the span empty (absurdly large coordinates).
        return lo, 1, 1, a, b, 0.0
    pos = start + (i + 0.5) * scale - 0.5  # output centre in source index units
    if pos < 0.0 or pos >= n_in - 1:
        # Both neighbours clamp to the same edge pixel.
        return floor_index(pos, n_in), 1, 1, pos, pos, 0.0
    lower = math.floor(pos)
    return np.int64(lower), 2, 2, pos - lower, pos, 0.0


@cuda.jit(device=True)
def tap_weight(
    k: int, first: int, mode: int, a: float, b: float, mult: float, gain: float, n: int
) -> Any:
    """float32 weight of tap k of an axis_taps result."""
    if mode == 0:
        return np.float32(np.float32(overlap(first + k, a, b, n)) * mult)
    if mode == 1:
        return np.float32(gain)
    if k == 0:
        return np.float32((1.0 - a) * gain)
    return np.float32(a * gain)


@cuda.jit(cache=True)
def crop_kernel(pixels: Any, geom: Any, meta: Any, size: int, out: Any) -> None:
    """One thread per output pixel of all boxes; out is the flat (N * size * size,) crops."""
    t = cuda.grid(1)
    if t >= out.size:
        return
    per_box = size * size
    box = t // per_box
    rest = t - box * per_box
    i = rest // size  # output row
    j = rest - i * size  # output column
    g = box * GEOM
    m = box * META
    offset = meta[m]
    stride = meta[m + 1]
    region_h = meta[m + 2]
    width = meta[m + 3]
    height = meta[m + 4]
    x0 = meta[m + 5]
    y0 = meta[m + 6]
    fx, cx, mode_x, ax, bx, mult_x = axis_taps(geom[g], geom[g + 2], size, width, j, _GAIN_X)
    fy, cy, mode_y, ay, by, mult_y = axis_taps(geom[g + 1], geom[g + 3], size, height, i, 1.0)
    acc = np.float32(0.0)
    for p in range(cx):
        # Clamped to the staged region only as a guard: the host staged every pixel the
        # taps can reach, so this never moves a tap.
        col = min(max(fx + p - x0, 0), stride - 1)
        # Vertical taps first, then horizontal, in float32: the CPU kernel's order.
        column = np.float32(0.0)
        for q in range(cy):
            row = min(max(fy + q - y0, 0), region_h - 1)
            wy = tap_weight(q, fy, mode_y, ay, by, mult_y, 1.0, height)
            column += wy * np.float32(pixels[offset + row * stride + col])
        acc += tap_weight(p, fx, mode_x, ax, bx, mult_x, _GAIN_X, width) * column
    out[t] = acc - np.float32(1.0)


class CudaFaceCropper:
    """Batched face crops on the current CUDA device; agrees with CpuFaceCropper to 1e-4.

    Buffers (pinned host staging, device input and output) grow to the largest batch seen and
    are reused. Calls are serialised by a lock, so one cropper may be shared by threads.
    """

    def __init__(self, margin: float = 10.0) -> None:
        """``margin`` is added on every side of the squared box (pixels). Raises RuntimeError
        when no CUDA device is usable."""
        if not np.isfinite(margin):
            raise ValueError("margin must be finite")
        if not cuda.is_available():
            raise RuntimeError("no CUDA device: numba.cuda found no usable GPU")
        self.margin = float(margin)
        self._stream = cuda.stream()
        self._lock = threading.Lock()
        # Allocated on first use and grown by doubling: zero-byte CUDA allocations are
        # refused by some drivers, and most croppers see batches of one size.
        self._host: np.ndarray | None = None
        self._dev_in: Any = None
        self._dev_out: Any = None

    def _staging(self, nbytes: int) -> tuple[np.ndarray, Any]:
        """Pinned host staging and device input buffers of at least ``nbytes`` bytes."""
        if self._host is None or self._host.size < nbytes:
            capacity = max(nbytes, 0 if self._host is None else 2 * self._host.size)
            self._host = cuda.pinned_array(capacity, dtype=np.uint8)
            self._dev_in = cuda.device_array(capacity, dtype=np.uint8)
        return self._host, self._dev_in[:nbytes]

    def _output(self, count: int) -> Any:
        """The device output buffer, at least ``count`` float32 long."""
        if self._dev_out is None or self._dev_out.size < count:
            capacity = max(count, 0 if self._dev_out is None else 2 * self._dev_out.size)
            self._dev_out = cuda.device_array(capacity, dtype=np.float32)
        return self._dev_out[:count]

    def crop(
        self,
        planes: Sequence[np.ndarray],
        boxes: np.ndarray,
        frame_index: np.ndarray,
        out: np.ndarray,
    ) -> np.ndarray:
        """See :meth:`rtserver.kernels.crops.FaceCropper.crop`; one kernel launch per call."""
        box_arr, index = check_batch(planes, boxes, frame_index, out)
        n = box_arr.shape[0]
        if n == 0:
            return out
        size = out.shape[1]
        rects = source_rects(box_arr, self.margin)

        # Compact the planes the boxes use to slots 0..P-1, then stage only the rectangle of
        # each that its boxes can read.
        used, slot = np.unique(index, return_inverse=True)
        heights = np.array([planes[p].shape[0] for p in used], dtype=np.int64)
        widths = np.array([planes[p].shape[1] for p in used], dtype=np.int64)
        cols = _read_range(rects[:, 0], rects[:, 2], widths[slot].astype(np.float64))
        rows = _read_range(rects[:, 1], rects[:, 3], heights[slot].astype(np.float64))
        x0 = np.full(len(used), np.iinfo(np.int64).max)
        y0 = np.full(len(used), np.iinfo(np.int64).max)
        x1 = np.full(len(used), -1)
        y1 = np.full(len(used), -1)
        np.minimum.at(x0, slot, cols[:, 0])
        np.maximum.at(x1, slot, cols[:, 1])
        np.minimum.at(y0, slot, rows[:, 0])
        np.maximum.at(y1, slot, rows[:, 1])
        region_w = x1 - x0 + 1
        region_h = y1 - y0 + 1
        sizes = region_w * region_h
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])

        meta = np.column_stack(
            [
                offsets[slot],
                region_w[slot],
                region_h[slot],
                widths[slot],
                heights[slot],
                x0[slot],
                y0[slot],
            ]
        ).astype(np.int64)
        geom_bytes = n * GEOM * 8
        head = geom_bytes + n * META * 8
        total = head + int(sizes.sum())

        with self._lock:
            host, dev_in = self._staging(total)
            host[:geom_bytes].view(np.float64)[:] = rects.ravel()
            host[geom_bytes:head].view(np.int64)[:] = meta.ravel()
            pixels = host[head:total]
            for s, p in enumerate(used.tolist()):
                start = int(offsets[s])
                dst = pixels[start : start + int(sizes[s])].reshape(
                    int(region_h[s]), int(region_w[s])
                )
                # NumPy copies the strided rows of the plane's region into packed rows.
                np.copyto(dst, planes[p][y0[s] : y1[s] + 1, x0[s] : x1[s] + 1], casting="no")

            stream = self._stream
            dev_in.copy_to_device(host[:total], stream=stream)
            dev_out = self._output(n * size * size)
            blocks = (n * size * size + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
            args = (
                dev_in[head:total],
                dev_in[:geom_bytes].view(np.float64),
                dev_in[geom_bytes:head].view(np.int64),
                size,
                dev_out,
            )
            if blocks >= _FEW_BLOCKS:
                crop_kernel[blocks, THREADS_PER_BLOCK, stream](*args)
            else:
                with warnings.catch_warnings():
                    # Numba warns (NumbaPerformanceWarning) about grids under 128 blocks, "low
                    # occupancy": a batch of one or two faces is that small by nature, so the
                    # warning says nothing to act on. Matched by message, as numba and
                    # numba-cuda define the category in different modules. Entered only for
                    # small grids because catch_warnings swaps process-wide state.
                    warnings.filterwarnings("ignore", message=r"Grid size \d+ will likely result")
                    # The warning is raised by the launch configuration, the [...], not the call.
                    crop_kernel[blocks, THREADS_PER_BLOCK, stream](*args)
            dev_out.copy_to_host(out.reshape(-1), stream=stream)
            stream.synchronize()
        return out

"""Face crops for the emotion model, many boxes from many frames per call, on CPU or CUDA.

Every cropper fills ``out[n]`` with the crop of ``boxes[n]`` taken from
``planes[frame_index[n]]``, with exactly the maths of ``frame.crop_resize_normalize`` (squared
box, ``margin`` pixels each side, area averaging when shrinking, bilinear when enlarging,
edge-replicated plane, 0..255 mapped to -1..1). The CUDA cropper agrees with the CPU one to
1e-4 in those normalised units.

Importing this module imports neither Numba nor CUDA: ``cuda_available`` and ``make_cropper``
import them only when asked, so a CPU-only server never initialises a driver.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np

from rtserver.kernels.frame import crop_resize_normalize

log = logging.getLogger(__name__)

Device = Literal["cpu", "cuda", "auto"]


class FaceCropper(Protocol):
    """Turns face boxes on luma planes into normalised S x S crops."""

    margin: float

    def crop(
        self,
        planes: Sequence[np.ndarray],
        boxes: np.ndarray,
        frame_index: np.ndarray,
        out: np.ndarray,
    ) -> np.ndarray:
        """Fills ``out`` (N, S, S) float32 in [-1, 1] and returns it.

        ``planes`` are (H, W) uint8 luma planes (rows may be strided, sizes may differ),
        ``boxes`` is (N, 4) float (x, y, w, h) in pixels of the box's own plane, and
        ``frame_index`` (N,) integer says which plane each box is on. Raises ValueError on bad
        shapes, out-of-range indices, empty planes or non-finite boxes.
        """
        ...


def check_batch(
    planes: Sequence[np.ndarray],
    boxes: np.ndarray,
    frame_index: np.ndarray,
    out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Validates one crop batch; returns boxes as (N, 4) float64 and frame_index as int64.

    Shared by every cropper so that they refuse the same inputs with the same messages. Only
    the planes that some box refers to are checked: a caller may pass a whole ring of frames.
    """
    box_arr = np.ascontiguousarray(boxes, dtype=np.float64)
    if box_arr.size == 0:
        box_arr = box_arr.reshape(0, 4)
    if box_arr.ndim != 2 or box_arr.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4), got {box_arr.shape}")
    n = box_arr.shape[0]
    index = np.asarray(frame_index)
    if index.size == 0:
        index = index.reshape(0)
    if index.shape != (n,) or not (index.size == 0 or np.issubdtype(index.dtype, np.integer)):
        raise ValueError(f"frame_index must be ({n},) integers, got {index.shape} {index.dtype}")
    index = index.astype(np.int64, copy=False)
    if (
        out.dtype != np.float32
        or out.ndim != 3
        or out.shape[0] != n
        or out.shape[1] != out.shape[2]
        or out.shape[1] < 1
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        raise ValueError(
            f"out must be a writeable C-contiguous float32 ({n}, S, S) array with S >= 1, "
            f"got {out.dtype} {out.shape}"
        )
    if n == 0:
        return box_arr, index
    if index.min() < 0 or index.max() >= len(planes):
        raise ValueError(
            f"frame_index must be in [0, {len(planes)}), got {index.min()}..{index.max()}"
        )
    if not np.isfinite(box_arr).all():
        raise ValueError("boxes must be finite")
    for p in np.unique(index):
        plane = planes[p]
        if plane.dtype != np.uint8 or plane.ndim != 2:
            raise ValueError(f"plane {p} must be (H, W) uint8, got {plane.dtype} {plane.shape}")
        if plane.shape[0] == 0 or plane.shape[1] == 0:
            raise ValueError(f"plane {p} is empty")
    return box_arr, index


class CpuFaceCropper:
    """The Cython kernel, called once per frame that has boxes, on the calling thread.

    The kernel releases the GIL, so croppers on several analysis threads run in parallel.
    """

    def __init__(self, margin: float = 10.0) -> None:
        """``margin`` is added on every side of the squared box (pixels)."""
        if not np.isfinite(margin):
            raise ValueError("margin must be finite")
        self.margin = float(margin)

    def crop(
        self,
        planes: Sequence[np.ndarray],
        boxes: np.ndarray,
        frame_index: np.ndarray,
        out: np.ndarray,
    ) -> np.ndarray:
        """See :meth:`FaceCropper.crop`."""
        box_arr, index = check_batch(planes, boxes, frame_index, out)
        if box_arr.shape[0] == 0:
            return out
        # A stable sort keeps each frame's boxes in input order, so boxes that arrive grouped
        # by frame (the usual case) form runs that the kernel writes straight into `out`.
        order = np.argsort(index, kind="stable")
        sorted_index = index[order]
        starts = np.flatnonzero(np.diff(sorted_index, prepend=-1))
        stops = np.append(starts[1:], len(order))
        for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
            rows = order[start:stop]
            plane = planes[int(sorted_index[start])]
            first, last = int(rows[0]), int(rows[-1])
            if last - first + 1 == len(rows):
                # Ascending and gapless: a C-contiguous slice of `out`, written with no copy.
                crop_resize_normalize(
                    plane, box_arr[first : last + 1], out[first : last + 1], self.margin
                )
            else:
                part = np.empty((len(rows), *out.shape[1:]), dtype=np.float32)
                crop_resize_normalize(plane, box_arr[rows], part, self.margin)
                out[rows] = part
        return out


def cuda_available() -> bool:
    """Whether a CUDA device can be used through ``numba.cuda``; never raises.

    True under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), which runs kernels on the CPU.
    """
    try:
        # Probing must not fail because a driver or toolkit notice is turned into an error
        # (the tests run with warnings as errors): the answer is the same either way.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from numba import cuda

            return bool(cuda.is_available()) and len(cuda.gpus) > 0
    except Exception:
        return False


def make_cropper(device: str = "auto", margin: float = 10.0) -> FaceCropper:
    """The cropper for ``device``: "cpu", "cuda" or "auto" (CUDA when available, else CPU).

    Raises RuntimeError for "cuda" when no CUDA device is usable, ValueError for any other name.
    """
    if device not in ("cpu", "cuda", "auto"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    if device == "cpu" or (device == "auto" and not cuda_available()):
        return CpuFaceCropper(margin)
    if device == "cuda" and not cuda_available():
        raise RuntimeError("no CUDA device: numba.cuda found no usable GPU (use device='cpu')")
    try:
        # Imported here: the module compiles nothing at import, but it is CUDA-only code.
        from rtserver.kernels.frame_cuda import CudaFaceCropper

        cropper: FaceCropper = CudaFaceCropper(margin)
        _first_launch(cropper)
    except Exception as exc:
        # A GPU is there but the kernel cannot run on it (a Numba, driver or NumPy mismatch):
        # better told now, once, than by every batch of every session failing later.
        if device == "cuda":
            raise RuntimeError(f"CUDA face crops failed their first launch: {exc}") from exc
        log.warning("CUDA face crops failed their first launch (%s); cropping on the CPU", exc)
        return CpuFaceCropper(margin)
    return cropper


def _first_launch(cropper: FaceCropper) -> None:
    """Crops one face from a small plane: compiles the kernel now, and checks that it runs."""
    plane = np.zeros((48, 64), np.uint8)
    cropper.crop(
        [plane],
        np.array([[8.0, 8.0, 24.0, 24.0]]),
        np.zeros(1, np.int64),
        np.empty((1, 8, 8), np.float32),
    )

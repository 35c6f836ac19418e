"""Slow, plain NumPy references for the ``frame`` kernels; the tests compare the two.

Written for clarity, not speed: each axis is resampled by a dense weight matrix over an
edge-extended copy of the axis, so edge replication is an index clip instead of the kernel's
"edge pixels reach to infinity". Pixel ``k`` covers [k, k+1) in both.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt


def square_box(box: npt.ArrayLike, margin: float = 10.0) -> tuple[float, float, float, float]:
    """The source region (x, y, w, h) in pixels that a face box is cropped from.

    The shorter side is elongated symmetrically to make a square (as the fer emotion model's
    preprocessing does), ``margin`` pixels are added on every side, and a region smaller than
    one pixel is grown to one pixel about its centre.
    """
    x, y, w, h = (float(v) for v in np.asarray(box, dtype=np.float64))
    if h > w:
        x -= (h - w) / 2.0
        w = h
    elif w > h:
        y -= (w - h) / 2.0
        h = w
    x, y, w, h = x - margin, y - margin, w + 2.0 * margin, h + 2.0 * margin
    if w < 1.0:
        x += (w - 1.0) / 2.0
        w = 1.0
    if h < 1.0:
        y += (h - 1.0) / 2.0
        h = 1.0
    return x, y, w, h


def axis_weights(start: float, length: float, n_out: int, n_in: int) -> np.ndarray:
    """Dense (n_out, n_in) float64 matrix resampling [start, start+length) onto n_out pixels.

    Area averaging with exact overlap weights when each output pixel spans >= 1 source pixel,
    bilinear interpolation at output pixel centres otherwise; rows sum to 1. Positions past
    either end of the axis read the edge pixel.
    """
    scale = length / n_out
    i = np.arange(n_out, dtype=np.float64)
    if scale >= 1.0:
        a = start + i * scale
        b = start + (i + 1.0) * scale
        cells = np.arange(math.floor(a[0]), math.ceil(b[-1]), dtype=np.float64)
        # Overlap of output span [a, b) with cell [k, k+1), normalised to sum 1.
        ext = np.minimum(b[:, None], cells[None, :] + 1.0) - np.maximum(a[:, None], cells[None, :])
        ext = np.clip(ext, 0.0, None)
        ext /= ext.sum(axis=1, keepdims=True)
    else:
        pos = start + (i + 0.5) * scale - 0.5  # output centres in source index units
        lower = np.floor(pos)
        frac = pos - lower
        cells = np.arange(lower[0], lower[-1] + 2.0)
        ext = np.zeros((n_out, cells.size))
        col = (lower - cells[0]).astype(np.int64)
        ext[np.arange(n_out), col] = 1.0 - frac
        ext[np.arange(n_out), col + 1] = frac
    # Fold the extended cells back onto real pixels: that is edge replication.
    dense = np.zeros((n_in, n_out))
    np.add.at(dense, np.clip(cells, 0, n_in - 1).astype(np.int64), ext.T)
    return dense.T


def crop_resize_normalize_ref(
    plane: np.ndarray, boxes: npt.ArrayLike, size: int = 64, margin: float = 10.0
) -> np.ndarray:
    """Reference of ``frame.crop_resize_normalize``: (N, size, size) float32 in [-1, 1]."""
    box_arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    image = np.asarray(plane, dtype=np.float64)
    height, width = image.shape
    crops = np.empty((box_arr.shape[0], size, size), dtype=np.float32)
    for n, box in enumerate(box_arr):
        x, y, w, h = square_box(box, margin)
        wy = axis_weights(y, h, size, height)
        wx = axis_weights(x, w, size, width)
        crop = wy @ image @ wx.T
        crops[n] = (crop / 255.0 - 0.5) * 2.0
    return crops


def downscale_ref(plane: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Reference of ``frame.downscale``: exact-area mean, rounded to nearest, as uint8."""
    image = np.asarray(plane, dtype=np.float64)
    height, width = image.shape
    out_h, out_w = out_shape
    wy = axis_weights(0.0, float(height), out_h, height)
    wx = axis_weights(0.0, float(width), out_w, width)
    small = wy @ image @ wx.T
    return np.clip(np.floor(small + 0.5), 0, 255).astype(np.uint8)

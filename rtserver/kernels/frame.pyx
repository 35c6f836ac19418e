# cython: language_level=3
"""Per-frame kernels on the luma (Y) plane: face crops for the emotion model, detector input.

Both kernels read the plane through a strided memoryview, so a PyAV Y plane whose rows are
padded to ``line_size`` bytes is used as-is, with no copy. The work runs without the GIL, so
analysis threads of different sessions run in parallel.

Resampling model, shared with ``frame_reference``: pixel ``k`` covers the interval [k, k+1)
and the plane is extended past its edges by replicating the edge pixels (the edge pixel's
interval reaches to infinity). Each axis is resampled on its own (both filters are separable):

* shrinking (source span per output pixel >= 1): area averaging, each source pixel weighted by
  the exact length of its overlap with the output pixel's span;
* enlarging (< 1): bilinear interpolation at the output pixel's centre.

At a scale of exactly 1 the two agree, so the switch between them has no seam.
"""

import numpy as np

from libc.math cimport ceil, floor, isfinite, INFINITY
from libc.stdlib cimport free, malloc


cdef inline Py_ssize_t _clamp_index(double v, Py_ssize_t n) noexcept nogil:
    """``v`` (a whole number) clamped to [0, n-1]; clamped as a double so it never overflows."""
    if v <= 0.0:
        return 0
    if v >= <double>(n - 1):
        return n - 1
    return <Py_ssize_t>v


cdef inline Py_ssize_t _max_taps(double scale, Py_ssize_t n_in) noexcept nogil:
    """Most source pixels one output pixel can touch along an axis (at most the axis length)."""
    cdef double most
    if scale < 1.0:
        most = 2.0
    else:
        # A span of length `scale` touches at most ceil(scale) + 1 pixels; one more absorbs
        # rounding in start + i * scale.
        most = ceil(scale) + 2.0
    if most >= <double>n_in:
        return n_in
    return <Py_ssize_t>most


cdef void _axis_taps(
    double start,
    double length,
    Py_ssize_t n_out,
    Py_ssize_t n_in,
    Py_ssize_t max_taps,
    float gain,
    Py_ssize_t* first,
    Py_ssize_t* count,
    float* weights,
) noexcept nogil:
    """Resampling taps of one axis: the span [start, start+length) onto ``n_out`` pixels.

    Output pixel i reads source pixels first[i] .. first[i] + count[i] - 1 (all inside
    [0, n_in)), weighted by weights[i * max_taps + k]; the weights of a pixel sum to ``gain``.
    """
    cdef double scale = length / <double>n_out
    cdef double a, b, left, right, overlap, total, pos, lower, frac
    cdef Py_ssize_t i, k, lo, hi
    cdef float* w
    for i in range(n_out):
        w = weights + i * max_taps
        if scale >= 1.0:
            a = start + i * scale
            b = start + (i + 1) * scale
            lo = _clamp_index(floor(a), n_in)
            hi = _clamp_index(ceil(b) - 1.0, n_in)
            if hi - lo + 1 > max_taps:
                hi = lo + max_taps - 1
            total = 0.0
            for k in range(lo, hi + 1):
                # Edge pixels extend to infinity: that is edge replication.
                left = -INFINITY if k == 0 else <double>k
                right = INFINITY if k == n_in - 1 else <double>(k + 1)
                overlap = (b if b < right else right) - (a if a > left else left)
                if overlap < 0.0:
                    overlap = 0.0
                w[k - lo] = <float>overlap
                total += overlap
            if total > 0.0:
                # Dividing by the summed overlap rather than `scale` makes the weights sum
                # to exactly `gain` whatever the rounding of a and b.
                for k in range(hi - lo + 1):
                    w[k] = <float>(w[k] * (gain / total))
            else:
                # Only when rounding made the span empty (absurdly large coordinates).
                w[0] = gain
                hi = lo
            first[i] = lo
            count[i] = hi - lo + 1
        else:
            pos = start + (i + 0.5) * scale - 0.5  # output centre in source index units
            lower = floor(pos)
            if lower < 0.0 or lower >= <double>(n_in - 1):
                # Both neighbours clamp to the same edge pixel.
                first[i] = _clamp_index(lower, n_in)
                count[i] = 1
                w[0] = gain
            else:
                frac = pos - lower
                first[i] = <Py_ssize_t>lower
                count[i] = 2
                w[0] = <float>((1.0 - frac) * gain)
                w[1] = <float>(frac * gain)


cdef int _crop_one(
    const unsigned char* plane,
    Py_ssize_t row_stride,
    Py_ssize_t height,
    Py_ssize_t width,
    double x,
    double y,
    double w,
    double h,
    double margin,
    float* out,
    Py_ssize_t size,
) noexcept nogil:
    """One face box to a normalised size x size crop at ``out``; returns -1 when out of memory."""
    cdef double diff
    # Square the box as the fer emotion model was trained: elongate the shorter side
    # symmetrically, so the face is not stretched.
    if h > w:
        diff = h - w
        x -= diff / 2.0
        w += diff
    elif w > h:
        diff = w - h
        y -= diff / 2.0
        h += diff
    x -= margin
    y -= margin
    w += 2.0 * margin
    h += 2.0 * margin
    # At least one source pixel, about the same centre, so degenerate boxes still give a crop.
    if w < 1.0:
        x += (w - 1.0) / 2.0
        w = 1.0
    if h < 1.0:
        y += (h - 1.0) / 2.0
        h = 1.0

    cdef Py_ssize_t taps_x = _max_taps(w / <double>size, width)
    cdef Py_ssize_t taps_y = _max_taps(h / <double>size, height)
    cdef Py_ssize_t* index = <Py_ssize_t*>malloc(4 * size * sizeof(Py_ssize_t))
    cdef float* weights = <float*>malloc(size * (taps_x + taps_y) * sizeof(float))
    if index == NULL or weights == NULL:
        free(index)
        free(weights)
        return -1
    cdef Py_ssize_t* first_x = index
    cdef Py_ssize_t* count_x = index + size
    cdef Py_ssize_t* first_y = index + 2 * size
    cdef Py_ssize_t* count_y = index + 3 * size
    cdef float* wx = weights
    cdef float* wy = weights + size * taps_x
    # Horizontal weights carry the 2/255 of the normalisation; -1 is added at the end.
    _axis_taps(x, w, size, width, taps_x, <float>(2.0 / 255.0), first_x, count_x, wx)
    _axis_taps(y, h, size, height, taps_y, 1.0, first_y, count_y, wy)

    cdef Py_ssize_t i, j, k, c
    cdef Py_ssize_t col_lo = width, col_hi = 0
    for j in range(size):
        if first_x[j] < col_lo:
            col_lo = first_x[j]
        if first_x[j] + count_x[j] > col_hi:
            col_hi = first_x[j] + count_x[j]
    cdef Py_ssize_t ncols = col_hi - col_lo
    cdef float* tmp = <float*>malloc(size * ncols * sizeof(float))
    if tmp == NULL:
        free(index)
        free(weights)
        return -1

    cdef const unsigned char* row
    cdef float* t
    cdef float* wk
    cdef float weight, acc
    # Vertical pass first: its inner loop runs over contiguous bytes of a source row and
    # vectorises; only the columns the crop touches are read.
    for i in range(size):
        t = tmp + i * ncols
        wk = wy + i * taps_y
        row = plane + first_y[i] * row_stride + col_lo
        weight = wk[0]
        for c in range(ncols):
            t[c] = weight * row[c]
        for k in range(1, count_y[i]):
            row = plane + (first_y[i] + k) * row_stride + col_lo
            weight = wk[k]
            for c in range(ncols):
                t[c] += weight * row[c]
    # Horizontal pass: a few taps per output pixel.
    for i in range(size):
        t = tmp + i * ncols - col_lo
        for j in range(size):
            wk = wx + j * taps_x
            acc = 0.0
            for k in range(count_x[j]):
                acc += wk[k] * t[first_x[j] + k]
            out[i * size + j] = acc - 1.0

    free(tmp)
    free(index)
    free(weights)
    return 0


def crop_resize_normalize(
    const unsigned char[:, :] plane, boxes, float[:, :, ::1] out, double margin=10.0
):
    """Face crops of a luma plane as the emotion model's input, written into ``out``.

    ``plane`` is a (H, W) uint8 array, rows may be strided. ``boxes`` is (N, 4) float
    (x, y, w, h) in plane pixels. ``out`` is a C-contiguous float32 (N, S, S) array. Each box is
    squared (shorter side elongated about its centre), grown by ``margin`` pixels on every side,
    resampled to S x S (area averaging when shrinking, bilinear when enlarging, per axis, the
    plane edge-replicated) and mapped from 0..255 to -1..1. Raises ValueError on bad shapes or
    non-finite boxes.
    """
    box_arr = np.ascontiguousarray(boxes, dtype=np.float64)
    if box_arr.size == 0:
        box_arr = box_arr.reshape(0, 4)
    if box_arr.ndim != 2 or box_arr.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4), got {box_arr.shape}")
    cdef Py_ssize_t n = box_arr.shape[0]
    if out.shape[0] != n or out.shape[1] != out.shape[2] or out.shape[1] < 1:
        raise ValueError(
            f"out must be ({n}, S, S) with S >= 1, got ({out.shape[0]}, {out.shape[1]}, "
            f"{out.shape[2]})"
        )
    if n == 0:
        return
    if plane.shape[0] == 0 or plane.shape[1] == 0:
        raise ValueError("plane is empty")
    if not np.isfinite(box_arr).all() or not isfinite(margin):
        raise ValueError("boxes and margin must be finite")
    if plane.strides[1] != 1:
        # Not a video plane layout (e.g. a transposed view); one copy keeps the hot loop simple.
        plane = np.ascontiguousarray(plane)

    cdef const double[:, ::1] bx = box_arr
    cdef const unsigned char* base = &plane[0, 0]
    cdef Py_ssize_t row_stride = plane.strides[0]
    cdef Py_ssize_t height = plane.shape[0], width = plane.shape[1]
    cdef Py_ssize_t size = out.shape[1]
    cdef float* dst = &out[0, 0, 0]
    cdef Py_ssize_t b
    cdef int failed = 0
    with nogil:
        for b in range(n):
            if _crop_one(
                base, row_stride, height, width,
                bx[b, 0], bx[b, 1], bx[b, 2], bx[b, 3], margin,
                dst + b * size * size, size,
            ) != 0:
                failed = 1
                break
    if failed:
        raise MemoryError("crop_resize_normalize: out of memory")


def downscale(const unsigned char[:, :] plane, unsigned char[:, ::1] out):
    """Area downscale of a (H, W) uint8 plane (rows may be strided) into ``out`` (H2, W2).

    Any fractional factor: each output pixel is the exact-area-weighted mean of the source
    pixels under it, rounded to nearest. ``out`` must be C-contiguous uint8 with H2 <= H and
    W2 <= W (ValueError otherwise).
    """
    cdef Py_ssize_t height = plane.shape[0], width = plane.shape[1]
    cdef Py_ssize_t out_h = out.shape[0], out_w = out.shape[1]
    if out_h > height or out_w > width:
        raise ValueError(f"cannot downscale {height}x{width} to a larger {out_h}x{out_w}")
    if out_h == 0 or out_w == 0:
        return
    if plane.strides[1] != 1:
        plane = np.ascontiguousarray(plane)

    cdef const unsigned char* base = &plane[0, 0]
    cdef Py_ssize_t row_stride = plane.strides[0]
    cdef unsigned char* dst = &out[0, 0]
    cdef Py_ssize_t taps_x = _max_taps(<double>width / out_w, width)
    cdef Py_ssize_t taps_y = _max_taps(<double>height / out_h, height)
    cdef Py_ssize_t* index = NULL
    cdef float* weights = NULL
    cdef float* tmp = NULL
    cdef Py_ssize_t* first_x
    cdef Py_ssize_t* count_x
    cdef Py_ssize_t* first_y
    cdef Py_ssize_t* count_y
    cdef float* wx
    cdef float* wy
    cdef float* wk
    cdef const unsigned char* row
    cdef float weight, acc
    cdef Py_ssize_t i, j, k, c
    cdef int failed = 0
    with nogil:
        index = <Py_ssize_t*>malloc(2 * (out_w + out_h) * sizeof(Py_ssize_t))
        weights = <float*>malloc((out_w * taps_x + out_h * taps_y) * sizeof(float))
        tmp = <float*>malloc(width * sizeof(float))
        if index == NULL or weights == NULL or tmp == NULL:
            failed = 1
        else:
            first_x = index
            count_x = index + out_w
            first_y = index + 2 * out_w
            count_y = first_y + out_h
            wx = weights
            wy = weights + out_w * taps_x
            _axis_taps(0.0, width, out_w, width, taps_x, 1.0, first_x, count_x, wx)
            _axis_taps(0.0, height, out_h, height, taps_y, 1.0, first_y, count_y, wy)
            for i in range(out_h):
                # Vertical pass over whole contiguous rows (vectorises), then horizontal.
                wk = wy + i * taps_y
                row = base + first_y[i] * row_stride
                weight = wk[0]
                for c in range(width):
                    tmp[c] = weight * row[c]
                for k in range(1, count_y[i]):
                    row = base + (first_y[i] + k) * row_stride
                    weight = wk[k]
                    for c in range(width):
                        tmp[c] += weight * row[c]
                for j in range(out_w):
                    wk = wx + j * taps_x
                    acc = 0.5  # round to nearest on the truncating cast below
                    for k in range(count_x[j]):
                        acc += wk[k] * tmp[first_x[j] + k]
                    if acc < 0.0:
                        acc = 0.0
                    elif acc > 255.0:
                        acc = 255.0
                    dst[i * out_w + j] = <unsigned char>acc
        free(index)
        free(weights)
        free(tmp)
    if failed:
        raise MemoryError("downscale: out of memory")

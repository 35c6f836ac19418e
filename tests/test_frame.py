"""The Cython frame kernels against their NumPy references, on random and edge inputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from rtserver.kernels.frame import crop_resize_normalize, downscale
from rtserver.kernels.frame_reference import crop_resize_normalize_ref, downscale_ref

CROP_TOL = 1e-4  # normalised units (-1..1); one grey level is 2/255 = 0.0078


def strided_plane(rng: np.random.Generator, h: int, w: int, pad: int = 13) -> np.ndarray:
    """A read-only (h, w) uint8 view with a row stride of w + pad, like a PyAV Y plane."""
    buf = rng.integers(0, 256, size=(h, w + pad), dtype=np.uint8)
    buf.flags.writeable = False
    plane = buf[:, :w]
    assert plane.strides[0] == w + pad
    return plane


def run_crop(plane: np.ndarray, boxes: np.ndarray, size: int = 64, margin: float = 10.0):
    out = np.full((len(boxes), size, size), np.nan, dtype=np.float32)
    crop_resize_normalize(plane, np.asarray(boxes, np.float32), out, margin)
    return out


def assert_crop_matches(plane: np.ndarray, boxes, size: int = 64, margin: float = 10.0) -> None:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    got = run_crop(plane, boxes, size, margin)
    want = crop_resize_normalize_ref(plane, boxes, size, margin)
    assert got.shape == want.shape
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=CROP_TOL)


def edge_boxes(h: int, w: int) -> list[list[float]]:
    """Boxes touching and crossing every edge and corner, plus ones fully outside."""
    s = max(4.0, min(h, w) / 3)
    return [
        [0, 0, s, s],
        [w - s, h - s, s, s],
        [-s / 2, h / 3, s, s * 1.3],
        [w - s / 2, h / 3, s * 0.7, s],
        [w / 3, -s / 2, s, s],
        [w / 3, h - s / 2, s, s],
        [-s / 2, -s / 2, s, s],
        [w - s / 3, h - s / 3, s, s],
        [-5 * s, -5 * s, s, s],
        [w + 3 * s, h / 2, s, s],
        [w / 2, h + 7.5, s, 2 * s],
    ]


@pytest.mark.parametrize(("h", "w"), [(17, 33), (33, 17), (48, 64), (1, 1), (2, 9), (120, 160)])
def test_crop_random_frames_match_reference(h: int, w: int) -> None:
    rng = np.random.default_rng(h * 1000 + w)
    plane = strided_plane(rng, h, w)
    boxes = np.column_stack(
        [
            rng.uniform(-0.3 * w, w, 12),
            rng.uniform(-0.3 * h, h, 12),
            rng.uniform(0, 1.2 * w, 12),
            rng.uniform(0, 1.2 * h, 12),
        ]
    )
    for size in (64, 7, 1):
        assert_crop_matches(plane, boxes, size)


def test_crop_boxes_at_and_past_each_edge() -> None:
    rng = np.random.default_rng(1)
    for h, w in [(17, 33), (90, 70)]:
        plane = strided_plane(rng, h, w)
        assert_crop_matches(plane, edge_boxes(h, w), margin=10.0)
        assert_crop_matches(plane, edge_boxes(h, w), margin=0.0, size=16)


def test_crop_tiny_and_degenerate_boxes() -> None:
    rng = np.random.default_rng(2)
    plane = strided_plane(rng, 40, 50)
    boxes = [
        [10, 10, 0, 0],
        [10.4, 20.7, 0.3, 0.1],
        [0, 0, 0, 0],
        [49.9, 39.9, 0, 0],
        [25, 25, 1, 0],
        [25, 25, -3, 2],  # negative width from a broken detector
    ]
    assert_crop_matches(plane, boxes, margin=0.0)  # regions of 1 pixel and less
    assert_crop_matches(plane, boxes, margin=-20.0)  # margin eats the box: grown to 1 px
    assert_crop_matches(plane, boxes, margin=10.0)


def test_crop_huge_boxes() -> None:
    rng = np.random.default_rng(3)
    plane = strided_plane(rng, 36, 48)
    boxes = [[-100, -80, 300, 250], [-10, -10, 68, 56], [0, 0, 48, 36], [20, 10, 500, 40]]
    assert_crop_matches(plane, boxes)
    assert_crop_matches(plane, boxes, size=5)


def test_crop_enlarging_and_shrinking() -> None:
    rng = np.random.default_rng(4)
    plane = strided_plane(rng, 200, 300)
    enlarge = [[100, 80, 12, 12], [40.25, 33.5, 20.5, 7.0], [150, 100, 63.9, 63.9]]
    shrink = [[50, 40, 150, 120], [10.3, 5.7, 99.1, 180.4], [100, 50, 64, 64]]
    mixed = [[60, 60, 3, 150]]  # squared to 150 x 150, but tall and thin before squaring
    assert_crop_matches(plane, enlarge, margin=0.0)
    assert_crop_matches(plane, enlarge)
    assert_crop_matches(plane, shrink)
    assert_crop_matches(plane, mixed, margin=2.5)


def test_crop_no_boxes() -> None:
    plane = np.zeros((10, 10), np.uint8)
    out = np.empty((0, 64, 64), np.float32)
    crop_resize_normalize(plane, np.zeros((0, 4), np.float32), out)
    assert crop_resize_normalize_ref(plane, np.zeros((0, 4), np.float32)).shape == (0, 64, 64)


def test_crop_plane_layouts() -> None:
    """Negative and non-unit strides give the same crops as a contiguous copy."""
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, (60, 90), dtype=np.uint8)
    boxes = [[5, 5, 30, 20], [-5, 40, 25, 25]]
    for view in (base[::-1], base[:, ::2], base[::2, 1::3], base.T):
        want = run_crop(np.ascontiguousarray(view), np.asarray(boxes, np.float32))
        np.testing.assert_array_equal(run_crop(view, np.asarray(boxes, np.float32)), want)
        assert_crop_matches(view, boxes)


def test_crop_reads_only_the_plane() -> None:
    """A border of 255 around an all-zero plane must never leak in, whatever the box."""
    h, w = 21, 31
    buf = np.full((h + 4, w + 24), 255, np.uint8)
    buf[2 : 2 + h, 2 : 2 + w] = 0
    plane = buf[2 : 2 + h, 2 : 2 + w]
    boxes = [*edge_boxes(h, w), [-1000, -1000, 5000, 5000], [0, 0, 0, 0], [w, h, 0, 0]]
    out = run_crop(plane, np.asarray(boxes, np.float32))
    np.testing.assert_array_equal(out, -1.0)


def test_crop_constant_plane_and_value_range() -> None:
    rng = np.random.default_rng(6)
    boxes = np.asarray([*edge_boxes(30, 40), [3.3, 4.4, 17.7, 9.1]], np.float32)
    for value, expect in [(0, -1.0), (255, 1.0), (100, (100 / 255 - 0.5) * 2)]:
        plane = np.full((30, 40), value, np.uint8)
        out = run_crop(plane, boxes, size=int(rng.integers(1, 70)))
        np.testing.assert_allclose(out, expect, rtol=0, atol=1e-6)


def test_crop_rejects_bad_arguments() -> None:
    plane = np.zeros((10, 10), np.uint8)
    box = np.array([[1, 1, 5, 5]], np.float32)
    with pytest.raises(ValueError):
        crop_resize_normalize(plane, box, np.empty((2, 64, 64), np.float32))
    with pytest.raises(ValueError):
        crop_resize_normalize(plane, box, np.empty((1, 64, 32), np.float32))
    with pytest.raises(ValueError):
        crop_resize_normalize(plane, np.zeros((1, 3), np.float32), np.empty((1, 8, 8), np.float32))
    with pytest.raises(ValueError):
        crop_resize_normalize(plane, box, np.empty((1, 8, 8), np.float64))
    with pytest.raises(ValueError):
        bad = np.array([[np.nan, 1, 5, 5]], np.float32)
        crop_resize_normalize(plane, bad, np.empty((1, 8, 8), np.float32))
    with pytest.raises(ValueError):
        crop_resize_normalize(np.zeros((0, 5), np.uint8), box, np.empty((1, 8, 8), np.float32))


@pytest.mark.parametrize(
    ("h", "w", "out_h", "out_w"),
    [
        (17, 33, 17, 33),
        (17, 33, 5, 11),
        (33, 17, 10, 7),
        (120, 160, 47, 61),
        (120, 160, 1, 1),
        (9, 200, 9, 3),
        (720, 1280, 108, 192),
    ],
)
def test_downscale_matches_reference(h: int, w: int, out_h: int, out_w: int) -> None:
    rng = np.random.default_rng(h + w + out_h)
    plane = strided_plane(rng, h, w)
    out = np.empty((out_h, out_w), np.uint8)
    downscale(plane, out)
    diff = np.abs(out.astype(np.int16) - downscale_ref(plane, (out_h, out_w)))
    assert diff.max() <= 1


def test_downscale_identity_and_constant() -> None:
    rng = np.random.default_rng(7)
    plane = strided_plane(rng, 23, 31)
    same = np.empty((23, 31), np.uint8)
    downscale(plane, same)
    np.testing.assert_array_equal(same, plane)
    flat = np.full((50, 70), 201, np.uint8)
    small = np.empty((13, 29), np.uint8)
    downscale(flat, small)
    np.testing.assert_array_equal(small, 201)


def test_downscale_agrees_with_opencv_area_on_integer_factor() -> None:
    rng = np.random.default_rng(8)
    plane = strided_plane(rng, 240, 320)
    out = np.empty((60, 80), np.uint8)
    downscale(plane, out)
    want = cv2.resize(np.ascontiguousarray(plane), (80, 60), interpolation=cv2.INTER_AREA)
    assert np.abs(out.astype(np.int16) - want).max() <= 1


def test_downscale_rejects_upscaling() -> None:
    plane = np.zeros((10, 10), np.uint8)
    with pytest.raises(ValueError):
        downscale(plane, np.empty((11, 5), np.uint8))
    with pytest.raises(ValueError):
        downscale(plane, np.empty((5, 11), np.uint8))
    downscale(plane, np.empty((0, 5), np.uint8))  # nothing to do, nothing to fail

"""The face tracker: when to detect, which box to reuse, and when the face is lost."""

import numpy as np
import pytest
from skimage import color, data

from rtserver.scoring.faces import FaceBox
from rtserver.scoring.tracking import FaceTracker, face_patch, iou

# The astronaut's face in skimage's 512 x 512 photo (x, y, w, h).
FACE = FaceBox(165, 50, 110, 130)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return (color.rgb2gray(data.astronaut()) * 255).astype(np.uint8)


def test_detection_is_due_at_the_configured_rate(photo: np.ndarray) -> None:
    tracker = FaceTracker(detect_fps=5.0)
    assert tracker.due(0.0)  # no track yet
    tracker.update(photo, 0.0, FACE)
    # On a 10 fps analysis grid, every other frame detects.
    assert [tracker.due(t) for t in (0.1, 0.2, 0.3)] == [False, True, True]
    tracker.update(photo, 0.2, FACE)
    assert not tracker.due(0.3)


def test_the_tracked_box_is_reused_while_the_face_still_matches(photo: np.ndarray) -> None:
    tracker = FaceTracker()
    tracker.update(photo, 0.0, FACE)
    # The same scene, slightly darker and noisier: still the same face.
    rng = np.random.default_rng(1)
    noisy = np.clip(photo * 0.9 + rng.normal(0, 6, photo.shape), 0, 255).astype(np.uint8)
    assert tracker.follow(noisy) == FaceBox(*FACE.as_tuple())


def test_a_crop_that_stops_matching_loses_the_face_at_once(photo: np.ndarray) -> None:
    tracker = FaceTracker()
    tracker.update(photo, 0.0, FACE)
    # The candidate walked away: the box now shows the background's texture.
    away = photo.copy()
    away[FACE.y : FACE.y + FACE.h, FACE.x : FACE.x + FACE.w] = np.random.default_rng(2).integers(
        0, 255, (FACE.h, FACE.w), dtype=np.uint8
    )
    assert tracker.follow(away) is None
    assert tracker.due(0.05)  # a lost face is detected again on the very next frame


def test_detections_of_the_same_face_are_smoothed_and_jumps_are_not(photo: np.ndarray) -> None:
    tracker = FaceTracker(smoothing=0.6)
    tracker.update(photo, 0.0, FACE)
    moved = tracker.update(photo, 0.2, FaceBox(FACE.x + 10, FACE.y, FACE.w, FACE.h))
    assert moved is not None and moved.x == FACE.x + 6 and moved.y == FACE.y
    jumped = tracker.update(photo, 0.4, FaceBox(20, 300, 100, 100))
    assert jumped == FaceBox(20, 300, 100, 100)


def test_no_detection_drops_the_track(photo: np.ndarray) -> None:
    tracker = FaceTracker()
    tracker.update(photo, 0.0, FACE)
    assert tracker.update(photo, 0.2, None) is None
    assert tracker.follow(photo) is None
    assert tracker.due(0.25)


def test_patch_is_normalised_and_iou_is_symmetric(photo: np.ndarray) -> None:
    patch = face_patch(photo, np.array(FACE.as_tuple(), np.float64))
    assert abs(float(patch.mean())) < 1e-5
    assert float(np.sum(patch * patch)) == pytest.approx(1.0, abs=1e-4)
    a, b = np.array([0.0, 0.0, 10, 10]), np.array([5.0, 0.0, 10, 10])
    assert iou(a, b) == pytest.approx(50 / 150) == iou(b, a)
    assert iou(a, np.array([20.0, 20, 5, 5])) == 0.0

"""The face tracker: when to detect, which box to reuse, and when the face is lost; on
close-ups and on the small face of a candidate seated back from the camera."""

from pathlib import Path

import cv2
import face_set
import media
import numpy as np
import pytest
from skimage import color, data
from skimage import data as skdata

from rtserver.inference.engine import EngineOptions, load_engine
from rtserver.kernels.crops import CpuFaceCropper
from rtserver.perception.blazeface import (
    HAAR_CENTRE_SHIFT,
    HAAR_SIZE_RATIO,
    BlazeFaceDetector,
    FaceFinder,
)
from rtserver.perception.blazeface_ssd import FULL_RANGE
from rtserver.perception.emotion import EMOTION_LABELS, EmotionModel
from rtserver.perception.faces import Chroma, FaceBox
from rtserver.perception.tracking import FaceTracker, face_patch, iou

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


# --- small faces: a candidate seated back from the camera -----------------------------------


@pytest.fixture(scope="module")
def seated() -> list[np.ndarray]:
    """RGB frames of tests/media.py's seated candidate: the astronaut photo 400 px tall in a
    640x480 frame, her face about 80 px, swaying a few pixels."""
    return list(media._seated_frames(4, 15, (640, 480), media.SEATED_PHOTO_PX))


@pytest.fixture(scope="module")
def finder(models_dir: Path) -> FaceFinder:
    """The server's detector, with its Haar-framed boxes (``rtserver.perception.analysis``)."""
    framing = {"box_scale": HAAR_SIZE_RATIO, "centre_shift": HAAR_CENTRE_SHIFT}
    full = BlazeFaceDetector(
        models_dir / "face_detector_full.onnx", layout=FULL_RANGE, channels=3, **framing
    )
    return FaceFinder(full, BlazeFaceDetector(models_dir / "face_detector.onnx", **framing))


class RecordingFinder:
    """The real finder, recording the step and the hint of each ``detect_step`` call."""

    def __init__(self, finder: FaceFinder) -> None:
        self.finder = finder
        self.search_steps = finder.search_steps
        self.calls: list[tuple[int, FaceBox | None]] = []

    def detect(self, luma: np.ndarray, chroma: Chroma | None = None) -> list[FaceBox]:
        return self.finder.detect(luma, chroma)

    def detect_step(
        self, luma: np.ndarray, chroma: Chroma | None, step: int, near: FaceBox | None = None
    ) -> list[FaceBox]:
        self.calls.append((step, near))
        return self.finder.detect_step(luma, chroma, step, near)


def test_a_face_less_picture_goes_through_every_step_then_a_face_is_followed_near(
    finder: FaceFinder, seated: list[np.ndarray]
) -> None:
    recording = RecordingFinder(finder)
    tracker = FaceTracker()
    wall = np.full((480, 640, 3), 120, np.uint8)
    wall_luma, wall_chroma = face_set.yuv420(wall)
    for k in range(6):
        assert tracker.detect(recording, wall_luma, wall_chroma) is None
        tracker.update(wall_luma, 0.1 * k, None)
    # Consecutive face-less frames run the whole frame, then each corner, then start over.
    assert recording.calls == [(0, None), (1, None), (2, None), (3, None), (4, None), (0, None)]
    recording.calls.clear()
    luma, chroma = face_set.yuv420(seated[0])
    found = tracker.detect(recording, luma, chroma)  # step 1 of the search: a corner holds her
    assert found is not None and 70 <= found.h <= 110, found
    box = tracker.update(luma, 0.6, found)
    assert box is not None
    luma, chroma = face_set.yuv420(seated[2])
    again = tracker.detect(recording, luma, chroma)
    # Once she is tracked, the next detection looks near her first, with the tracked box.
    step, near = recording.calls[-1]
    assert step == 0 and near is not None and near.as_tuple() == box.as_tuple(), recording.calls
    assert again is not None and iou(np.array(again.as_tuple()), np.array(box.as_tuple())) > 0.6


def test_an_80px_face_is_tracked_and_lost_by_its_patch(
    finder: FaceFinder, seated: list[np.ndarray]
) -> None:
    luma, chroma = face_set.yuv420(seated[0])
    (face, *_) = finder.detect(luma, chroma)
    assert 70 <= face.h <= 110, face  # Haar's framing of her ~80 px face
    tracker = FaceTracker()
    tracker.update(luma, 0.0, face)
    # The next frames: she swayed a pixel or two, and the camera adds noise.
    rng = np.random.default_rng(3)
    for frame in seated[1:]:
        noisy = np.clip(face_set.yuv420(frame)[0] + rng.normal(0, 4, luma.shape), 0, 255)
        assert tracker.follow(noisy.astype(np.uint8)) is not None
    # She leaves: the box shows the blurred room behind her.
    room = cv2.GaussianBlur(cv2.resize(skdata.coffee(), (640, 480)), (0, 0), 3.0)
    assert tracker.follow(face_set.yuv420(room)[0]) is None


def test_an_80px_face_gives_an_emotion_crop_read_as_the_close_up_is(
    finder: FaceFinder, seated: list[np.ndarray], models_dir: Path
) -> None:
    """The crop kernel makes a proper 64x64 face of an 80 px one (area-averaged, fer's 10 px
    margin), and the emotion model reads it as it reads the same face 512 px tall."""
    emotion = EmotionModel(load_engine(models_dir / "emotion.onnx", EngineOptions(cpu_threads=1)))
    cropper = CpuFaceCropper()
    probs = []
    for rgb in (skdata.astronaut(), seated[0]):
        luma, chroma = face_set.yuv420(rgb)
        (face, *_) = finder.detect(luma, chroma)
        crops = np.empty((1, 64, 64), np.float32)
        cropper.crop([luma], np.array([face.as_tuple()], np.float32), np.zeros(1, np.int64), crops)
        # A face crop, not a flat patch: it spans most of the grey range.
        assert float(crops.max() - crops.min()) > 1.0
        probs.append(emotion.run(crops)[0])
    close_up, seated_back = probs
    assert EMOTION_LABELS[int(close_up.argmax())] == "happy"
    assert EMOTION_LABELS[int(seated_back.argmax())] == "happy"
    assert float(np.abs(close_up - seated_back).max()) < 0.2, (close_up, seated_back)

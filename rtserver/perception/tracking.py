"""Face tracking between detections: detect a few times a second, reuse the box in between.

A detection costs a model call; most analysed frames of an interview show the same face
in nearly the same place. So the detector runs at ``detect_fps`` (by media time), and the
frames between reuse the last, smoothed box, after one cheap check: the normalised
cross-correlation of a small gray patch at the box against the patch taken when the face
was last detected. A patch that stops matching (the candidate moved away, turned, covered
the camera) triggers a detection on that very frame.

Each detection is one bounded step of the detector (``FaceTracker.detect``): it looks near
the face it tracks, or lost on this frame, first; with no face to look near, it runs the
next step of the detector's complete search, so that consecutive face-less frames go
through every scale of the search in turn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtserver.kernels.frame import crop_resize_normalize
from rtserver.perception.faces import Chroma, FaceBox, FaceDetector

PATCH_SIZE = 24  # pixels of the comparison patch; small, so each check costs microseconds


@dataclass
class _Track:
    box: np.ndarray  # (4,) float64 x, y, w, h in frame pixels
    template: np.ndarray  # (PATCH_SIZE, PATCH_SIZE) float32, zero mean, unit norm
    detected_at: float  # media time of the last detection (s)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x, y, w, h) boxes (0-1)."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def face_patch(plane: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A zero-mean, unit-norm PATCH_SIZE square gray patch of ``box`` on ``plane``."""
    out = np.empty((1, PATCH_SIZE, PATCH_SIZE), np.float32)
    crop_resize_normalize(plane, box.reshape(1, 4).astype(np.float64), out, 0.0)
    patch = out[0] - out[0].mean()
    norm = float(np.linalg.norm(patch))
    return patch / norm if norm > 1e-6 else patch


class FaceTracker:
    """One session's face track: when to detect, and which box to use meanwhile."""

    def __init__(
        self, detect_fps: float = 5.0, smoothing: float = 0.6, min_similarity: float = 0.6
    ) -> None:
        """``smoothing`` is the weight (0-1) of a new detection against the tracked box;
        ``min_similarity`` the patch correlation (-1..1) below which the face is lost."""
        self.detect_interval_s = 1.0 / detect_fps
        self.smoothing = smoothing
        self.min_similarity = min_similarity
        self._track: _Track | None = None
        self._last_seen: float | None = None  # media time of the last detection attempt
        self._lost: np.ndarray | None = None  # box of a face that stopped matching just now
        self._step = 0  # the detector's next search step

    def detect(
        self, detector: FaceDetector, luma: np.ndarray, chroma: Chroma | None
    ) -> FaceBox | None:
        """The largest face one bounded step of ``detector`` finds on this frame, or None.

        Near the tracked face, or the face lost on this very frame, first (when the
        detector can look there); otherwise, or when that finds nothing, the detector's next
        search step. A face found starts the next search over from its first step.
        """
        near = self._track.box if self._track is not None else self._lost
        self._lost = None
        faces = detector.detect_step(
            luma, chroma, self._step, _as_face_box(near) if near is not None else None
        )
        if faces:
            self._step = 0
            return faces[0]
        self._step = (self._step + 1) % max(1, detector.search_steps)
        return None

    def due(self, media_time: float) -> bool:
        """Whether the detector should run on the frame at ``media_time`` (s)."""
        if self._last_seen is None or self._track is None:
            return True
        # A small tolerance keeps frames on a 10 fps grid detecting every other frame.
        return media_time - self._last_seen >= self.detect_interval_s - 1e-3

    def follow(self, plane: np.ndarray) -> FaceBox | None:
        """Between detections: the tracked box if the face still looks as it did, else None
        (the caller should detect on this frame)."""
        if self._track is None:
            return None
        similarity = float(np.sum(face_patch(plane, self._track.box) * self._track.template))
        if similarity < self.min_similarity:
            self._lost = self._track.box
            self._track = None
            return None
        return _as_face_box(self._track.box)

    def update(
        self, plane: np.ndarray, media_time: float, detected: FaceBox | None
    ) -> FaceBox | None:
        """After a detection at ``media_time``: the box to use, smoothed towards the
        detection when it is the same face, or None (and no track) when none was found."""
        self._last_seen = media_time
        if detected is None:
            self._track = None
            return None
        new = np.array(detected.as_tuple(), np.float64)
        if self._track is not None and iou(self._track.box, new) > 0.3:
            box = self._track.box + self.smoothing * (new - self._track.box)
        else:
            box = new  # a new face, or a jump: no smoothing across it
        self._track = _Track(box, face_patch(plane, box), media_time)
        return _as_face_box(box, detected.score)


def _as_face_box(box: np.ndarray, score: float = 1.0) -> FaceBox:
    x, y, w, h = (round(float(v)) for v in box)
    return FaceBox(x, y, max(1, w), max(1, h), score)

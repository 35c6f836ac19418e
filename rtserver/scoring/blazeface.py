"""BlazeFace short-range face detection on the luma plane, decoded as MediaPipe does.

The model (``rtserver.models.blazeface_tflite`` converts it to ONNX with a gray input) sees a
128x128 letterboxed image in [-1, 1] and returns, for each of 896 fixed SSD anchors, 16 box
regressors and one score logit. Around it, all in NumPy here:

- ``ssd_anchors``: MediaPipe's anchor grid (strides 8, 16, 16, 16; fixed anchor size);
- ``decode_detections``: offsets (in input pixels, scale 128) to boxes and six keypoints;
- ``sigmoid_scores``: MediaPipe's clipped sigmoid;
- ``weighted_nms``: MediaPipe's weighted non-max suppression, which averages a cluster of
  overlapping boxes by score rather than keeping only the best one.

Coordinates between these steps are normalised to the model input: 0..1 across its 128
pixels, (x, y) order. ``BlazeFaceDetector`` adds the letterbox and its removal.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rtserver.kernels.frame import downscale
from rtserver.scoring.engine import Backend, EngineOptions, load_engine
from rtserver.scoring.faces import FaceBox

INPUT_SIZE = 128  # model input side (pixels)
ANCHOR_STRIDES = (8, 16, 16, 16)  # MediaPipe face_detection_short_range_common.pbtxt
NUM_ANCHORS = 896
NUM_KEYPOINTS = 6  # right eye, left eye, nose tip, mouth, right ear tragion, left ear tragion
NUM_COORDS = 4 + 2 * NUM_KEYPOINTS
SCORE_CLIP = 100.0  # MediaPipe's score_clipping_thresh on the logits
MIN_SCORE = 0.5  # MediaPipe's min_score_thresh
MIN_SUPPRESSION_IOU = 0.3  # MediaPipe's min_suppression_threshold
# Size of OpenCV's Haar box (the framing the emotion model's crops were made with) over
# BlazeFace's tight brow-to-chin box, sqrt of the area ratio, median over real portraits
# (astronaut, grace_hopper, each also reframed at 3 zooms and 2 frame sizes; Haar at the
# server's detect width 160): 1.08, per face 0.91-1.26 (astronaut ~0.95, Grace Hopper ~1.15).
# Against Haar at full width: 1.00; on LFW faces pasted on grey: 1.15-1.24. Whatever the
# size, Haar's box centre sits 0.12 box heights higher (it takes in the forehead, stops at
# the chin), which no scale about the centre can reproduce.
HAAR_SIZE_RATIO = 1.08
HAAR_CENTRE_SHIFT = -0.12  # box heights; negative moves the box up


def ssd_anchors(
    input_size: int = INPUT_SIZE, strides: Sequence[int] = ANCHOR_STRIDES, offset: float = 0.5
) -> np.ndarray:
    """Anchor centres (A, 2) float32 (x, y), normalised 0..1, in the model's output order.

    As MediaPipe's SsdAnchorsCalculator with one aspect ratio plus the interpolated scale and
    ``fixed_anchor_size``: each layer puts 2 anchors on every cell of its stride's grid, and
    consecutive layers of equal stride share one grid (cells row by row, anchors of a cell
    together). The anchor width and height are 1, so only centres are returned.
    """
    centres: list[np.ndarray] = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        same = layer
        while same < len(strides) and strides[same] == stride:
            same += 1
        per_cell = 2 * (same - layer)
        cells = input_size // stride
        grid = (np.arange(cells, dtype=np.float64) + offset) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        cell_centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cell_centres, per_cell, axis=0))
        layer = same
    return np.concatenate(centres).astype(np.float32)


def decode_detections(
    raw: np.ndarray, anchors: np.ndarray, scale: float = float(INPUT_SIZE)
) -> np.ndarray:
    """Boxes and keypoints (K, 16) float64 from raw regressors (K, 16) of anchors (K, 2).

    Raw values are offsets in input pixels (``scale`` per unit): centre x, y, width, height,
    then six keypoints x, y relative to the anchor centre. The result holds xmin, ymin, xmax,
    ymax, then the six keypoints x, y, normalised to the model input (0..1).
    """
    raw = np.asarray(raw, np.float64).reshape(-1, NUM_COORDS) / scale
    anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
    out = np.empty_like(raw)
    centre = raw[:, 0:2] + anchors
    half = raw[:, 2:4] / 2.0
    out[:, 0:2] = centre - half
    out[:, 2:4] = centre + half
    keypoints = raw[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + anchors[:, None, :]
    out[:, 4:] = keypoints.reshape(-1, 2 * NUM_KEYPOINTS)
    return out


def sigmoid_scores(logits: np.ndarray, clip: float = SCORE_CLIP) -> np.ndarray:
    """Scores (0-1) float64 of raw logits clipped to [-clip, clip], as MediaPipe computes them.

    float64 keeps exp(clip) finite for MediaPipe's clip of 100 (float32 would overflow).
    """
    clipped = np.clip(np.asarray(logits, np.float64), -clip, clip)
    return 1.0 / (1.0 + np.exp(-clipped))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union (len(a), len(b)) of (xmin, ymin, xmax, ymax) boxes.

    Pairs whose union is empty (two degenerate boxes) have IoU 0.
    """
    a = np.asarray(a, np.float64)[:, None, :4]
    b = np.asarray(b, np.float64)[None, :, :4]
    inter_w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    inter_h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    safe = np.where(union > 0, union, 1.0)
    return np.where(union > 0, inter / safe, 0.0)


def weighted_nms(
    detections: np.ndarray, scores: np.ndarray, iou_threshold: float = MIN_SUPPRESSION_IOU
) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-max suppression: merged detections and their scores.

    ``detections`` is (K, D) with the box xmin, ymin, xmax, ymax in its first four columns
    (more columns, such as keypoints, are merged the same way); ``scores`` is (K,). In order
    of falling score, the best remaining detection gathers every remaining one whose IoU
    with it exceeds ``iou_threshold`` (itself included); the cluster becomes one detection,
    the score-weighted mean of its members, with the best member's score. Returns
    (M, D) float64 and (M,) float64, best first.
    """
    detections = np.asarray(detections, np.float64)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(scores) == 0:
        return np.empty((0, detections.shape[-1])), np.empty(0)
    order = np.argsort(-scores, kind="stable")
    detections, scores = detections[order], scores[order]
    # Few detections pass the score threshold (tens at most), so one IoU matrix is cheap.
    overlaps = box_iou(detections, detections) > iou_threshold
    remaining = np.ones(len(scores), bool)
    merged, merged_scores = [], []
    for best in range(len(scores)):
        if not remaining[best]:
            continue
        cluster = remaining & overlaps[best]
        cluster[best] = True  # a degenerate box has IoU 0 with itself
        weights = scores[cluster]
        merged.append(weights @ detections[cluster] / weights.sum())
        merged_scores.append(scores[best])
        remaining &= ~cluster
    return np.array(merged), np.array(merged_scores)


@dataclass(frozen=True)
class Letterbox:
    """Where a frame sits in the model input: scaled to fit, aspect kept, centred, padded."""

    frame_w: int
    frame_h: int
    content_w: int  # pixels of the model input the frame's width covers
    content_h: int
    pad_x: int  # model input pixels left of (above) the frame's content
    pad_y: int

    @classmethod
    def fit(cls, frame_w: int, frame_h: int, size: int = INPUT_SIZE) -> Letterbox:
        """The letterbox of a frame_w x frame_h frame in a size x size input."""
        scale = size / max(frame_w, frame_h, 1)
        content_w = min(size, max(1, round(frame_w * scale)))
        content_h = min(size, max(1, round(frame_h * scale)))
        return cls(
            frame_w, frame_h, content_w, content_h, (size - content_w) // 2, (size - content_h) // 2
        )

    def to_frame(self, xy: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
        """(..., 2k) normalised input coordinates (x, y pairs) to frame pixels (float64)."""
        xy = np.asarray(xy, np.float64)
        pairs = xy.reshape(*xy.shape[:-1], xy.shape[-1] // 2, 2)
        gain = np.array([self.frame_w / self.content_w, self.frame_h / self.content_h])
        offset = np.array([self.pad_x, self.pad_y], np.float64)
        return ((pairs * size - offset) * gain).reshape(xy.shape)


def letterbox_into(luma: np.ndarray, out: np.ndarray) -> Letterbox:
    """Writes a (H, W) uint8 plane (may be strided) into ``out`` letterboxed, in [-1, 1].

    ``out`` is a (S, S) float32 view. The frame is scaled to fit with its aspect kept
    (area-averaged by the ``downscale`` kernel; bilinear in the rare frame smaller than S),
    centred, and padded with black (-1), as MediaPipe's ImageToTensor with zero borders.
    """
    size = out.shape[0]
    box = Letterbox.fit(luma.shape[1], luma.shape[0], size)
    out.fill(-1.0)
    if luma.size == 0:
        return box  # an empty frame is all padding
    small: np.ndarray
    if box.content_w <= luma.shape[1] and box.content_h <= luma.shape[0]:
        small = np.empty((box.content_h, box.content_w), np.uint8)
        downscale(luma, small)
    else:
        small = cv2.resize(
            np.ascontiguousarray(luma),
            (box.content_w, box.content_h),
            interpolation=cv2.INTER_LINEAR,
        )
    content = out[box.pad_y : box.pad_y + box.content_h, box.pad_x : box.pad_x + box.content_w]
    np.multiply(small, np.float32(2.0 / 255.0), out=content)
    content -= np.float32(1.0)
    return box


class BlazeFaceDetector:
    """MediaPipe's BlazeFace short-range detector, run through the project's inference engine.

    Meant for faces within about two metres of the camera, at least ~20 pixels tall once the
    frame is fitted into 128x128 (about 1/6 of the frame's longer side).
    """

    def __init__(
        self,
        model: Backend | Path | str,
        min_score: float = MIN_SCORE,
        iou_threshold: float = MIN_SUPPRESSION_IOU,
        box_scale: float = 1.0,
        centre_shift: float = 0.0,
    ) -> None:
        """``model`` is a backend running the gray-input BlazeFace ONNX (see
        ``rtserver.models.blazeface_tflite``), or that ONNX file's path, then run by ONNX
        Runtime on one CPU thread. ``min_score`` (0-1) is the lowest face score kept;
        ``iou_threshold`` (0-1) the overlap above which detections merge. ``box_scale``
        scales each box's width and height about its centre: 1.0 keeps MediaPipe's tight
        brow-to-chin box; ``HAAR_SIZE_RATIO`` gives boxes the size of OpenCV's Haar boxes,
        whose framing the emotion model's crops were made with. ``centre_shift`` moves the
        box down by that many box heights (negative: up); ``HAAR_CENTRE_SHIFT`` with
        ``HAAR_SIZE_RATIO`` frames faces as Haar does."""
        if not 0.0 < min_score < 1.0:
            raise ValueError(f"min_score must be in (0, 1), got {min_score}")
        if box_scale <= 0.0:
            raise ValueError(f"box_scale must be positive, got {box_scale}")
        if isinstance(model, str | Path):
            model = load_engine(Path(model), EngineOptions(cpu_threads=1))
        self.backend: Backend = model
        self.min_score = min_score
        self.iou_threshold = iou_threshold
        self.box_scale = box_scale
        self.centre_shift = centre_shift
        self.anchors = ssd_anchors()
        # Comparing logits spares the sigmoid on the ~890 anchors that are no face.
        self._min_logit = float(np.log(min_score / (1.0 - min_score)))
        # The input tensor is reused between calls; one per thread, since sessions call
        # detect from several analysis threads at once.
        self._local = threading.local()

    def detect(self, luma: np.ndarray) -> list[FaceBox]:
        """Faces in a (H, W) uint8 luma plane (may be strided), in frame pixels, largest
        first, each clipped to the frame and carrying its score (0-1)."""
        return self.detect_batch([luma])[0]

    def detect_batch(self, lumas: Sequence[np.ndarray]) -> list[list[FaceBox]]:
        """``detect`` of several planes (any sizes) in one model call, in order."""
        if not lumas:
            return []
        batch = self._input(len(lumas))
        boxes = [letterbox_into(luma, batch[i, 0]) for i, luma in enumerate(lumas)]
        regressors, logits = self.backend.run(batch)[:2]
        return [
            self._faces(regressors[i], logits[i].reshape(-1), box) for i, box in enumerate(boxes)
        ]

    def _input(self, n: int) -> np.ndarray:
        """This thread's (n, 1, S, S) float32 input tensor, a contiguous view of a buffer
        that grows to the largest batch seen."""
        buffer = getattr(self._local, "buffer", None)
        if buffer is None or len(buffer) < n:
            buffer = np.empty((n, 1, INPUT_SIZE, INPUT_SIZE), np.float32)
            self._local.buffer = buffer
        return buffer[:n]

    def _faces(self, regressors: np.ndarray, logits: np.ndarray, box: Letterbox) -> list[FaceBox]:
        """The faces of one image's raw outputs (896, 16) and (896,), in ``box``'s frame."""
        if box.frame_w == 0 or box.frame_h == 0:
            return []
        candidates = np.flatnonzero(logits >= self._min_logit)
        scores = sigmoid_scores(logits[candidates])
        keep = scores >= self.min_score
        candidates, scores = candidates[keep], scores[keep]
        detections = decode_detections(regressors[candidates], self.anchors[candidates])
        valid = (detections[:, 2] > detections[:, 0]) & (detections[:, 3] > detections[:, 1])
        merged, merged_scores = weighted_nms(detections[valid], scores[valid], self.iou_threshold)
        faces = [
            face
            for corners, score in zip(box.to_frame(merged[:, :4]), merged_scores, strict=True)
            if (face := self._face_box(corners, float(score), box)) is not None
        ]
        faces.sort(key=lambda face: face.w * face.h, reverse=True)
        return faces

    def _face_box(self, corners: np.ndarray, score: float, box: Letterbox) -> FaceBox | None:
        """A frame-pixel (xmin, ymin, xmax, ymax) box shifted by ``centre_shift``, scaled by
        ``box_scale`` and clipped to the frame, as a FaceBox; None when nothing of it is
        inside the frame."""
        size = corners[2:] - corners[:2]
        centre = (corners[:2] + corners[2:]) / 2.0 + np.array([0.0, self.centre_shift * size[1]])
        half = size * (self.box_scale / 2.0)
        x0 = max(0, round(centre[0] - half[0]))
        y0 = max(0, round(centre[1] - half[1]))
        x1 = min(box.frame_w, round(centre[0] + half[0]))
        y1 = min(box.frame_h, round(centre[1] + half[1]))
        if x1 <= x0 or y1 <= y0:
            return None
        return FaceBox(x0, y0, x1 - x0, y1 - y0, score)

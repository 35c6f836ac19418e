"""MediaPipe's BlazeFace models and their SSD decoding: anchors, boxes, scores, weighted NMS.

Two of MediaPipe's BlazeFace models are used (``rtserver.models.blazeface_tflite`` converts
each to ONNX with a gray input); they differ only in what ``BlazeFaceModel`` holds:

- short range (``SHORT_RANGE``): a 128x128 letterboxed image in [-1, 1], 896 SSD anchors
  (strides 8, 16, 16, 16; two anchors per cell and layer), score threshold 0.5. Faces within
  about 2 m: at least ~20 px tall in its input, 1/5 of a 640x480 frame's height;
- full range (``FULL_RANGE``): 192x192, 2304 anchors (one stride-4 layer, one anchor per
  cell), threshold 0.6. Faces up to about 5 m (MediaPipe's
  ``face_detection_full_range_common.pbtxt`` gives its anchors and thresholds).

Each returns, per anchor, 16 box regressors and one score logit. Around the model, all in
NumPy here:

- ``ssd_anchors``: MediaPipe's anchor grid (fixed anchor size, so only centres matter);
- ``decode_detections``: offsets (in input pixels) to boxes and six keypoints;
- ``sigmoid_scores``: MediaPipe's clipped sigmoid;
- ``weighted_nms``: MediaPipe's weighted non-max suppression, which averages a cluster of
  overlapping boxes by score rather than keeping only the best one.

Coordinates between these steps are normalised to the model input: 0..1 across its pixels,
(x, y) order. ``letterbox.py`` fits a frame into the model input; ``blazeface.py`` runs the
model and maps its boxes back to the frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NUM_KEYPOINTS = 6  # right eye, left eye, nose tip, mouth, right ear tragion, left ear tragion
NUM_COORDS = 4 + 2 * NUM_KEYPOINTS
SCORE_CLIP = 100.0  # MediaPipe's score_clipping_thresh on the logits
MIN_SUPPRESSION_IOU = 0.3  # MediaPipe's min_suppression_threshold (both models)


@dataclass(frozen=True)
class BlazeFaceModel:
    """What tells MediaPipe's BlazeFace models apart: input size, anchors, score threshold.

    The values are MediaPipe's own (its ``*_common.pbtxt`` graphs); they are not tuned here.
    """

    name: str
    input_size: int  # model input side (pixels); also the regressors' scale
    strides: tuple[int, ...]  # one per SSD layer, in the model's output order
    anchors_per_cell: int  # per layer: 2 with the interpolated scale, 1 without
    min_score: float  # MediaPipe's min_score_thresh (0-1)

    @property
    def num_anchors(self) -> int:
        return sum(self.anchors_per_cell * (self.input_size // s) ** 2 for s in self.strides)


# face_detection_short_range_common.pbtxt: interpolated_scale_aspect_ratio 1.0 adds a second
# anchor per cell and layer.
SHORT_RANGE = BlazeFaceModel("short_range", 128, (8, 16, 16, 16), 2, 0.5)
# face_detection_full_range_common.pbtxt: interpolated_scale_aspect_ratio 0.0, one anchor.
FULL_RANGE = BlazeFaceModel("full_range", 192, (4,), 1, 0.6)
# The short-range model's, kept for callers of the defaults below.
INPUT_SIZE = SHORT_RANGE.input_size
ANCHOR_STRIDES = SHORT_RANGE.strides
NUM_ANCHORS = SHORT_RANGE.num_anchors
MIN_SCORE = SHORT_RANGE.min_score


def ssd_anchors(
    input_size: int = INPUT_SIZE,
    strides: Sequence[int] = ANCHOR_STRIDES,
    offset: float = 0.5,
    per_cell: int = 2,
) -> np.ndarray:
    """Anchor centres (A, 2) float32 (x, y), normalised 0..1, in the model's output order.

    As MediaPipe's SsdAnchorsCalculator with one aspect ratio (plus the interpolated scale
    when ``per_cell`` is 2) and ``fixed_anchor_size``: each layer puts ``per_cell`` anchors on
    every cell of its stride's grid, and consecutive layers of equal stride share one grid
    (cells row by row, anchors of a cell together). The anchor width and height are 1, so
    only centres are returned.
    """
    centres: list[np.ndarray] = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        same = layer
        while same < len(strides) and strides[same] == stride:
            same += 1
        cell_anchors = per_cell * (same - layer)
        cells = input_size // stride
        grid = (np.arange(cells, dtype=np.float64) + offset) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        cell_centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cell_centres, cell_anchors, axis=0))
        layer = same
    return np.concatenate(centres).astype(np.float32)


def decode_detections(
    raw: np.ndarray, anchors: np.ndarray, scale: float = float(INPUT_SIZE)
) -> np.ndarray:
    """Boxes and keypoints (K, 16) float64 from raw regressors (K, 16) of anchors (K, 2).

    Raw values are offsets in input pixels (``scale``, the input side, per unit): centre x,
    y, width, height, then six keypoints x, y relative to the anchor centre. The result holds
    xmin, ymin, xmax, ymax, then the six keypoints x, y, normalised to the model input (0..1).
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

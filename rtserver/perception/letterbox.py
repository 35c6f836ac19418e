"""A frame fitted into a square model input: scaled with its aspect kept, centred, padded
black, as MediaPipe's ImageToTensor does; and the way back to frame pixels."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rtserver.kernels.frame import downscale
from rtserver.perception.blazeface_ssd import INPUT_SIZE
from rtserver.perception.faces import Chroma


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

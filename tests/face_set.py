"""The face-detection evaluation set: real faces pasted at known sizes into real backgrounds.

Candidates sit 0.5-2.5 m from the camera, so a 640x480 frame shows their face anything from
about 50 to 250 px tall. This set puts real face photos, available offline, at each height of
``FACE_HEIGHTS`` into 640x480 frames whose backgrounds are real photos without faces:

- faces: two portraits with their head and shoulders, skimage's astronaut and
  matplotlib's grace_hopper.jpg, each cut out around the face with a soft elliptical edge,
  ``PORTRAIT_REPEATS`` times per height on different backgrounds and places, mirrored at
  random, rolled up to ``MAX_ROLL_DEG`` and lit by a gain in ``GAIN_RANGE``; and the 100
  faces of skimage's LFW subset (100 people), once per height. The LFW faces are tight
  25x25 crops, brows to chin and cheek to cheek, pasted as they are: a face with no head
  around it, which no camera shows. They are reported on their own (``Sample.group``);
- a camera: every frame, with a face or not, is blurred a little (up to
  ``MAX_BLUR_SIGMA``) and gets sensor noise (``NOISE_SIGMA``);
- backgrounds: skimage's photos, textures, documents and microscopy images without a face
  (``BACKGROUNDS``), each scaled to cover 640x480 and cropped;
- no-face images: those backgrounds on their own, the same images at their own sizes,
  and, as a control for the pasting itself, the 100 non-faces of the LFW subset pasted as
  the LFW faces are (one per image, the heights taken in turn).

A face's size (its "height") is the side of its square box, cheek to cheek and centred
between the brows and the chin: the box face detectors draw (OpenCV's Haar cascade,
BlazeFace) and the LFW crops' framing. By this measure the issue's "astronaut photo scaled to
400 px tall, face about 80 px" has a 78 px face. A detection finds a face when its box centre
lies inside the face's box and its height is within a factor of two of it (``finds``).

Everything is drawn from one seeded generator, so the set is the same on every run; the
detectors' thresholds are MediaPipe's own and were not tuned on it.

The tests (``tests/test_blazeface.py``) and ``bench/models.py`` share this module (the bench
puts tests/ on sys.path). Frames are built in RGB (the gray images and the LFW faces with three
equal channels) and handed to detectors as a decoder hands them over: the Y, U and V planes
of BT.601 limited-range 4:2:0 (``Sample.luma`` and ``Sample.chroma``).
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt
from skimage import data as skdata

from rtserver.perception.faces import FaceBox

FRAME_W, FRAME_H = 640, 480
FACE_HEIGHTS = (48, 64, 80, 100, 130, 200)  # px in a 640x480 frame
PORTRAIT_REPEATS = 30  # samples of each portrait per height
# How the portraits vary from sample to sample, as a webcam's picture of a candidate does:
# head roll (degrees either way) and lighting (a gain on the pasted pixels); then every frame,
# face or not, goes through a camera: a slight defocus (Gaussian sigma up to this, px) and
# sensor noise (sigma, grey levels).
MAX_ROLL_DEG = 10.0
GAIN_RANGE = (0.7, 1.2)
MAX_BLUR_SIGMA = 0.8
NOISE_SIGMA = 2.5
SEED = 12

Box = tuple[int, int, int, int]  # x, y, w, h in pixels
Luma = npt.NDArray[np.uint8]
Image = npt.NDArray[np.uint8]  # (H, W, 3) RGB

# Hand-labelled face boxes (x, y, w, h) in the source photos' pixels: squares, cheek to
# cheek, centred between the brows and the chin (see the module docstring).
ASTRONAUT_FACE = (173, 80, 100, 100)  # skimage.data.astronaut(), 512x512
GRACE_HOPPER_FACE = (170, 148, 185, 185)  # matplotlib's grace_hopper.jpg, 512x600
# What of a portrait is cut out around its face box, in face-box sizes: left and right,
# above (the hair), below (neck and shoulders).
PORTRAIT_MARGINS = (0.6, 0.7, 1.0)

# Real images without a face. (skimage.data.camera is not one: the cameraman's face is in it;
# chelsea, a cat, is kept: a detector of human faces must not fire on it.)
BACKGROUNDS = (
    "brick", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket",
    "stereo_motorcycle", "text",
)  # fmt: skip
# Images only the no-face set uses, at their own size (drawings and a phantom).
OTHER_NO_FACE = ("colorwheel", "horse", "logo", "microaneurysms", "shepp_logan_phantom")


def yuv420(rgb: Image) -> tuple[Luma, tuple[Luma, Luma]]:
    """The Y plane and the (U, V) planes of an RGB image, BT.601 limited range, 4:2:0, as a
    video decoder gives them (OpenCV's I420). An odd last row or column is dropped."""
    height, width = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    planar = cv2.cvtColor(np.ascontiguousarray(rgb[:height, :width]), cv2.COLOR_RGB2YUV_I420)
    y = planar[:height]
    chroma = planar[height:].reshape(2, height // 2, width // 2)
    return np.ascontiguousarray(y), (
        np.ascontiguousarray(chroma[0]),
        np.ascontiguousarray(chroma[1]),
    )


@dataclass(frozen=True)
class Sample:
    """One evaluation frame and the faces in it."""

    name: str  # what is where, e.g. "lfw17@80 on brick"
    rgb: Image = field(repr=False)  # (FRAME_H, FRAME_W, 3), or the image's own size
    faces: tuple[Box, ...]  # labelled face boxes in frame pixels; () for a no-face image
    height: int  # the nominal face height (px) of FACE_HEIGHTS; 0 for a no-face image
    group: str = "portraits"  # "portraits", "lfw" (tight crops) or "no face"

    @functools.cached_property
    def planes(self) -> tuple[Luma, tuple[Luma, Luma]]:
        return yuv420(self.rgb)

    @property
    def luma(self) -> Luma:
        """The Y plane (H, W) uint8, as the server reads a decoded frame."""
        return self.planes[0]

    @property
    def chroma(self) -> tuple[Luma, Luma]:
        """The U and V planes (H/2, W/2) uint8."""
        return self.planes[1]


@dataclass(frozen=True)
class Portrait:
    """A real face photo: its pixels and the labelled face box in it."""

    name: str
    rgb: Image = field(repr=False)
    face: Box
    cut_out: bool  # True: paste its head and shoulders with a soft edge; False: all of it


def to_rgb(image: np.ndarray) -> Image:
    """Any skimage image (bool, float, gray, RGB, RGBA) as uint8 RGB; gray in all three."""
    if image.dtype != np.uint8:
        image = np.asarray(image, np.float64)
        image = np.round(255.0 * image / max(float(image.max()), 1e-9))
    image = np.asarray(image, np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def skimage_rgb(name: str) -> Image:
    """skimage's image ``name`` as RGB (the left view of stereo_motorcycle)."""
    image = getattr(skdata, name)()
    if isinstance(image, tuple):
        image = image[0]
    return to_rgb(image)


def cover(image: Image, width: int = FRAME_W, height: int = FRAME_H) -> Image:
    """``image`` scaled to cover width x height (aspect kept), centre-cropped to it."""
    scale = max(width / image.shape[1], height / image.shape[0])
    size = (max(width, round(image.shape[1] * scale)), max(height, round(image.shape[0] * scale)))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC
    scaled = cv2.resize(image, size, interpolation=interpolation)
    x0, y0 = (size[0] - width) // 2, (size[1] - height) // 2
    return np.ascontiguousarray(scaled[y0 : y0 + height, x0 : x0 + width])


@functools.cache
def backgrounds() -> dict[str, Image]:
    """Every background, 640x480 RGB, by name."""
    return {name: cover(skimage_rgb(name)) for name in BACKGROUNDS}


def grace_hopper_rgb() -> Image:
    from matplotlib import cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.uint8)


@functools.cache
def portraits() -> tuple[Portrait, ...]:
    """The face photos: the two portraits, then the 100 LFW faces."""
    found = [
        Portrait("astronaut", to_rgb(skdata.astronaut()), ASTRONAUT_FACE, True),
        Portrait("grace_hopper", grace_hopper_rgb(), GRACE_HOPPER_FACE, True),
    ]
    lfw = skdata.lfw_subset()
    for i in range(100):  # the first 100 are faces, the rest are not
        found.append(Portrait(f"lfw{i}", to_rgb(lfw[i]), (0, 0, 25, 25), False))
    return tuple(found)


def lfw_non_faces() -> list[Portrait]:
    """The 100 non-faces of the LFW subset, as portraits to paste like the LFW faces."""
    lfw = skdata.lfw_subset()
    return [Portrait(f"lfw_non_face{i}", to_rgb(lfw[100 + i]), (0, 0, 25, 25), False)
            for i in range(100)]  # fmt: skip


def _cut_out(portrait: Portrait) -> tuple[Image, Box]:
    """The part of ``portrait`` to paste, and the face box inside it."""
    if not portrait.cut_out:
        return portrait.rgb, portrait.face
    x, y, w, h = portrait.face
    side, above, below = PORTRAIT_MARGINS
    x0, y0 = max(0, round(x - side * h)), max(0, round(y - above * h))
    x1 = min(portrait.rgb.shape[1], round(x + w + side * h))
    y1 = min(portrait.rgb.shape[0], round(y + h + below * h))
    return portrait.rgb[y0:y1, x0:x1], (x - x0, y - y0, w, h)


def _soft_ellipse(height: int, width: int) -> npt.NDArray[np.float32]:
    """A (height, width) mask in 0..1: 1 inside an inscribed ellipse, a soft edge outside."""
    ys = (np.arange(height, dtype=np.float32) + 0.5) / height * 2.0 - 1.0
    xs = (np.arange(width, dtype=np.float32) + 0.5) / width * 2.0 - 1.0
    radius = np.sqrt(xs[None, :] ** 2 + ys[:, None] ** 2)
    # Full inside 0.85 of the ellipse, fading to nothing at its edge.
    return np.clip((1.0 - radius) / 0.15, 0.0, 1.0).astype(np.float32)


def paste(
    background: Image,
    portrait: Portrait,
    face_height: int,
    rng: np.random.Generator,
) -> tuple[Image, Box]:
    """A copy of ``background`` with ``portrait`` scaled so its face is ``face_height`` px
    tall, mirrored or not, at a random place where all of the face is in the frame; and the
    face box there. A cut-out portrait is also rolled and lit at random (``MAX_ROLL_DEG``,
    ``GAIN_RANGE``)."""
    region, (fx, fy, fw, fh) = _cut_out(portrait)
    scale = face_height / fh
    width = max(1, round(region.shape[1] * scale))
    height = max(1, round(region.shape[0] * scale))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC
    scaled = cv2.resize(region, (width, height), interpolation=interpolation)
    face = [round(fx * scale), round(fy * scale), round(fw * scale), round(fh * scale)]
    if portrait.cut_out:
        # Roll about the face's centre; the soft edge below hides the corners it uncovers.
        centre = (face[0] + face[2] / 2.0, face[1] + face[3] / 2.0)
        roll = cv2.getRotationMatrix2D(centre, float(rng.uniform(-MAX_ROLL_DEG, MAX_ROLL_DEG)), 1.0)
        scaled = cv2.warpAffine(scaled, roll, (width, height), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        scaled = np.clip(scaled * rng.uniform(*GAIN_RANGE), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        scaled = np.ascontiguousarray(scaled[:, ::-1])
        face[0] = width - face[0] - face[2]
    frame_h, frame_w = background.shape[:2]
    # Where the region's top-left may go so that the face box lies inside the frame.
    lo_x, hi_x = -face[0], frame_w - face[0] - face[2]
    lo_y, hi_y = -face[1], frame_h - face[1] - face[3]
    if hi_x < lo_x or hi_y < lo_y:
        raise ValueError(f"a {face_height} px face of {portrait.name} does not fit the frame")
    left = int(rng.integers(lo_x, hi_x + 1))
    top = int(rng.integers(lo_y, hi_y + 1))
    out = background.copy()
    # The part of the region inside the frame.
    sx0, sy0 = max(0, -left), max(0, -top)
    sx1, sy1 = min(width, frame_w - left), min(height, frame_h - top)
    patch = scaled[sy0:sy1, sx0:sx1].astype(np.float32)
    target = out[top + sy0 : top + sy1, left + sx0 : left + sx1]
    if portrait.cut_out:
        alpha = _soft_ellipse(height, width)[sy0:sy1, sx0:sx1, None]
        blended = alpha * patch + (1.0 - alpha) * target.astype(np.float32)
        target[...] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    else:
        target[...] = np.clip(np.round(patch), 0, 255).astype(np.uint8)
    return out, (left + face[0], top + face[1], face[2], face[3])


def camera(rgb: Image, rng: np.random.Generator) -> Image:
    """``rgb`` as a webcam would see it: a slight defocus and sensor noise."""
    sigma = float(rng.uniform(0.0, MAX_BLUR_SIGMA))
    blurred = cv2.GaussianBlur(rgb, (0, 0), sigma) if sigma > 0.05 else rgb
    noise = rng.normal(0.0, NOISE_SIGMA, rgb.shape)
    return np.clip(np.round(blurred + noise), 0, 255).astype(np.uint8)


@functools.cache
def face_samples(
    heights: tuple[int, ...] = FACE_HEIGHTS,
    seed: int = SEED,
    repeats: int = PORTRAIT_REPEATS,
    lfw: bool = True,
) -> tuple[Sample, ...]:
    """Every face sample: each portrait ``repeats`` times per height and, with ``lfw``, each
    LFW face once per height, on backgrounds drawn from a seeded generator."""
    rng = np.random.default_rng(seed)
    names = list(backgrounds())
    samples: list[Sample] = []
    for height in heights:
        for portrait in portraits() if lfw else portraits()[:2]:
            times = repeats if portrait.cut_out else 1
            for _ in range(times):
                background = names[int(rng.integers(len(names)))]
                rgb, face = paste(backgrounds()[background], portrait, height, rng)
                name = f"{portrait.name}@{height} on {background}"
                group = "portraits" if portrait.cut_out else "lfw"
                samples.append(Sample(name, camera(rgb, rng), (face,), height, group))
    return tuple(samples)


@functools.cache
def no_face_samples(seed: int = SEED) -> tuple[Sample, ...]:
    """Every no-face image: the backgrounds at 640x480 and at their own size, the other
    no-face images, and the LFW non-faces pasted on backgrounds at face heights."""
    rng = np.random.default_rng(seed + 1)
    samples = [
        Sample(f"{name} 640x480", camera(rgb, rng), (), 0, "no face")
        for name, rgb in backgrounds().items()
    ]
    for name in (*BACKGROUNDS, *OTHER_NO_FACE):
        samples.append(Sample(name, camera(skimage_rgb(name), rng), (), 0, "no face"))
    names = list(backgrounds())
    for i, patch in enumerate(lfw_non_faces()):
        height = FACE_HEIGHTS[i % len(FACE_HEIGHTS)]
        background = names[int(rng.integers(len(names)))]
        rgb, _ = paste(backgrounds()[background], patch, height, rng)
        name = f"{patch.name}@{height} on {background}"
        samples.append(Sample(name, camera(rgb, rng), (), 0, "no face"))
    return tuple(samples)


def finds(box: FaceBox, face: Box) -> bool:
    """Whether detection ``box`` is the labelled ``face``: its centre inside the face box
    and its height within a factor of two of the face's."""
    cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
    inside = face[0] <= cx <= face[0] + face[2] and face[1] <= cy <= face[1] + face[3]
    return inside and 0.5 <= box.h / face[3] <= 2.0


@dataclass(frozen=True)
class Evaluation:
    """What one detector did on the set."""

    found: dict[int, int]  # face height -> faces found
    total: dict[int, int]  # face height -> faces
    extra: tuple[str, ...]  # face images with a detection that is no labelled face, per box
    false: tuple[str, ...]  # no-face images with a detection, once per detection
    no_face_images: int
    seconds: dict[int, list[float]]  # face height (0: no face) -> CPU seconds of each call

    def recall(self, height: int) -> float:
        return self.found[height] / self.total[height]

    def min_recall(self) -> float:
        return min(self.recall(height) for height in self.total)

    def median_ms(self, height: int) -> float:
        """Median CPU milliseconds of one call on the frames of faces ``height`` px tall
        (0: on the no-face images)."""
        return 1e3 * statistics.median(self.seconds[height])


Detect = Callable[[Sample], Sequence[FaceBox]]
"""A detector run on one sample: e.g. ``lambda s: finder.detect(s.luma, s.chroma)``."""


def evaluate(
    detectors: Mapping[str, Detect], samples: Iterable[Sample], no_face: Iterable[Sample]
) -> dict[str, Evaluation]:
    """Runs every detector on every sample and no-face image, and counts what each found.

    The detectors take turns on each image (in alternating order), and each call is timed
    on this thread's CPU clock (``time.thread_time``), so their costs are measured under the
    same conditions."""
    names = list(detectors)
    found = {name: dict[int, int]() for name in names}
    total: dict[int, int] = {}
    extra: dict[str, list[str]] = {name: [] for name in names}
    false: dict[str, list[str]] = {name: [] for name in names}
    seconds: dict[str, dict[int, list[float]]] = {name: {} for name in names}
    images = 0
    for index, sample in enumerate([*samples, *no_face]):
        sample.planes  # noqa: B018 -- converted before the clock starts
        if not sample.faces:
            images += 1
        total[sample.height] = total.get(sample.height, 0) + len(sample.faces)
        for name in names if index % 2 == 0 else names[::-1]:
            started = time.thread_time()
            boxes = detectors[name](sample)
            seconds[name].setdefault(sample.height, []).append(time.thread_time() - started)
            hits = sum(any(finds(b, face) for b in boxes) for face in sample.faces)
            found[name][sample.height] = found[name].get(sample.height, 0) + hits
            wrong = sum(not any(finds(b, face) for face in sample.faces) for b in boxes)
            (extra if sample.faces else false)[name].extend([sample.name] * wrong)
    return {
        name: Evaluation(
            {h: found[name].get(h, 0) for h in total if h},
            {h: n for h, n in total.items() if h},
            tuple(extra[name]),
            tuple(false[name]),
            images,
            seconds[name],
        )
        for name in names
    }

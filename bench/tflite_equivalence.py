"""Our ONNX translation of BlazeFace against the original .tflite run by a TFLite interpreter.

Run in a throwaway venv that has a TFLite interpreter; not part of the test suite (the
project never installs one):

    python3 -m venv /tmp/litert
    /tmp/litert/bin/pip install ai-edge-litert onnxruntime onnx tflite numpy scikit-image
    cd /work/main && /tmp/litert/bin/python -m bench.tflite_equivalence

(``tensorflow`` instead of ``ai-edge-litert`` works too, as does ``tflite-runtime``.)

It converts ``.models/sources/face_detection_short_range.tflite`` with
:func:`convert_blazeface_tflite` twice into a temporary directory (RGB input and gray input)
and feeds the same 128x128 images to the interpreter (NHWC) and to ONNX Runtime (NCHW):

* random: uniform noise in [-1, 1], RGB, to the RGB-input ONNX;
* real RGB: skimage photos (astronaut, coffee, chelsea, rocket, camera) and matplotlib's
  grace_hopper.jpg when matplotlib is installed, letterboxed, to the RGB-input ONNX;
* real gray: the same photos as luma (BT.601) and 20 LFW faces on a grey canvas, to the
  gray-input ONNX, while the interpreter gets the gray image replicated to RGB.

For each set it prints the count and the largest absolute differences of the raw
regressors (input pixels) and score logits, and of the sigmoid scores; it exits 1 if a raw
difference exceeds 1e-3.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from rtserver.models.blazeface_tflite import convert_blazeface_tflite

TFLITE = Path(__file__).parents[1] / ".models/sources/face_detection_short_range.tflite"
MAX_RAW_DIFF = 1e-3
SIZE = 128


def interpreter_class() -> tuple[Callable[..., Any], str]:
    """The first TFLite interpreter that imports, and the module it came from."""
    for module in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite"):
        try:
            return importlib.import_module(module).Interpreter, module
        except ImportError:
            continue
    sys.exit("no TFLite interpreter: pip install ai-edge-litert (or tensorflow)")


def letterbox(image: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 -> (128, 128, C) float32 in [-1, 1], aspect kept, black padding."""
    from skimage.transform import resize

    height, width = image.shape[:2]
    scale = SIZE / max(height, width)
    content_h, content_w = round(height * scale), round(width * scale)
    small = resize(image, (content_h, content_w), anti_aliasing=True, preserve_range=True)
    out = np.full((SIZE, SIZE, image.shape[2]), -1.0, np.float32)
    top, left = (SIZE - content_h) // 2, (SIZE - content_w) // 2
    out[top : top + content_h, left : left + content_w] = small / 127.5 - 1.0
    return out


def real_photos() -> dict[str, np.ndarray]:
    """RGB uint8 photos: skimage's, and grace_hopper.jpg if matplotlib is installed."""
    from skimage import data

    photos = {name: getattr(data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket")}
    photos["camera"] = np.repeat(data.camera()[..., None], 3, axis=2)
    try:
        from matplotlib import cbook
        from skimage.io import imread

        photos["grace_hopper"] = imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except ImportError:
        print("(matplotlib not installed: grace_hopper.jpg left out)")
    return photos


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma (H, W, 1) uint8 of an RGB image, as a video decoder's Y plane."""
    y = rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.round(y).astype(np.uint8)[..., None]


def lfw_canvases(count: int) -> list[np.ndarray]:
    """(480, 640, 1) uint8 frames: LFW faces 6x upscaled on grey, as the tests build them."""
    from skimage import data
    from skimage.transform import resize

    frames = []
    for face in data.lfw_subset()[:count]:
        patch = resize(face, (150, 150), order=3) * 255
        frame = np.full((480, 640, 1), 128, np.uint8)
        frame[165:315, 245:395, 0] = np.clip(np.round(patch), 0, 255).astype(np.uint8)
        frames.append(frame)
    return frames


def scores(logits: np.ndarray) -> np.ndarray:
    """MediaPipe's face scores (0-1): the logits clipped to [-100, 100], then the sigmoid."""
    return 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))


class TfliteModel:
    """The original model through the interpreter, one NHWC image at a time."""

    def __init__(self, path: Path) -> None:
        cls, self.module = interpreter_class()
        self.interpreter = cls(model_path=str(path))
        self.interpreter.allocate_tensors()
        (self.input,) = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()

    def run(self, image: np.ndarray) -> list[np.ndarray]:
        """Outputs (regressors, scores) of one (128, 128, 3) image, batch axis kept."""
        self.interpreter.set_tensor(self.input["index"], image[None].astype(np.float32))
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(o["index"]).copy() for o in self.outputs]


def compare(
    name: str, tflite_model: TfliteModel, session: ort.InferenceSession, images: list[np.ndarray]
) -> bool:
    """Prints the largest differences over ``images`` (NHWC, as the ONNX model's channel
    count); the interpreter gets gray images replicated to RGB. True if within tolerance."""
    worst = np.zeros(3)
    for image in images:
        rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
        theirs = tflite_model.run(rgb)
        ours = session.run(None, {"image": image.transpose(2, 0, 1)[None].copy()})
        sigmoid = [scores(ours[1]), scores(theirs[1])]
        worst = np.maximum(
            worst,
            [
                np.abs(ours[0] - theirs[0]).max(),
                np.abs(ours[1] - theirs[1]).max(),
                np.abs(sigmoid[0] - sigmoid[1]).max(),
            ],
        )
    print(
        f"{name:10s} n={len(images):3d}  max|d regressors| {worst[0]:.3g}  "
        f"max|d score logits| {worst[1]:.3g}  max|d sigmoid scores| {worst[2]:.3g}"
    )
    return bool(worst[0] <= MAX_RAW_DIFF and worst[1] <= MAX_RAW_DIFF)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tflite", type=Path, default=TFLITE)
    parser.add_argument("--random", type=int, default=32, help="random images (default 32)")
    args = parser.parse_args()

    tflite_model = TfliteModel(args.tflite)
    print(f"interpreter: {tflite_model.module}; onnxruntime {ort.__version__}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for kind, gray in (("rgb", False), ("gray", True)):
            path = Path(tmp) / f"{kind}.onnx"
            convert_blazeface_tflite(args.tflite, path, gray_input=gray)
            sessions[kind] = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )

    rng = np.random.default_rng(0)
    noise = [rng.uniform(-1, 1, (SIZE, SIZE, 3)).astype(np.float32) for _ in range(args.random)]
    photos = real_photos()
    rgb = [letterbox(p) for p in photos.values()]
    gray = [letterbox(luma(p)) for p in photos.values()] + [letterbox(f) for f in lfw_canvases(20)]
    ok = compare("random", tflite_model, sessions["rgb"], noise)
    ok &= compare("real rgb", tflite_model, sessions["rgb"], rgb)
    ok &= compare("real gray", tflite_model, sessions["gray"], gray)
    print("OK" if ok else f"FAILED: a raw difference exceeds {MAX_RAW_DIFF}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

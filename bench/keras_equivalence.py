"""Our ONNX emotion model (and NumPy reference) against real Keras on the same inputs.

Run in a venv with tensorflow and onnxruntime; not part of the test suite:

    python3 -m venv /tmp/tfcheck
    /tmp/tfcheck/bin/pip install tensorflow onnxruntime onnx h5py numpy scikit-image \\
        opencv-python-headless
    cd /work/main && /tmp/tfcheck/bin/python -m bench.keras_equivalence [--random 1000]

``--keras tf_keras`` loads the file with Keras 2 (``pip install tf_keras``) instead of Keras 3's
legacy-HDF5 loader; the file was saved by Keras 2.0.5.

It converts ``.models/sources/emotion_model.hdf5`` with :func:`convert_emotion_h5` into a
temporary directory, loads the same file with ``keras.models.load_model(compile=False)``, and
feeds both (and :func:`keras_forward`, the NumPy reference the tests use) the same faces:
random inputs in [-1, 1], flat black/grey/white frames, the astronaut's face and the 100
faces of skimage's LFW subset, prepared as fer does (grey, square box + 10 px, 64x64,
(x / 255 - 0.5) * 2). For each set it prints the count, the largest absolute probability
difference and how many top-1 labels agree; it exits 1 if any set misses max diff <= 1e-4
or disagrees on a top-1 label.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # only TF's errors, not its banner

MAX_PROB_DIFF = 1e-4
ASTRONAUT_FACE_BOX = (177, 66, 95, 95)  # x, y, w, h from cv2's frontal-face Haar cascade
MARGIN_PX = 10
Faces = npt.NDArray[np.float32]


def normalise(grey: Faces) -> Faces:
    """Grey levels in [0, 255] -> [-1, 1], as fer's ``(x / 255 - 0.5) * 2``."""
    return ((grey / np.float32(255.0) - np.float32(0.5)) * np.float32(2.0)).astype(np.float32)


def astronaut_face() -> Faces:
    """(1, 64, 64): skimage's astronaut, grey, face box + 10 px, resized as fer does."""
    import cv2
    import skimage.data

    grey = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
    x, y, w, h = ASTRONAUT_FACE_BOX
    crop = grey[y - MARGIN_PX : y + h + MARGIN_PX, x - MARGIN_PX : x + w + MARGIN_PX]
    return normalise(cv2.resize(crop, (64, 64)).astype(np.float32))[None]


def lfw_faces() -> Faces:
    """(100, 64, 64): the faces (first half) of skimage's LFW subset, 25x25 upsized."""
    import cv2
    import skimage.data

    faces = skimage.data.lfw_subset()[:100].astype(np.float32) * np.float32(255.0)
    return np.stack([normalise(cv2.resize(face, (64, 64))) for face in faces])


def input_sets(random_count: int, seed: int) -> dict[str, Faces]:
    """Named batches of (N, 64, 64) float32 faces in [-1, 1]."""
    rng = np.random.default_rng(seed)
    return {
        "random": rng.uniform(-1.0, 1.0, (random_count, 64, 64)).astype(np.float32),
        "flat": np.stack([np.full((64, 64), v, np.float32) for v in (-1.0, 0.0, 1.0)]),
        "astronaut": astronaut_face(),
        "lfw_faces": lfw_faces(),
    }


def keras_probs(model: object, faces: Faces) -> npt.NDArray[np.float32]:
    """Keras' output for (N, 64, 64) faces, run eagerly in batches of 64 (NHWC input)."""
    outputs = [
        # A one-element list, because the functional model declares its inputs as a list.
        np.asarray(model([faces[i : i + 64, :, :, None]], training=False))  # type: ignore[operator]
        for i in range(0, len(faces), 64)
    ]
    return np.concatenate(outputs).astype(np.float32)


def report(name: str, ours: npt.NDArray[np.floating], keras: npt.NDArray[np.floating]) -> bool:
    """Print one comparison line; True when it meets the targets."""
    diff = float(np.abs(ours.astype(np.float64) - keras).max())
    agree = int((ours.argmax(axis=1) == keras.argmax(axis=1)).sum())
    ok = diff <= MAX_PROB_DIFF and agree == len(ours)
    print(f"  {name:<10} n={len(ours):<5} max|dp|={diff:.3e}  top1 {agree}/{len(ours)}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--h5", type=Path, default=Path(".models/sources/emotion_model.hdf5"))
    parser.add_argument("--random", type=int, default=1000, help="random inputs (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keras", choices=("keras", "tf_keras"), default="keras")
    args = parser.parse_args(argv)

    import importlib

    import onnxruntime as ort
    import tensorflow as tf

    keras = importlib.import_module(args.keras)

    from rtserver.models.emotion_h5 import convert_emotion_h5
    from rtserver.models.keras_reference import keras_forward

    versions = f"{args.keras} {keras.__version__}, onnxruntime {ort.__version__}"
    print(f"tensorflow {tf.__version__}, {versions}")
    model = keras.models.load_model(args.h5, compile=False)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "emotion.onnx"
        convert_emotion_h5(args.h5, onnx_path)
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    ok = True
    sets = input_sets(args.random, args.seed)
    for label, run in (
        (
            "ONNX (onnxruntime CPU) vs Keras",
            lambda f: session.run(["probs"], {"faces": f[:, None]})[0],
        ),
        ("NumPy reference (float64) vs Keras", lambda f: keras_forward(args.h5, f[..., None])),
    ):
        print(label)
        for name, faces in sets.items():
            ok &= report(name, run(faces), keras_probs(model, faces))
    total = sum(len(f) for f in sets.values())
    print(f"{total} inputs per comparison; target max|dp| <= {MAX_PROB_DIFF:g}, all top-1 equal")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

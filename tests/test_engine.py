"""The inference engine (rtserver.inference.engine and its backends).

ONNX Runtime on the CPU is the reference: it is checked against NumPy once, then every other
backend is checked against it on small graphs built here with onnx.helper (each exercising
the ops and forms our converters write) and on the real models when ``.models/`` has them.
Differences are measured relative to the output's scale: max |a - b| / max(1, max |b|).
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from rtserver.files import sha256_of, write_atomically
from rtserver.inference.engine import (
    BackendUnavailable,
    EngineOptions,
    OrtBackend,
    load_engine,
)
from rtserver.inference.engine_tensorrt import engine_file_name, read_cached, slug

ROOT = Path(__file__).resolve().parents[1]
REAL_MODELS = ("emotion.onnx", "face_detector.onnx", "face_detector_full.onnx")
TORCH_REASON = "torch is not installed (the 'torch' extra)"

# -- helpers -----------------------------------------------------------------------------------


def scaled_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max(1, max |expected|): absolute for outputs of order one,
    relative for large ones (BlazeFace's box regressors reach ~150 px)."""
    assert actual.shape == expected.shape and actual.dtype == np.float32
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    return float(np.abs(actual.astype(np.float64) - expected).max(initial=0.0)) / scale


def assert_outputs_close(
    actual: list[np.ndarray], expected: list[np.ndarray], tol: float, what: str
) -> None:
    assert len(actual) == len(expected), what
    for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
        error = scaled_error(a, e)
        assert error <= tol, f"{what}, output {index}: scaled error {error:.2e} > {tol:.0e}"


def weights(rng: np.random.Generator, *shape: int, scale: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def ints(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def make_model(
    nodes: list[onnx.NodeProto],
    inits: dict[str, np.ndarray],
    item_shape: tuple[int, ...],
    outputs: tuple[str, ...] = ("y",),
    opset: int = 17,
) -> onnx.ModelProto:
    """A checked model with one float32 input "x" of shape (N, *item_shape), N dynamic."""
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *item_shape])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        initializer=[numpy_helper.from_array(value, name) for name, value in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # old enough for every onnxruntime we support
    # Strict shape inference both checks the graph and fills in the outputs' shapes, which
    # the checker requires.
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model)
    return model


# -- the test graphs ---------------------------------------------------------------------------


def tiny_cnn() -> onnx.ModelProto:
    """conv 3x3 (pads 1) + relu + maxpool 2x2 + global average pool + flatten + softmax."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Softmax", ["f"], ["y"], axis=1),
    ]
    inits = {"w": weights(rng, 4, 1, 3, 3, scale=1.0), "b": weights(rng, 4)}
    return make_model(nodes, inits, (1, 8, 8))


def tiny_cnn_numpy(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """``tiny_cnn`` computed with NumPy, in float64."""
    params = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    w, b = params["w"].astype(np.float64), params["b"].astype(np.float64)
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    conv = np.einsum("ncyxij,ocij->noyx", windows, w) + b[None, :, None, None]
    relu = np.maximum(conv, 0.0)
    n, c, h, wd = relu.shape
    pooled = relu.reshape(n, c, h // 2, 2, wd // 2, 2).max(axis=(3, 5))
    logits = pooled.mean(axis=(2, 3))
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def xception_block() -> onnx.ModelProto:
    """The mini-Xception's shapes: strided conv + BN, depthwise separable conv, Keras-style
    SAME max pool (pads at the bottom/right only), strided 1x1 residual, Add, dilated grouped
    conv, then a 1x1 conv to the classes, global average pool, Flatten and Softmax."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node(
            "Conv", ["x", "w0"], ["c0"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
        ),
        helper.make_node("BatchNormalization", ["c0", "g0", "b0", "m0", "v0"], ["n0"]),
        helper.make_node("Relu", ["n0"], ["r0"]),
        helper.make_node("Conv", ["r0", "wd"], ["dw"], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["dw", "wp", "bp"], ["pw"]),
        helper.make_node(
            "BatchNormalization", ["pw", "g1", "b1", "m1", "v1"], ["n1"], epsilon=1e-3
        ),
        helper.make_node(
            "MaxPool", ["n1"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]
        ),
        helper.make_node("Conv", ["r0", "wr"], ["res"], strides=[2, 2]),
        helper.make_node("Add", ["mp", "res"], ["sum"]),
        helper.make_node("Conv", ["sum", "wg"], ["gc"], group=2, dilations=[2, 2], pads=[2] * 4),
        helper.make_node("Conv", ["gc", "wf", "bf"], ["classes"]),
        helper.make_node("GlobalAveragePool", ["classes"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1),
    ]
    inits = {
        "w0": weights(rng, 8, 1, 3, 3),
        "wd": weights(rng, 8, 1, 3, 3),
        "wp": weights(rng, 8, 8, 1, 1),
        "bp": weights(rng, 8),
        "wr": weights(rng, 8, 8, 1, 1),
        "wg": weights(rng, 8, 4, 3, 3),
        "wf": weights(rng, 7, 8, 1, 1, scale=2.0),
        "bf": weights(rng, 7),
    }
    for i in "01":
        inits |= {
            f"g{i}": 1 + weights(rng, 8),
            f"b{i}": weights(rng, 8),
            f"m{i}": weights(rng, 8),
            f"v{i}": rng.uniform(0.5, 2.0, 8).astype(np.float32),
        }
    return make_model(nodes, inits, (1, 16, 16))


def pools() -> onnx.ModelProto:
    """Max pools and a conv with asymmetric pads, pads torch's own ``padding`` rejects (more
    than half the kernel), ceil mode and dilations; five outputs."""
    rng = np.random.default_rng(3)
    nodes = [
        # Bottom/right pads bigger than top/left, and a pad torch's own `padding` rejects.
        helper.make_node(
            "MaxPool", ["x"], ["y1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 2, 1]
        ),
        helper.make_node(
            "MaxPool", ["x"], ["y2"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1
        ),
        helper.make_node("MaxPool", ["x"], ["y3"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node(
            "MaxPool", ["x"], ["y4"], kernel_shape=[2, 2], dilations=[2, 2], pads=[0, 0, 1, 1]
        ),
        helper.make_node(
            "Conv", ["x", "w"], ["y5"], kernel_shape=[4, 4], strides=[2, 2], pads=[1, 2, 2, 1]
        ),
    ]
    outputs = tuple(f"y{i}" for i in range(1, 6))
    return make_model(nodes, {"w": weights(rng, 3, 2, 4, 4)}, (2, 9, 9), outputs)


def blazeface_block() -> onnx.ModelProto:
    """BlazeFace's shapes: TFLite-style SAME conv (pad bottom/right), channel Pad into a
    residual Add, and two heads through Transpose + Reshape (0, -1) + Concat; plus a spatial
    Pad with a fill value and a negative (cropping) pad."""
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node(
            "Conv",
            ["x", "w0", "b0"],
            ["c0"],
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[0, 0, 1, 1],
        ),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Pad", ["r0", "chpad"], ["padded"]),
        helper.make_node("Conv", ["padded", "wd", "bd"], ["dw"], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["dw", "padded"], ["sum"]),
        helper.make_node("Relu", ["sum"], ["r1"]),
        helper.make_node("Conv", ["r1", "wa"], ["ha"]),
        helper.make_node("Transpose", ["ha"], ["ta"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["ta", "shape"], ["ra"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "wb"], ["hb"]),
        helper.make_node("Transpose", ["hb"], ["tb"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["tb", "shape"], ["rb"]),
        helper.make_node("Concat", ["ra", "rb"], ["y"], axis=1),
        helper.make_node("Pad", ["x", "sppad", "fill"], ["z"]),
    ]
    inits = {
        "w0": weights(rng, 4, 1, 3, 3),
        "b0": weights(rng, 4),
        "chpad": ints(0, 0, 0, 0, 0, 4, 0, 0),  # four zero channels after the four real ones
        "wd": weights(rng, 8, 1, 3, 3),
        "bd": weights(rng, 8),
        "wa": weights(rng, 4, 8, 1, 1),
        "wb": weights(rng, 8, 8, 1, 1),
        "shape": ints(0, -1, 2),
        "sppad": ints(0, 0, 1, -1, 0, 0, 2, 0),
        "fill": np.array(0.5, np.float32),
    }
    return make_model(nodes, inits, (1, 16, 16), ("y", "z"))


def converter_forms() -> onnx.ModelProto:
    """The rest of what our converters write: linear Resize by scales on a half_pixel grid
    (TFLite's RESIZE_BILINEAR, in the full-range BlazeFace) and on an align_corners grid, Clip
    as ReLU6 and with a lower bound only, a BatchNormalization that follows no Conv,
    Identity, Softmax on the last axis and Flatten from axis 2."""
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Clip", ["c", "zero", "six"], ["relu6"]),
        helper.make_node(
            "Resize",
            ["relu6", "", "scales"],
            ["up"],
            mode="linear",
            coordinate_transformation_mode="half_pixel",
        ),
        helper.make_node(
            "Resize",
            ["relu6", "", "scales"],
            ["corners"],
            mode="linear",
            coordinate_transformation_mode="align_corners",
        ),
        helper.make_node("Add", ["up", "corners"], ["sum"]),
        helper.make_node("BatchNormalization", ["sum", "g", "bb", "m", "v"], ["bn"]),
        helper.make_node("Clip", ["bn", "low"], ["floor"]),
        helper.make_node("Identity", ["floor"], ["y"]),
        helper.make_node("Flatten", ["x"], ["rows"], axis=2),
        helper.make_node("Softmax", ["rows"], ["z"]),
    ]
    inits = {
        "w": weights(rng, 3, 1, 3, 3, scale=2.0),
        "b": weights(rng, 3),
        "zero": np.array(0.0, np.float32),
        "six": np.array(6.0, np.float32),
        "scales": np.array([1, 1, 2, 2], np.float32),
        "g": 1 + weights(rng, 3),
        "bb": weights(rng, 3),
        "m": weights(rng, 3),
        "v": rng.uniform(0.5, 2.0, 3).astype(np.float32),
        "low": np.array(-0.5, np.float32),
    }
    return make_model(nodes, inits, (1, 6, 7), ("y", "z"))


GRAPHS: dict[str, Callable[[], onnx.ModelProto]] = {
    "tiny_cnn": tiny_cnn,
    "xception_block": xception_block,
    "pools": pools,
    "blazeface_block": blazeface_block,
    "converter_forms": converter_forms,
}


@pytest.fixture(scope="module")
def graph_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test graphs, saved once as ``{name}.onnx``."""
    directory = tmp_path_factory.mktemp("graphs")
    for name, build in GRAPHS.items():
        onnx.save(build(), str(directory / f"{name}.onnx"))
    return directory


def random_batch(path: Path, batch: int, seed: int = 0) -> np.ndarray:
    """Uniform [-1, 1) float32 input for the model at ``path``, ``batch`` items."""
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    shape = (batch, *(d.dim_value for d in dims[1:]))
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def real_model(name: str) -> Path:
    path = ROOT / ".models" / name
    if not path.exists():
        pytest.skip(f"{path} not found (the model fetch command writes it)")
    return path


# -- ONNX Runtime on the CPU, and choosing a backend -------------------------------------------


@pytest.mark.parametrize("batch", [1, 7])
def test_ort_cpu_matches_numpy(graph_dir: Path, batch: int) -> None:
    path = graph_dir / "tiny_cnn.onnx"
    engine = load_engine(path)
    x = random_batch(path, batch)
    (probs,) = engine.run(x)
    assert engine.name == "onnxruntime-cpu"
    assert probs.shape == (batch, 4) and probs.dtype == np.float32
    assert scaled_error(probs, tiny_cnn_numpy(onnx.load(str(path)), x)) <= 1e-6


def test_load_engine_passes_over_tensorrt_and_says_why(
    graph_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here, so it may well be chosen")
    caplog.set_level(logging.INFO, logger="rtserver.inference.engine")
    options = EngineOptions(order=("tensorrt", "onnxruntime-cpu"))
    engine = load_engine(graph_dir / "tiny_cnn.onnx", options)
    assert engine.name == "onnxruntime-cpu"
    lines = [r.getMessage() for r in caplog.records if r.name == "rtserver.inference.engine"]
    assert len(lines) == 1, lines
    assert "onnxruntime-cpu" in lines[0]
    assert "tensorrt: tensorrt is not installed" in lines[0]


# -- the torch interpreter on the CPU ----------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_torch_cpu_matches_ort(graph_dir: Path, graph: str, batch: int) -> None:
    pytest.importorskip("torch", reason=TORCH_REASON)
    from rtserver.inference.engine_torch import TorchBackend

    path = graph_dir / f"{graph}.onnx"
    backend = TorchBackend(path, device="cpu")
    x = random_batch(path, batch, seed=batch)
    assert backend.name == "torch-cpu"
    assert_outputs_close(backend.run(x), OrtBackend(path).run(x), 1e-5, graph)


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_torch_cpu_half_is_close_to_ort(graph_dir: Path, graph: str) -> None:
    pytest.importorskip("torch", reason=TORCH_REASON)
    from rtserver.inference.engine_torch import TorchBackend

    path = graph_dir / f"{graph}.onnx"
    x = random_batch(path, 5)
    outputs = TorchBackend(path, device="cpu", half=True).run(x)
    assert all(out.dtype == np.float32 for out in outputs)
    assert_outputs_close(outputs, OrtBackend(path).run(x), 1e-2, f"{graph} in FP16")


def test_torch_leaves_the_input_alone(graph_dir: Path) -> None:
    pytest.importorskip("torch", reason=TORCH_REASON)
    from rtserver.inference.engine_torch import TorchBackend

    path = graph_dir / "blazeface_block.onnx"
    x = random_batch(path, 3)
    x.flags.writeable = False  # the batcher may hand in read-only views
    before = x.copy()
    first = TorchBackend(path, device="cpu").run(x)
    assert np.array_equal(x, before)
    assert_outputs_close(first, OrtBackend(path).run(x), 1e-5, "read-only input")


def test_torch_outputs_are_its_own(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason=TORCH_REASON)
    from rtserver.inference.engine_torch import TorchBackend

    path = tmp_path / "identity.onnx"
    onnx.save(make_model([helper.make_node("Identity", ["x"], ["y"])], {}, (3,)), str(path))
    x = np.ones((2, 3), np.float32)
    (y,) = TorchBackend(path, device="cpu").run(x)
    y[:] = 5.0  # an output that is the input itself must not be the caller's buffer
    assert np.array_equal(x, np.ones((2, 3), np.float32))


def test_torch_rejects_unknown_ops(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason=TORCH_REASON)
    from rtserver.inference.engine_torch import TorchBackend
    from rtserver.inference.onnx_torch import SUPPORTED_OPS

    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Erf", ["r"], ["y"])]
    path = tmp_path / "erf.onnx"
    onnx.save(make_model(nodes, {}, (4,)), str(path))
    assert "Erf" not in SUPPORTED_OPS
    with pytest.raises(BackendUnavailable, match="'Erf'"):
        TorchBackend(path, device="cpu")


@pytest.mark.parametrize(
    ("node", "opset", "says"),
    [
        (helper.make_node("Relu", ["x"], ["y"]), 11, "opset 11"),
        (helper.make_node("Relu", ["x"], ["y"]), 18, "opset 18"),
        (
            helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], auto_pad="SAME_UPPER"),
            17,
            "auto_pad 'SAME_UPPER'",
        ),
        (
            helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest"),
            17,
            "mode 'nearest'",
        ),
        (helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect"), 17, "mode 'reflect'"),
    ],
)
def test_torch_says_which_form_it_lacks(
    tmp_path: Path, node: onnx.NodeProto, opset: int, says: str
) -> None:
    pytest.importorskip("torch", reason=TORCH_REASON)
    from rtserver.inference.engine_torch import TorchBackend

    inits = {"s": np.array([1, 1, 2, 2], np.float32), "p": ints(0, 0, 1, 1, 0, 0, 1, 1)}
    used = {name: value for name, value in inits.items() if name in node.input}
    path = tmp_path / "model.onnx"
    onnx.save(make_model([node], used, (1, 4, 4), opset=opset), str(path))
    with pytest.raises(BackendUnavailable, match=says):
        TorchBackend(path, device="cpu")


def test_torch_rejects_bad_batches(graph_dir: Path) -> None:
    pytest.importorskip("torch", reason=TORCH_REASON)
    from rtserver.inference.engine_torch import TorchBackend

    backend = TorchBackend(graph_dir / "tiny_cnn.onnx", device="cpu")
    with pytest.raises(ValueError, match="shape"):
        backend.run(np.zeros((2, 1, 8, 9), np.float32))
    with pytest.raises(ValueError, match="shape"):
        backend.run(np.zeros((0, 1, 8, 8), np.float32))


def test_torch_cuda_needs_a_device(graph_dir: Path) -> None:
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    from rtserver.inference.engine_torch import TorchBackend

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(BackendUnavailable, match="CUDA"):
        TorchBackend(graph_dir / "tiny_cnn.onnx", device="cuda")


def test_engine_torch_imports_without_torch(graph_dir: Path) -> None:
    # In a fresh interpreter where `import torch` fails, as in an install without the extra.
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.modules["torch"] = None
        from rtserver.inference.engine import BackendUnavailable
        from rtserver.inference.engine_torch import TorchBackend
        try:
            TorchBackend(Path({str(graph_dir / "tiny_cnn.onnx")!r}), device="cpu")
        except BackendUnavailable as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    assert "torch is not installed" in done.stdout


@pytest.mark.parametrize("name", REAL_MODELS)
def test_torch_cpu_matches_ort_on_real_models(name: str) -> None:
    path = real_model(name)
    pytest.importorskip("torch", reason=TORCH_REASON)
    from rtserver.inference.engine_torch import TorchBackend

    backend, half, reference = (
        TorchBackend(path, device="cpu"),
        TorchBackend(path, device="cpu", half=True),
        OrtBackend(path),
    )
    for batch in (1, 9):
        x = random_batch(path, batch, seed=batch)
        expected = reference.run(x)
        assert_outputs_close(backend.run(x), expected, 1e-5, f"{name} N={batch}")
        assert_outputs_close(half.run(x), expected, 1e-2, f"{name} in FP16 N={batch}")


# -- GPU backends against ONNX Runtime on the CPU ----------------------------------------------


def gpu_models(graph_dir: Path) -> list[Path]:
    """The graphs worth running on a GPU: two test graphs, and the real models if present."""
    paths = [graph_dir / "xception_block.onnx", graph_dir / "blazeface_block.onnx"]
    return paths + [ROOT / ".models" / n for n in REAL_MODELS if (ROOT / ".models" / n).exists()]


@pytest.mark.gpu
def test_torch_cuda_matches_ort_cpu(graph_dir: Path) -> None:
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from rtserver.inference.engine_torch import TorchBackend

    for path in gpu_models(graph_dir):
        for batch in (1, 7, 64):
            x = random_batch(path, batch)
            expected = OrtBackend(path).run(x)
            backend = TorchBackend(path, device="cuda")
            assert backend.name == "torch-cuda"
            assert_outputs_close(backend.run(x), expected, 1e-3, f"{path.name} fp32 N={batch}")
            half = TorchBackend(path, device="cuda", half=True)
            assert_outputs_close(half.run(x), expected, 1e-2, f"{path.name} fp16 N={batch}")


@pytest.mark.gpu
def test_ort_cuda_matches_ort_cpu(graph_dir: Path) -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider")
    for path in gpu_models(graph_dir):
        x = random_batch(path, 7)
        expected = OrtBackend(path).run(x)
        assert_outputs_close(OrtBackend(path, "cuda").run(x), expected, 1e-3, path.name)


def tensorrt_skip_reason() -> str | None:
    """Why the TensorRT backend cannot run here, or None when it can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed"
    try:
        import torch
    except ImportError:
        return TORCH_REASON
    return None if torch.cuda.is_available() else "no CUDA device"


@pytest.mark.gpu
def test_tensorrt_matches_ort_cpu_and_caches(graph_dir: Path, tmp_path: Path) -> None:
    reason = tensorrt_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    from rtserver.inference.engine_tensorrt import TensorRTBackend

    for path in gpu_models(graph_dir):
        backend = TensorRTBackend(path, tmp_path, max_batch=32)
        built = backend.engine_path.stat().st_mtime_ns
        for batch in (1, 7, 40):  # 40 > max_batch: runs in two chunks
            x = random_batch(path, batch)
            expected = OrtBackend(path).run(x)
            assert_outputs_close(backend.run(x), expected, 1e-2, f"{path.name} N={batch}")
        again = TensorRTBackend(path, tmp_path, max_batch=32)
        assert again.engine_path == backend.engine_path
        assert again.engine_path.stat().st_mtime_ns == built  # loaded, not rebuilt


def test_tensorrt_unavailable_says_why(graph_dir: Path, tmp_path: Path) -> None:
    reason = tensorrt_skip_reason()
    if reason is None:
        pytest.skip("tensorrt can run here")
    from rtserver.inference.engine_tensorrt import TensorRTBackend

    with pytest.raises(BackendUnavailable, match=reason.split(" (")[0]):
        TensorRTBackend(graph_dir / "tiny_cnn.onnx", tmp_path)
    assert not any(tmp_path.iterdir())


# -- the TensorRT engine cache, without TensorRT -----------------------------------------------

SHA = hashlib.sha256(b"model").hexdigest()


def test_engine_file_name_holds_the_key() -> None:
    name = engine_file_name("emotion", SHA, "NVIDIA H100 80GB HBM3", "10.3.0", 256)
    assert name == f"emotion-{SHA[:12]}-nvidia-h100-80gb-hbm3-trt10.3.0-b256.engine"


@pytest.mark.parametrize(
    "changed",
    [
        ("face_detector", SHA, "NVIDIA H100 80GB HBM3", "10.3.0", 256),
        ("emotion", hashlib.sha256(b"other").hexdigest(), "NVIDIA H100 80GB HBM3", "10.3.0", 256),
        ("emotion", SHA, "NVIDIA H200", "10.3.0", 256),
        ("emotion", SHA, "NVIDIA H100 80GB HBM3", "10.4.0", 256),
        ("emotion", SHA, "NVIDIA H100 80GB HBM3", "10.3.0", 128),
    ],
)
def test_engine_file_name_changes_with_any_part_of_the_key(
    changed: tuple[str, str, str, str, int],
) -> None:
    original = engine_file_name("emotion", SHA, "NVIDIA H100 80GB HBM3", "10.3.0", 256)
    assert engine_file_name(*changed) != original


def test_slug_is_file_name_safe() -> None:
    assert slug("NVIDIA GeForce RTX 4090") == "nvidia-geforce-rtx-4090"
    assert slug("Tesla T4 / (PCIe)") == "tesla-t4-pcie"
    assert slug("10.13.0.35") == "10.13.0.35"
    assert slug("///") == "unknown"
    with pytest.raises(ValueError, match="max_batch"):
        engine_file_name("m", SHA, "gpu", "10", 0)


def test_sha256_of_follows_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"model")
    assert sha256_of(path) == SHA
    path.write_bytes(b"model!")
    assert sha256_of(path) == hashlib.sha256(b"model!").hexdigest()


def test_write_atomically_replaces_whole_files_only(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "m.engine"
    assert read_cached(path) is None
    write_atomically(path, b"first")
    write_atomically(path, b"second")
    assert read_cached(path) == b"second"
    with pytest.raises(TypeError):
        write_atomically(path, "not bytes")  # type: ignore[arg-type]
    assert read_cached(path) == b"second"
    assert [p.name for p in path.parent.iterdir()] == ["m.engine"]  # no temp files left
    path.write_bytes(b"")
    assert read_cached(path) is None

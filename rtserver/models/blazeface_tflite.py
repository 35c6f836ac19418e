"""MediaPipe's BlazeFace short-range ``.tflite`` to ONNX, translated op by op by our own code.

The TFLite flatbuffer is read with the ``tflite`` schema package (no TensorFlow) and each
operator becomes one or a few ONNX opset-17 nodes built with ``onnx.helper``.

Layout convention of the translation: every rank-4 activation is NHWC in TFLite and NCHW in
ONNX (ONNX Runtime's convolutions want NCHW); activations of any other rank keep TFLite's axis
order. Weights stored as float16 behind DEQUANTIZE ops are folded into float32 initializers.

The ONNX graph has one input, ``image`` (N, C, 128, 128) float32 in [-1, 1] with a dynamic
batch axis N, and the TFLite outputs in their order: ``regressors`` (N, 896, 16) and
``scores`` (N, 896, 1), both raw (box offsets in input pixels, logits); decoding lives in
``rtserver.scoring.blazeface``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR of opset 17: older runtimes (TensorRT's parser) refuse newer ones
INPUT_NAME = "image"
BATCH_AXIS = "N"
# TFLite output tensor name -> ONNX output name; unlisted outputs keep their TFLite name.
OUTPUT_NAMES = {"regressors": "regressors", "classificators": "scores"}

_NUMPY_TYPES: dict[int, np.dtype[Any]] = {
    tflite.TensorType.FLOAT32: np.dtype("<f4"),
    tflite.TensorType.FLOAT16: np.dtype("<f2"),
    tflite.TensorType.INT32: np.dtype("<i4"),
    tflite.TensorType.INT64: np.dtype("<i8"),
}
# Where each NHWC axis of a rank-4 TFLite tensor sits in the NCHW ONNX tensor.
_NHWC_TO_NCHW_AXIS = (0, 2, 3, 1)
_TO_NCHW = (0, 3, 1, 2)  # Transpose perm NHWC -> NCHW
_TO_NHWC = (0, 2, 3, 1)  # Transpose perm NCHW -> NHWC


@dataclass(frozen=True)
class _Value:
    """An activation of the ONNX graph: its name and its TFLite (NHWC for rank 4) shape."""

    name: str
    shape: tuple[int, ...]


@dataclass
class _Graph:
    """What the translation has built so far."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    values: dict[int, _Value] = field(default_factory=dict)  # TFLite tensor -> activation
    consts: dict[int, np.ndarray] = field(default_factory=dict)  # TFLite tensor -> constant

    def initializer(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(array, name))
        return name


def convert_blazeface_tflite(tflite_path: Path, onnx_path: Path, gray_input: bool = True) -> None:
    """Writes ``onnx_path``, the ONNX translation of the BlazeFace model at ``tflite_path``.

    With ``gray_input`` the input has one channel (a luma plane): the first convolution's
    weights are summed over its RGB input channels, which is exactly equivalent to feeding the
    gray image replicated to three channels, because the convolution is linear. Without it the
    input has TFLite's three RGB channels. Raises ValueError on an operator, option or tensor
    type this translator does not handle. The model is checked with ``onnx.checker``.
    """
    model = _translate(Path(tflite_path).read_bytes(), gray_input, source=Path(tflite_path).name)
    onnx.checker.check_model(model, full_check=True)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(onnx_path))


def _translate(data: bytes, gray_input: bool, source: str) -> onnx.ModelProto:
    """The ONNX model of the TFLite flatbuffer ``data`` (one subgraph, one float32 input)."""
    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise ValueError(f"expected one subgraph, found {model.SubgraphsLength()}")
    sub = model.Subgraphs(0)
    if sub.InputsLength() != 1:
        raise ValueError(f"expected one input tensor, found {sub.InputsLength()}")

    graph = _Graph()
    input_index = sub.Inputs(0)
    input_info = _input_info(sub, input_index, gray_input)
    graph.values[input_index] = _Value(INPUT_NAME, _shape(sub.Tensors(input_index)))
    if gray_input:
        _check_only_convolutions_read(model, sub, input_index)

    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        op_name = _op_name(model, op)
        handler = _HANDLERS.get(op_name)
        if handler is None:
            supported = ", ".join(sorted(_HANDLERS))
            raise ValueError(f"operator {i} is {op_name}, not supported (supported: {supported})")
        handler(_OpContext(model, sub, op, i, data, graph, gray_input, input_index))

    outputs = [_graph_output(sub, sub.Outputs(k), graph) for k in range(sub.OutputsLength())]
    onnx_graph = helper.make_graph(
        graph.nodes, "blazeface", [input_info], outputs, initializer=graph.initializers
    )
    onnx_model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="rtserver.models.blazeface_tflite",
        doc_string=f"Translated from {source}; input {'gray' if gray_input else 'RGB'} in [-1, 1].",
    )
    onnx_model.ir_version = IR_VERSION
    return onnx_model


def _input_info(sub: Any, index: int, gray_input: bool) -> onnx.ValueInfoProto:
    """The ONNX graph input: NCHW, dynamic batch, one channel when ``gray_input``."""
    tensor = sub.Tensors(index)
    shape = _shape(tensor)
    if tensor.Type() != tflite.TensorType.FLOAT32 or len(shape) != 4:
        raise ValueError(f"expected a float32 NHWC input, got type {tensor.Type()} {shape}")
    _, height, width, channels = shape
    if gray_input and channels != 3:
        raise ValueError(f"gray_input needs an RGB input, the model has {channels} channels")
    return helper.make_tensor_value_info(
        INPUT_NAME,
        TensorProto.FLOAT,
        [BATCH_AXIS, 1 if gray_input else channels, height, width],
    )


def _check_only_convolutions_read(model: Any, sub: Any, input_index: int) -> None:
    """Raises ValueError unless every reader of the input is a CONV_2D (as its data input):
    summing weights over RGB is only exact for a convolution reading the image directly."""
    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        inputs = [op.Inputs(j) for j in range(op.InputsLength())]
        if input_index in inputs and (_op_name(model, op) != "CONV_2D" or inputs[0] != input_index):
            raise ValueError(f"gray_input: operator {i} ({_op_name(model, op)}) reads the image")


def _graph_output(sub: Any, index: int, graph: _Graph) -> onnx.ValueInfoProto:
    """Names a TFLite output for ONNX (rank 4 goes back to NHWC) and declares it."""
    tflite_name = sub.Tensors(index).Name().decode()
    name = OUTPUT_NAMES.get(tflite_name, tflite_name)
    value = graph.values.get(index)
    if value is None:
        raise ValueError(f"output {tflite_name!r} is a constant, not computed by the graph")
    if len(value.shape) == 4:
        graph.nodes.append(helper.make_node("Transpose", [value.name], [name], perm=_TO_NHWC))
    else:
        graph.nodes.append(helper.make_node("Identity", [value.name], [name]))
    dims: list[str | int] = [BATCH_AXIS, *value.shape[1:]]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def _op_name(model: Any, op: Any) -> str:
    """The builtin operator name (``CONV_2D``...) of ``op``; custom operators are refused."""
    code = model.OperatorCodes(op.OpcodeIndex())
    if code.CustomCode() is not None:
        raise ValueError(f"custom operator {code.CustomCode().decode()!r} is not supported")
    # Files written before the schema grew past 127 builtins keep the code in the deprecated
    # int8 field only; newer ones fill both.
    return str(tflite.opcode2name(max(code.BuiltinCode(), code.DeprecatedBuiltinCode())))


def _shape(tensor: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()


@dataclass(frozen=True)
class _OpContext:
    """One TFLite operator being translated, with the accessors its handler needs."""

    model: Any
    sub: Any
    op: Any
    index: int
    data: bytes
    graph: _Graph
    gray_input: bool
    input_index: int

    @property
    def name(self) -> str:
        return _op_name(self.model, self.op)

    def inputs(self) -> list[int]:
        return [self.op.Inputs(j) for j in range(self.op.InputsLength())]

    def output(self) -> int:
        if self.op.OutputsLength() != 1:
            raise ValueError(f"operator {self.index} ({self.name}) has several outputs")
        return int(self.op.Outputs(0))

    def value(self, tensor: int) -> _Value:
        """The activation computed for ``tensor``; ValueError if it is a constant."""
        value = self.graph.values.get(tensor)
        if value is None:
            raise ValueError(
                f"operator {self.index} ({self.name}): input {self.tensor_name(tensor)!r} "
                "must be an activation, not a constant"
            )
        return value

    def const(self, tensor: int) -> np.ndarray:
        """The constant held by ``tensor`` (a buffer or a DEQUANTIZE result)."""
        if tensor not in self.graph.consts:
            array = _buffer_array(self.model, self.data, self.sub.Tensors(tensor))
            if array is None:
                raise ValueError(
                    f"operator {self.index} ({self.name}): input {self.tensor_name(tensor)!r} "
                    "must be a constant"
                )
            self.graph.consts[tensor] = array
        return self.graph.consts[tensor]

    def tensor_name(self, tensor: int) -> str:
        return str(self.sub.Tensors(tensor).Name().decode())

    def shape(self, tensor: int) -> tuple[int, ...]:
        return _shape(self.sub.Tensors(tensor))

    def options(self, cls: type) -> Any:
        """The operator's builtin options table read as ``cls`` (a tflite *Options class)."""
        table = self.op.BuiltinOptions()
        if table is None:
            raise ValueError(f"operator {self.index} ({self.name}) has no options")
        options = cls()
        options.Init(table.Bytes, table.Pos)
        return options

    def onnx_name(self, tensor: int) -> str:
        # TFLite names are unique in practice; the index makes sure.
        return f"{self.tensor_name(tensor)}:{tensor}"

    def emit(self, op_type: str, inputs: Sequence[str], tensor: int, **attrs: Any) -> str:
        """Adds one node writing TFLite tensor ``tensor``; returns its ONNX name."""
        name = self.onnx_name(tensor)
        self.graph.nodes.append(helper.make_node(op_type, list(inputs), [name], **attrs))
        self.graph.values[tensor] = _Value(name, self.shape(tensor))
        return name

    def emit_activated(
        self, op_type: str, inputs: Sequence[str], activation: int, **attrs: Any
    ) -> None:
        """``emit`` for the operator's output, followed by its fused activation function."""
        tensor = self.output()
        if activation == tflite.ActivationFunctionType.NONE:
            self.emit(op_type, inputs, tensor, **attrs)
            return
        raw = f"{self.onnx_name(tensor)}:pre_activation"
        self.graph.nodes.append(helper.make_node(op_type, list(inputs), [raw], **attrs))
        self.emit_activation(raw, activation, tensor)

    def emit_activation(self, source: str, activation: int, tensor: int) -> None:
        """The TFLite activation function ``activation`` of ``source`` into ``tensor``."""
        if activation == tflite.ActivationFunctionType.RELU:
            self.emit("Relu", [source], tensor)
            return
        bounds = {
            tflite.ActivationFunctionType.RELU6: (0.0, 6.0),
            tflite.ActivationFunctionType.RELU_N1_TO_1: (-1.0, 1.0),
        }.get(activation)
        if bounds is None:
            raise ValueError(
                f"operator {self.index} ({self.name}): fused activation {activation} "
                "is not supported"
            )
        low = self.graph.initializer(f"clip_min:{tensor}", np.array(bounds[0], np.float32))
        high = self.graph.initializer(f"clip_max:{tensor}", np.array(bounds[1], np.float32))
        self.emit("Clip", [source, low, high], tensor)


def _buffer_array(model: Any, data: bytes, tensor: Any) -> np.ndarray | None:
    """The constant data of ``tensor`` in its TFLite dtype and shape; None if it has none."""
    buffer = model.Buffers(tensor.Buffer())
    if buffer is None:
        return None
    dtype = _NUMPY_TYPES.get(tensor.Type())
    if buffer.Offset() > 1:
        # Large models keep buffers after the flatbuffer, addressed by offset and size.
        raw = data[buffer.Offset() : buffer.Offset() + buffer.Size()]
    elif buffer.DataLength() > 0:
        raw = buffer.DataAsNumpy().tobytes()
    else:
        return None
    if dtype is None:
        raise ValueError(
            f"constant {tensor.Name().decode()!r} has unsupported type {tensor.Type()}"
        )
    return np.frombuffer(raw, dtype).reshape(_shape(tensor)).copy()


def _same_pads(
    size: Sequence[int], kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> list[int]:
    """ONNX ``pads`` (begins then ends) that reproduce TFLite SAME padding on spatial ``size``.

    TFLite outputs ceil(size / stride) pixels and, when the padding is odd, puts the extra
    pixel at the end (bottom/right); ONNX's symmetric ``auto_pad`` choices would differ there.
    """
    begins, ends = [], []
    for n, k, s, d in zip(size, kernel, stride, dilation, strict=True):
        out = -(-n // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        begins.append(total // 2)
        ends.append(total - total // 2)
    return begins + ends


def _spatial_pads(
    ctx: _OpContext,
    padding: int,
    size: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> list[int]:
    if padding == tflite.Padding.SAME:
        return _same_pads(size, kernel, stride, dilation)
    if padding == tflite.Padding.VALID:
        return [0, 0, 0, 0]
    raise ValueError(f"operator {ctx.index} ({ctx.name}): padding {padding} is not supported")


def _dequantize(ctx: _OpContext) -> None:
    (source,) = ctx.inputs()
    array = ctx.const(source)
    if array.dtype != np.float16:
        raise ValueError(f"operator {ctx.index}: DEQUANTIZE of {array.dtype} is not supported")
    ctx.graph.consts[ctx.output()] = array.astype(np.float32)


def _conv_bias(ctx: _OpContext, inputs: list[int], channels: int) -> list[str]:
    """The ONNX Conv bias input (empty when the TFLite op has none)."""
    if len(inputs) < 3 or inputs[2] < 0:
        return []
    bias = ctx.const(inputs[2]).astype(np.float32).reshape(channels)
    return [ctx.graph.initializer(f"{ctx.tensor_name(inputs[2])}:{inputs[2]}", bias)]


def _conv_2d(ctx: _OpContext) -> None:
    inputs = ctx.inputs()
    x = ctx.value(inputs[0])
    opts = ctx.options(tflite.Conv2DOptions)
    weight = ctx.const(inputs[1]).astype(np.float32)  # (O, KH, KW, I)
    if weight.ndim != 4 or weight.shape[3] != x.shape[3]:
        raise ValueError(f"operator {ctx.index}: grouped CONV_2D is not supported")
    if ctx.gray_input and inputs[0] == ctx.input_index:
        # Linear in the input: the sum of three equal channels times their weights is one
        # channel times the summed weights.
        weight = weight.sum(axis=3, keepdims=True)
    stride = (opts.StrideH(), opts.StrideW())
    dilation = (opts.DilationHFactor(), opts.DilationWFactor())
    kernel = weight.shape[1:3]
    w_name = ctx.graph.initializer(
        f"{ctx.tensor_name(inputs[1])}:{inputs[1]}", weight.transpose(0, 3, 1, 2).copy()
    )
    ctx.emit_activated(
        "Conv",
        [x.name, w_name, *_conv_bias(ctx, inputs, weight.shape[0])],
        opts.FusedActivationFunction(),
        kernel_shape=list(kernel),
        strides=list(stride),
        dilations=list(dilation),
        pads=_spatial_pads(ctx, opts.Padding(), x.shape[1:3], kernel, stride, dilation),
    )


def _depthwise_conv_2d(ctx: _OpContext) -> None:
    inputs = ctx.inputs()
    x = ctx.value(inputs[0])
    opts = ctx.options(tflite.DepthwiseConv2DOptions)
    weight = ctx.const(inputs[1]).astype(np.float32)  # (1, KH, KW, C * multiplier)
    channels = x.shape[3]
    if weight.ndim != 4 or weight.shape[0] != 1 or weight.shape[3] % channels:
        raise ValueError(f"operator {ctx.index}: depthwise weights {weight.shape} do not fit")
    stride = (opts.StrideH(), opts.StrideW())
    dilation = (opts.DilationHFactor(), opts.DilationWFactor())
    kernel = weight.shape[1:3]
    # TFLite's output channel c * multiplier + m reads input channel c, as ONNX's group conv
    # with one group per input channel does.
    w_name = ctx.graph.initializer(
        f"{ctx.tensor_name(inputs[1])}:{inputs[1]}", weight.transpose(3, 0, 1, 2).copy()
    )
    ctx.emit_activated(
        "Conv",
        [x.name, w_name, *_conv_bias(ctx, inputs, weight.shape[3])],
        opts.FusedActivationFunction(),
        group=channels,
        kernel_shape=list(kernel),
        strides=list(stride),
        dilations=list(dilation),
        pads=_spatial_pads(ctx, opts.Padding(), x.shape[1:3], kernel, stride, dilation),
    )


def _add(ctx: _OpContext) -> None:
    left, right = (ctx.value(t) for t in ctx.inputs())
    if len(left.shape) != len(right.shape):
        raise ValueError(f"operator {ctx.index}: ADD of ranks {left.shape} and {right.shape}")
    opts = ctx.options(tflite.AddOptions)
    ctx.emit_activated("Add", [left.name, right.name], opts.FusedActivationFunction())


def _relu(ctx: _OpContext) -> None:
    (source,) = ctx.inputs()
    ctx.emit_activation(ctx.value(source).name, tflite.ActivationFunctionType.RELU, ctx.output())


def _max_pool_2d(ctx: _OpContext) -> None:
    (source,) = ctx.inputs()
    x = ctx.value(source)
    opts = ctx.options(tflite.Pool2DOptions)
    kernel = (opts.FilterHeight(), opts.FilterWidth())
    stride = (opts.StrideH(), opts.StrideW())
    # ONNX MaxPool never lets padding win a maximum, like TFLite's SAME pooling.
    ctx.emit_activated(
        "MaxPool",
        [x.name],
        opts.FusedActivationFunction(),
        kernel_shape=list(kernel),
        strides=list(stride),
        pads=_spatial_pads(ctx, opts.Padding(), x.shape[1:3], kernel, stride, (1, 1)),
    )


def _pad(ctx: _OpContext) -> None:
    inputs = ctx.inputs()
    if len(inputs) != 2:
        raise ValueError(f"operator {ctx.index}: PAD with a constant value is not supported")
    x = ctx.value(inputs[0])
    paddings = ctx.const(inputs[1]).astype(np.int64).reshape(len(x.shape), 2)
    order = _TO_NCHW if len(x.shape) == 4 else tuple(range(len(x.shape)))
    pads = [int(paddings[a, 0]) for a in order] + [int(paddings[a, 1]) for a in order]
    pads_name = ctx.graph.initializer(f"pads:{ctx.output()}", np.array(pads, np.int64))
    ctx.emit("Pad", [x.name, pads_name], ctx.output(), mode="constant")


def _reshape(ctx: _OpContext) -> None:
    inputs = ctx.inputs()
    x = ctx.value(inputs[0])
    if len(inputs) > 1 and inputs[1] >= 0:
        target = [int(d) for d in ctx.const(inputs[1]).reshape(-1)]
    else:
        target = [int(d) for d in ctx.options(tflite.ReshapeOptions).NewShapeAsNumpy()]
    if not target or target[0] != 1 or x.shape[0] != 1:
        # The batch axis is made dynamic; a reshape mixing it with other axes cannot be.
        raise ValueError(f"operator {ctx.index}: RESHAPE {x.shape} -> {target} moves the batch")
    source = x.name
    if len(x.shape) == 4:
        # The element order a TFLite reshape sees is NHWC's.
        source = f"{x.name}:nhwc"
        ctx.graph.nodes.append(helper.make_node("Transpose", [x.name], [source], perm=_TO_NHWC))
    # 0 copies the (dynamic) batch size from the input.
    shape = ctx.graph.initializer(f"shape:{ctx.output()}", np.array([0, *target[1:]], np.int64))
    if len(target) != 4:
        ctx.emit("Reshape", [source, shape], ctx.output())
        return
    flat = f"{ctx.onnx_name(ctx.output())}:nhwc"
    ctx.graph.nodes.append(helper.make_node("Reshape", [source, shape], [flat]))
    ctx.emit("Transpose", [flat], ctx.output(), perm=_TO_NCHW)


def _concatenation(ctx: _OpContext) -> None:
    values = [ctx.value(t) for t in ctx.inputs()]
    opts = ctx.options(tflite.ConcatenationOptions)
    rank = len(values[0].shape)
    axis = opts.Axis() % rank
    if rank == 4:
        axis = _NHWC_TO_NCHW_AXIS[axis]
    ctx.emit_activated(
        "Concat", [v.name for v in values], opts.FusedActivationFunction(), axis=axis
    )


_HANDLERS: dict[str, Callable[[_OpContext], None]] = {
    "ADD": _add,
    "CONCATENATION": _concatenation,
    "CONV_2D": _conv_2d,
    "DEPTHWISE_CONV_2D": _depthwise_conv_2d,
    "DEQUANTIZE": _dequantize,
    "MAX_POOL_2D": _max_pool_2d,
    "PAD": _pad,
    "RELU": _relu,
    "RESHAPE": _reshape,
}

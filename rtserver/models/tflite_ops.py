"""TFLite operators translated to ONNX nodes, one handler per operator (``HANDLERS``), for
``blazeface_tflite.py``.

Every rank-4 activation is NHWC in TFLite and NCHW in ONNX; activations of any other rank
keep TFLite's axis order. Weights stored as float16 behind DEQUANTIZE ops, sparse or not,
are folded into dense float32 initializers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import tflite
from onnx import helper, numpy_helper

from rtserver.models.tflite_read import buffer_array, op_name, shape_of

# Where each NHWC axis of a rank-4 TFLite tensor sits in the NCHW ONNX tensor.
NHWC_TO_NCHW_AXIS = (0, 2, 3, 1)


TO_NCHW = (0, 3, 1, 2)  # Transpose perm NHWC -> NCHW
TO_NHWC = (0, 2, 3, 1)  # Transpose perm NCHW -> NHWC


@dataclass(frozen=True)
class Value:
    """An activation of the ONNX graph: its name and its TFLite (NHWC for rank 4) shape."""

    name: str
    shape: tuple[int, ...]


@dataclass
class Graph:
    """What the translation has built so far."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    values: dict[int, Value] = field(default_factory=dict)  # TFLite tensor -> activation
    consts: dict[int, np.ndarray] = field(default_factory=dict)  # TFLite tensor -> constant

    def initializer(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(array, name))
        return name


@dataclass(frozen=True)
class OpContext:
    """One TFLite operator being translated, with the accessors its handler needs."""

    model: Any
    sub: Any
    op: Any
    index: int
    data: bytes
    graph: Graph
    gray_input: bool
    replicated: frozenset[int]  # tensors holding the image with three equal channels

    @property
    def name(self) -> str:
        return op_name(self.model, self.op)

    def inputs(self) -> list[int]:
        return [self.op.Inputs(j) for j in range(self.op.InputsLength())]

    def output(self) -> int:
        if self.op.OutputsLength() != 1:
            raise ValueError(f"operator {self.index} ({self.name}) has several outputs")
        return int(self.op.Outputs(0))

    def value(self, tensor: int) -> Value:
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
            array = buffer_array(self.model, self.data, self.sub.Tensors(tensor))
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
        return shape_of(self.sub.Tensors(tensor))

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
        self.graph.values[tensor] = Value(name, self.shape(tensor))
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
    ctx: OpContext,
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


def _dequantize(ctx: OpContext) -> None:
    (source,) = ctx.inputs()
    array = ctx.const(source)
    if array.dtype != np.float16:
        raise ValueError(f"operator {ctx.index}: DEQUANTIZE of {array.dtype} is not supported")
    ctx.graph.consts[ctx.output()] = array.astype(np.float32)


def _densify(ctx: OpContext) -> None:
    # The sparse constant was made dense as it was read (``buffer_array``).
    (source,) = ctx.inputs()
    ctx.graph.consts[ctx.output()] = ctx.const(source)


def _conv_bias(ctx: OpContext, inputs: list[int], channels: int) -> list[str]:
    """The ONNX Conv bias input (empty when the TFLite op has none)."""
    if len(inputs) < 3 or inputs[2] < 0:
        return []
    bias = ctx.const(inputs[2]).astype(np.float32).reshape(channels)
    return [ctx.graph.initializer(f"{ctx.tensor_name(inputs[2])}:{inputs[2]}", bias)]


def _conv_2d(ctx: OpContext) -> None:
    inputs = ctx.inputs()
    x = ctx.value(inputs[0])
    opts = ctx.options(tflite.Conv2DOptions)
    weight = ctx.const(inputs[1]).astype(np.float32)  # (O, KH, KW, I)
    if weight.ndim != 4 or weight.shape[3] != x.shape[3]:
        raise ValueError(f"operator {ctx.index}: grouped CONV_2D is not supported")
    if ctx.gray_input and inputs[0] in ctx.replicated:
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


def _depthwise_conv_2d(ctx: OpContext) -> None:
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


def _add(ctx: OpContext) -> None:
    left, right = (ctx.value(t) for t in ctx.inputs())
    if len(left.shape) != len(right.shape):
        raise ValueError(f"operator {ctx.index}: ADD of ranks {left.shape} and {right.shape}")
    opts = ctx.options(tflite.AddOptions)
    ctx.emit_activated("Add", [left.name, right.name], opts.FusedActivationFunction())


def _relu(ctx: OpContext) -> None:
    (source,) = ctx.inputs()
    ctx.emit_activation(ctx.value(source).name, tflite.ActivationFunctionType.RELU, ctx.output())


def _max_pool_2d(ctx: OpContext) -> None:
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


def _pad(ctx: OpContext) -> None:
    inputs = ctx.inputs()
    if len(inputs) != 2:
        raise ValueError(f"operator {ctx.index}: PAD with a constant value is not supported")
    x = ctx.value(inputs[0])
    paddings = ctx.const(inputs[1]).astype(np.int64).reshape(len(x.shape), 2)
    order = TO_NCHW if len(x.shape) == 4 else tuple(range(len(x.shape)))
    pads = [int(paddings[a, 0]) for a in order] + [int(paddings[a, 1]) for a in order]
    pads_name = ctx.graph.initializer(f"pads:{ctx.output()}", np.array(pads, np.int64))
    ctx.emit("Pad", [x.name, pads_name], ctx.output(), mode="constant")


def _reshape(ctx: OpContext) -> None:
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
        ctx.graph.nodes.append(helper.make_node("Transpose", [x.name], [source], perm=TO_NHWC))
    # 0 copies the (dynamic) batch size from the input.
    shape = ctx.graph.initializer(f"shape:{ctx.output()}", np.array([0, *target[1:]], np.int64))
    if len(target) != 4:
        ctx.emit("Reshape", [source, shape], ctx.output())
        return
    flat = f"{ctx.onnx_name(ctx.output())}:nhwc"
    ctx.graph.nodes.append(helper.make_node("Reshape", [source, shape], [flat]))
    ctx.emit("Transpose", [flat], ctx.output(), perm=TO_NCHW)


def _resize_bilinear(ctx: OpContext) -> None:
    inputs = ctx.inputs()
    x = ctx.value(inputs[0])
    opts = ctx.options(tflite.ResizeBilinearOptions)
    out_h, out_w = (int(d) for d in ctx.const(inputs[1]).reshape(2))
    if len(x.shape) != 4:
        raise ValueError(f"operator {ctx.index}: RESIZE_BILINEAR of rank {len(x.shape)}")
    # TFLite's three sampling grids, each ONNX Resize's coordinate transformation of the same
    # formula: half pixel centres (what the BlazeFace models use), corners, or TF's legacy.
    if opts.HalfPixelCenters():
        mode = "half_pixel"
    elif opts.AlignCorners():
        mode = "align_corners"
    else:
        mode = "asymmetric"
    scales = np.array([1.0, 1.0, out_h / x.shape[1], out_w / x.shape[2]], np.float32)
    scales_name = ctx.graph.initializer(f"scales:{ctx.output()}", scales)
    ctx.emit(
        "Resize",
        [x.name, "", scales_name],
        ctx.output(),
        mode="linear",
        coordinate_transformation_mode=mode,
    )
    if ctx.shape(ctx.output())[1:3] != (out_h, out_w):
        raise ValueError(f"operator {ctx.index}: RESIZE_BILINEAR output shape mismatch")


def _depth_to_space(ctx: OpContext) -> None:
    (source,) = ctx.inputs()
    x = ctx.value(source)
    block = ctx.options(tflite.DepthToSpaceOptions).BlockSize()
    # TFLite's NHWC depth_to_space takes channel (i * block + j) * C + c to pixel offset
    # (i, j), channel c: ONNX's DCR order on NCHW.
    ctx.emit("DepthToSpace", [x.name], ctx.output(), blocksize=block, mode="DCR")


def _concatenation(ctx: OpContext) -> None:
    values = [ctx.value(t) for t in ctx.inputs()]
    opts = ctx.options(tflite.ConcatenationOptions)
    rank = len(values[0].shape)
    axis = opts.Axis() % rank
    if rank == 4:
        axis = NHWC_TO_NCHW_AXIS[axis]
    ctx.emit_activated(
        "Concat", [v.name for v in values], opts.FusedActivationFunction(), axis=axis
    )


HANDLERS: dict[str, Callable[[OpContext], None]] = {
    "ADD": _add,
    "CONCATENATION": _concatenation,
    "CONV_2D": _conv_2d,
    "DENSIFY": _densify,
    "DEPTHWISE_CONV_2D": _depthwise_conv_2d,
    "DEPTH_TO_SPACE": _depth_to_space,
    "DEQUANTIZE": _dequantize,
    "MAX_POOL_2D": _max_pool_2d,
    "PAD": _pad,
    "RELU": _relu,
    "RESHAPE": _reshape,
    "RESIZE_BILINEAR": _resize_bilinear,
}

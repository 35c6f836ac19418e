"""MediaPipe's BlazeFace ``.tflite`` models to ONNX, translated op by op by our own code.

It translates the short-range model (128x128 input, 896 anchors) and both full-range models
(192x192, 2304 anchors): the dense one and the sparse one, whose pruned weights are stored in
TFLite's sparse format behind DENSIFY ops.

The TFLite flatbuffer is read with the ``tflite`` schema package (no TensorFlow) and each
operator becomes one or a few ONNX opset-17 nodes built with ``onnx.helper``.

Layout convention of the translation: every rank-4 activation is NHWC in TFLite and NCHW in
ONNX (ONNX Runtime's convolutions want NCHW); activations of any other rank keep TFLite's axis
order. Weights stored as float16 behind DEQUANTIZE ops, sparse or not, are folded into dense
float32 initializers.

The ONNX graph has one input, ``image`` (N, C, S, S) float32 in [-1, 1] with a dynamic batch
axis N, and two outputs: ``regressors`` (N, A, 16) and ``scores`` (N, A, 1), both raw (box
offsets in input pixels, logits), named by their role whatever the TFLite file calls them;
decoding lives in ``rtserver.perception.blazeface``.
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
# ONNX output name by the last axis of the TFLite output: the models name their outputs
# differently (``regressors``, ``reshaped_regressor_face_4``, ``Identity``...), but every one
# has 16 box and keypoint regressors and one score logit per anchor.
OUTPUT_NAMES = {16: "regressors", 1: "scores"}

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
    gray image replicated to three channels, because the convolution is linear (and so is a
    zero PAD between the image and that convolution, as the sparse full-range model has,
    which keeps three equal channels equal). Without it the
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
    replicated = _replicated_tensors(model, sub, data, input_index) if gray_input else frozenset()

    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        op_name = _op_name(model, op)
        handler = _HANDLERS.get(op_name)
        if handler is None:
            supported = ", ".join(sorted(_HANDLERS))
            raise ValueError(f"operator {i} is {op_name}, not supported (supported: {supported})")
        handler(_OpContext(model, sub, op, i, data, graph, gray_input, replicated))

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


def _replicated_tensors(model: Any, sub: Any, data: bytes, input_index: int) -> frozenset[int]:
    """The tensors that hold the image with its three channels equal: the input and the
    zero-padded copies of it that PAD ops (padding no channel) make on the way to a CONV_2D.

    Raises ValueError unless every reader of such a tensor is one of those PADs or a CONV_2D
    reading it as its data input: summing weights over RGB is only exact for a convolution
    of the image, zero padding aside."""
    replicated = {input_index}
    for i in range(sub.OperatorsLength()):  # TFLite operators are in execution order
        op = sub.Operators(i)
        inputs = [op.Inputs(j) for j in range(op.InputsLength())]
        if not replicated.intersection(inputs):
            continue
        name = _op_name(model, op)
        if (
            name == "CONV_2D"
            and inputs[0] in replicated
            and not replicated.intersection(inputs[1:])
        ):
            continue
        if name == "PAD" and len(inputs) == 2 and inputs[0] in replicated:
            paddings = _buffer_array(model, data, sub.Tensors(inputs[1]))
            if paddings is not None and paddings.shape == (4, 2) and not paddings[3].any():
                replicated.add(int(op.Outputs(0)))
                continue
        raise ValueError(f"gray_input: operator {i} ({name}) reads the image")
    return frozenset(replicated)


def _graph_output(sub: Any, index: int, graph: _Graph) -> onnx.ValueInfoProto:
    """Names a TFLite output for ONNX (rank 4 goes back to NHWC) and declares it."""
    tflite_name = sub.Tensors(index).Name().decode()
    shape = _shape(sub.Tensors(index))
    name = OUTPUT_NAMES.get(shape[-1], tflite_name) if shape else tflite_name
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
    replicated: frozenset[int]  # tensors holding the image with three equal channels

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
    """The constant data of ``tensor`` in its TFLite dtype and shape, dense even where the
    file stores it sparse; None if it has none."""
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
    values = np.frombuffer(raw, dtype)
    if tensor.Sparsity() is not None:
        return _sparse_to_dense(values, tensor.Sparsity(), _shape(tensor), tensor.Name().decode())
    return values.reshape(_shape(tensor)).copy()


def _index_vector(vector: Any, kind: int) -> np.ndarray:
    """The integers of a TFLite SparseIndexVector union of type ``kind``."""
    classes = {
        tflite.SparseIndexVector.Int32Vector: tflite.Int32Vector,
        tflite.SparseIndexVector.Uint16Vector: tflite.Uint16Vector,
        tflite.SparseIndexVector.Uint8Vector: tflite.Uint8Vector,
    }
    cls = classes.get(kind)
    if cls is None or vector is None:
        raise ValueError(f"sparse index vector of type {kind} is not supported")
    typed = cls()
    typed.Init(vector.Bytes, vector.Pos)
    return np.asarray(typed.ValuesAsNumpy() if typed.ValuesLength() else [], np.int64)


def _sparse_to_dense(
    values: np.ndarray, sparsity: Any, shape: tuple[int, ...], name: str
) -> np.ndarray:
    """The dense array of a tensor stored in TFLite's sparse format (``SparsityParameters``).

    The format walks the dimensions in ``traversal_order``; a DENSE dimension visits every
    coordinate of its ``dense_size``, a SPARSE_CSR one visits, for position p of the levels
    above, the coordinates ``indices[segments[p]:segments[p + 1]]``; the stored values are
    the leaves of that walk, in order. Block sparsity (a ``block_map``) is refused: the
    BlazeFace models do not use it.
    """
    rank = len(shape)
    order = [int(a) for a in sparsity.TraversalOrderAsNumpy()] if rank else []
    if sparsity.BlockMapLength() or sorted(order) != list(range(rank)):
        raise ValueError(f"constant {name!r}: block-sparse or odd traversal order")
    if sparsity.DimMetadataLength() != rank:
        raise ValueError(f"constant {name!r}: sparsity metadata for the wrong rank")
    # One row per path walked so far from the first level down: its coordinates, and its
    # position in its level (what indexes the next level's segments).
    coords = np.zeros((1, rank), np.int64)
    positions = np.zeros(1, np.int64)
    for level in range(rank):
        meta = sparsity.DimMetadata(level)
        axis = order[level]
        if meta.Format() == tflite.DimensionType.DENSE:
            size = int(meta.DenseSize())
            coords = np.repeat(coords, size, axis=0)
            coords[:, axis] = np.tile(np.arange(size), len(positions))
            positions = (positions[:, None] * size + np.arange(size)).reshape(-1)
            continue
        segments = _index_vector(meta.ArraySegments(), meta.ArraySegmentsType())
        indices = _index_vector(meta.ArrayIndices(), meta.ArrayIndicesType())
        # One segment per position of the level above, which are 0..n-1 in order.
        if len(segments) != len(positions) + 1 or (np.diff(segments) < 0).any():
            raise ValueError(f"constant {name!r}: sparse segments do not fit")
        counts = np.diff(segments)
        coords = np.repeat(coords, counts, axis=0)
        positions = np.arange(segments[0], segments[-1])
        if len(indices) < segments[-1]:
            raise ValueError(f"constant {name!r}: sparse indices do not fit")
        coords[:, axis] = indices[positions]
    if len(coords) != len(values) or (coords >= np.array(shape)).any():
        raise ValueError(
            f"constant {name!r}: {len(values)} sparse values for {len(coords)} positions"
        )
    dense = np.zeros(shape, values.dtype)
    dense[tuple(coords.T)] = values
    return dense


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


def _densify(ctx: _OpContext) -> None:
    # The sparse constant was made dense as it was read (``_buffer_array``).
    (source,) = ctx.inputs()
    ctx.graph.consts[ctx.output()] = ctx.const(source)


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


def _resize_bilinear(ctx: _OpContext) -> None:
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


def _depth_to_space(ctx: _OpContext) -> None:
    (source,) = ctx.inputs()
    x = ctx.value(source)
    block = ctx.options(tflite.DepthToSpaceOptions).BlockSize()
    # TFLite's NHWC depth_to_space takes channel (i * block + j) * C + c to pixel offset
    # (i, j), channel c: ONNX's DCR order on NCHW.
    ctx.emit("DepthToSpace", [x.name], ctx.output(), blocksize=block, mode="DCR")


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

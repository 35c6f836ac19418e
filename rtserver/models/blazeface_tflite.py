"""MediaPipe's BlazeFace ``.tflite`` models to ONNX, translated op by op by our own code.

It translates the short-range model (128x128 input, 896 anchors) and both full-range models
(192x192, 2304 anchors): the dense one and the sparse one, whose pruned weights are stored in
TFLite's sparse format behind DENSIFY ops.

The TFLite flatbuffer is read with the ``tflite`` schema package (no TensorFlow,
``tflite_read.py``) and each operator becomes one or a few ONNX opset-17 nodes built with
``onnx.helper`` (``tflite_ops.py``, one handler per operator).

Layout convention of the translation: every rank-4 activation is NHWC in TFLite and NCHW in
ONNX (ONNX Runtime's convolutions want NCHW); activations of any other rank keep TFLite's axis
order. Weights stored as float16 behind DEQUANTIZE ops, sparse or not, are folded into dense
float32 initializers.

The ONNX graph has one input, ``image`` (N, C, S, S) float32 in [-1, 1] with a dynamic batch
axis N, and two outputs: ``regressors`` (N, A, 16) and ``scores`` (N, A, 1), both raw (box
offsets in input pixels, logits), named by their role whatever the TFLite file calls them;
decoding lives in ``rtserver.perception.blazeface_ssd``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import tflite
from onnx import TensorProto, helper

from rtserver.models.tflite_ops import HANDLERS, TO_NHWC, Graph, OpContext, Value
from rtserver.models.tflite_read import buffer_array, op_name, shape_of

OPSET = 17
IR_VERSION = 8  # the IR of opset 17: older runtimes (TensorRT's parser) refuse newer ones
INPUT_NAME = "image"
BATCH_AXIS = "N"
# ONNX output name by the last axis of the TFLite output: the models name their outputs
# differently (``regressors``, ``reshaped_regressor_face_4``, ``Identity``...), but every one
# has 16 box and keypoint regressors and one score logit per anchor.
OUTPUT_NAMES = {16: "regressors", 1: "scores"}


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

    graph = Graph()
    input_index = sub.Inputs(0)
    input_info = _input_info(sub, input_index, gray_input)
    graph.values[input_index] = Value(INPUT_NAME, shape_of(sub.Tensors(input_index)))
    replicated = _replicated_tensors(model, sub, data, input_index) if gray_input else frozenset()

    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        name = op_name(model, op)
        handler = HANDLERS.get(name)
        if handler is None:
            supported = ", ".join(sorted(HANDLERS))
            raise ValueError(f"operator {i} is {name}, not supported (supported: {supported})")
        handler(OpContext(model, sub, op, i, data, graph, gray_input, replicated))

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
    shape = shape_of(tensor)
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
        name = op_name(model, op)
        if (
            name == "CONV_2D"
            and inputs[0] in replicated
            and not replicated.intersection(inputs[1:])
        ):
            continue
        if name == "PAD" and len(inputs) == 2 and inputs[0] in replicated:
            paddings = buffer_array(model, data, sub.Tensors(inputs[1]))
            if paddings is not None and paddings.shape == (4, 2) and not paddings[3].any():
                replicated.add(int(op.Outputs(0)))
                continue
        raise ValueError(f"gray_input: operator {i} ({name}) reads the image")
    return frozenset(replicated)


def _graph_output(sub: Any, index: int, graph: Graph) -> onnx.ValueInfoProto:
    """Names a TFLite output for ONNX (rank 4 goes back to NHWC) and declares it."""
    tflite_name = sub.Tensors(index).Name().decode()
    shape = shape_of(sub.Tensors(index))
    name = OUTPUT_NAMES.get(shape[-1], tflite_name) if shape else tflite_name
    value = graph.values.get(index)
    if value is None:
        raise ValueError(f"output {tflite_name!r} is a constant, not computed by the graph")
    if len(value.shape) == 4:
        graph.nodes.append(helper.make_node("Transpose", [value.name], [name], perm=TO_NHWC))
    else:
        graph.nodes.append(helper.make_node("Identity", [value.name], [name]))
    dims: list[str | int] = [BATCH_AXIS, *value.shape[1:]]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

"""Our ONNX graphs interpreted with torch ops: the program the ``torch-cuda`` backend runs.

It runs the graphs our converters write (``rtserver.models.emotion_h5`` and
``blazeface_tflite``: the mini-Xception and both BlazeFace models) in opsets 13 to 17, and
refuses any other graph with BackendUnavailable naming what it lacks. At load, each node
becomes one step, a closure over its static attributes (pads, strides, shapes) that calls
torch ops; constants go to the device once, floating ones in the compute dtype; a Conv
followed by a BatchNormalization becomes one Conv, as ONNX Runtime fuses them; each
intermediate is dropped after its last use.

Why not onnx2torch (issue 13: 1.5.15 against ONNX Runtime on the CPU, torch 2.13.0): it
converts all three models and is as close to ONNX Runtime as we are (scaled error at most
3e-6 at batch 1 to 32; absolute at most 5.9e-4, on BlazeFace outputs of up to about 220; on
both BlazeFace models its outputs equal ours to the bit), at about our CPU speed (0.9 to 1.2
times our time), but

- it imports torchvision, which has no build for the CPU torch our tests run on: PyPI's
  torchvision 0.28.0 is a CUDA build whose import fails there ("operator torchvision::nms
  does not exist", pytorch/vision#9085), so onnx2torch cannot even be imported in CI;
- its Pad and Resize read their pads and scales back from the device on every call
  (``Tensor.tolist()``), a GPU sync at each of 11 nodes per batch of either BlazeFace (read
  in its code, not timed);
- it has no auto_pad SAME, no asymmetric AveragePool pads and no GlobalMaxPool (our models
  use none of these).

``import torch`` is optional here: without it this module still imports (the backend,
``engine_torch.py``, reports it).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import numpy_helper

from rtserver.inference.engine import BackendUnavailable

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is an optional extra; TorchBackend reports it at construction
    HAVE_TORCH = False
else:
    HAVE_TORCH = True

if TYPE_CHECKING:
    # A step's work: the node's inputs (empty optional ones left out) -> its first output.
    Kernel = Callable[[list[torch.Tensor]], torch.Tensor]

OPSETS = range(13, 18)
"""The default-domain opsets whose op forms the interpreter implements (ours write 17)."""


@dataclass(frozen=True)
class _Node:
    """One ONNX node as an op builder sees it: attributes decoded, constants at hand."""

    proto: onnx.NodeProto
    attrs: dict[str, Any]
    consts: dict[str, np.ndarray]

    @property
    def op(self) -> str:
        return str(self.proto.op_type)

    def ints(self, name: str, default: Sequence[int]) -> list[int]:
        return [int(v) for v in self.attrs.get(name, default)]

    def const(self, index: int, what: str) -> np.ndarray | None:
        """Input ``index``, which this op needs at load time (a shape, pads, bounds); None
        when the node leaves it out."""
        if index >= len(self.proto.input) or not self.proto.input[index]:
            return None
        value = self.consts.get(self.proto.input[index])
        if value is None:
            raise self.unsupported(f"needs a constant {what} (input {index})")
        return value

    def required(self, index: int, what: str) -> np.ndarray:
        value = self.const(index, what)
        if value is None:
            raise self.unsupported(f"has no {what} (input {index})")
        return value

    def unsupported(self, why: str) -> BackendUnavailable:
        name = self.proto.name or "(unnamed)"
        return BackendUnavailable(f"torch backend: ONNX node {name!r} ({self.op}) {why}")


def _scalar(value: np.ndarray) -> float:
    """A one-element constant (0-d or 1-element) as a float."""
    return float(np.asarray(value).reshape(-1)[0])


def _torch_pad(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """ONNX per-axis pads (first axis first) as F.pad's list (last axis first, begin/end
    pairs), without the all-zero pairs of leading axes; [] when nothing is padded."""
    pairs: list[int] = []
    for begin, end in zip(reversed(begins), reversed(ends), strict=True):
        pairs += [int(begin), int(end)]
    while pairs[-2:] == [0, 0]:
        del pairs[-2:]
    return pairs


def _window(node: _Node, rank: int) -> tuple[list[int], list[int], list[int], list[int]]:
    """A Conv's or MaxPool's strides, dilations and pads (begins, ends) per spatial axis.
    Only explicit pads: our converters never write auto_pad SAME."""
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        raise node.unsupported(f"has auto_pad {auto_pad!r} (only explicit pads are supported)")
    if rank not in (1, 2, 3):
        raise node.unsupported(f"has {rank} spatial axes (1 to 3 supported)")
    pads = node.ints("pads", [0] * 2 * rank) if auto_pad == "NOTSET" else [0] * 2 * rank
    ones = [1] * rank
    return node.ints("strides", ones), node.ints("dilations", ones), pads[:rank], pads[rank:]


# -- op builders: each turns a node into its kernel ----------------------------------------


def _conv(node: _Node) -> Kernel:
    rank = node.required(1, "weight").ndim - 2
    strides, dilations, begins, ends = _window(node, rank)
    conv = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]
    group = int(node.attrs.get("group", 1))
    # torch's conv pads symmetrically only; other pads (TFLite's SAME) are made first.
    padding, pre = (begins, []) if begins == ends else ([0] * rank, _torch_pad(begins, ends))

    def run(xs: list[torch.Tensor]) -> torch.Tensor:
        x = F.pad(xs[0], pre) if pre else xs[0]
        bias = xs[2] if len(xs) > 2 else None
        return conv(x, xs[1], bias, strides, padding, dilations, group)

    return run


def _max_pool(node: _Node) -> Kernel:
    kernel = node.ints("kernel_shape", [])
    strides, dilations, begins, ends = _window(node, len(kernel))
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[len(kernel) - 1]
    ceil = bool(node.attrs.get("ceil_mode", 0))
    # torch's pools pad symmetrically by at most half the kernel; other pads (Keras's SAME)
    # are made first, with -inf, which never wins the max.
    if begins == ends and all(p <= k // 2 for p, k in zip(begins, kernel, strict=True)):
        padding, pre = begins, []
    else:
        padding, pre = [0] * len(kernel), _torch_pad(begins, ends)

    def run(xs: list[torch.Tensor]) -> torch.Tensor:
        x = F.pad(xs[0], pre, value=-math.inf) if pre else xs[0]
        return pool(x, kernel, strides, padding, dilations, ceil)

    return run


def _batch_norm(node: _Node) -> Kernel:
    """A BatchNormalization that follows no Conv (those are folded into it at load)."""
    if node.attrs.get("training_mode", 0):
        raise node.unsupported("is in training mode (inference only)")
    eps = float(node.attrs.get("epsilon", 1e-5))
    return lambda xs: F.batch_norm(xs[0], xs[3], xs[4], xs[1], xs[2], training=False, eps=eps)


def _clip(node: _Node) -> Kernel:
    low, high = node.const(1, "min"), node.const(2, "max")
    lo = None if low is None else _scalar(low)
    hi = None if high is None else _scalar(high)
    return lambda xs: torch.clamp(xs[0], lo, hi)


def _pad(node: _Node) -> Kernel:
    mode = node.attrs.get("mode", "constant")
    if mode != "constant":
        raise node.unsupported(f"has mode {mode!r} (only 'constant' is supported)")
    pads = [int(p) for p in node.required(1, "pads")]
    fill = node.const(2, "constant_value")
    value = 0.0 if fill is None else _scalar(fill)
    pairs = _torch_pad(pads[: len(pads) // 2], pads[len(pads) // 2 :])  # negative pads crop
    return lambda xs: F.pad(xs[0], pairs, value=value) if pairs else xs[0]


def _reshape(node: _Node) -> Kernel:
    shape = [int(s) for s in node.required(1, "shape")]
    if node.attrs.get("allowzero", 0) and 0 in shape:
        raise node.unsupported("has allowzero with a 0 in its shape")

    def run(xs: list[torch.Tensor]) -> torch.Tensor:
        # 0 copies the input's size on that axis; torch resolves -1.
        return xs[0].reshape([xs[0].shape[i] if s == 0 else s for i, s in enumerate(shape)])

    return run


def _flatten(node: _Node) -> Kernel:
    axis = int(node.attrs.get("axis", 1))

    def run(xs: list[torch.Tensor]) -> torch.Tensor:
        split = axis % xs[0].ndim if axis < 0 else axis
        return xs[0].reshape(math.prod(xs[0].shape[:split]), -1)

    return run


def _resize(node: _Node) -> Kernel:
    """Linear Resize by constant scales, which TFLite's RESIZE_BILINEAR becomes; torch's
    interpolate samples as ONNX does with half_pixel (align_corners=False) or align_corners."""
    mode = node.attrs.get("mode", "nearest")
    grid = node.attrs.get("coordinate_transformation_mode", "half_pixel")
    if mode != "linear" or grid not in ("half_pixel", "align_corners"):
        raise node.unsupported(
            f"has mode {mode!r} on a {grid!r} grid (only linear on a "
            "half_pixel or align_corners grid is supported)"
        )
    if node.const(3, "sizes") is not None:
        raise node.unsupported("gives sizes (only scales are supported)")
    scales = [float(s) for s in node.required(2, "scales")]
    if scales[:2] != [1.0, 1.0] or len(scales) not in (3, 4, 5):
        raise node.unsupported(f"scales {scales}: only the 1 to 3 spatial axes may be scaled")
    torch_mode = ("linear", "bilinear", "trilinear")[len(scales) - 3]
    align = grid == "align_corners"
    return lambda xs: F.interpolate(
        xs[0], scale_factor=scales[2:], mode=torch_mode, align_corners=align
    )


# The simplest ops read their attributes when they run: a dict look-up beside a conv.
_BUILDERS: dict[str, Callable[[_Node], Kernel]] = {
    "Conv": _conv,
    "MaxPool": _max_pool,
    "BatchNormalization": _batch_norm,
    "Clip": _clip,
    "Pad": _pad,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Resize": _resize,
    "Relu": lambda node: lambda xs: torch.relu(xs[0]),
    "Add": lambda node: lambda xs: xs[0] + xs[1],
    "Identity": lambda node: lambda xs: xs[0],
    "Concat": lambda node: lambda xs: torch.cat(xs, dim=node.attrs["axis"]),
    "Softmax": lambda node: lambda xs: torch.softmax(xs[0], dim=node.attrs.get("axis", -1)),
    "GlobalAveragePool": lambda node: (
        lambda xs: xs[0].mean(dim=tuple(range(2, xs[0].ndim)), keepdim=True)
    ),
    "Transpose": lambda node: (
        lambda xs: xs[0].permute(node.attrs.get("perm") or list(reversed(range(xs[0].ndim))))
    ),
}

SUPPORTED_OPS = frozenset(_BUILDERS)
"""The ONNX ops (default domain) the interpreter runs: those our converters write. Any other
makes the model BackendUnavailable."""


# -- the program ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    op: str
    kernel: Kernel
    inputs: tuple[str, ...]  # empty optional inputs left out
    output: str
    frees: tuple[str, ...] = ()  # values whose last use is this step


@dataclass(frozen=True)
class _Program:
    """An ONNX graph as steps over torch tensors, ready to run on one device."""

    input_name: str
    input_shape: tuple[int | None, ...]  # None for a symbolic axis (the batch)
    outputs: tuple[str, ...]
    constants: dict[str, torch.Tensor]
    steps: tuple[_Step, ...]

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        env = {**self.constants, self.input_name: x}
        for step in self.steps:
            env[step.output] = step.kernel([env[name] for name in step.inputs])
            for name in step.frees:
                del env[name]
        return [env[name] for name in self.outputs]


def build_program(model: onnx.ModelProto, device: torch.device, half: bool) -> _Program:
    """Turns ``model`` into a program on ``device``, checking every node as it goes."""
    opset = next((e.version for e in model.opset_import if e.domain in ("", "ai.onnx")), None)
    if opset not in OPSETS:
        raise BackendUnavailable(
            f"torch backend: the model is in ONNX opset {opset}; "
            f"the interpreter implements opsets {OPSETS.start} to {OPSETS.stop - 1}"
        )
    graph = model.graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in consts]
    if len(inputs) != 1:
        raise BackendUnavailable(f"torch backend: the model has {len(inputs)} inputs, not one")
    outputs = tuple(o.name for o in graph.output)
    readers = Counter(name for proto in graph.node for name in proto.input if name)
    read = {*readers, *outputs}
    known = {inputs[0].name, *consts}
    steps: list[_Step] = []
    for proto in graph.node:
        node = _Node(proto, _attributes(proto), consts)
        _check_node(node, known, read)
        known.add(proto.output[0])
        if node.op == "BatchNormalization" and _fold_into_conv(node, steps, readers, outputs):
            continue
        args = tuple(name for name in proto.input if name)
        steps.append(_Step(node.op, _BUILDERS[node.op](node), args, proto.output[0]))

    missing = [name for name in outputs if name not in known]
    if missing:
        raise BackendUnavailable(f"torch backend: graph outputs {missing} are never computed")
    dtype = torch.float16 if half else torch.float32

    def upload(value: np.ndarray) -> torch.Tensor:  # copied: ONNX's buffers may be read-only
        tensor = torch.from_numpy(np.array(value))
        return tensor.to(device, dtype if tensor.is_floating_point() else tensor.dtype)

    needed = {name for step in steps for name in step.inputs} | set(outputs)
    dims = inputs[0].type.tensor_type.shape.dim
    keep = set(consts) | set(outputs)
    last = {name: at for at, step in enumerate(steps) for name in step.inputs if name not in keep}
    frees: list[tuple[str, ...]] = [() for _ in steps]
    for name, at in last.items():
        frees[at] += (name,)
    return _Program(
        input_name=inputs[0].name,
        input_shape=tuple(d.dim_value if d.HasField("dim_value") else None for d in dims),
        outputs=outputs,
        constants={name: upload(consts[name]) for name in needed & set(consts)},
        steps=tuple(replace(step, frees=free) for step, free in zip(steps, frees, strict=True)),
    )


def _fold_into_conv(
    bn: _Node, steps: list[_Step], readers: Counter[str], outputs: tuple[str, ...]
) -> bool:
    """Makes the Conv step that only ``bn`` reads compute ``bn(conv(x))`` instead; False when
    it cannot (no such Conv, weights or statistics not constant, training mode).

    With f = scale / sqrt(var + eps): BN(conv(x, W) + b) = conv(x, W * f) + (b - mean) * f +
    beta. That saves a pass over the activation per pair (14 in the mini-Xception); ONNX
    Runtime fuses the same way. Folded in float64, so half=True rounds each weight once."""
    source, consts = bn.proto.input[0], bn.consts
    at = next((i for i, step in enumerate(steps) if step.output == source), None)
    if at is None or steps[at].op != "Conv" or readers[source] != 1 or source in outputs:
        return False
    conv = steps[at]
    weight = consts.get(conv.inputs[1])
    bias = consts.get(conv.inputs[2]) if len(conv.inputs) > 2 else np.zeros(1, np.float32)
    stats = [consts.get(name) for name in bn.proto.input[1:5]]
    if weight is None or bias is None or len(stats) != 4 or any(s is None for s in stats):
        return False
    if bn.attrs.get("training_mode", 0):
        return False
    scale, beta, mean, var = (np.asarray(s, np.float64) for s in stats)
    factor = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    out, shape = bn.proto.output[0], (-1,) + (1,) * (weight.ndim - 1)
    consts[f"{out}/weight"] = (weight * factor.reshape(shape)).astype(weight.dtype)
    consts[f"{out}/bias"] = ((bias - mean) * factor + beta).astype(weight.dtype)
    steps[at] = replace(conv, inputs=(conv.inputs[0], f"{out}/weight", f"{out}/bias"), output=out)
    return True


def _check_node(node: _Node, known: set[str], used: set[str]) -> None:
    """Raises BackendUnavailable unless the interpreter can run ``node`` where it stands."""
    name = node.proto.name or "(unnamed)"
    if node.proto.domain not in ("", "ai.onnx"):
        raise node.unsupported(f"is in domain {node.proto.domain!r}; only the default is supported")
    if node.op not in _BUILDERS:
        raise BackendUnavailable(
            f"torch backend does not support ONNX op {node.op!r} (node {name!r})"
        )
    absent = [n for n in node.proto.input if n and n not in known]
    if absent:
        raise BackendUnavailable(
            f"torch backend: node {name!r} reads {absent} before they are computed "
            "(the graph is not topologically sorted)"
        )
    if not node.proto.output or not node.proto.output[0]:
        raise node.unsupported("has no first output")
    extra = [n for n in node.proto.output[1:] if n and n in used]
    if extra:
        raise node.unsupported(f"has further outputs in use ({extra}); only the first is supported")


def _attributes(proto: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values (strings decoded)."""
    values = {attr.name: onnx.helper.get_attribute_value(attr) for attr in proto.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}

"""The ``torch-cuda`` backend: our ONNX graphs interpreted with torch ops.

We interpret the graph ourselves rather than depend on onnx2torch: our two models (a
mini-Xception and BlazeFace) use about fifteen ops, and a table of small op builders that we
test against ONNX Runtime is less to trust than a converter with its own coverage gaps and
torch pins. The graph is turned into a program once, at load:

- constants (initializers, ``Constant`` nodes, and every node whose inputs are all constant,
  folded on the CPU at load) become tensors on the device, floating ones in the compute dtype;
- every other node becomes one step: a closure over its static attributes (pads, strides,
  target shapes) that calls torch ops on the tensors it is given;
- a Conv followed by a BatchNormalization becomes one Conv with the BN folded into its
  weight and bias, as ONNX Runtime does;
- each intermediate is dropped after its last use, so a batch's peak memory is the live set,
  not the whole graph.

``import torch`` is optional here: without it this module still imports, and ``TorchBackend``
raises ``BackendUnavailable`` when constructed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rtserver.inference.engine import BackendUnavailable

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is an optional extra; TorchBackend reports it at construction
    _HAVE_TORCH = False
else:
    _HAVE_TORCH = True

if TYPE_CHECKING:
    import onnx

    # A step's work: (its inputs, None where an optional input is absent; its params) -> output.
    Kernel = Callable[[list[torch.Tensor | None], tuple[torch.Tensor, ...]], torch.Tensor]


@dataclass(frozen=True)
class _Op:
    """What an op builder makes of one node: a kernel, and NumPy params derived at load
    (e.g. BatchNormalization's folded scale and shift) that the program uploads once and
    passes to the kernel on every call."""

    kernel: Kernel
    params: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True)
class _Node:
    """One ONNX node as an op builder sees it: attributes decoded, constant inputs known."""

    proto: onnx.NodeProto
    attrs: Mapping[str, Any]
    consts: Mapping[str, np.ndarray]
    opset: int
    half: bool

    @property
    def op(self) -> str:
        return str(self.proto.op_type)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def ints(self, name: str, default: Sequence[int]) -> list[int]:
        return [int(v) for v in self.attrs.get(name, default)]

    def has_input(self, index: int) -> bool:
        return index < len(self.proto.input) and bool(self.proto.input[index])

    def const(self, index: int) -> np.ndarray | None:
        """Input ``index`` when it is known at load time, else None (absent or computed)."""
        if not self.has_input(index):
            return None
        return self.consts.get(self.proto.input[index])

    def static(self, index: int, what: str) -> np.ndarray:
        """Input ``index``, which this op needs at load time (a shape, pads, bounds...)."""
        value = self.const(index)
        if value is None:
            raise self.unsupported(f"needs a constant {what} (input {index})")
        return value

    def unsupported(self, why: str) -> BackendUnavailable:
        return BackendUnavailable(
            f"torch backend: ONNX node {self.proto.name or '(unnamed)'!r} ({self.op}) {why}"
        )


# -- padding helpers ---------------------------------------------------------------------------


def _torch_pad(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """ONNX per-axis pads (first axis first) as F.pad's list (last axis first, begin/end
    pairs), without the all-zero pairs of leading axes F.pad need not see."""
    pairs: list[int] = []
    for begin, end in zip(reversed(begins), reversed(ends), strict=True):
        pairs += [int(begin), int(end)]
    while pairs and pairs[-2:] == [0, 0]:
        del pairs[-2:]
    return pairs


def _same_pads(
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    upper: bool,
) -> tuple[list[int], list[int]]:
    """auto_pad SAME_UPPER/SAME_LOWER: pads giving ceil(size / stride) outputs, the odd pixel
    at the end (UPPER) or at the start (LOWER)."""
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations, strict=True):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begins.append(small if upper else large)
        ends.append(large if upper else small)
    return begins, ends


@dataclass(frozen=True)
class _Window:
    """The sliding window shared by Conv and the pools: sizes in pixels, per spatial axis."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    auto_pad: str
    begins: tuple[int, ...]  # explicit pads; unused with auto_pad SAME_*
    ends: tuple[int, ...]

    @staticmethod
    def of(node: _Node, kernel: Sequence[int]) -> _Window:
        rank = len(kernel)
        if rank not in (1, 2, 3):
            raise node.unsupported(f"has {rank} spatial axes (1 to 3 supported)")
        auto_pad = node.attr("auto_pad", "NOTSET")
        if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
            raise node.unsupported(f"has unknown auto_pad {auto_pad!r}")
        pads = node.ints("pads", [0] * 2 * rank) if auto_pad == "NOTSET" else [0] * 2 * rank
        return _Window(
            kernel=tuple(int(k) for k in kernel),
            strides=tuple(node.ints("strides", [1] * rank)),
            dilations=tuple(node.ints("dilations", [1] * rank)),
            auto_pad=auto_pad,
            begins=tuple(pads[:rank]),
            ends=tuple(pads[rank:]),
        )

    @property
    def rank(self) -> int:
        return len(self.kernel)

    def pads(self, x: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(begins, ends) for input ``x``: the explicit pads, or SAME pads for its size."""
        if self.auto_pad.startswith("SAME"):
            sizes = x.shape[-self.rank :]
            begins, ends = _same_pads(
                sizes, self.kernel, self.strides, self.dilations, self.auto_pad == "SAME_UPPER"
            )
            return tuple(begins), tuple(ends)
        return self.begins, self.ends

    def torch_padding(self, begins: Sequence[int], ends: Sequence[int]) -> tuple[int, ...] | None:
        """The pads as a torch pool's ``padding`` argument, or None when torch cannot take
        them there (asymmetric, or more than half the kernel) and the input must be padded
        first."""
        if tuple(begins) != tuple(ends):
            return None
        if any(p > k // 2 for p, k in zip(begins, self.kernel, strict=True)):
            return None
        return tuple(begins)


# -- op builders -------------------------------------------------------------------------------


# The op table is a module constant, yet this module must import without torch: so simple
# ops name their torch function, looked up when a model is built.


def _elementwise(fn: str | Callable[[torch.Tensor], torch.Tensor]) -> Callable[[_Node], _Op]:
    """A builder for an op with one input, no attributes and one output; ``fn`` is a torch
    function or its name."""

    def build(node: _Node) -> _Op:
        call = getattr(torch, fn) if isinstance(fn, str) else fn
        return _Op(lambda xs, params: call(_need(xs[0])))

    return build


def _binary(
    fn: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[_Node], _Op]:
    """A builder for a NumPy-broadcasting binary op (torch broadcasts the same way); ``fn``
    is a torch function or its name."""

    def build(node: _Node) -> _Op:
        call = getattr(torch, fn) if isinstance(fn, str) else fn
        return _Op(lambda xs, params: call(_need(xs[0]), _need(xs[1])))

    return build


def _need(x: torch.Tensor | None) -> torch.Tensor:
    """A required input; the program only passes None for inputs the node left empty."""
    if x is None:
        raise ValueError("a required input of an ONNX node is missing")
    return x


def _scalar(value: np.ndarray) -> float:
    """A one-element constant (a 0-d or 1-element array) as a float."""
    return float(np.asarray(value).reshape(-1)[0])


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # ONNX integer Div truncates toward zero (it only reaches here in folded shape arithmetic).
    if a.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def _prelu(a: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    return torch.where(a < 0, a * slope, a)


def _build_conv(node: _Node) -> _Op:
    weight = node.const(1)
    kernel = node.ints("kernel_shape", []) or (list(weight.shape[2:]) if weight is not None else [])
    if not kernel:
        raise node.unsupported("needs kernel_shape or a constant weight")
    window = _Window.of(node, kernel)
    conv = (F.conv1d, F.conv2d, F.conv3d)[window.rank - 1]
    group = int(node.attr("group", 1))

    def run(xs: list[torch.Tensor | None], params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = _need(xs[0])
        begins, ends = window.pads(x)
        padding: tuple[int, ...] = begins
        if begins != ends:  # torch's conv pads symmetrically only
            x = F.pad(x, _torch_pad(begins, ends))
            padding = (0,) * window.rank
        bias = xs[2] if len(xs) > 2 else None
        return conv(x, _need(xs[1]), bias, window.strides, padding, window.dilations, group)

    return _Op(run)


def _pool_window(node: _Node) -> _Window:
    if node.attr("ceil_mode", 0) and node.attr("auto_pad", "NOTSET").startswith("SAME"):
        raise node.unsupported("combines ceil_mode with auto_pad SAME")
    return _Window.of(node, node.ints("kernel_shape", []))


def _build_max_pool(node: _Node) -> _Op:
    window = _pool_window(node)
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[window.rank - 1]
    ceil = bool(node.attr("ceil_mode", 0))

    def run(xs: list[torch.Tensor | None], params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = _need(xs[0])
        begins, ends = window.pads(x)
        padding = window.torch_padding(begins, ends)
        if padding is None:  # pad with -inf ourselves: padded cells never win the max
            x = F.pad(x, _torch_pad(begins, ends), value=-math.inf)
            padding = (0,) * window.rank
        return pool(x, window.kernel, window.strides, padding, window.dilations, ceil)

    return _Op(run)


def _build_average_pool(node: _Node) -> _Op:
    window = _pool_window(node)
    if any(d != 1 for d in window.dilations):
        raise node.unsupported("has dilations (torch's avg_pool has none)")
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[window.rank - 1]
    ceil = bool(node.attr("ceil_mode", 0))
    include_pad = bool(node.attr("count_include_pad", 0))

    def average(x: torch.Tensor, padding: tuple[int, ...]) -> torch.Tensor:
        return pool(x, window.kernel, window.strides, padding, ceil, include_pad)

    def run(xs: list[torch.Tensor | None], params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = _need(xs[0])
        begins, ends = window.pads(x)
        padding = window.torch_padding(begins, ends)
        if padding is not None:
            return average(x, padding)
        pads, zero = _torch_pad(begins, ends), (0,) * window.rank
        summed = average(F.pad(x, pads), zero)
        if include_pad:
            return summed
        # Excluding pads: divide by the share of each window that is real input.
        mask = F.pad(torch.ones_like(x[:1, :1]), pads)
        return summed / average(mask, zero)

    return _Op(run)


def _build_global_average_pool(node: _Node) -> _Op:
    return _Op(
        lambda xs, p: _need(xs[0]).mean(dim=tuple(range(2, _need(xs[0]).ndim)), keepdim=True)
    )


def _build_global_max_pool(node: _Node) -> _Op:
    return _Op(
        lambda xs, p: _need(xs[0]).amax(dim=tuple(range(2, _need(xs[0]).ndim)), keepdim=True)
    )


def _build_batch_norm(node: _Node) -> _Op:
    if node.attr("training_mode", 0) or sum(1 for o in node.proto.output if o) > 1:
        raise node.unsupported("is in training mode (inference only)")
    if node.opset < 9 and not node.attr("spatial", 1):
        raise node.unsupported("has spatial=0")
    eps = float(node.attr("epsilon", 1e-5))
    stats = [node.const(i) for i in range(1, 5)]
    if any(s is None for s in stats):

        def live(xs: list[torch.Tensor | None], params: tuple[torch.Tensor, ...]) -> torch.Tensor:
            x, scale, bias, mean, var = (_need(t) for t in xs[:5])
            return F.batch_norm(x, mean, var, scale, bias, training=False, eps=eps)

        return _Op(live)
    scale, bias, mean, var = (np.asarray(s, np.float64) for s in stats)
    # y = (x - mean) / sqrt(var + eps) * scale + bias, as one multiply-add; folded in float64
    # so that half=True rounds the result once, not every term.
    factor = scale / np.sqrt(var + eps)
    shift = bias - mean * factor

    def affine(xs: list[torch.Tensor | None], params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = _need(xs[0])
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * params[0].view(shape) + params[1].view(shape)

    return _Op(affine, (factor.astype(np.float32), shift.astype(np.float32)))


def _build_clip(node: _Node) -> _Op:
    if node.opset < 11:
        low, high = node.attr("min"), node.attr("max")
    else:
        low_arr = node.static(1, "min") if node.has_input(1) else None
        high_arr = node.static(2, "max") if node.has_input(2) else None
        low = None if low_arr is None else _scalar(low_arr)
        high = None if high_arr is None else _scalar(high_arr)
    return _Op(lambda xs, p: torch.clamp(_need(xs[0]), low, high))


def _build_leaky_relu(node: _Node) -> _Op:
    alpha = float(node.attr("alpha", 0.01))
    return _Op(lambda xs, p: F.leaky_relu(_need(xs[0]), alpha))


def _build_concat(node: _Node) -> _Op:
    axis = int(node.attr("axis"))
    return _Op(lambda xs, p: torch.cat([_need(x) for x in xs], dim=axis))


def _build_reshape(node: _Node) -> _Op:
    shape = [int(s) for s in node.static(1, "shape")]
    allow_zero = bool(node.attr("allowzero", 0))

    def run(xs: list[torch.Tensor | None], params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = _need(xs[0])
        # 0 copies the input's size on that axis (unless allowzero); torch resolves -1.
        target = [x.shape[i] if s == 0 and not allow_zero else s for i, s in enumerate(shape)]
        return x.reshape(target)

    return _Op(run)


def _build_flatten(node: _Node) -> _Op:
    axis = int(node.attr("axis", 1))

    def run(xs: list[torch.Tensor | None], params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = _need(xs[0])
        split = axis % x.ndim if axis < 0 else axis
        return x.reshape(math.prod(x.shape[:split]), math.prod(x.shape[split:]))

    return _Op(run)


def _build_transpose(node: _Node) -> _Op:
    perm = node.attr("perm")

    def run(xs: list[torch.Tensor | None], params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = _need(xs[0])
        return x.permute(list(perm) if perm is not None else list(reversed(range(x.ndim))))

    return _Op(run)


def _build_pad(node: _Node) -> _Op:
    mode = node.attr("mode", "constant")
    if mode != "constant":
        raise node.unsupported(f"has mode {mode!r} (only 'constant' is supported)")
    axes: list[int] | None = None
    if node.opset < 11:
        pads, value = node.ints("pads", []), float(node.attr("value", 0.0))
    else:
        pads = [int(p) for p in node.static(1, "pads")]
        value = _scalar(node.static(2, "constant_value")) if node.has_input(2) else 0.0
        axes = [int(a) for a in node.static(3, "axes")] if node.has_input(3) else None

    def run(xs: list[torch.Tensor | None], params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = _need(xs[0])
        padded = range(x.ndim) if axes is None else [a % x.ndim for a in axes]
        begins, ends = [0] * x.ndim, [0] * x.ndim
        half = len(pads) // 2
        for i, axis in enumerate(padded):
            begins[axis], ends[axis] = pads[i], pads[half + i]
        torch_pads = _torch_pad(begins, ends)
        return F.pad(x, torch_pads, value=value) if torch_pads else x

    return _Op(run)


def _build_softmax(node: _Node) -> _Op:
    if node.opset >= 13:
        axis = int(node.attr("axis", -1))
        return _Op(lambda xs, p: torch.softmax(_need(xs[0]), dim=axis))
    axis = int(node.attr("axis", 1))

    def coerced(xs: list[torch.Tensor | None], params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        # Before opset 13, Softmax flattened the axes from ``axis`` on into one.
        x = _need(xs[0])
        split = axis % x.ndim
        flat = x.reshape(math.prod(x.shape[:split]), -1)
        return torch.softmax(flat, dim=1).reshape(x.shape)

    return _Op(coerced)


def _build_gemm(node: _Node) -> _Op:
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    trans_a, trans_b = bool(node.attr("transA", 0)), bool(node.attr("transB", 0))

    def run(xs: list[torch.Tensor | None], params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        a, b = _need(xs[0]), _need(xs[1])
        y = (a.t() if trans_a else a) @ (b.t() if trans_b else b)
        if alpha != 1.0:
            y = y * alpha
        c = xs[2] if len(xs) > 2 else None
        if c is not None:
            y = y + (c * beta if beta != 1.0 else c)
        return y

    return _Op(run)


# ONNX TensorProto element types we can cast to, as torch dtype names.
_CAST_TARGETS = {
    1: "float32",
    10: "float16",
    11: "float64",
    16: "bfloat16",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
}


def _build_cast(node: _Node) -> _Op:
    to = int(node.attr("to"))
    if to not in _CAST_TARGETS:
        raise node.unsupported(f"casts to ONNX element type {to}")
    dtype: torch.dtype = getattr(torch, _CAST_TARGETS[to])
    if node.half and dtype.is_floating_point:
        dtype = torch.float16  # half=True computes every float in float16, casts included
    return _Op(lambda xs, p: _need(xs[0]).to(dtype))


def _axes(node: _Node, index: int) -> list[int] | None:
    """The ``axes`` of Squeeze/Unsqueeze/Reduce*: an attribute before opset 13 (18 for the
    Reduce ops), then an optional constant input; None when not given."""
    moved = 18 if node.op.startswith("Reduce") else 13
    if node.opset < moved:
        value = node.attr("axes")
        return None if value is None else [int(a) for a in value]
    return [int(a) for a in node.static(index, "axes")] if node.has_input(index) else None


def _build_squeeze(node: _Node) -> _Op:
    axes = _axes(node, 1)

    def run(xs: list[torch.Tensor | None], params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = _need(xs[0])
        if axes is None:
            return x.squeeze()
        return x.squeeze(tuple(a % x.ndim for a in axes))

    return _Op(run)


def _build_unsqueeze(node: _Node) -> _Op:
    axes = _axes(node, 1)
    if axes is None:
        raise node.unsupported("has no axes")

    def run(xs: list[torch.Tensor | None], params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = _need(xs[0])
        rank = x.ndim + len(axes)
        for axis in sorted(a % rank for a in axes):
            x = x.unsqueeze(axis)
        return x

    return _Op(run)


def _build_reduce_mean(node: _Node) -> _Op:
    axes = _axes(node, 1)
    keep = bool(node.attr("keepdims", 1))
    if axes is None and node.attr("noop_with_empty_axes", 0):
        return _Op(lambda xs, p: _need(xs[0]))

    def run(xs: list[torch.Tensor | None], params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = _need(xs[0])
        dims = tuple(range(x.ndim)) if axes is None else tuple(a % x.ndim for a in axes)
        return x.mean(dim=dims, keepdim=keep)

    return _Op(run)


def _build_dropout(node: _Node) -> _Op:
    if node.opset >= 12 and node.has_input(2):
        training = node.static(2, "training_mode")
        if _scalar(training):
            raise node.unsupported("is in training mode")
    return _Op(lambda xs, p: _need(xs[0]))


_BUILDERS: dict[str, Callable[[_Node], _Op]] = {
    "Conv": _build_conv,
    "MaxPool": _build_max_pool,
    "AveragePool": _build_average_pool,
    "GlobalAveragePool": _build_global_average_pool,
    "GlobalMaxPool": _build_global_max_pool,
    "BatchNormalization": _build_batch_norm,
    "Relu": _elementwise("relu"),
    "Sigmoid": _elementwise("sigmoid"),
    "Tanh": _elementwise("tanh"),
    "Exp": _elementwise("exp"),
    "LeakyRelu": _build_leaky_relu,
    "PRelu": _binary(_prelu),
    "Clip": _build_clip,
    "Add": _binary("add"),
    "Sub": _binary("sub"),
    "Mul": _binary("mul"),
    "Div": _binary(_div),
    "MatMul": _binary("matmul"),
    "Gemm": _build_gemm,
    "Concat": _build_concat,
    "Reshape": _build_reshape,
    "Flatten": _build_flatten,
    "Transpose": _build_transpose,
    "Squeeze": _build_squeeze,
    "Unsqueeze": _build_unsqueeze,
    "Pad": _build_pad,
    "Softmax": _build_softmax,
    "ReduceMean": _build_reduce_mean,
    "Cast": _build_cast,
    "Identity": _elementwise(lambda x: x),
    "Dropout": _build_dropout,
}

SUPPORTED_OPS = frozenset({*_BUILDERS, "Constant"})
"""The ONNX ops (default domain) the interpreter runs; any other makes the model
BackendUnavailable."""


# -- the program -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    kernel: Kernel
    params: tuple[torch.Tensor, ...]
    inputs: tuple[str, ...]  # "" for an absent optional input
    output: str
    frees: tuple[str, ...]  # values whose last use is this step


@dataclass
class _Program:
    """An ONNX graph as steps over torch tensors, ready to run on one device."""

    input_name: str
    input_shape: tuple[int | None, ...]  # None for a symbolic axis (the batch)
    outputs: tuple[str, ...]
    constants: dict[str, torch.Tensor]
    steps: list[_Step] = field(default_factory=list)

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        env = dict(self.constants)
        env[self.input_name] = x
        for step in self.steps:
            args = [env[name] if name else None for name in step.inputs]
            env[step.output] = step.kernel(args, step.params)
            for name in step.frees:
                del env[name]
        return [env[name] for name in self.outputs]


def _attributes(proto: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values (strings decoded, tensors as NumPy)."""
    import onnx
    from onnx import numpy_helper

    attrs: dict[str, Any] = {}
    for attr in proto.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        attrs[attr.name] = value
    return attrs


def _constant_value(node: _Node) -> np.ndarray:
    """The value of a ``Constant`` node."""
    for name in ("value", "value_float", "value_floats"):
        if name in node.attrs:
            return np.asarray(node.attrs[name], np.float32 if name != "value" else None)
    for name in ("value_int", "value_ints"):
        if name in node.attrs:
            return np.asarray(node.attrs[name], np.int64)
    raise node.unsupported(f"has none of the supported value attributes ({sorted(node.attrs)})")


def _to_tensor(value: np.ndarray, device: torch.device, float_dtype: torch.dtype) -> torch.Tensor:
    """A constant on the device; floating ones in the compute dtype."""
    tensor = torch.from_numpy(np.array(value))  # a copy: ONNX-owned buffers may be read-only
    if tensor.is_floating_point():
        tensor = tensor.to(float_dtype)
    return tensor.to(device)


def _fold(op: _Op, node: _Node) -> np.ndarray:
    """Runs ``op`` at load, on the CPU, over its all-constant inputs."""
    inputs = [
        torch.from_numpy(np.array(node.consts[name])) if name else None for name in node.proto.input
    ]
    params = tuple(torch.from_numpy(p) for p in op.params)
    with torch.inference_mode():
        return op.kernel(inputs, params).numpy().copy()


def _opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise BackendUnavailable("torch backend: the model imports no default-domain opset")


def _input_shape(value_info: onnx.ValueInfoProto) -> tuple[int | None, ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in dims)


def _last_uses(
    steps: Sequence[tuple[_Op, onnx.NodeProto]], keep: set[str]
) -> list[tuple[str, ...]]:
    """For each step, the inputs no later step reads and that are not kept (graph outputs,
    constants)."""
    last: dict[str, int] = {}
    for index, (_, proto) in enumerate(steps):
        for name in proto.input:
            if name and name not in keep:
                last[name] = index
    frees: list[list[str]] = [[] for _ in steps]
    for name, index in last.items():
        frees[index].append(name)
    return [tuple(names) for names in frees]


def _fuse_conv_batch_norm(
    nodes: Sequence[onnx.NodeProto], consts: dict[str, np.ndarray], keep: set[str]
) -> list[onnx.NodeProto]:
    """``nodes`` with each Conv -> BatchNormalization pair made one Conv, when the Conv's
    weight and bias and the BN's statistics are constants and only the BN reads the Conv.

    With f = scale / sqrt(var + eps): BN(conv(x, W) + b) = conv(x, W * f) + (b - mean) * f
    + beta. That saves a full pass over the activation per pair (14 in the mini-Xception);
    ONNX Runtime fuses the same way. The folded weights go into ``consts``."""
    readers = Counter(name for node in nodes for name in node.input if name)
    convs = {node.output[0]: index for index, node in enumerate(nodes) if node.op_type == "Conv"}
    result: list[onnx.NodeProto | None] = list(nodes)
    for index, bn in enumerate(nodes):
        at = convs.get(bn.input[0]) if bn.op_type == "BatchNormalization" else None
        if at is None or readers[bn.input[0]] != 1 or bn.input[0] in keep:
            continue
        fused = _fused_conv(nodes[at], bn, consts)
        if fused is not None:
            result[at], result[index] = fused, None  # the Conv's place keeps the order valid
    return [node for node in result if node is not None]


def _fused_conv(
    conv: onnx.NodeProto, bn: onnx.NodeProto, consts: dict[str, np.ndarray]
) -> onnx.NodeProto | None:
    """The Conv computing ``bn(conv(x))``, or None when the pair cannot be fused."""
    import onnx

    attrs = _attributes(bn)
    stats = [consts.get(name) for name in bn.input[1:5]]
    weight = consts.get(conv.input[1])
    has_bias = len(conv.input) > 2 and bool(conv.input[2])
    bias = consts.get(conv.input[2]) if has_bias else np.zeros(1, np.float32)
    if attrs.get("training_mode", 0) or any(o for o in bn.output[1:]) or bn.domain:
        return None
    if weight is None or bias is None or len(stats) != 4 or any(s is None for s in stats):
        return None
    scale, beta, mean, var = (np.asarray(s, np.float64) for s in stats)
    factor = scale / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
    shape = (-1,) + (1,) * (weight.ndim - 1)
    fused_weight, fused_bias = f"{bn.output[0]}/fused_weight", f"{bn.output[0]}/fused_bias"
    consts[fused_weight] = (weight * factor.reshape(shape)).astype(weight.dtype)
    consts[fused_bias] = ((bias - mean) * factor + beta).astype(weight.dtype)
    node = onnx.NodeProto()
    node.CopyFrom(conv)
    node.name = f"{conv.name}+{bn.name}"
    del node.input[:], node.output[:]
    node.input.extend([conv.input[0], fused_weight, fused_bias])
    node.output.append(bn.output[0])
    return node


def _build_program(model: onnx.ModelProto, device: torch.device, half: bool) -> _Program:
    """Turns ``model`` into a program: fuses Conv + BatchNormalization, folds what is
    constant, checks every op is known."""
    from onnx import numpy_helper

    graph, opset = model.graph, _opset(model)
    consts: dict[str, np.ndarray] = {
        init.name: numpy_helper.to_array(init) for init in graph.initializer
    }
    inputs = [value for value in graph.input if value.name not in consts]
    if len(inputs) != 1:
        raise BackendUnavailable(f"torch backend: the model has {len(inputs)} inputs, not one")
    used = {name for proto in graph.node for name in proto.input} | {o.name for o in graph.output}
    nodes = _fuse_conv_batch_norm(graph.node, consts, {o.name for o in graph.output})
    known = {inputs[0].name, *consts}
    steps: list[tuple[_Op, onnx.NodeProto]] = []
    for proto in nodes:
        node = _Node(proto, _attributes(proto), consts, opset, half)
        _check_node(node, known, used)
        known.update(o for o in proto.output if o)
        if node.op == "Constant":
            consts[proto.output[0]] = _constant_value(node)
            continue
        op = _BUILDERS[node.op](node)
        if all(name in consts for name in proto.input if name) and any(proto.input):
            consts[proto.output[0]] = _fold(op, node)
        else:
            steps.append((op, proto))

    outputs = tuple(o.name for o in graph.output)
    missing = [name for name in outputs if name not in known]
    if missing:
        raise BackendUnavailable(f"torch backend: graph outputs {missing} are never computed")
    float_dtype = torch.float16 if half else torch.float32
    needed = {name for _, proto in steps for name in proto.input} | set(outputs)
    program = _Program(
        input_name=inputs[0].name,
        input_shape=_input_shape(inputs[0]),
        outputs=outputs,
        constants={
            name: _to_tensor(value, device, float_dtype)
            for name, value in consts.items()
            if name in needed
        },
    )
    for (op, proto), frees in zip(
        steps, _last_uses(steps, set(consts) | set(outputs)), strict=True
    ):
        params = tuple(_to_tensor(p, device, float_dtype) for p in op.params)
        program.steps.append(_Step(op.kernel, params, tuple(proto.input), proto.output[0], frees))
    return program


def _check_node(node: _Node, known: set[str], used: set[str]) -> None:
    """Raises BackendUnavailable unless the interpreter can run ``node`` where it stands."""
    if node.proto.domain not in ("", "ai.onnx"):
        raise node.unsupported(f"is in domain {node.proto.domain!r}; only the default is supported")
    if node.op not in SUPPORTED_OPS:
        raise BackendUnavailable(
            f"torch backend does not support ONNX op {node.op!r} "
            f"(node {node.proto.name or '(unnamed)'!r})"
        )
    absent = [name for name in node.proto.input if name and name not in known]
    if absent:
        raise BackendUnavailable(
            f"torch backend: node {node.proto.name!r} reads {absent} before they are computed "
            "(the graph is not topologically sorted)"
        )
    if not node.proto.output or not node.proto.output[0]:
        raise node.unsupported("has no first output")
    extra = [name for name in node.proto.output[1:] if name and name in used]
    if extra:
        raise node.unsupported(f"has further outputs in use ({extra}); only the first is supported")


# -- the backend -------------------------------------------------------------------------------


def _device(device: str) -> torch.device:
    """``device`` as a torch device this process can use, else BackendUnavailable."""
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}") from exc
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    if torch.version.cuda is None:
        raise BackendUnavailable(f"torch {torch.__version__} is a CPU-only build (no CUDA)")
    if not torch.cuda.is_available():
        raise BackendUnavailable("torch sees no CUDA device (no GPU, or no driver)")
    index = resolved.index or 0
    if index >= torch.cuda.device_count():
        raise BackendUnavailable(
            f"torch sees {torch.cuda.device_count()} CUDA device(s), so {device!r} does not exist"
        )
    return resolved


def _load_onnx(onnx_path: Path) -> onnx.ModelProto:
    try:
        import onnx
    except ImportError as exc:
        raise BackendUnavailable(
            "onnx is not installed (the torch backend reads graphs with it)"
        ) from exc
    return onnx.load(str(onnx_path))


class TorchBackend:
    """An ONNX model interpreted with torch ops on one device, optionally in FP16.

    Thread-safe: ``run`` keeps no state between calls, so the batcher's executor threads may
    share one instance.
    """

    def __init__(self, onnx_path: Path, device: str = "cuda", half: bool = False) -> None:
        """Loads ``onnx_path`` and builds its program on ``device`` ("cuda", "cuda:N" or
        "cpu"). ``half`` runs every floating op in float16 (outputs are still float32).
        Raises BackendUnavailable when torch or the device is missing, or the graph uses an
        op the interpreter lacks."""
        if not _HAVE_TORCH:
            raise BackendUnavailable("torch is not installed (the 'torch' extra)")
        self.device = _device(device)
        self.half = half
        self.name = "torch-cuda" if self.device.type == "cuda" else "torch-cpu"
        if self.device.type == "cuda" and not half:
            # torch runs float32 convolutions as TF32 on Ampere and later by default: a
            # 10-bit mantissa. On an H200 that put the emotion model 2e-3 and BlazeFace 0.1
            # (in box pixels) away from ONNX Runtime. Float32 here means float32; the fast
            # path is half=True (or TensorRT's FP16), chosen knowingly. Process-wide: torch
            # keeps these flags per process, and this process runs only our models.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self._program = _build_program(_load_onnx(onnx_path), self.device, half)
        # Outputs that are constants or the input itself would hand out our own (or the
        # caller's) buffer on the CPU; only those are copied.
        self._aliased = {
            name
            for name in self._program.outputs
            if name in self._program.constants or name == self._program.input_name
        }

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """The graph input's shape; None for symbolic axes (the batch)."""
        return self._program.input_shape

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs (float32, the graph's output order) for ``batch``, float32 (N, ...)."""
        self._check(batch)
        with torch.inference_mode():
            outputs = self._program(self._upload(batch))
            return [
                self._download(out, name in self._aliased)
                for out, name in zip(outputs, self._program.outputs, strict=True)
            ]

    def _check(self, batch: np.ndarray) -> None:
        expected = self._program.input_shape
        fits = batch.ndim == len(expected) and all(
            want is None or want == got for want, got in zip(expected, batch.shape, strict=True)
        )
        # A graph input without a declared shape takes anything; torch will complain.
        if (expected and not fits) or batch.ndim == 0 or batch.shape[0] < 1:
            shape = tuple("N" if d is None else d for d in expected)
            raise ValueError(f"batch has shape {batch.shape}; the model takes {shape}, N >= 1")

    def _upload(self, batch: np.ndarray) -> torch.Tensor:
        array = np.ascontiguousarray(batch, np.float32)
        if not array.flags.writeable:  # torch.from_numpy warns on read-only arrays
            array = array.copy()
        host = torch.from_numpy(array)
        if self.device.type == "cuda":
            # Pinned memory lets the copy run asynchronously; torch's caching host allocator
            # reuses pinned blocks and keeps each one until its copy has finished.
            host = host.pin_memory().to(self.device, non_blocking=True)
        return host.half() if self.half else host

    def _download(self, out: torch.Tensor, aliased: bool) -> np.ndarray:
        array = out.detach().to("cpu", torch.float32).numpy()
        return array.copy() if aliased and self.device.type == "cpu" and not self.half else array

"""Slow, plain NumPy forward pass of a Keras HDF5 model; the tests compare the ONNX graph to it.

Written for clarity, not speed, and independently of :mod:`rtserver.models.emotion_h5`: it
reads the file again itself and works in float64, channels-last (NHWC) as Keras does. Each
convolution is a sum over kernel offsets of shifted input slices; "same" padding is applied
with ``np.pad`` using TensorFlow's rule (the odd pixel goes at the bottom/right), max pooling
pads with -inf so padding never wins, and BatchNormalization uses the epsilon stored in the
layer's config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "same": ceil(size / stride) outputs; pad (before, after), the larger part after."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad(
    x: Array, kernel: tuple[int, int], stride: tuple[int, int], padding: str, value: float
) -> Array:
    """``x`` (N, H, W, C) padded spatially as Keras ``padding`` requires, with ``value``."""
    if padding == "valid":
        return x
    if padding != "same":
        raise ValueError(f"unsupported padding {padding!r}")
    rows = _same_pad(x.shape[1], kernel[0], stride[0])
    cols = _same_pad(x.shape[2], kernel[1], stride[1])
    return np.pad(x, ((0, 0), rows, cols, (0, 0)), constant_values=value)


def _windows(
    x: Array, kernel: tuple[int, int], stride: tuple[int, int]
) -> list[tuple[int, int, Array]]:
    """For each kernel offset (i, j), the (N, out_h, out_w, C) input slice it multiplies."""
    out_h = (x.shape[1] - kernel[0]) // stride[0] + 1
    out_w = (x.shape[2] - kernel[1]) // stride[1] + 1
    return [
        (
            i,
            j,
            x[:, i : i + stride[0] * out_h : stride[0], j : j + stride[1] * out_w : stride[1], :],
        )
        for i in range(kernel[0])
        for j in range(kernel[1])
    ]


def conv2d(x: Array, kernel: Array, stride: tuple[int, int], padding: str) -> Array:
    """Keras Conv2D without bias: ``kernel`` is (kh, kw, in, out), ``x`` (N, H, W, in)."""
    kh, kw = kernel.shape[:2]
    x = _pad(x, (kh, kw), stride, padding, 0.0)
    out: Array | None = None
    for i, j, patch in _windows(x, (kh, kw), stride):
        term = patch @ kernel[i, j]  # (N, oh, ow, in) @ (in, out)
        out = term if out is None else out + term
    assert out is not None
    return out


def depthwise_conv2d(x: Array, kernel: Array, stride: tuple[int, int], padding: str) -> Array:
    """Keras depthwise conv: ``kernel`` (kh, kw, in, m); output channel c * m + k."""
    kh, kw, channels, multiplier = kernel.shape
    x = _pad(x, (kh, kw), stride, padding, 0.0)
    out: Array | None = None
    for i, j, patch in _windows(x, (kh, kw), stride):
        term = patch[..., :, None] * kernel[i, j]  # (N, oh, ow, in, m)
        out = term if out is None else out + term
    assert out is not None
    return out.reshape(*out.shape[:3], channels * multiplier)


def max_pool(x: Array, pool: tuple[int, int], stride: tuple[int, int], padding: str) -> Array:
    """Keras MaxPooling2D; padded cells are -inf, so they never win."""
    x = _pad(x, pool, stride, padding, -np.inf)
    return np.maximum.reduce([patch for _, _, patch in _windows(x, pool, stride)])


def batch_norm(x: Array, weights: dict[str, Array], config: dict[str, Any]) -> Array:
    """Inference BatchNormalization over the last axis with the layer's epsilon."""
    mean, var = weights["moving_mean"], weights["moving_variance"]
    gamma = weights.get("gamma", np.ones_like(mean))
    beta = weights.get("beta", np.zeros_like(mean))
    return (x - mean) / np.sqrt(var + float(config["epsilon"])) * gamma + beta


def activation(x: Array, name: str) -> Array:
    """Keras activation by name; softmax is over the last axis."""
    if name == "linear":
        return x
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise ValueError(f"unsupported activation {name!r}")


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _read(h5_path: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Array]], str]:
    """The layer configs, each layer's weights by short name, and the output layer name."""
    with h5py.File(h5_path, "r") as f:
        config = json.loads(_text(f.attrs["model_config"]))["config"]
        weights: dict[str, dict[str, Array]] = {}
        for layer in config["layers"]:
            weights[layer["name"]] = {}
            group = f["model_weights"].get(layer["name"])
            for raw in [] if group is None else group.attrs.get("weight_names", []):
                path = _text(raw)  # e.g. "conv2d_7_1/bias:0", stored under the layer's group
                short = path.split("/")[-1].split(":")[0]
                weights[layer["name"]][short] = np.asarray(group[path], dtype=np.float64)
    return config["layers"], weights, config["output_layers"][0][0]


def _pair(value: list[int]) -> tuple[int, int]:
    return int(value[0]), int(value[1])


def _layer(x: list[Array], kind: str, config: dict[str, Any], w: dict[str, Array]) -> Array:
    """One layer's output from its inputs ``x`` (NHWC, float64)."""
    # Keras pooling layers take strides=None to mean "the pool size".
    stride = _pair(config.get("strides") or config.get("pool_size") or [1, 1])
    if kind == "Conv2D":
        y = conv2d(x[0], w["kernel"], stride, config["padding"])
        y = y + w["bias"] if config["use_bias"] else y
        return activation(y, config["activation"])
    if kind == "SeparableConv2D":
        y = depthwise_conv2d(x[0], w["depthwise_kernel"], stride, config["padding"])
        y = conv2d(y, w["pointwise_kernel"], (1, 1), "valid")
        y = y + w["bias"] if config["use_bias"] else y
        return activation(y, config["activation"])
    if kind == "BatchNormalization":
        return batch_norm(x[0], w, config)
    if kind == "Activation":
        return activation(x[0], config["activation"])
    if kind == "MaxPooling2D":
        return max_pool(x[0], _pair(config["pool_size"]), stride, config["padding"])
    if kind == "Add":
        total = x[0]
        for term in x[1:]:
            total = total + term
        return total
    if kind == "GlobalAveragePooling2D":
        return x[0].mean(axis=(1, 2))
    raise ValueError(f"unsupported Keras layer type {kind!r}")


def keras_forward(h5_path: Path, faces_nhwc: npt.ArrayLike) -> Array:
    """The Keras model's output for ``faces_nhwc`` (N, H, W, C), computed in float64.

    For fer's emotion model: (N, 64, 64, 1) grey in [-1, 1] -> (N, 7) softmax probabilities.
    """
    layers, weights, output = _read(h5_path)
    values: dict[str, Array] = {}
    for layer in layers:
        if layer["class_name"] == "InputLayer":
            values[layer["name"]] = np.asarray(faces_nhwc, dtype=np.float64)
            continue
        inputs = [values[node[0]] for node in layer["inbound_nodes"][0]]
        values[layer["name"]] = _layer(
            inputs, layer["class_name"], layer["config"], weights[layer["name"]]
        )
    return values[output]

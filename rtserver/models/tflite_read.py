"""Reading a TFLite flatbuffer with the ``tflite`` schema package (no TensorFlow): operator
names, tensor shapes, and constant buffers, dense even where the file stores them in TFLite's
sparse format."""

from __future__ import annotations

from typing import Any

import numpy as np
import tflite

_NUMPY_TYPES: dict[int, np.dtype[Any]] = {
    tflite.TensorType.FLOAT32: np.dtype("<f4"),
    tflite.TensorType.FLOAT16: np.dtype("<f2"),
    tflite.TensorType.INT32: np.dtype("<i4"),
    tflite.TensorType.INT64: np.dtype("<i8"),
}


def op_name(model: Any, op: Any) -> str:
    """The builtin operator name (``CONV_2D``...) of ``op``; custom operators are refused."""
    code = model.OperatorCodes(op.OpcodeIndex())
    if code.CustomCode() is not None:
        raise ValueError(f"custom operator {code.CustomCode().decode()!r} is not supported")
    # Files written before the schema grew past 127 builtins keep the code in the deprecated
    # int8 field only; newer ones fill both.
    return str(tflite.opcode2name(max(code.BuiltinCode(), code.DeprecatedBuiltinCode())))


def shape_of(tensor: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()


def buffer_array(model: Any, data: bytes, tensor: Any) -> np.ndarray | None:
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
        return _sparse_to_dense(values, tensor.Sparsity(), shape_of(tensor), tensor.Name().decode())
    return values.reshape(shape_of(tensor)).copy()


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

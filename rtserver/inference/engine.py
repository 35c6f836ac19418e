"""The inference engine: one ``run(batch) -> outputs`` interface over several backends.

A model is an ONNX file with one float32 input whose first axis is the batch. Each backend
runs that file its own way:

- ``onnxruntime-cpu``: ONNX Runtime on the CPU, the default and the reference;
- ``tensorrt``: a serialized FP16 engine built from the ONNX (``engine_tensorrt``);
- ``onnxruntime-cuda``: ONNX Runtime's CUDA execution provider;
- ``torch-cuda``: the ONNX graph interpreted with torch on a CUDA device (``engine_torch``);
  only when asked for: its per-op Python dispatch costs more server CPU than ONNX Runtime
  on the CPU for models this small (see ``Config.engine``).

``load_engine`` tries the backends in the configured order and logs one line naming the one
chosen and, for each one passed over, why.

A model of several named inputs of other dtypes (the sentence encoder's int64 token ids and
mask) runs on ONNX Runtime only, through ``OrtBackend.run_inputs``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

BACKENDS = ("tensorrt", "onnxruntime-cuda", "torch-cuda", "onnxruntime-cpu")
DEFAULT_ORDER = ("onnxruntime-cpu",)


class BackendUnavailable(RuntimeError):
    """This backend cannot run here; the message says why (missing package, no GPU...)."""


class Backend(Protocol):
    """One way of running one ONNX model."""

    name: str  # one of BACKENDS

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs (float32 NumPy arrays, in the ONNX graph's output order) for ``batch``,
        a float32 array whose first axis is the batch (N >= 1)."""
        ...


class OrtBackend:
    """ONNX Runtime, on the CPU or through its CUDA execution provider."""

    def __init__(self, onnx_path: Path, device: str = "cpu", threads: int = 1) -> None:
        """``threads`` is the intra-op thread count on the CPU. One thread is the default:
        the server runs several analysis threads already, and ORT's own pool on top of them
        only adds hand-off latency."""
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable(
                    "onnxruntime has no CUDAExecutionProvider (the onnxruntime-gpu build "
                    f"is not installed; providers: {', '.join(ort.get_available_providers())})"
                )
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif device != "cpu":
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        if device == "cuda" and "CUDAExecutionProvider" not in self.session.get_providers():
            raise BackendUnavailable("onnxruntime could not create a CUDA session (no device?)")
        self.name = f"onnxruntime-{device}"
        self._input = self.session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        outputs = self.session.run(None, {self._input: np.ascontiguousarray(batch, np.float32)})
        return [np.asarray(out, np.float32) for out in outputs]

    def run_inputs(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs (NumPy arrays in the graph's output order, of the graph's dtypes) for a
        model of several named inputs, each fed as it is (its dtype must be the graph's)."""
        return [np.asarray(out) for out in self.session.run(None, dict(inputs))]


@dataclass(frozen=True)
class EngineOptions:
    """How to choose and build a backend."""

    order: Sequence[str] = DEFAULT_ORDER  # backends to try, best first
    cache_dir: Path | None = None  # where TensorRT keeps its built engines
    cpu_threads: int = 1  # ONNX Runtime intra-op threads on the CPU
    max_batch: int = 256  # largest batch a GPU engine is built for


def make_backend(name: str, onnx_path: Path, options: EngineOptions) -> Backend:
    """Builds backend ``name`` for ``onnx_path``; raises BackendUnavailable with the reason."""
    if name == "onnxruntime-cpu":
        return OrtBackend(onnx_path, "cpu", options.cpu_threads)
    if name == "onnxruntime-cuda":
        return OrtBackend(onnx_path, "cuda")
    if name == "torch-cuda":
        from rtserver.inference.engine_torch import TorchBackend

        return TorchBackend(onnx_path, device="cuda")
    if name == "tensorrt":
        from rtserver.inference.engine_tensorrt import TensorRTBackend

        cache = options.cache_dir or onnx_path.parent / "trt-cache"
        return TensorRTBackend(onnx_path, cache, max_batch=options.max_batch)
    raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


def load_engine(onnx_path: Path, options: EngineOptions | None = None) -> Backend:
    """The first backend in ``options.order`` that works here, with one log line saying
    which was chosen and why each earlier one was not. Raises BackendUnavailable when none
    works."""
    options = options or EngineOptions()
    passed_over: list[str] = []
    for name in options.order:
        try:
            backend = make_backend(name, onnx_path, options)
        except (BackendUnavailable, ImportError) as exc:
            passed_over.append(f"{name}: {exc}")
            continue
        except ValueError:
            raise  # a misspelt backend name is a configuration error, not a fallback
        except Exception as exc:
            # An installed backend that fails to build (a driver error, a TensorRT parser
            # failure) must not stop the server while a later backend can run the model.
            log.warning("backend %s failed on %s", name, onnx_path.name, exc_info=True)
            passed_over.append(f"{name}: failed: {type(exc).__name__}: {exc}")
            continue
        why_not = "; ".join(passed_over) if passed_over else "first choice"
        log.info("model %s runs on %s (passed over: %s)", onnx_path.name, name, why_not)
        return backend
    raise BackendUnavailable(
        f"no backend can run {onnx_path.name}: " + "; ".join(passed_over or ["none configured"])
    )

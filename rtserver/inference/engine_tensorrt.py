"""The ``tensorrt`` backend: an FP16 TensorRT (10+) engine built from the ONNX file, cached.

Building an engine takes from seconds to minutes, and the result is only valid for one GPU
model and one TensorRT version. So the serialized engine is kept in ``cache_dir`` under a
name that holds its whole key (see ``engine_file_name``): the model's stem, the first 12 hex
digits of the ONNX file's SHA-256, the GPU's name, the TensorRT version and the largest batch
the engine takes. Any change of key is a new file name, hence a rebuild; a cached file that no
longer deserializes is rebuilt too. Files are written atomically (temp file, then rename), so
processes sharing the cache never read half an engine. Old engines are never deleted: another
GPU model may share the directory.

Device memory and the CUDA stream come from torch, not cuda-python: torch is the GPU extra we
already ship (``torch-cuda``), its caching allocator makes per-batch output buffers cheap, and
its pinned host memory gives asynchronous uploads, where cuda-python would be one more
dependency with hand-written malloc/free and error checks. So this backend needs both
``tensorrt`` and ``torch`` with CUDA.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rtserver.files import sha256_of, write_atomically
from rtserver.inference.engine import BackendUnavailable

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

OPT_BATCH = 64  # the batch TensorRT tunes its kernels for: the batcher's usual size
WORKSPACE_BYTES = 1 << 30  # scratch memory the builder's tactics may use, bytes


# -- the cache key: pure functions, tested without TensorRT ------------------------------------


def slug(text: str) -> str:
    """``text`` lowercased, each run of characters other than [a-z0-9.] made one "-" (no
    leading or trailing "-"): safe in a file name on any OS. "NVIDIA H100 80GB HBM3" gives
    "nvidia-h100-80gb-hbm3"."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "unknown"


def engine_file_name(
    model_stem: str, onnx_sha256: str, gpu_name: str, trt_version: str, max_batch: int
) -> str:
    """The cache file name of an engine, holding its whole key:
    ``{model-stem}-{sha12}-{gpu-slug}-trt{version}-b{max_batch}.engine``.

    ``max_batch`` is part of the key because it is baked into the engine's optimization
    profile: an engine built for 256 cannot serve a configuration that asks for 512."""
    if len(onnx_sha256) < 12:
        raise ValueError(f"onnx_sha256 must be a hex digest, got {onnx_sha256!r}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    return (
        f"{slug(model_stem)}-{onnx_sha256[:12].lower()}-{slug(gpu_name)}"
        f"-trt{slug(trt_version)}-b{max_batch}.engine"
    )


def read_cached(path: Path) -> bytes | None:
    """The cached engine's bytes, or None when there is none (or it is empty)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return data or None


# -- the backend -------------------------------------------------------------------------------


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailable("tensorrt is not installed") from exc
    return tensorrt


def _cuda_device() -> torch.device:
    """The CUDA device torch would use, else BackendUnavailable saying why there is none."""
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailable(
            "the tensorrt backend needs torch (the 'torch' extra) for CUDA memory and streams"
        ) from exc
    if torch.version.cuda is None:
        raise BackendUnavailable(f"torch {torch.__version__} is a CPU-only build (no CUDA)")
    if not torch.cuda.is_available():
        raise BackendUnavailable("no CUDA device (torch sees no GPU, or no driver)")
    return torch.device("cuda", torch.cuda.current_device())


def _output_names(onnx_path: Path) -> list[str]:
    """The ONNX graph's outputs, in order: ``run`` returns them in this order, whatever order
    the engine lists its tensors in."""
    try:
        import onnx
    except ImportError as exc:
        raise BackendUnavailable("onnx is not installed (needed to read the output order)") from exc
    model = onnx.load(str(onnx_path), load_external_data=False)
    return [output.name for output in model.graph.output]


def _make_logger(trt: Any) -> Any:
    """A TensorRT logger that writes to this module's logger rather than to stderr."""
    levels = {
        trt.ILogger.Severity.INTERNAL_ERROR: logging.ERROR,
        trt.ILogger.Severity.ERROR: logging.ERROR,
        trt.ILogger.Severity.WARNING: logging.WARNING,
        trt.ILogger.Severity.INFO: logging.DEBUG,  # the builder is chatty at INFO
    }

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            level = levels.get(severity)  # VERBOSE is dropped
            if level is not None:
                log.log(level, "tensorrt: %s", msg)

    return _Logger()


def _build_engine(trt: Any, logger: Any, onnx_path: Path, max_batch: int) -> bytes:
    """Parses ``onnx_path`` and builds a serialized FP16 engine whose one input takes batches
    of 1 to ``max_batch`` (tuned for OPT_BATCH). Raises BackendUnavailable on failure."""
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailable(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    if network.num_inputs != 1:
        raise BackendUnavailable(f"{onnx_path.name} has {network.num_inputs} inputs, not one")
    tensor = network.get_input(0)
    shape = tuple(tensor.shape)
    if shape[0] != -1 or any(d < 0 for d in shape[1:]):
        raise BackendUnavailable(
            f"{onnx_path.name}: input shape {shape} must have a dynamic batch axis and fixed "
            "other axes"
        )
    rest = shape[1:]
    profile = builder.create_optimization_profile()
    profile.set_shape(
        tensor.name, (1, *rest), (min(OPT_BATCH, max_batch), *rest), (max_batch, *rest)
    )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.set_flag(trt.BuilderFlag.FP16)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailable(f"TensorRT failed to build an engine for {onnx_path.name}")
    return bytes(serialized)


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    import torch

    return torch.from_numpy(np.empty(0, trt.nptype(dtype))).dtype


class TensorRTBackend:
    """An ONNX model as an FP16 TensorRT engine on the current CUDA device.

    Thread-safe: an execution context holds per-call state (shapes, addresses), so calls
    are serialized by a lock.
    """

    name = "tensorrt"

    def __init__(self, onnx_path: Path, cache_dir: Path, max_batch: int = 256) -> None:
        """Loads the engine for ``onnx_path`` from ``cache_dir``, building and caching it
        first when there is none for this model, GPU, TensorRT version and ``max_batch``.
        Raises BackendUnavailable when tensorrt, torch or a CUDA device is missing, or the
        model does not build."""
        trt = _import_tensorrt()
        self.device = _cuda_device()  # says why when torch or the GPU is missing
        import torch

        self._trt = trt
        self._logger = _make_logger(trt)  # TensorRT keeps a raw pointer: keep it alive
        self.engine_path = cache_dir / engine_file_name(
            onnx_path.stem,
            sha256_of(onnx_path),
            torch.cuda.get_device_name(self.device),
            trt.__version__,
            max_batch,
        )
        with torch.cuda.device(self.device):
            self._engine = self._load_engine(onnx_path, max_batch)
            self._context = self._engine.create_execution_context()
            self._stream = torch.cuda.Stream(self.device)
        if self._context is None:
            raise BackendUnavailable("TensorRT could not create an execution context")
        self._bind_tensors(onnx_path)
        self._lock = threading.Lock()

    def _load_engine(self, onnx_path: Path, max_batch: int) -> Any:
        runtime = self._trt.Runtime(self._logger)
        self._runtime = runtime  # engines must not outlive their runtime
        data = read_cached(self.engine_path)
        engine = runtime.deserialize_cuda_engine(data) if data is not None else None
        if engine is not None:
            log.info("TensorRT engine for %s loaded from %s", onnx_path.name, self.engine_path)
            return engine
        if data is not None:
            log.warning("cached TensorRT engine %s does not load; rebuilding", self.engine_path)
        log.info("building TensorRT engine for %s (minutes, once per key)", onnx_path.name)
        data = _build_engine(self._trt, self._logger, onnx_path, max_batch)
        write_atomically(self.engine_path, data)
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise BackendUnavailable(f"TensorRT cannot load the engine it built for {onnx_path}")
        log.info("TensorRT engine for %s cached at %s", onnx_path.name, self.engine_path)
        return engine

    def _bind_tensors(self, onnx_path: Path) -> None:
        """Finds the input, the outputs in the ONNX graph's order, and their dtypes."""
        trt, engine = self._trt, self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise BackendUnavailable(f"the engine has {len(inputs)} inputs, not one")
        self._input = inputs[0]
        self._outputs = _output_names(onnx_path)
        if set(self._outputs) != set(names) - {self._input}:
            raise BackendUnavailable(
                f"the engine's outputs {sorted(set(names) - {self._input})} are not the "
                f"ONNX graph's {self._outputs}"
            )
        self._dtypes = {n: _torch_dtype(trt, engine.get_tensor_dtype(n)) for n in names}
        min_shape, _, max_shape = engine.get_tensor_profile_shape(self._input, 0)
        self.input_shape: tuple[int, ...] = tuple(max_shape)[1:]  # per item, batch axis off
        self.max_batch = int(max_shape[0])
        if int(min_shape[0]) != 1:
            raise BackendUnavailable(f"the engine's smallest batch is {min_shape[0]}, not 1")

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs (float32, the ONNX graph's output order) for ``batch``, float32 (N, ...).
        Batches above ``max_batch`` run in chunks of ``max_batch``."""
        import torch

        if batch.ndim != 1 + len(self.input_shape) or batch.shape[1:] != self.input_shape:
            raise ValueError(
                f"batch has shape {batch.shape}; the engine takes (N, *{self.input_shape})"
            )
        if batch.shape[0] < 1:
            raise ValueError("batch is empty")
        array = np.ascontiguousarray(batch, np.float32)
        chunks = range(0, array.shape[0], self.max_batch)
        with self._lock, torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            parts = [self._run_chunk(array[i : i + self.max_batch]) for i in chunks]
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate(outputs) for outputs in zip(*parts, strict=True)]

    def _run_chunk(self, chunk: np.ndarray) -> list[np.ndarray]:
        """One engine call; runs on ``self._stream``, which the caller made current."""
        import torch

        if not chunk.flags.writeable:  # torch.from_numpy warns on read-only arrays
            chunk = chunk.copy()
        # Pinned memory makes the upload asynchronous; torch's caching host allocator keeps
        # the block until the copy on this stream is done.
        x = torch.from_numpy(chunk).pin_memory().to(self.device, non_blocking=True)
        x = x.to(self._dtypes[self._input])
        context = self._context
        if not context.set_input_shape(self._input, tuple(x.shape)):
            raise ValueError(f"TensorRT rejects input shape {tuple(x.shape)}")
        context.set_tensor_address(self._input, x.data_ptr())
        outputs = []
        for name in self._outputs:
            shape = tuple(context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
            context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        if not context.execute_async_v3(self._stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the tensorrt log lines)")
        # A blocking device-to-host copy on the current stream: it waits for the engine, and
        # `x` and the outputs stay referenced until it returns.
        return [out.float().cpu().numpy() for out in outputs]

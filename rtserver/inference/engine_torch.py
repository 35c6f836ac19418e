"""The ``torch-cuda`` backend: our ONNX graphs run with torch ops on one device, optionally
in FP16, through the interpreter of ``onnx_torch.py`` (which says why it is not onnx2torch).

``import torch`` is optional here: without it this module still imports, and ``TorchBackend``
raises ``BackendUnavailable`` when constructed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import onnx

from rtserver.inference.engine import BackendUnavailable
from rtserver.inference.onnx_torch import HAVE_TORCH, build_program

# torch is an optional extra; TorchBackend reports its absence at construction.
with contextlib.suppress(ImportError):
    import torch


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
    if (resolved.index or 0) >= torch.cuda.device_count():
        raise BackendUnavailable(
            f"torch sees {torch.cuda.device_count()} CUDA device(s), so {device!r} does not exist"
        )
    return resolved


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
        if not HAVE_TORCH:
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
        self._program = build_program(onnx.load(str(onnx_path)), self.device, half)

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """The graph input's shape; None for symbolic axes (the batch)."""
        return self._program.input_shape

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs (float32, the graph's output order) for ``batch``, float32 (N, ...)."""
        self._check(batch)
        with torch.inference_mode():
            return [self._download(out) for out in self._program(self._upload(batch))]

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

    def _download(self, out: torch.Tensor) -> np.ndarray:
        array = out.detach().to("cpu", torch.float32).numpy()
        # On the CPU in float32 that is no copy: an output that is a constant or the input
        # (through Identity) would hand out our buffer or the caller's. Outputs are small.
        return array.copy() if out.device.type == "cpu" and out.dtype == torch.float32 else array

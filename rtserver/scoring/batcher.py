"""The model batcher: face crops from every live session, run through the models in batches.

Sessions hand in (frame, face box) requests. The batcher gathers what arrives within
``max_wait_s`` (up to ``max_batch`` faces), crops all of them in ONE cropper call into the
batch tensor (one kernel launch on CUDA, one Cython call per frame on CPU), and runs every
model on that tensor. A request that finds ``max_pending`` faces already waiting is refused
at once (``None``) rather than queued: a late face result is worth nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from rtserver.kernels.crops import FaceCropper
from rtserver.metrics import Metrics

log = logging.getLogger(__name__)


class Model(Protocol):
    """A model over face crops: (N, S, S) float32 in [-1, 1] -> (N, K) float32."""

    name: str
    input_size: int  # S, pixels

    def run(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass
class _Request:
    plane: np.ndarray  # (H, W) uint8 luma view; `owner` keeps its buffer alive
    owner: object
    box: tuple[int, int, int, int]
    future: asyncio.Future[dict[str, np.ndarray]] = field(repr=False)


class ModelBatcher:
    """Batches face crops across sessions for ``models`` (all sharing one input size)."""

    def __init__(
        self,
        models: Sequence[Model],
        cropper: FaceCropper,
        executor: Executor,
        metrics: Metrics,
        max_batch: int = 64,
        max_wait_s: float = 0.01,
        max_pending: int = 256,
    ) -> None:
        sizes = {model.input_size for model in models}
        if len(sizes) != 1:
            raise ValueError(f"models must share one input size, got {sorted(sizes)}")
        self.models = list(models)
        self.input_size = sizes.pop()
        self.cropper = cropper
        self.executor = executor
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_pending = max_pending
        self._pending: list[_Request] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="model-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for request in self._pending:
            request.future.cancel()
        self._pending.clear()

    async def infer(
        self, plane: np.ndarray, owner: object, box: tuple[int, int, int, int]
    ) -> dict[str, np.ndarray] | None:
        """Each model's output row for the face ``box`` on ``plane``; None when overloaded."""
        if len(self._pending) >= self.max_pending:
            self.metrics.frames_skipped.inc(reason="batcher_full")
            return None
        future: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(plane, owner, box, future))
        self._arrived.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            # Give other sessions' faces a moment to join this batch.
            deadline = loop.time() + self.max_wait_s
            while len(self._pending) < self.max_batch and loop.time() < deadline:
                await asyncio.sleep(min(0.002, self.max_wait_s))
            batch, self._pending = (
                self._pending[: self.max_batch],
                self._pending[self.max_batch :],
            )
            try:
                outputs = await loop.run_in_executor(self.executor, self._infer, batch)
            except Exception as exc:
                log.exception("model batch of %d failed", len(batch))
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)
                continue
            for row, request in enumerate(batch):
                if not request.future.done():
                    request.future.set_result({name: out[row] for name, out in outputs.items()})

    def _infer(self, batch: list[_Request]) -> dict[str, np.ndarray]:
        """Runs in a worker thread: crop every face into one tensor, run every model on it."""
        started = time.thread_time()
        planes = [request.plane for request in batch]
        boxes = np.array([request.box for request in batch], np.float32)
        tensor = np.empty((len(batch), self.input_size, self.input_size), np.float32)
        self.cropper.crop(planes, boxes, np.arange(len(batch)), tensor)
        outputs = {model.name: model.run(tensor) for model in self.models}
        self.metrics.analysis_cpu.inc(time.thread_time() - started, path="models")
        self.metrics.model_batch.observe(len(batch))
        return outputs

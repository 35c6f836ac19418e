"""The model batcher: face crops from every live session, run through the models in batches.

As Triton's and DeepStream's dynamic batchers do, sessions put (frame, face box) requests
into ONE bounded queue. A batch runs as soon as ``max_batch`` requests are waiting, or when
the oldest has waited ``max_wait_s``. The batch's crops are cut in one cropper call into
the batch tensor (one kernel launch on CUDA, one Cython call per frame on CPU), every model
runs on that tensor in a worker thread, and each request's future gets its rows: results
return to each session in the order it asked.

Under overload a late face result is worth nothing, so nothing queues without bound: a
request that finds the queue full pushes out the OLDEST waiting request, and a request
older than ``max_age_s`` when its batch forms is dropped too. A dropped request resolves to
None, which its session counts and reports in its signal. The event loop only ever
appends to the queue and resolves futures; cropping and inference run in the executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
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
    session: str
    plane: np.ndarray  # (H, W) uint8 luma view; `owner` keeps its buffer alive
    owner: object
    box: tuple[int, int, int, int]
    enqueued_at: float  # event-loop time (s)
    future: asyncio.Future[dict[str, np.ndarray] | None] = field(repr=False)


class ModelBatcher:
    """Batches face crops across sessions for ``models`` (all sharing one input size)."""

    def __init__(
        self,
        models: Sequence[Model],
        cropper: FaceCropper,
        executor: Executor,
        metrics: Metrics,
        max_batch: int = 64,
        max_wait_s: float = 0.004,
        max_pending: int = 256,
        max_age_s: float = 0.5,
    ) -> None:
        sizes = {model.input_size for model in models}
        if len(sizes) != 1:
            raise ValueError(f"models must share one input size, got {sorted(sizes)}")
        if max_pending < 1 or max_batch < 1:
            raise ValueError("max_batch and max_pending must be at least 1")
        self.models = list(models)
        self.input_size = sizes.pop()
        self.cropper = cropper
        self.executor = executor
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_pending = max_pending
        self.max_age_s = max_age_s
        self._pending: deque[_Request] = deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def model_names(self) -> list[str]:
        return [model.name for model in self.models]

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
        self, session: str, plane: np.ndarray, owner: object, box: tuple[int, int, int, int]
    ) -> dict[str, np.ndarray] | None:
        """Each model's output row for the face ``box`` on ``plane``, or None when the
        request was dropped (overload or staleness; counted in ``crops_dropped``)."""
        loop = asyncio.get_running_loop()
        if len(self._pending) >= self.max_pending:
            self._drop(self._pending.popleft(), "overload")
        future: asyncio.Future[dict[str, np.ndarray] | None] = loop.create_future()
        self._pending.append(_Request(session, plane, owner, box, loop.time(), future))
        self._arrived.set()
        return await future

    def _drop(self, request: _Request, reason: str) -> None:
        self.metrics.crops_dropped.inc(reason=reason)
        if not request.future.done():
            request.future.set_result(None)

    async def _next_batch(self) -> list[_Request]:
        """Waits until the queue holds a full batch or its oldest request is due."""
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            due = self._pending[0].enqueued_at + self.max_wait_s
            if len(self._pending) >= self.max_batch or loop.time() >= due:
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), due - loop.time())
        now = loop.time()
        while self._pending and now - self._pending[0].enqueued_at > self.max_age_s:
            self._drop(self._pending.popleft(), "stale")
        count = min(self.max_batch, len(self._pending))
        return [self._pending.popleft() for _ in range(count)]

    async def _run(self) -> None:
        while True:
            # One batch per call, so that its requests (each holding a frame's luma plane)
            # are let go before the next wait: a loop variable would keep the last batch,
            # up to max_batch frames, alive for as long as the server stays idle.
            await self._serve(await self._next_batch())

    async def _serve(self, batch: list[_Request]) -> None:
        """Runs one batch and resolves each request's future with its output rows."""
        if not batch:
            return
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self.executor, self._infer, batch)
        except Exception as exc:
            log.exception("model batch of %d failed", len(batch))
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
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
        lap = time.thread_time()
        self.metrics.stage_cpu.inc(lap - started, stage="crop")
        outputs = {}
        for model in self.models:
            outputs[model.name] = model.run(tensor)
            now = time.thread_time()
            self.metrics.stage_cpu.inc(now - lap, stage=f"infer_{model.name}")
            lap = now
        self.metrics.analysis_cpu.inc(time.thread_time() - started, path="models")
        self.metrics.model_batch.observe(len(batch))
        return outputs

"""One speech-to-text queue for every live session of a process, served by a small pool.

A transcript must be complete, so nothing here is ever dropped: under load the queue grows
and its backlog (seconds of audio waiting or being decoded) is exported and read by
admission control, which refuses new sessions while it is over ``max_asr_backlog_s``.
CTranslate2 releases the GIL while it decodes, so the pool's threads run beside the event
loop and the analysis threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from rtserver.inference.asr import AsrSegment, SpeechRecognizer
from rtserver.kernels.audio import RATE
from rtserver.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass
class _Job:
    session: str
    audio: np.ndarray  # float32, 16 kHz
    prompt: str | None
    future: asyncio.Future[list[AsrSegment]]

    @property
    def seconds(self) -> float:
        return len(self.audio) / RATE


class AsrQueue:
    """Utterances from every session, transcribed in arrival order, ``max_batch`` at a time
    by each of ``workers`` decoders."""

    def __init__(
        self,
        recognizer: SpeechRecognizer,
        metrics: Metrics,
        workers: int = 1,
        max_batch: int = 1,
    ) -> None:
        self.recognizer = recognizer
        self.metrics = metrics
        self.workers = workers
        self.max_batch = max_batch
        self._jobs: deque[_Job] = deque()
        self._ready = asyncio.Event()
        self._in_progress_s = 0.0
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="asr")
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def backlog_s(self) -> float:
        """Seconds of audio queued or being decoded, over every session."""
        return self._in_progress_s + sum(job.seconds for job in self._jobs)

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._serve(), name=f"asr-{k}") for k in range(self.workers)
            ]

    async def stop(self) -> None:
        """Stops the decoders; utterances still queued fail with CancelledError."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        while self._jobs:
            self._jobs.popleft().future.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def submit(
        self, session: str, audio: np.ndarray, prompt: str | None
    ) -> asyncio.Future[list[AsrSegment]]:
        """Queues one utterance (float32 16 kHz) and returns what will hold its segments
        (times from the start of ``audio``)."""
        future: asyncio.Future[list[AsrSegment]] = asyncio.get_running_loop().create_future()
        self._jobs.append(_Job(session, audio, prompt, future))
        self._ready.set()
        self._export()
        return future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._jobs:
                self._ready.clear()
                await self._ready.wait()
            batch = [self._jobs.popleft() for _ in range(min(self.max_batch, len(self._jobs)))]
            # A session that gave up waiting (its final could not wait longer) cancelled its
            # futures: their audio is not decoded any more.
            batch = [job for job in batch if not job.future.done()]
            if not batch:
                self._export()
                continue
            seconds = sum(job.seconds for job in batch)
            self._in_progress_s += seconds
            self._export()
            clips = [(job.audio, job.prompt) for job in batch]
            started = time.monotonic()
            try:
                results = await loop.run_in_executor(self._pool, self._decode, clips)
            except Exception as exc:
                # A recogniser failure must not stop the queue: the utterance fails alone
                # (its session names it as missing), and the next one is tried.
                log.exception("speech-to-text failed on %d utterances", len(batch))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                self.metrics.asr_failures.inc(len(batch))
            else:
                for job, segments in zip(batch, results, strict=True):
                    if not job.future.done():
                        job.future.set_result(segments)
                self.metrics.asr_audio_seconds.inc(seconds)
                self.metrics.asr_decode_seconds.observe(time.monotonic() - started)
            finally:
                self._in_progress_s -= seconds
                self._export()

    def _decode(self, clips: Sequence[tuple[np.ndarray, str | None]]) -> list[list[AsrSegment]]:
        if len(clips) == 1:
            audio, prompt = clips[0]
            return [self.recognizer.transcribe(audio, prompt)]
        return self.recognizer.transcribe_batch(clips)

    def _export(self) -> None:
        self.metrics.asr_backlog.set(self.backlog_s)

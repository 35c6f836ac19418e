"""One session's transcript: its utterances sent to the process's speech-to-text queue, and
each result published, in utterance order, as a transcript message.

Nothing is dropped: an utterance waits in the queue as long as it takes. At the end of the
session the final waits for what is still queued, up to ``transcript_wait_s``; what is not
done by then is named in the final as missing, never silently left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from rtserver.inference.asr import AsrSegment
from rtserver.inference.asr_queue import AsrQueue
from rtserver.live.questions import QuestionTimeline
from rtserver.media.clock import MediaClock
from rtserver.messages import FinalMessage, TranscriptMessage
from rtserver.metrics import Metrics
from rtserver.perception.transcribe import words_of
from rtserver.perception.utterances import Utterance

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    utterance: Utterance
    question: int | None
    result: asyncio.Future[list[AsrSegment]]


class SessionTranscriber:
    """Transcribes one session's utterances through ``queue`` and publishes them in order."""

    def __init__(
        self,
        session_id: str,
        queue: AsrQueue,
        clock: MediaClock,
        timeline: QuestionTimeline,
        questions: Sequence[str],
        publish: Callable[[TranscriptMessage], Awaitable[object]],
        metrics: Metrics,
    ) -> None:
        self.session_id = session_id
        self.queue = queue
        self.clock = clock
        self.timeline = timeline
        # The prompt for each question: its text, and with a job its skills (job_prompts).
        self.questions = tuple(questions)
        # Stores one message and fans it out, waiting for room in the store's queue rather
        # than ever dropping it (Publisher.publish_and_wait).
        self.publish = publish
        self.metrics = metrics
        self.messages: list[TranscriptMessage] = []  # published, in order
        self.missing: list[tuple[float, float]] = []  # spans that could not be transcribed
        # Utterances submitted and not yet published, in order. No bound of its own:
        # transcripts are complete, and the process's queue, which holds the same
        # utterances, is what admission control bounds.
        self._outstanding: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._finishing = False  # no utterance comes after those outstanding
        self._publisher = asyncio.create_task(self._publish_in_order(), name=f"asr-{session_id}")

    def on_utterance(self, utterance: Utterance) -> None:
        """Queues an utterance the speech gate completed (called on the event loop)."""
        question = self.timeline.at(utterance.start_s)
        prompt = self.questions[question] if question is not None else None
        result = self.queue.submit(self.session_id, utterance.audio, prompt)
        self._outstanding.append(_Pending(utterance, question, result))
        self._arrived.set()

    async def finish(self, wait_s: float) -> None:
        """Waits up to ``wait_s`` for every queued utterance to be published; the ones still
        outstanding then are recorded in ``missing`` and dropped from the queue's view."""
        self._finishing = True
        self._arrived.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._publisher), timeout=wait_s)
        except TimeoutError:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
            for pending in self._outstanding:
                pending.result.cancel()
                self._note_missing(pending, "not transcribed in time")

    def close(self) -> None:
        """Stops publishing (a session that failed to start, or ended without a final)."""
        self._publisher.cancel()
        for pending in self._outstanding:
            pending.result.cancel()

    async def _publish_in_order(self) -> None:
        while True:
            while not self._outstanding:
                if self._finishing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            pending = self._outstanding[0]
            try:
                segments = await pending.result
            except Exception:
                self._outstanding.popleft()
                self._note_missing(pending, "the recogniser failed")
                continue
            await self._publish(pending, segments)
            self._outstanding.popleft()

    async def _publish(self, pending: _Pending, segments: list[AsrSegment]) -> None:
        heard = words_of(pending.utterance, segments)
        lag_s = max(0.0, time.monotonic() - self.clock.wall_time(pending.utterance.end_s))
        message = TranscriptMessage(
            session=self.session_id,
            question=pending.question,
            start=heard.start,
            end=heard.end,
            text=heard.text,
            words=heard.words,
            lag_ms=round(lag_s * 1000.0, 1),
        )
        await self.publish(message)
        self.messages.append(message)
        self.metrics.transcripts.inc()
        self.metrics.transcript_lag.observe(lag_s)

    def _note_missing(self, pending: _Pending, why: str) -> None:
        span = (round(pending.utterance.start_s, 3), round(pending.utterance.end_s, 3))
        self.missing.append(span)
        log.warning(
            "utterance %.1f-%.1f s left out of the transcript: %s",
            *span,
            why,
            extra={"session": self.session_id},
        )


def with_transcript(
    final: FinalMessage,
    transcripts: Sequence[TranscriptMessage],
    missing: Sequence[tuple[float, float]] = (),
    complete: bool | None = None,
    on: bool = True,
) -> FinalMessage:
    """``final`` with the session's transcript: its segments in order and, when some speech
    could not be transcribed, the spans missing (``complete`` defaults to none missing)."""
    if not on:
        return dataclasses.replace(final, transcription="off")
    return dataclasses.replace(
        final,
        transcript=tuple(message.segment() for message in transcripts),
        transcript_complete=not missing if complete is None else complete,
        transcript_missing=tuple({"start": start, "end": end} for start, end in missing),
        transcription="on",
    )

"""A session's seconds going out: each summarised second becomes a :class:`SignalMessage`,
with its lag and its question, and is published in order.

A second the store's writer turns back (its queue is full) is kept, first in line, and
offered again on the next tick; nothing is dropped and nothing overtakes it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable

from rtserver.live.publisher import Publisher
from rtserver.live.questions import QuestionTimeline
from rtserver.live.runtime import Runtime
from rtserver.media.clock import MediaClock
from rtserver.messages import SignalMessage
from rtserver.scoring.signals import SecondAggregator, SecondSummary
from rtserver.store import StoreBacklogged

PARTIAL_SECOND_MIN_S = 0.25  # a last, partial second is published if it holds this much media


class SecondPublisher:
    """Publishes one session's seconds in order, from its aggregator, on its clock."""

    def __init__(
        self,
        runtime: Runtime,
        session_id: str,
        aggregator: SecondAggregator,
        clock: MediaClock,
        timeline: QuestionTimeline,
        on_signal: Callable[[SignalMessage], None],
    ) -> None:
        self.runtime = runtime
        self.session_id = session_id
        self.aggregator = aggregator
        self.clock = clock
        self.timeline = timeline
        self.on_signal = on_signal  # called after each second is published (hints)
        self.publisher = Publisher(runtime, session_id)
        self.signals: list[SignalMessage] = []
        # Seconds summarised but not yet published, oldest first (normally empty).
        self._unpublished: deque[tuple[int, SecondSummary]] = deque()

    def publish_ready(self, max_wait_s: float) -> None:
        """Publishes the seconds every live track has passed (or waited ``max_wait_s`` for).
        Raises StoreBacklogged when the writer is full; the seconds are kept."""
        self.publish_seconds(self.aggregator.ready(self.clock.elapsed(), max_wait_s))

    def publish_seconds(self, seconds: Iterable[int]) -> None:
        """Summarises ``seconds`` (next in order) and publishes everything summarised."""
        for t in seconds:
            self._unpublished.append((t, self.aggregator.take(t)))
        self._publish_pending()

    def _publish_pending(self) -> None:
        """Publishes summarised seconds in order; one that fails stays first in line."""
        while self._unpublished:
            t, second = self._unpublished[0]
            lag_s = max(0.0, time.monotonic() - self.clock.wall_time(t + 1.0))
            signal = SignalMessage(
                session=self.session_id,
                t=t,
                video=second.video,
                audio=second.audio,
                lag_ms=round(lag_s * 1000.0, 1),
                emotion=second.emotion,
                fluency=second.fluency,
                question=self.timeline.at(t),
            )
            self.publisher.publish(signal)
            self._unpublished.popleft()
            if self.aggregator.lag_measures_load(t):
                self.runtime.signal_lag.add(lag_s)
            self.signals.append(signal)
            self.on_signal(signal)
            metrics = self.runtime.metrics
            metrics.signals.inc()
            metrics.media_seconds.inc()
            metrics.signal_lag.observe(lag_s)

    async def flush(self) -> None:
        """Publishes every second not yet out, up to the end of the media, waiting for room
        in the store writer's queue when it is full."""
        media_end = self.aggregator.media_end()
        last = math.floor(media_end + 1.0 - PARTIAL_SECOND_MIN_S)
        for t in range(self.aggregator.next_t, last):
            self._unpublished.append((t, self.aggregator.take(t)))
        while True:
            try:
                self._publish_pending()
                return
            except StoreBacklogged:
                await self.runtime.db.writer.wait_for_room()

"""How late this process's event loop runs: the overload signal that admission control reads.

One event loop per process carries every peer connection's RTP, DTLS and ICE traffic. When
it cannot keep up, everything on it runs late together: ICE consent answers miss their
deadline and connections drop, signals stall. So a process whose loop already runs late
takes no new session (``SessionManager.join`` answers 503 ``overloaded``) rather than push
every session it holds over that edge. The lag is measured the plain way: a task asks to
wake every ``PERIOD_S`` and records how much later than asked it woke.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

PERIOD_S = 0.1  # how often the loop is sampled
WINDOW_S = 2.0  # the lag reported is the mean over this much of the recent past


class LoopLagMonitor:
    """Samples the running event loop's lateness; ``lag_s`` is the recent mean (s)."""

    def __init__(self, period_s: float = PERIOD_S, window_s: float = WINDOW_S) -> None:
        self.period_s = period_s
        self._samples: deque[float] = deque(maxlen=max(1, round(window_s / period_s)))
        self._task: asyncio.Task[None] | None = None

    @property
    def lag_s(self) -> float:
        """Mean lateness of the recent wake-ups (s); 0 before the first."""
        return sum(self._samples) / len(self._samples) if self._samples else 0.0

    def start(self) -> None:
        """Starts sampling on the running loop (once; later calls do nothing)."""
        if self._task is None:
            self._task = asyncio.create_task(self._sample(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _sample(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self.period_s)
            self._samples.append(max(0.0, time.monotonic() - asked - self.period_s))

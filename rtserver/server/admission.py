"""Admission control: a process takes a new session only while it keeps up with those it has.

Three readings say it does not, each with its own limit (0 turns one off):

- its event loop runs late (``max_loop_lag_s``, from :mod:`rtserver.server.loop_lag`): every peer
  connection's RTP, DTLS and ICE shares that loop, so past this, ICE consent answers miss
  their deadlines and connections drop;
- its signals go out late (``max_signal_lag_s``): the analysis threads cannot keep up, so
  every session's seconds publish later and later. Only seconds held by analysis count
  (``SecondAggregator.lag_measures_load``): a candidate whose media stalls makes a second
  late without any load;
- its speech-to-text queue holds too much speech (``max_asr_backlog_s``, seconds of audio):
  transcripts are never dropped, so a queue that grows means every session's transcript
  falls further behind.

The limits are checked at each join; a refusal is a 503 ``overloaded`` with the reason and
Retry-After, and the sessions already live are untouched.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from rtserver.config import Config
from rtserver.errors import Overloaded
from rtserver.server.loop_lag import LoopLagMonitor

SIGNAL_WINDOW_S = 3.0  # the signal lag read is the mean over the seconds published this recently


class RecentSignalLag:
    """The mean lag of the signals this process published in the last SIGNAL_WINDOW_S."""

    def __init__(self, window_s: float = SIGNAL_WINDOW_S) -> None:
        self.window_s = window_s
        self._lags: deque[tuple[float, float]] = deque()  # (monotonic time, lag s)

    def add(self, lag_s: float) -> None:
        now = time.monotonic()
        self._lags.append((now, lag_s))
        self._forget(now)

    def mean_s(self) -> float:
        """Mean lag (s) of the recent signals; 0 when there were none."""
        self._forget(time.monotonic())
        return sum(lag for _, lag in self._lags) / len(self._lags) if self._lags else 0.0

    def _forget(self, now: float) -> None:
        while self._lags and self._lags[0][0] < now - self.window_s:
            self._lags.popleft()


class Admission:
    """Says whether this process may take one more session (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        signal_lag: RecentSignalLag,
        asr_backlog_s: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.signal_lag = signal_lag
        self.loop_lag = LoopLagMonitor()
        self.asr_backlog_s = asr_backlog_s  # seconds of speech queued; None without ASR

    def check(self) -> None:
        """Raises Overloaded, naming every limit exceeded, when a reading is over its limit."""
        self.loop_lag.start()  # from the first join on: the loop is idle before that
        readings = (
            ("its event loop runs", self.loop_lag.lag_s, self.config.max_loop_lag_s),
            ("its signals go out", self.signal_lag.mean_s(), self.config.max_signal_lag_s),
        )
        over = [
            f"{what} {value * 1000:.3g} ms late (limit {limit * 1000:g} ms)"
            for what, value, limit in readings
            if limit and value > limit
        ]
        backlog = self.asr_backlog_s() if self.asr_backlog_s is not None else 0.0
        limit = self.config.max_asr_backlog_s
        if limit and backlog > limit:
            over.append(f"speech-to-text has {backlog:.3g} s of speech waiting (limit {limit:g} s)")
        if over:
            raise Overloaded(f"server is overloaded: {'; '.join(over)}; try again shortly")

    async def stop(self) -> None:
        await self.loop_lag.stop()

"""The machine's CPU budget for new sessions: admission by what a session will cost.

Event-loop lag and signal lag (``rtserver.server.admission``) say a process is overloaded once it
is; they cannot see a burst coming. When 24 candidates join within a second on a 2-core
machine, both readings are still clean when the last one is admitted, and a few seconds
later every session is late and connections drop. So whoever places sessions (the server
process, or the single process) also keeps a CPU budget:

- ``busy``: how many cores the machine (or its cgroup's CPU quota) is using, mean over the
  last ``WINDOW_S``, read from ``/proc/stat`` (or cgroup v2 ``cpu.stat``) every
  ``PERIOD_S``: the server's own processes and anything else that shares the machine;
- ``cost``: what one live session adds, measured as (busy - busy with no session) / sessions
  once sessions have settled, and a stated prior before that (:data:`PRIOR_SESSION_CORES`);
- for a window after sessions end, the readings still hold their load: then neither the
  idle figure nor the cost is updated, and the count of live sessions alone projects;
- a session that passed the check less than ``SETTLE_S`` ago (still joining, or just
  admitted) is not in ``busy`` yet, so it counts at ``cost`` on top: its place is taken at
  the check (:meth:`CpuBudget.reserve`), so that the joins of a burst, arriving together,
  each see the ones before them.

A new session is refused (503 ``overloaded``) when one more session would take the machine
past ``max_cpu`` of its cores, by the larger of two projections: busy + (starting sessions
+ 1) x cost, and idle + (live sessions + 1) x cost. The second covers sessions that are
connected but not yet sending (or paused): they will cost as much once they do. Where no
CPU reading exists (not Linux), the budget admits everything and says so once in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rtserver.errors import Overloaded

log = logging.getLogger(__name__)

PERIOD_S = 0.5  # how often the CPU counters are read
WINDOW_S = 2.0  # busy is the mean over this much of the recent past
# A session admitted this recently is not fully in `busy` yet: its peer connects (ICE,
# DTLS), its first keyframe decodes, and the window above still averages its idle past.
SETTLE_S = 4.0
# What one session costs before any has been measured (cores). Measured on a 2-core x86
# machine with 640x480 15 fps VP8 and Opus (bench.streams): 0.076 server cores per stream
# with analysis and 0.047 decode-only, plus ~0.02 for the peer's own handshakes and
# jitter; rounded up, because a burst from idle is admitted on this figure alone.
PRIOR_SESSION_CORES = {"full": 0.1, "decode": 0.06}
MIN_SETTLED_SESSIONS = 2  # below this the measured cost is too noisy to replace the prior
IDLE_EMA = 0.3  # weight of a new reading in the idle baseline


@dataclass(eq=False)
class Reservation:
    """The place a session takes in the budget when its join passes the check: it counts at
    full cost from then until it has settled. A join that fails gives it back
    (:meth:`CpuBudget.release`)."""

    at: float  # monotonic time it was taken (s)


@dataclass(frozen=True)
class CpuReading:
    """Cumulative CPU time of what the budget watches (s), at a monotonic time (s)."""

    at: float
    busy_s: float


class CpuCounter:
    """Reads the cumulative busy CPU time of this machine's CPUs, or of this cgroup when a CPU
    quota limits it; ``cores`` is how many cores that is."""

    def __init__(self, proc_stat: Path = Path("/proc/stat"), cgroup: Path = Path("/sys/fs/cgroup")):
        self._proc_stat = proc_stat
        self._cgroup_stat = cgroup / "cpu.stat"
        self._cpus = _affinity()
        quota = _cgroup_quota_cores(cgroup / "cpu.max")
        self.use_cgroup = quota is not None and self._cgroup_stat.exists()
        self.cores = min(float(len(self._cpus)), quota) if quota else float(len(self._cpus))

    def read(self) -> CpuReading | None:
        """The current reading; None where neither source can be read."""
        try:
            busy = self._cgroup_busy_s() if self.use_cgroup else self._proc_busy_s()
        except (OSError, ValueError):
            return None
        return CpuReading(time.monotonic(), busy)

    def _cgroup_busy_s(self) -> float:
        for line in self._cgroup_stat.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "usage_usec":
                return int(value) / 1e6
        raise ValueError("no usage_usec in cpu.stat")

    def _proc_busy_s(self) -> float:
        """Busy time of the CPUs this process may run on: all but idle and iowait."""
        ticks = os.sysconf("SC_CLK_TCK")
        busy = 0
        for line in self._proc_stat.read_text().splitlines():
            name, *values = line.split()
            if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in self._cpus:
                continue
            counts = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            busy += sum(counts) - counts[3] - counts[4]
        return busy / ticks


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def _cgroup_quota_cores(cpu_max: Path) -> float | None:
    """Cores allowed by a cgroup v2 quota ("max 100000" means none), or None."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


class CpuBudget:
    """Refuses a new session the machine has no CPU for (see the module docstring)."""

    def __init__(
        self,
        max_cpu: float,
        analysis: str,
        live_count: Callable[[], int],
        counter: CpuCounter | None = None,
        prior_cores: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_cpu`` is the share (0-1) of the cores that live sessions may keep busy; 0
        turns the budget off. ``analysis`` picks the prior cost ("full" or "decode");
        ``live_count`` says how many sessions are live (joining ones included);
        ``prior_cores`` overrides the prior cost of a session (cores; 0 or None: by
        ``analysis``); ``clock`` is the monotonic clock admissions are timed by (s)."""
        self.max_cpu = max_cpu
        self.live_count = live_count
        self.clock = clock
        self.counter = counter or CpuCounter()
        self.prior_cores = prior_cores or PRIOR_SESSION_CORES.get(analysis, 0.1)
        self._readings: deque[CpuReading] = deque(maxlen=round(WINDOW_S / PERIOD_S) + 1)
        # Places taken by the sessions joining or admitted in the last SETTLE_S, oldest first.
        self._starting: deque[Reservation] = deque()
        self._idle_cores: float | None = None
        # When a session last ended (monotonic s), and the live count that told: for a
        # window after, the readings still hold the load of sessions that are gone.
        self._departed_at = -math.inf
        self._last_live = 0
        self._task: asyncio.Task[None] | None = None
        self._unreadable = False

    @property
    def enabled(self) -> bool:
        return self.max_cpu > 0 and not self._unreadable

    def start(self) -> None:
        """Starts reading the counters on the running loop (once)."""
        if self._task is None and self.max_cpu > 0:
            if self.counter.read() is None:
                self._unreadable = True
                log.warning("no CPU counters here: the CPU budget admits every session")
                return
            self._task = asyncio.create_task(self._sample(), name="cpu-budget")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _sample(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(PERIOD_S)

    def sample(self) -> None:
        """Takes one reading (the sampling task calls this every PERIOD_S)."""
        reading = self.counter.read()
        if reading is None:
            return
        self._readings.append(reading)
        busy = self.current_busy_cores()
        if busy is not None and self.live_count() == 0 and not self.starting(self.clock()):
            # What the machine does with no session: the server idling, other programs.
            idle = self._idle_cores
            self._idle_cores = busy if idle is None else idle + IDLE_EMA * (busy - idle)

    def busy_cores(self) -> float | None:
        """Mean busy cores over the recent window; None before two readings."""
        if len(self._readings) < 2:
            return None
        first, last = self._readings[0], self._readings[-1]
        elapsed = last.at - first.at
        return (last.busy_s - first.busy_s) / elapsed if elapsed > 0 else None

    def current_busy_cores(self) -> float | None:
        """``busy_cores``, or None while the window still holds the load of sessions that
        have ended since: right after a group of interviews ends, the machine is idle but
        its last seconds were busy, and that load must count neither as idle nor as what the
        live sessions cost."""
        live = self.live_count()
        now = self.clock()
        if live < self._last_live:
            self._departed_at = now
        self._last_live = live
        if now - self._departed_at < WINDOW_S + PERIOD_S:
            return None
        return self.busy_cores()

    def starting(self, now: float) -> int:
        """Sessions that took a place less than SETTLE_S before ``now``: joining, or not yet
        fully in the CPU readings."""
        while self._starting and self._starting[0].at < now - SETTLE_S:
            self._starting.popleft()
        return len(self._starting)

    def session_cores(self) -> float:
        """What one session costs (cores): measured over the settled sessions, else the prior.

        The measured figure is floored at half the prior: sessions that send little for a
        while (a paused camera) must not make the next burst look free.
        """
        busy = self.current_busy_cores()
        settled = self.live_count() - self.starting(self.clock())
        if busy is None or self._idle_cores is None or settled < MIN_SETTLED_SESSIONS:
            return self.prior_cores
        return max(self.prior_cores / 2, (busy - self._idle_cores) / settled)

    def projected_cores(self) -> float:
        """Busy cores with one more session: the larger of what is measured (plus the sessions
        still starting) and what the live sessions would cost if each cost ``session_cores``
        (alone while the readings still hold sessions that have ended)."""
        idle = self._idle_cores or 0.0
        busy = self.current_busy_cores()
        cost = self.session_cores()
        measured = (idle if busy is None else busy) + self.starting(self.clock()) * cost
        by_count = idle + self.live_count() * cost
        return max(measured, by_count) + cost

    def reserve(self) -> Reservation:
        """Takes a place for one more session; raises Overloaded when that would take the
        machine past its budget (nothing is taken then). Always succeeds when the budget is
        off. The caller releases the place if the session does not start after all."""
        if self.enabled:
            projected = self.projected_cores()
            limit = self.max_cpu * self.counter.cores
            if projected > limit:
                busy = self.busy_cores()
                raise Overloaded(
                    f"server is at its CPU budget: {busy or 0.0:.2f} of {self.counter.cores:g}"
                    f" cores busy, {self.live_count()} sessions live at"
                    f" {self.session_cores():.3f} cores each, one more would make"
                    f" {projected:.2f} (limit {limit:.2f}); try again shortly"
                )
        reservation = Reservation(self.clock())
        self._starting.append(reservation)
        return reservation

    def release(self, reservation: Reservation) -> None:
        """Gives back the place of a session that did not start."""
        with contextlib.suppress(ValueError):
            self._starting.remove(reservation)

    def headroom_sessions(self) -> int:
        """How many more sessions the budget would take now; -1 when it is off."""
        if not self.enabled:
            return -1
        spare = self.max_cpu * self.counter.cores - self.projected_cores()
        return max(0, math.floor(spare / self.session_cores()) + 1)

"""What a metric update costs the hot path: our hand-written metrics against prometheus_client.

    python -m bench.metrics [--json out.json] [--quick]

Times, on one thread of this one process, the four updates the live path makes (a counter
without labels, a counter with one label, a histogram observation, a gauge set) with:

* ``hand-written``: the Counter/Gauge/Histogram that ``rtserver.metrics`` had until
  issue 13 (their update paths are copied below, verbatim, as the baseline);
* ``prom``: ``prometheus_client`` in its normal mode (a float under a mutex);
* ``prom-mp``: ``prometheus_client`` in its multiprocess mode (each value in an mmapped file
  that /metrics reads from every process), called the plain way, ``c.labels(x=...).inc()``;
* ``rtserver``: what the server calls now, ``rtserver.metrics.Metrics`` in the multiprocess
  mode as ``rtserver serve`` runs it (prometheus_client under a thin layer that remembers
  each labelled series).

The contenders run in turns, interleaved, so that a noisy neighbour slows them alike; each
figure is the median of the repeats, in ns per update (CPU time of this thread, loop
included). Ratios are against the hand-written update.

Then the share of a core it costs: the updates one live session makes per second are counted
from the code (:data:`SESSION_UPDATES`, on the default configuration) and multiplied out.
"""

from __future__ import annotations

import argparse
import bisect
import importlib.metadata
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, values

from rtserver.metrics import Metrics, share_between_processes

OPS = ("counter", "counter_label", "histogram", "gauge")

# The metric updates one live session makes per second of media, by kind, read from the
# code with the default configuration (analysis_fps 10, detect_fps 5, emotion on: two face
# models). Each entry: (what, updates per second, kind).
SESSION_UPDATES: tuple[tuple[str, float, str], ...] = (
    # media/video.py run(): every decoded frame. The candidate page asks for 15 fps; 30 is a
    # camera that ignores that (an upper bound).
    ("frames_decoded per decoded frame (30 fps)", 30.0, "counter"),
    # media/video.py _analyse(), 10 frames/s: stage_cpu luma + track, analysis_cpu{video},
    # frames_analysed; on the 5 of them that run the detector also stage_cpu detect and
    # face_detections{reason}.
    ("analysed frame: stage_cpu luma, track; analysis_cpu", 10 * 3, "counter_label"),
    ("analysed frame: frames_analysed", 10.0, "counter"),
    ("detection: stage_cpu detect; face_detections", 5 * 2, "counter_label"),
    # inference/batcher.py _infer(): per batch, stage_cpu crop and infer_<model> for each of
    # two models, analysis_cpu{models}, model_batch. At most one batch per analysed frame
    # (10/s; fewer when a batch holds several sessions' crops).
    ("model batch: stage_cpu crop, infer x2; analysis_cpu", 10 * 4, "counter_label"),
    ("model batch: model_batch", 10.0, "histogram"),
    # media/audio.py analyse_chunks(): per block of 5 x 20 ms frames (10/s, and a flush at
    # each second's end: 11/s): stage_cpu audio_kernels, vad, fluency, analysis_cpu{audio};
    # audio_seconds.
    ("audio block: stage_cpu x3; analysis_cpu", 11 * 4, "counter_label"),
    ("audio block: audio_seconds", 11.0, "counter"),
    # live/session.py, each second published: signals, media_seconds; signal_lag.
    ("second published: signals, media_seconds", 2.0, "counter"),
    ("second published: signal_lag", 1.0, "histogram"),
    # store/async_store.py: store_queue set as each write is queued and done (a signal and
    # a status write a second).
    ("store write: store_queue", 4.0, "gauge"),
)


# -- the baseline: rtserver/metrics.py before issue 13, update paths verbatim -------------


@dataclass
class HandCounter:
    name: str
    help: str
    _values: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[tuple(sorted(labels.items()))] = value


@dataclass
class HandHistogram:
    name: str
    help: str
    buckets: Sequence[float]
    _counts: list[int] = field(default_factory=list)
    _sum: float = 0.0
    _count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        with self._lock:
            if index < len(self._counts):
                self._counts[index] += 1
            self._sum += value
            self._count += 1


# -- the contenders ----------------------------------------------------------------------

LAG_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
Update = Callable[[], None]


def hand_written() -> dict[str, Update]:
    counter = HandCounter("rtserver_frames_decoded_total", "h")
    labelled = HandCounter("rtserver_stage_cpu_seconds_total", "h")
    histogram = HandHistogram("rtserver_signal_lag_seconds", "h", LAG_BUCKETS)
    gauge = HandCounter("rtserver_live_sessions", "h")
    return {
        "counter": lambda: counter.inc(),
        "counter_label": lambda: labelled.inc(0.001, stage="luma"),
        "histogram": lambda: histogram.observe(0.3),
        "gauge": lambda: gauge.set(3),
    }


def prom(value_class: Any, prefix: str) -> dict[str, Update]:
    """prometheus_client's metrics, their values of ``value_class`` (prometheus_client reads
    ``values.ValueClass`` as it makes each series), named ``prefix``_*: one name per series in
    this process's files."""
    shared_class, values.ValueClass = values.ValueClass, value_class
    registry = CollectorRegistry()
    counter = prometheus_client.Counter(f"{prefix}_frames_decoded", "h", registry=registry)
    labelled = prometheus_client.Counter(
        f"{prefix}_stage_cpu_seconds", "h", ["stage"], registry=registry
    )
    histogram = prometheus_client.Histogram(
        f"{prefix}_signal_lag_seconds", "h", registry=registry, buckets=LAG_BUCKETS
    )
    gauge = prometheus_client.Gauge(
        f"{prefix}_live_sessions", "h", registry=registry, multiprocess_mode="livesum"
    )
    labelled.labels(stage="luma")  # made before the timing, as any live series would be
    values.ValueClass = shared_class
    return {
        "counter": lambda: counter.inc(),
        "counter_label": lambda: labelled.labels(stage="luma").inc(0.001),
        "histogram": lambda: histogram.observe(0.3),
        "gauge": lambda: gauge.set(3),
    }


def ours() -> dict[str, Update]:
    """The server's own metrics (made after :func:`share_between_processes`, as the server's)."""
    metrics = Metrics()
    metrics.stage_cpu.inc(0.001, stage="luma")
    return {
        "counter": lambda: metrics.frames_decoded.inc(),
        "counter_label": lambda: metrics.stage_cpu.inc(0.001, stage="luma"),
        "histogram": lambda: metrics.signal_lag.observe(0.3),
        "gauge": lambda: metrics.live_sessions.set(3),
    }


def time_update(update: Update, calls: int) -> float:
    """CPU time of this thread per call of ``update`` (ns), loop included."""
    loop = range(calls)
    started = time.thread_time_ns()
    for _ in loop:
        update()
    return (time.thread_time_ns() - started) / calls


def measure(contenders: dict[str, dict[str, Update]], calls: int, repeats: int) -> dict[str, Any]:
    """ns per update, median of ``repeats`` interleaved rounds, by contender and operation."""
    times: dict[str, dict[str, list[float]]] = {c: {op: [] for op in OPS} for c in contenders}
    for update in (u for ops in contenders.values() for u in ops.values()):
        time_update(update, calls // 10)  # warm up
    order = list(contenders)
    for round_ in range(repeats):
        for name in order if round_ % 2 == 0 else reversed(order):
            for op, update in contenders[name].items():
                times[name][op].append(time_update(update, calls))
    return {c: {op: statistics.median(t) for op, t in ops.items()} for c, ops in times.items()}


def session_cost(ns: dict[str, float]) -> tuple[float, float]:
    """Updates per session-second, and the CPU they cost (ns) per session-second."""
    count = sum(rate for _, rate, _ in SESSION_UPDATES)
    cost = sum(rate * ns[kind] for _, rate, kind in SESSION_UPDATES)
    return count, cost


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument("--sessions", type=int, default=16, help="live sessions to cost")
    args = parser.parse_args(argv)
    calls, repeats = (2_000, 3) if args.quick else (200_000, 7)

    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as directory:
        # This process in prometheus_client's multiprocess mode, as the server runs it: one
        # multiprocess value class (two would write the same files) for prom-mp and ours.
        share_between_processes(Path(directory))
        contenders = {
            "hand-written": hand_written(),
            "prom": prom(values.MutexValue, "prom"),
            "prom-mp": prom(values.ValueClass, "prom_mp"),
            "rtserver": ours(),
        }
        ns = measure(contenders, calls, repeats)
    base = ns["hand-written"]
    count, _ = session_cost(base)
    print(f"ns per update (median of {repeats} x {calls:,} calls; ratio to hand-written):")
    print(f"  {'':14}" + "".join(f"{op:>22}" for op in OPS))
    for name, ops in ns.items():
        cells = "".join(f"{ops[op]:>12.0f} ns {ops[op] / base[op]:>5.2f}x" for op in OPS)
        print(f"  {name:14}{cells}")
    print(
        f"\none live session: {count:.0f} metric updates a second (bench/metrics.py"
        f" SESSION_UPDATES); at {args.sessions} sessions, share of one core:"
    )
    shares = {}
    for name, ops in ns.items():
        shares[name] = session_cost(ops)[1] * args.sessions / 1e9
        print(f"  {name:14}{shares[name] * 100:8.3f} %")
    if args.json:
        figures = {
            "ns_per_update": ns,
            "updates_per_session_s": count,
            "sessions": args.sessions,
            "core_share": shares,
            "python": sys.version.split()[0],
            "prometheus_client": importlib.metadata.version("prometheus_client"),
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

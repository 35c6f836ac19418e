"""Process metrics in Prometheus text format (exposition format 0.0.4).

Small on purpose: counters, gauges and one histogram type are all the server needs, and
keeping them here avoids a dependency for ~100 lines of code. Updates happen on the event
loop or under the GIL from analysis threads; each update is a single locked add.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtserver.server.cpu_budget import CpuBudget


def _labels_text(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{name}="{value}"' for name, value in labels)
    return "{" + inner + "}"


@dataclass
class Counter:
    name: str
    help: str
    kind: str = "counter"
    _values: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        values = dict(self._values) or {(): 0.0}
        lines += [f"{self.name}{_labels_text(k)} {v:.6g}" for k, v in sorted(values.items())]
        return lines


@dataclass
class Gauge(Counter):
    kind: str = "gauge"

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[tuple(sorted(labels.items()))] = value

    def remove(self, **labels: str) -> None:
        """Drops one labelled series (e.g. a session's, once it has ended)."""
        with self._lock:
            self._values.pop(tuple(sorted(labels.items())), None)


@dataclass
class Histogram:
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

    @property
    def count(self) -> int:
        return self._count

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, count in zip(self.buckets, self._counts, strict=True):
            cumulative += count
            lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {cumulative}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self._count}')
        lines.append(f"{self.name}_sum {self._sum:.6g}")
        lines.append(f"{self.name}_count {self._count}")
        return lines


class Metrics:
    """Every metric the server exports; one instance per server process."""

    def __init__(self) -> None:
        self.live_sessions = Gauge("rtserver_live_sessions", "Sessions with a live peer.")
        self.observers = Gauge("rtserver_observers", "Connected observer websockets.")
        self.loop_lag = Gauge(
            "rtserver_event_loop_lag_seconds",
            "How late the event loop wakes, mean over the last 2 s (admission control reads it).",
        )
        self.recent_signal_lag = Gauge(
            "rtserver_recent_signal_lag_seconds",
            "Mean lag of the signals published in the last 3 s that only analysis held back"
            " (admission control reads it).",
        )
        self.cpu_busy = Gauge(
            "rtserver_cpu_busy_cores",
            "Cores the machine keeps busy, mean over the last 2 s (the CPU budget reads it).",
        )
        self.cpu_session_cost = Gauge(
            "rtserver_cpu_session_cores",
            "What one live session costs, measured (or the prior before any): the CPU budget.",
        )
        self.cpu_headroom = Gauge(
            "rtserver_cpu_headroom_sessions",
            "More sessions the CPU budget would admit now (-1: the budget is off).",
        )
        self.sessions_total = Counter("rtserver_sessions_total", "Sessions started, by outcome.")
        self.reconnects = Counter(
            "rtserver_reconnects_total", "Candidates who came back after a dropped connection."
        )
        self.frames_decoded = Counter("rtserver_frames_decoded_total", "Video frames decoded.")
        self.frames_analysed = Counter("rtserver_frames_analysed_total", "Video frames analysed.")
        self.frames_skipped = Counter(
            "rtserver_frames_skipped_total", "Sampled frames not analysed, by reason."
        )
        self.face_detections = Counter(
            "rtserver_face_detections_total",
            "Face detector runs, by reason (scheduled, lost: the tracked face stopped matching).",
        )
        self.crops_dropped = Counter(
            "rtserver_crops_dropped_total",
            "Face crops the model batcher dropped, by reason (overload, stale).",
        )
        self.hints = Counter("rtserver_hints_total", "Live hints sent to candidates, by code.")
        self.audio_seconds = Counter(
            "rtserver_audio_seconds_total", "Seconds of audio decoded and analysed."
        )
        self.signals = Counter("rtserver_signals_total", "Signal messages published.")
        self.late_results = Counter(
            "rtserver_late_results_total", "Analysis results that arrived after their second."
        )
        self.analysis_cpu = Counter(
            "rtserver_analysis_cpu_seconds_total", "Thread CPU time spent in analysis, by path."
        )
        self.stage_cpu = Counter(
            "rtserver_stage_cpu_seconds_total",
            "Thread CPU time by pipeline stage: luma, track, detect (video); crop, infer "
            "(model batcher, per model as infer_<name>); audio_kernels, vad, fluency (audio).",
        )
        self.media_seconds = Counter(
            "rtserver_media_seconds_total", "Seconds of media published as signals."
        )
        # Over sessions, not per session: a label per session id would grow without bound
        # and name every candidate's session to whoever reads the metrics. A live
        # session's own figure is in its HR status (GET /api/v1/sessions/{id}).
        self.session_cost = Histogram(
            "rtserver_session_analysis_cpu_ratio",
            "Analysis CPU seconds per second of media of each session, observed when it ends.",
            buckets=(0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0),
        )
        self.rejected = Counter("rtserver_rejected_total", "Refused API requests, by error code.")
        self.store_queue = Gauge(
            "rtserver_store_write_queue", "Store writes waiting for the writer thread."
        )
        self.store_retries = Counter(
            "rtserver_store_write_retries_total",
            "Store writes that failed and were tried again (the database was locked, the"
            " disk full or failing).",
        )
        self.store_failures = Counter(
            "rtserver_store_write_failures_total",
            "Store writes that failed for good (not retried: a broken constraint).",
        )
        self.store_backlogged = Counter(
            "rtserver_store_backlogged_total",
            "Messages the writer's full queue turned back; each session offers them again.",
        )
        self.control_refused = Counter(
            "rtserver_control_messages_refused_total",
            "Candidate control-channel messages refused, by reason (too_large, not_json, "
            "malformed, unknown_question, backwards).",
        )
        self.model_batch = Histogram(
            "rtserver_model_batch_size",
            "Faces per model batch (crops from all live sessions).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.signal_lag = Histogram(
            "rtserver_signal_lag_seconds",
            "End of a second of media to publication of its signal.",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0),
        )

    def observe_cpu_budget(self, budget: CpuBudget) -> None:
        """Copies the CPU budget's readings into their gauges (before a render)."""
        self.cpu_busy.set(round(budget.busy_cores() or 0.0, 4))
        self.cpu_session_cost.set(round(budget.session_cores(), 4))
        self.cpu_headroom.set(budget.headroom_sessions())

    def render(self) -> str:
        lines: list[str] = []
        for metric in vars(self).values():
            lines += metric.render()
        return "\n".join(lines) + "\n"

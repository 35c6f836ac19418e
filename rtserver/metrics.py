"""Process metrics, served at /metrics in Prometheus text format (exposition format 0.0.4).

Every metric is declared here, in :class:`Metrics` (one per process), and kept by
``prometheus_client``. ``rtserver serve`` runs it in its multiprocess mode, whatever the
number of worker processes: each process of the run keeps its values in memory-mapped files
in one new, private directory (:func:`shared_for_this_run`), and /metrics, served by the
server process, reads every process's files and adds them up. Counters and histograms are
summed over every process the run has had (a restarted worker's counts are not lost); each
gauge is combined as its ``multiprocess_mode`` says, over the live processes only (a dead
worker is forgotten: :meth:`SharedMetrics.forget`). Elsewhere (tests, ``rtserver analyze``)
the values are plain floats in this process.

What that costs the hot path was measured (``python -m bench.metrics``, 2-core x86): an
update takes 0.9 to 1.7 µs against 0.4 to 0.6 µs for the hand-written metrics this replaced,
and the ~190 updates a live session makes a second come to 0.33 % of one core at 16
sessions (0.17 % before).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest, multiprocess, values

if TYPE_CHECKING:
    from rtserver.cluster.registry import NodeStatus
    from rtserver.server.admission import Admission
    from rtserver.server.cpu_budget import CpuBudget

# Counters and histograms get no `_created` sample: the multiprocess mode has none, and a
# test's or a tool's metrics should read as the server's do.
prometheus_client.disable_created_metrics()


class SharedMetrics:
    """The directory where every process of one server run keeps its metrics' files."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def render(self) -> str:
        """Every process's metrics, added up, in Prometheus text format."""
        registry = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(registry, path=str(self.path))
        return generate_latest(registry).decode()

    def forget(self, pid: int) -> None:
        """Drops the live gauges of a process that has exited (its counts stay)."""
        multiprocess.mark_process_dead(pid, str(self.path))


_shared: SharedMetrics | None = None  # this process's, once it shares its metrics


def share_between_processes(path: Path) -> SharedMetrics:
    """Makes every metric this process declares from now on keep its values in ``path``,
    for any process sharing it to read. Called before the process makes its
    :class:`Metrics`: by ``rtserver serve`` (:func:`shared_for_this_run`), and by each worker
    with the path in its start message."""
    global _shared
    if _shared is not None:
        if _shared.path != path:
            raise RuntimeError(f"metrics are already shared in {_shared.path}")
        return _shared
    # prometheus_client takes its mode from the environment and from nowhere else: it picks
    # the class of every value it makes (values.ValueClass) from PROMETHEUS_MULTIPROC_DIR
    # when it is imported, and a multiprocess value reads the directory from that variable
    # again whenever a series is made (a new label value, at any time). So the variable has
    # to hold the path for as long as the process lives, and this is the one place rtserver
    # writes os.environ. The value class is set here as well: prometheus_client was imported
    # (above) long before a worker has read its start message. The variable reaches the
    # worker processes too; each sets it again from its start message all the same.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    values.ValueClass = values.MultiProcessValue()
    _shared = SharedMetrics(path)
    return _shared


@contextlib.contextmanager
def shared_for_this_run() -> Iterator[SharedMetrics]:
    """A new private directory (mode 0700) for one server run's metrics, shared from this
    process on; removed, with every process's files, at the end of the block. Never one
    another run used: files left behind would add their counts to this run's."""
    with tempfile.TemporaryDirectory(prefix="rtserver-metrics-") as path:
        yield share_between_processes(Path(path))


M = TypeVar("M", prometheus_client.Counter, prometheus_client.Gauge, prometheus_client.Histogram)


class _Metric(Generic[M]):
    """One prometheus_client metric, its labels given as keywords: ``inc(1, reason="x")``."""

    def __init__(self, metric: M, name: str, registry: CollectorRegistry) -> None:
        self._metric: M = metric
        self.name = name
        self._registry = registry
        self._children: dict[tuple[tuple[str, str], ...], M] = {}

    def _series(self, labels: dict[str, str]) -> M:
        if not labels:
            return self._metric
        key = tuple(labels.items())
        child = self._children.get(key)
        if child is None:
            # prometheus_client's labels() checks the names and looks the series up under a
            # lock on every call; remembered here, a labelled update costs 40 % less
            # (bench.metrics: 1.1 against 1.9 µs).
            child = self._children[key] = self._metric.labels(**labels)
        return child

    def value(self, **labels: str) -> float:
        """This process's value of one series (0 before its first update)."""
        return self._registry.get_sample_value(self.name, labels) or 0.0


class Counter(_Metric[prometheus_client.Counter]):
    def __init__(
        self, registry: CollectorRegistry, name: str, help: str, labels: Sequence[str] = ()
    ) -> None:
        metric = prometheus_client.Counter(name, help, labels, registry=registry)
        super().__init__(metric, name, registry)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self._series(labels).inc(amount)


GaugeMode = Literal["livesum", "livemax", "livemostrecent"]


class Gauge(_Metric[prometheus_client.Gauge]):
    """A gauge; ``mode`` says how /metrics combines the live processes' values."""

    def __init__(self, registry: CollectorRegistry, name: str, help: str, mode: GaugeMode) -> None:
        metric = prometheus_client.Gauge(name, help, registry=registry, multiprocess_mode=mode)
        super().__init__(metric, name, registry)

    def set(self, value: float, **labels: str) -> None:
        self._series(labels).set(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self._series(labels).inc(amount)


class Histogram(_Metric[prometheus_client.Histogram]):
    def __init__(
        self, registry: CollectorRegistry, name: str, help: str, buckets: Sequence[float]
    ) -> None:
        metric = prometheus_client.Histogram(name, help, registry=registry, buckets=buckets)
        super().__init__(metric, name, registry)

    def observe(self, value: float) -> None:
        self._metric.observe(value)

    @property
    def count(self) -> int:
        """Observations this process made."""
        return int(self._registry.get_sample_value(self.name + "_count") or 0)


class Metrics:
    """Every metric the server exports; one instance per process. With shared metrics
    (:func:`share_between_processes` first), :meth:`render` shows every process's."""

    def __init__(self) -> None:
        self.shared = _shared
        self._registry = registry = CollectorRegistry(auto_describe=False)

        def counter(name: str, help: str, *labels: str) -> Counter:
            return Counter(registry, name, help, labels)

        def gauge(name: str, help: str, mode: GaugeMode) -> Gauge:
            return Gauge(registry, name, help, mode)

        def histogram(name: str, help: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(registry, name, help, buckets)

        # Gauges' modes. livesum: each process counts its own, /metrics shows the total.
        # livemax: each process's own reading, /metrics shows the most loaded process's
        # (what admission control, which refuses per process, reads first). livemostrecent:
        # only the process that places sessions keeps the CPU budget and sets them.
        self.live_sessions = gauge(
            "rtserver_live_sessions", "Sessions with a live peer.", "livesum"
        )
        self.observers = gauge("rtserver_observers", "Connected observer websockets.", "livesum")
        self.loop_lag = gauge(
            "rtserver_event_loop_lag_seconds",
            "How late the event loop wakes, mean over the last 2 s (admission control reads it);"
            " the most loaded process's.",
            "livemax",
        )
        self.recent_signal_lag = gauge(
            "rtserver_recent_signal_lag_seconds",
            "Mean lag of the signals published in the last 3 s that only analysis held back"
            " (admission control reads it); the most loaded process's.",
            "livemax",
        )
        self.cpu_busy = gauge(
            "rtserver_cpu_busy_cores",
            "Cores the machine keeps busy, mean over the last 2 s (the CPU budget reads it).",
            "livemostrecent",
        )
        self.cpu_session_cost = gauge(
            "rtserver_cpu_session_cores",
            "What one live session costs, measured (or the prior before any): the CPU budget.",
            "livemostrecent",
        )
        self.cpu_headroom = gauge(
            "rtserver_cpu_headroom_sessions",
            "More sessions the CPU budget would admit now (-1: the budget is off).",
            "livemostrecent",
        )
        self.sessions_total = counter(
            "rtserver_sessions_total", "Sessions started, by outcome.", "outcome"
        )
        self.reconnects = counter(
            "rtserver_reconnects_total", "Candidates who came back after a dropped connection."
        )
        self.frames_decoded = counter("rtserver_frames_decoded_total", "Video frames decoded.")
        self.frames_analysed = counter("rtserver_frames_analysed_total", "Video frames analysed.")
        self.frames_skipped = counter(
            "rtserver_frames_skipped_total", "Sampled frames not analysed, by reason.", "reason"
        )
        self.face_detections = counter(
            "rtserver_face_detections_total",
            "Face detector runs, by reason (scheduled, lost: the tracked face stopped matching).",
            "reason",
        )
        self.crops_dropped = counter(
            "rtserver_crops_dropped_total",
            "Face crops the model batcher dropped, by reason (overload, stale).",
            "reason",
        )
        self.hints = counter(
            "rtserver_hints_total", "Live hints sent to candidates, by code.", "code"
        )
        self.audio_seconds = counter(
            "rtserver_audio_seconds_total", "Seconds of audio decoded and analysed."
        )
        self.signals = counter("rtserver_signals_total", "Signal messages published.")
        self.late_results = counter(
            "rtserver_late_results_total", "Analysis results that arrived after their second."
        )
        self.analysis_cpu = counter(
            "rtserver_analysis_cpu_seconds_total",
            "Thread CPU time spent in analysis, by path.",
            "path",
        )
        self.stage_cpu = counter(
            "rtserver_stage_cpu_seconds_total",
            "Thread CPU time by pipeline stage: luma, track, detect (video); crop, infer "
            "(model batcher, per model as infer_<name>); audio_kernels, vad, fluency (audio).",
            "stage",
        )
        self.media_seconds = counter(
            "rtserver_media_seconds_total", "Seconds of media published as signals."
        )
        # Over sessions, not per session: a label per session id would grow without bound
        # and name every candidate's session to whoever reads the metrics. A live
        # session's own figure is in its HR status (GET /api/v1/sessions/{id}).
        self.session_cost = histogram(
            "rtserver_session_analysis_cpu_ratio",
            "Analysis CPU seconds per second of media of each session, observed when it ends.",
            buckets=(0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0),
        )
        self.rejected = counter(
            "rtserver_rejected_total", "Refused API requests, by error code.", "code"
        )
        self.store_queue = gauge(
            "rtserver_store_write_queue", "Store writes waiting for the writer thread.", "livesum"
        )
        self.store_retries = counter(
            "rtserver_store_write_retries_total",
            "Store writes that failed and were tried again (the database was locked, the"
            " disk full or failing).",
        )
        self.store_failures = counter(
            "rtserver_store_write_failures_total",
            "Store writes that failed for good (not retried: a broken constraint).",
        )
        self.store_backlogged = counter(
            "rtserver_store_backlogged_total",
            "Messages the writer's full queue turned back; each session offers them again.",
        )
        self.control_refused = counter(
            "rtserver_control_messages_refused_total",
            "Candidate control-channel messages refused, by reason (too_large, not_json, "
            "malformed, unknown_question, backwards).",
            "reason",
        )
        self.model_batch = histogram(
            "rtserver_model_batch_size",
            "Faces per model batch (crops from all live sessions).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.signal_lag = histogram(
            "rtserver_signal_lag_seconds",
            "End of a second of media to publication of its signal.",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0),
        )
        # Speech-to-text (rtserver/inference/asr_queue.py): complete, so it never drops; its
        # backlog is what admission control reads.
        self.asr_backlog = gauge(
            "rtserver_asr_backlog_seconds",
            "Seconds of speech waiting for speech-to-text or being decoded (admission control"
            " reads it).",
            "livesum",
        )
        self.asr_audio_seconds = counter(
            "rtserver_asr_audio_seconds_total", "Seconds of utterance audio transcribed."
        )
        self.asr_failures = counter(
            "rtserver_asr_failures_total", "Utterances the recogniser failed on."
        )
        self.asr_decode_seconds = histogram(
            "rtserver_asr_decode_seconds",
            "Wall time of one speech-to-text call (one utterance or one batch).",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
        )
        self.transcripts = counter("rtserver_transcripts_total", "Transcript messages published.")
        self.transcript_lag = histogram(
            "rtserver_transcript_lag_seconds",
            "End of an utterance to publication of its transcript.",
            buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
        )
        # The Redis bus (rtserver/bus/redis.py). A message dropped from the bus is not lost:
        # the store has it, and observers read it from there.
        self.bus_published = counter(
            "rtserver_bus_published_total", "Messages the Redis bus added to their streams."
        )
        self.bus_dropped = counter(
            "rtserver_bus_dropped_total",
            "Messages the Redis bus dropped, by reason (queue_full, redis_error, unpackable,"
            " closed); observers read them from the store.",
            "reason",
        )
        self.bus_redis_errors = counter(
            "rtserver_bus_redis_errors_total",
            "Failed Redis calls of the bus, by side (publish, read).",
            "side",
        )
        self.bus_overflows = counter(
            "rtserver_bus_subscriber_overflows_total",
            "Subscriptions the Redis bus cut off, by reason (behind: the observer fell a whole"
            " queue behind; redis_lost; bus_closed); each observer reconnects.",
            "reason",
        )

        # Many hosts (rtserver/cluster/): what this front end last read of the node registry.
        self.cluster_nodes = gauge(
            "rtserver_cluster_nodes", "Media nodes heartbeating in the registry.", "livemostrecent"
        )
        self.cluster_nodes_admitting = gauge(
            "rtserver_cluster_nodes_admitting",
            "Media nodes with room for another session (capacity, admission, CPU budget).",
            "livemostrecent",
        )
        self.cluster_live_sessions = gauge(
            "rtserver_cluster_live_sessions",
            "Sessions live on every media node, as their heartbeats said.",
            "livemostrecent",
        )

    def observe_nodes(self, nodes: Sequence[NodeStatus]) -> None:
        """Copies the node registry's figures into their gauges (a front end, before a render)."""
        self.cluster_nodes.set(len(nodes))
        self.cluster_nodes_admitting.set(sum(1 for n in nodes if n.has_room))
        self.cluster_live_sessions.set(sum(n.live for n in nodes))

    def observe_cpu_budget(self, budget: CpuBudget) -> None:
        """Copies the CPU budget's readings into their gauges (before a render)."""
        self.cpu_busy.set(round(budget.busy_cores() or 0.0, 4))
        self.cpu_session_cost.set(round(budget.session_cores(), 4))
        self.cpu_headroom.set(budget.headroom_sessions())

    def observe_admission(self, admission: Admission) -> None:
        """Copies admission control's readings into their gauges."""
        self.loop_lag.set(admission.loop_lag.lag_s)
        self.recent_signal_lag.set(admission.signal_lag.mean_s())

    def render(self) -> str:
        """Prometheus text: every process's metrics when shared, else this process's."""
        if self.shared is not None:
            return self.shared.render()
        return generate_latest(self._registry).decode()

"""Metrics: one process's, and a server run's shared by several processes (as the workers
share them), read back the way /metrics reads them.

The shared mode is process-wide (prometheus_client's), so the processes that share their
metrics here are children; this one only reads their files.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rtserver.metrics import Metrics, SharedMetrics

# A process of a server run: shares its metrics in argv[1], runs argv[2], prints its pid.
PROCESS = """
import os, sys
from pathlib import Path
from rtserver.metrics import Metrics, share_between_processes
share_between_processes(Path(sys.argv[1]))
metrics = Metrics()
exec(sys.argv[2])
print(os.getpid())
"""


def run_process(directory: Path, code: str) -> int:
    """Runs ``code`` (with ``metrics`` at hand) in a process sharing ``directory``; its pid."""
    done = subprocess.run(
        [sys.executable, "-c", PROCESS, str(directory), code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout.split()[-1])


def samples(page: str) -> dict[str, float]:
    """Prometheus text -> {sample with its labels: value}."""
    lines = (line.rsplit(" ", 1) for line in page.splitlines() if not line.startswith("#"))
    return {name: float(value) for name, value in lines}


def test_the_counts_of_every_process_add_up(tmp_path: Path) -> None:
    for lag in (0.15, 0.4):
        run_process(
            tmp_path,
            "metrics.sessions_total.inc(outcome='hangup');"
            " metrics.stage_cpu.inc(0.25, stage='luma');"
            f" metrics.signal_lag.observe({lag})",
        )
    page = SharedMetrics(tmp_path).render()
    values = samples(page)
    assert values['rtserver_sessions_total{outcome="hangup"}'] == 2
    assert values['rtserver_stage_cpu_seconds_total{stage="luma"}'] == 0.5
    assert values['rtserver_signal_lag_seconds_bucket{le="0.1"}'] == 0
    assert values['rtserver_signal_lag_seconds_bucket{le="0.2"}'] == 1
    assert values['rtserver_signal_lag_seconds_bucket{le="0.5"}'] == 2
    assert values["rtserver_signal_lag_seconds_count"] == 2
    assert values["rtserver_signal_lag_seconds_sum"] == 0.55
    # One family each, whatever the number of processes, and no label names a process.
    assert page.count("# TYPE rtserver_sessions_total counter") == 1
    assert "pid=" not in page and "worker=" not in page


def test_a_dead_process_gauges_go_and_its_counts_stay(tmp_path: Path) -> None:
    shared = SharedMetrics(tmp_path)
    dead = run_process(
        tmp_path,
        "metrics.live_sessions.set(2); metrics.loop_lag.set(0.5); metrics.store_queue.set(4);"
        " metrics.frames_decoded.inc(30)",
    )
    run_process(
        tmp_path,
        "metrics.live_sessions.set(1); metrics.loop_lag.set(0.1); metrics.frames_decoded.inc(5)",
    )
    values = samples(shared.render())
    assert values["rtserver_live_sessions"] == 3  # livesum
    assert values["rtserver_event_loop_lag_seconds"] == 0.5  # livemax: the most loaded
    assert values["rtserver_store_write_queue"] == 4
    assert values["rtserver_frames_decoded_total"] == 35

    shared.forget(dead)
    values = samples(shared.render())
    assert values["rtserver_live_sessions"] == 1
    assert values["rtserver_event_loop_lag_seconds"] == 0.1
    assert values["rtserver_store_write_queue"] == 0
    assert values["rtserver_frames_decoded_total"] == 35  # counts are never taken back


def test_the_cpu_budget_gauges_are_the_setting_process_alone(tmp_path: Path) -> None:
    # Only the process that places sessions keeps the CPU budget; the others' never-set
    # zeros must not show, nor win over its -1 (the budget is off).
    run_process(tmp_path, "metrics.cpu_headroom.set(-1); metrics.cpu_busy.set(0.5)")
    run_process(tmp_path, "pass")
    values = samples(SharedMetrics(tmp_path).render())
    assert values["rtserver_cpu_headroom_sessions"] == -1
    assert values["rtserver_cpu_busy_cores"] == 0.5
    assert "rtserver_cpu_session_cores" not in values  # never set by anyone


def test_one_process_metrics_without_sharing() -> None:
    metrics = Metrics()
    assert metrics.shared is None
    metrics.crops_dropped.inc(reason="overload")
    metrics.crops_dropped.inc(2, reason="overload")
    metrics.observers.inc()
    metrics.observers.inc(-1)
    metrics.model_batch.observe(3)
    assert metrics.crops_dropped.value(reason="overload") == 3
    assert metrics.crops_dropped.value(reason="stale") == 0
    assert metrics.model_batch.count == 1
    values = samples(metrics.render())
    assert values['rtserver_crops_dropped_total{reason="overload"}'] == 3
    assert values["rtserver_observers"] == 0
    assert values['rtserver_model_batch_size_bucket{le="4.0"}'] == 1
    assert not any(name.endswith("_created") for name in values)

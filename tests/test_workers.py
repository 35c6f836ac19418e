"""The worker pool's pieces that need no process: merging every worker's metrics."""

from __future__ import annotations

from rtserver.metrics import Metrics
from rtserver.server.workers import merge_metrics


def test_merge_labels_each_workers_samples_under_one_help_and_type() -> None:
    front, worker = Metrics(), Metrics()
    worker.live_sessions.set(3)
    worker.sessions_total.inc(outcome="hangup")
    worker.signal_lag.observe(0.2)
    merged = merge_metrics(front.render(), [("0", worker.render()), ("1", Metrics().render())])
    lines = merged.splitlines()
    assert lines.count("# TYPE rtserver_live_sessions gauge") == 1
    assert "rtserver_live_sessions 0" in lines
    assert 'rtserver_live_sessions{worker="0"} 3' in lines
    assert 'rtserver_live_sessions{worker="1"} 0' in lines
    assert 'rtserver_sessions_total{worker="0",outcome="hangup"} 1' in lines
    assert 'rtserver_signal_lag_seconds_bucket{worker="0",le="0.2"} 1' in lines
    assert 'rtserver_signal_lag_seconds_count{worker="0"} 1' in lines
    # Every sample follows its own family's HELP and TYPE.
    family = ""
    for line in lines:
        if line.startswith("# TYPE "):
            family = line.split()[2]
        elif not line.startswith("#"):
            assert line.startswith(family), (family, line)

"""Smoke test of the metrics bench (bench/metrics.py): a quick run and its JSON report.

It runs in a process of its own: the bench puts its process in prometheus_client's
multiprocess mode, which is process-wide.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_quick_run_reports_every_contender(tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.metrics", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    contenders = {"hand-written", "prom", "prom-mp", "rtserver"}
    assert set(figures["ns_per_update"]) == contenders
    for ops in figures["ns_per_update"].values():
        assert set(ops) == {"counter", "counter_label", "histogram", "gauge"}
        assert all(ns > 0 for ns in ops.values())
    assert 150 < figures["updates_per_session_s"] < 250
    assert set(figures["core_share"]) == contenders
    assert "share of one core" in done.stdout

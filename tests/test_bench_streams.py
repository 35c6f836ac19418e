"""Smoke test of the concurrent-streams benchmark (bench/streams/): one tiny real run.

Two steps (1 and 2 streams, 6 s each) in both modes against real servers, with real aiortc
peers replaying pre-encoded VP8 and Opus from a generator process. It checks the JSON report's
shape, that every session's seconds arrived contiguous from 0, that the numbers are finite,
and that the plot was written; it does not judge the figures, which depend on the machine.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import streams  # noqa: E402

pytestmark = pytest.mark.e2e

SECONDS = 6
STEP_NUMBERS = (
    "server_cpu_cores",
    "server_cpu_per_stream",
    "rss_mb",
    "rss_per_stream_mb",
    "frames_decoded_per_s",
    "frames_analysed_per_s",
    "generator_cpu_per_stream",
    "generator_late_p99_ms",
    "window_s",
)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def test_tiny_ramp_in_both_modes_writes_json_and_plot(
    tmp_path: Path, models_dir: Path, media_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, png = tmp_path / "streams.json", tmp_path / "streams.png"
    argv = ["--ramp", "1,2", "--seconds", str(SECONDS), "--analysis", "both"]
    argv += [
        "--json",
        str(out),
        "--plot",
        str(png),
        "--media-dir",
        str(media_dir / "bench-streams"),
    ]
    assert streams.main(argv) == 0
    printed = capsys.readouterr().out
    assert "targets:" in printed and "where the server's CPU goes" in printed
    assert "where the signal lag goes" in printed

    report = json.loads(out.read_text())
    assert {"config", "steps", "comparison", "max_sustainable", "targets"} <= set(report)
    steps = report["steps"]
    assert [(s["mode"], s["streams"]) for s in steps] == [
        ("off", 1),
        ("off", 2),
        ("on", 1),
        ("on", 2),
    ]
    for step in steps:
        where = (step["mode"], step["streams"])
        assert step["connected"] == step["streams"], where
        assert len(step["sessions"]) == step["streams"], where
        for session in step["sessions"]:
            ts = session["t"]
            assert ts == list(range(len(ts))) and len(ts) >= SECONDS, (where, ts)
            assert session["final"], (where, session["error"])
        assert step["seconds_missing"] == 0 and step["seconds_duplicate"] == 0, where
        for key in STEP_NUMBERS:
            assert _finite(step[key]), (where, key, step[key])
        for q in ("p50", "p95", "p99"):
            assert _finite(step["lag_ms"][q]) and step["lag_ms"][q] > 0, (where, q)
        # The server's part of the lag is inside the whole: what comes before it (the
        # network, jitter buffers, decoding) is never negative by more than clock noise.
        assert step["server_lag_ms"]["p50"] <= step["lag_ms"]["p50"], where
        assert step["before_server_lag_ms"]["p50"] > -5.0, where
        assert step["server_cpu_per_stream"] > 0 and step["frames_decoded_per_s"] > 0, where
        breakdown = step["breakdown"]
        assert _finite(breakdown["other"]), where
        assert all(_finite(v) for v in breakdown["stages"].values()), where
        assert all(_finite(v) for v in breakdown["paths"].values()), where
        if step["mode"] == "on":
            assert step["frames_analysed_per_s"] > 0, where

    assert [row["streams"] for row in report["comparison"]] == [1, 2]
    assert all(_finite(row["ratio"]) for row in report["comparison"])
    assert set(report["max_sustainable"]) == {"on", "off"}
    targets = report["targets"]
    assert len(targets) == 3
    for target in targets:
        assert set(target) == {"name", "value", "target", "met"}
        assert isinstance(target["name"], str) and isinstance(target["met"], bool)
        assert _finite(target["target"])
        assert target["value"] is None or _finite(target["value"])
    assert png.is_file() and png.stat().st_size > 10_000

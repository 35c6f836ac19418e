"""Smoke test of the soak bench (bench/soak.py): a tiny real run, two rounds of two sessions.

A real server on its defaults, real aiortc peers replaying VP8 and Opus from a generator
process. It checks the JSON report's shape and that every session completed (every second and
the final); it does not judge the memory slope, which needs hundreds of sessions.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import soak  # noqa: E402

pytestmark = pytest.mark.e2e


def test_two_tiny_rounds_report_rss_and_a_slope(
    tmp_path: Path, models_dir: Path, media_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "soak.json"
    argv = ["--sessions", "4", "--per-round", "2", "--seconds", "3", "--warmup-rounds", "0"]
    argv += ["--settle", "0.5", "--json", str(out), "--media-dir", str(media_dir / "bench")]
    assert soak.main(argv) == 0
    printed = capsys.readouterr().out
    assert "slope after warm-up" in printed and "tree RSS MB" in printed

    report = json.loads(out.read_text())
    assert report["sessions_run"] == 4 and report["sessions_completed"] == 4
    rounds = report["rounds"]
    assert [r["index"] for r in rounds] == [1, 2]
    assert [r["sessions_done"] for r in rounds] == [2, 4]
    for r in rounds:
        assert r["completed"] == 2 and r["end_reasons"] == {"hangup": 2}, r
        # The server and its worker processes (one per core on defaults), each measured.
        assert r["process_rss_mb"] and all(mb > 0 for mb in r["process_rss_mb"].values())
        assert math.isclose(r["rss_mb"], sum(r["process_rss_mb"].values()), abs_tol=1.0)
    assert report["idle_rss_mb"] > 0
    assert isinstance(report["slope_mb_per_session"], float)
    assert report["slope_rounds"] == [1, 2]
    assert report["target_mb_per_session"] == soak.TARGET_MB_PER_SESSION
    assert isinstance(report["target_met"], bool)

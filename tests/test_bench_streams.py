"""Smoke test of the concurrent-streams benchmark (bench/streams/): one tiny real run.

Two steps (1 and 2 streams, 6 s each) in the three modes (decode-only, analysis, analysis
with speech-to-text) against real servers, with real aiortc
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


def test_tiny_ramp_in_every_mode_writes_json_and_plot(
    tmp_path: Path, models_dir: Path, media_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, png = tmp_path / "streams.json", tmp_path / "streams.png"
    argv = ["--ramp", "1,2", "--no-until-fail", "--seconds", str(SECONDS), "--analysis", "both"]
    argv += ["--transcribe", "both"]
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
        ("asr", 1),
        ("asr", 2),
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
        if step["mode"] != "off":
            assert step["frames_analysed_per_s"] > 0, where
        heard = step["transcript"]
        if step["mode"] == "asr":
            # The replayed candidate says its first sentence in the first seconds.
            assert heard["utterances"] >= step["streams"] and heard["words"] > 0, where
            assert 0 < heard["lag_ms"]["p50"] <= heard["lag_ms"]["max"], where
        else:
            assert heard["utterances"] == 0, where

    assert [row["streams"] for row in report["comparison"]] == [1, 2]
    assert all(_finite(row["ratio"]) for row in report["comparison"])
    assert set(report["max_sustainable"]) == {"on", "off", "asr"}
    asr = report["asr_comparison"]
    assert [row["streams"] for row in asr] == [1, 2]
    assert all(_finite(row["added_per_speaking_stream"]) for row in asr)
    assert 0 < asr[0]["speech_fraction"] < 1
    assert "speech-to-text: asr" in printed
    targets = report["targets"]
    assert len(targets) == 6
    assert any(t["name"].startswith("transcript lag p95") for t in targets)
    for target in targets:
        assert set(target) == {"name", "value", "target", "met"}
        assert isinstance(target["name"], str) and isinstance(target["met"], bool)
        assert _finite(target["target"])
        assert target["value"] is None or _finite(target["value"])
    assert png.is_file() and png.stat().st_size > 10_000


def test_defaults_with_a_burst_counts_refusals(
    tmp_path: Path, models_dir: Path, media_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On the server's own limits (here a ceiling of 2 sessions), a burst of 3 has its
    excess refused with a 503 code, counted; the admitted sessions run complete."""
    out = tmp_path / "defaults.json"
    argv = ["--ramp", "1", "--no-until-fail", "--seconds", "4", "--analysis", "on"]
    argv += ["--limits", "defaults", "--burst", "3", "--server-args", "--max-sessions 2"]
    argv += ["--json", str(out), "--media-dir", str(media_dir / "bench-streams")]
    assert streams.main(argv) == 0
    assert "burst of 3" in capsys.readouterr().out
    report = json.loads(out.read_text())
    ramp, burst = report["steps"]
    assert ramp["streams"] == 1 and ramp["admitted"] == 1 and ramp["refused"] == {}
    assert burst["burst"] and burst["streams"] == 3
    refused = burst["refused"]
    assert sum(refused.values()) >= 1 and set(refused) <= {"at_capacity", "overloaded"}
    assert burst["admitted"] + sum(refused.values()) == 3
    assert len(burst["sessions"]) == burst["admitted"] >= 1
    for session in burst["sessions"]:
        assert session["contiguous"] and session["final"], session
    assert burst["seconds_missing"] == 0
    names = [t["name"] for t in report["targets"]]
    assert names[0].startswith("streams sustained on the server's defaults")
    assert any(name.startswith("burst of 3") for name in names)


def _step(streams: int, sustainable: bool = True, **extra: Any) -> dict[str, Any]:
    return {"streams": streams, "sustainable": sustainable, "refused": {}, **extra}


def test_max_sustained_stops_at_the_first_failure_or_refusal() -> None:
    from bench.streams.reporting import max_sustained

    assert max_sustained([_step(1), _step(2), _step(4, False), _step(8)], 16) == (2, False)
    refused = _step(4, refused={"overloaded": 1})
    assert max_sustained([_step(1), _step(2), refused], 16) == (2, False)
    assert max_sustained([_step(8), _step(16)], 16) == (16, True)
    burst = _step(24, burst=True, refused={"overloaded": 7})
    assert max_sustained([_step(8), burst], 16) == (8, False)


def test_ramp_climbs_on_until_a_step_fails() -> None:
    import argparse

    from bench.streams.ramp import ramp_steps

    args = argparse.Namespace(ramp=[1, 2, 4, 8], until_fail=True, ramp_max=20)
    done: list[dict[str, Any]] = []
    seen = []
    for n in ramp_steps(args, done):
        seen.append(n)
        done.append(_step(n, sustainable=n < 16))
    assert seen == [1, 2, 4, 8, 12, 16]
    args.until_fail = False
    assert list(ramp_steps(args, [])) == [1, 2, 4, 8]

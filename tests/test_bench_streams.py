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


def test_two_hosts_against_embedded_counts_every_part_and_the_costs(
    tmp_path: Path, models_dir: Path, media_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--deployment both``, decode-only, one step of 2 streams: the same step against one
    embedded server and against two hosts (2 front ends, 2 nodes, a private Redis, a fresh
    PostgreSQL database). Every session's seconds arrive on both; the two-host CPU is the
    sum of its parts; Redis's XADDs and PostgreSQL's inserted rows match the signals the
    observers got in the same window."""
    from postgres import unreachable_reason

    reason = unreachable_reason()
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path / "deployments.json"
    argv = ["--deployment", "both", "--analysis", "off", "--ramp", "2", "--no-until-fail"]
    argv += ["--seconds", "6", "--json", str(out)]
    argv += ["--media-dir", str(media_dir / "bench-streams")]
    assert streams.main(argv) == 0
    printed = capsys.readouterr().out
    assert "embedded (one server" in printed and "per live session-second" in printed

    report = json.loads(out.read_text())
    steps = report["steps"]
    assert [(s["deployment"], s["mode"], s["streams"]) for s in steps] == [
        ("embedded", "off", 2),
        ("two-hosts", "off", 2),
    ]
    for step in steps:
        where = step["deployment"]
        assert step["connected"] == 2 and step["seconds_missing"] == 0, where
        assert all(s["contiguous"] and s["final"] for s in step["sessions"]), where
        assert step["end_reasons"] == {"hangup": 2}, where
        assert _finite(step["server_cpu_per_stream"]) and step["server_cpu_per_stream"] > 0

    embedded, two = steps
    assert set(embedded["parts_cpu_per_stream"]) == {"server"}
    parts = two["parts_cpu_per_stream"]
    assert set(parts) == {
        "host-a front", "host-a node", "host-b front", "host-b node", "redis-server",
        "postgresql",
    }  # fmt: skip
    assert sum(parts.values()) == pytest.approx(two["server_cpu_per_stream"])
    # The nodes decode the video: most of the deployment's CPU. (Not each node: joins that
    # arrive at once may all be placed on one, as the registry's load lags them.)
    nodes = parts["host-a node"] + parts["host-b node"]
    assert nodes > 0.5 * two["server_cpu_per_stream"]
    assert two["postgresql_backends"] >= 4  # each front end and node holds its own

    costs = two["costs"]
    seconds = costs["session_seconds"]
    assert 2 <= seconds <= 2 * two["window_s"] + 0.01
    redis, pg = costs["totals"]["redis"], costs["totals"]["postgresql"]
    # One XADD per signal: those the observers got inside the window, give or take the
    # ones in flight at its two ends.
    assert abs(redis["calls"]["xadd"] - two["signals_in_window"]) <= 4, (redis, two)
    assert redis["calls"]["xadd"] >= 0.6 * seconds
    assert redis["bytes_in"] > 400 * redis["calls"]["xadd"]  # a packed signal is ~400 bytes
    assert redis["cpu_s"] > 0
    # Every published message was stored first: one row inserted per XADD.
    assert abs(pg["tup_inserted"] - redis["calls"]["xadd"]) <= 4, (pg, redis)
    assert pg["xact_commit"] >= pg["tup_inserted"] - 4
    above = costs["per_session_second_above_idle"]["redis"]["ops"]
    assert 1.0 <= above < costs["per_session_second"]["redis"]["ops"]
    whole = two["costs_whole_step_per_session"]
    assert whole["redis"]["calls"]["xadd"] >= 6  # every second, the final and the close
    assert whole["postgresql"]["tup_inserted"] >= 7  # those, and the session's own row

    comparison = report["deployments"]["rows"]
    assert [(r["mode"], r["streams"]) for r in comparison] == [("off", 2)]
    assert comparison[0]["both_sustainable"] and _finite(comparison[0]["ratio"])
    paper = report["on_paper"]
    assert paper["redis_ops_per_session_second"] == pytest.approx(above)
    assert paper["redis_hgetall_per_front_per_node_s"] > 0.5  # each front reads each node 1/s


def test_redis_samples_leave_out_their_own_info(redis_server: Any) -> None:
    """Two samples with nothing between them: no operation, no byte, as the bench's own
    INFO request and reply are taken out; then one SET of 1000 bytes shows as one op and
    at least 1000 bytes in."""
    import socket

    from bench.streams.costs import redis_delta, redis_sample

    first = redis_sample(redis_server.port)
    second = redis_sample(redis_server.port)
    idle = redis_delta(first, second)
    assert idle["ops"] == 0 and idle["bytes_in"] == 0 and idle["bytes_out"] == 0, idle
    with socket.create_connection(("127.0.0.1", redis_server.port)) as sock:
        value = b"v" * 1000
        sock.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000\r\n" + value + b"\r\n")
        assert sock.recv(16) == b"+OK\r\n"
    third = redis_sample(redis_server.port)
    one = redis_delta(second, third)
    assert one["calls"] == {"set": 1} and one["ops"] == 1
    assert 1000 < one["bytes_in"] < 1100 and one["bytes_out"] == 5


def test_nodes_per_primary_takes_the_tightest_limit() -> None:
    from bench.streams.paper import largest_m

    assert largest_m(lambda m: 10.0 * m, 95.0) == 9
    assert largest_m(lambda m: m * m, 100.0) == 10
    assert largest_m(lambda m: 50.0 * m, 10.0) == 0

"""On paper: from the measured cost of a session-second, how many media nodes one Redis
primary (and one PostgreSQL primary) can serve, and what fails first as nodes are added.

The model, for M hosts each with a front end and a media node of N live sessions:

- Redis operations per second = M·N·m + M·a + M²·c, where ``m`` is the measured operations
  per live session-second above idle (XADD, the front ends' XREADs, the pipelined EXPIREs),
  ``a`` the idle operations per host per second (heartbeats, call polls, blocked XREADs),
  and ``c`` the idle HGETALLs per front end per node per second: every front end reads
  every node's hash each second (cluster/host.py REFRESH_S), which grows as M².
- Redis bytes per second = M·N·(bytes in + bytes out) per session-second; Redis memory =
  M·N streams at ``BYTES_PER_ENTRY`` a signal, up to a 30-minute interview's 1800 entries.
- PostgreSQL commits per second = M·N·commits per session-second + M·(idle commits per host:
  each front end's reaper reads the live sessions every second); connections = M·backends per
  host (measured), against ``max_connections``.

Capacities are measured here, on the same machine, with a stated margin
(``USABLE_SHARE``): the deployment's redis-server under ``redis-benchmark`` (XADD of a
402-byte entry, 50 clients, not pipelined, as the worst case of the mix), and the
PostgreSQL server under ``pgbench`` (one 400-byte row inserted per transaction, 16 clients,
as the nodes' writer threads commit one message at a time).
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from postgres import ADMIN_URL, PG_BIN, create_database, drop_database  # noqa: E402
from redis_server import RedisServer  # noqa: E402

# Plan at half of a measured peak: headroom for bursts of joins, a slower disk, a failover.
USABLE_SHARE = 0.5
# The sessions a 2-core media node holds with analysis on (the issue: "16-20 live
# interviews" per box; bench.streams --analysis on measures it).
SESSIONS_PER_NODE = 20
# Redis memory per stream entry (rtserver/bus/redis.py's measured figure), and the entries
# of a 30-minute interview's stream (one signal a second; capped at STREAM_MAXLEN 2048).
BYTES_PER_ENTRY = 515
ENTRIES_PER_STREAM = 1800
REDIS_MEMORY_BYTES = 8 * 2**30  # an 8 GiB Redis primary (a stated assumption)
NETWORK_BYTES_S = 125e6  # 1 Gbit/s at the Redis primary
ENTRY = "m" * 402  # the size of a packed signal (rtserver/bus/redis.py)


def redis_capacity(work_dir: Path, requests: int = 100_000) -> dict[str, float]:
    """XADD operations a second that a private redis-server takes from redis-benchmark (50
    clients), not pipelined and pipelined by 16, on this machine."""
    server = RedisServer(work_dir).start()
    try:
        out = {}
        for name, pipeline in (("xadd_ops_s", 1), ("xadd_pipelined_ops_s", 16)):
            command = [
                "redis-benchmark", "-p", str(server.port), "-c", "50",
                "-n", str(requests * pipeline), "-P", str(pipeline), "-r", "10000", "--csv",
                "XADD", "rt:stream:__rand_int__", "MAXLEN", "~", "2048", "*", "m", ENTRY,
            ]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
            rows = list(csv.reader(io.StringIO(done.stdout)))
            out[name] = float(rows[-1][1])
        return out
    finally:
        server.stop()


PGBENCH_SCRIPT = (
    "\\set seq random(1, 1000000000)\n"
    "INSERT INTO bench_messages (session_id, seq, payload)"
    " VALUES ('0123456789abcdef0123456789abcdef', :seq, decode(repeat('ab', 400), 'hex'));\n"
)


def postgres_capacity(work_dir: Path, seconds: int = 5, admin_url: str = ADMIN_URL) -> float:
    """Single-row insert transactions a second that the PostgreSQL server commits for
    pgbench (16 clients), in a database of its own (dropped after)."""
    url = create_database(admin_url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE bench_messages (session_id TEXT, seq BIGINT, payload BYTEA,"
                " PRIMARY KEY (session_id, seq))"
            )
        work_dir.mkdir(parents=True, exist_ok=True)
        script = work_dir / "insert.sql"
        script.write_text(PGBENCH_SCRIPT)
        command = [
            str(PG_BIN / "pgbench"), "-n", "-f", str(script), "-c", "16", "-j", "2",
            "-T", str(seconds), url,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
        found = re.search(r"tps = ([0-9.]+)", done.stdout)
        if not found:
            raise RuntimeError(f"pgbench gave no tps:\n{done.stdout}\n{done.stderr}")
        return float(found.group(1))
    finally:
        drop_database(url, admin_url)


def max_connections(admin_url: str = ADMIN_URL) -> int:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("SHOW max_connections").fetchone()
    assert row is not None
    return int(row[0])


def measure_capacity(work_dir: Path) -> dict[str, Any]:
    """What this machine's Redis and PostgreSQL take (see the module docstring)."""
    out: dict[str, Any] = dict(redis_capacity(work_dir / "redis"))
    out["pg_insert_commits_s"] = postgres_capacity(work_dir / "pgbench")
    out["pg_max_connections"] = max_connections()
    return out


def largest_m(cost_of: Any, limit: float) -> int:
    """The largest M >= 0 with cost_of(M) <= limit (cost_of grows with M)."""
    m = 0
    while m < 100_000 and cost_of(m + 1) <= limit:
        m += 1
    return m


def on_paper(
    steps: list[dict[str, Any]], capacity: dict[str, Any] | None, sessions_per_node: int
) -> dict[str, Any] | None:
    """The per-session-second figures of the largest sustained two-host step, the fixed
    costs of the idle deployment, and the nodes one primary serves under each limit."""
    measured = [
        s
        for s in steps
        if s.get("deployment") == "two-hosts" and s.get("costs") and s["sustainable"]
    ]
    if not measured:
        return None
    step = max(measured, key=lambda s: s["costs"]["session_seconds"])
    costs = step["costs"]
    marginal, idle = costs["per_session_second_above_idle"], costs["idle_per_second"]
    hosts = 2
    redis_m = marginal["redis"]["ops"]
    hgetall = idle["redis"]["calls"].get("hgetall", 0.0)
    quad = hgetall / (hosts * hosts)  # per front end per node per second
    linear = (idle["redis"]["ops"] - hgetall) / hosts  # per host per second
    bytes_ss = marginal["redis"]["bytes_in"] + marginal["redis"]["bytes_out"]
    pg_commits = marginal["postgresql"]["xact_commit"]
    pg_idle_per_host = idle["postgresql"]["xact_commit"] / hosts
    backends_per_host = step["postgresql_backends"] / hosts
    n = sessions_per_node
    out: dict[str, Any] = {
        "from_step": {"deployment": "two-hosts", "mode": step["mode"], "streams": step["streams"]},
        "sessions_per_node": n,
        "redis_ops_per_session_second": redis_m,
        "redis_calls_per_session_second": marginal["redis"]["calls"],
        "redis_bytes_in_per_session_second": marginal["redis"]["bytes_in"],
        "redis_bytes_out_per_session_second": marginal["redis"]["bytes_out"],
        "redis_idle_ops_per_host_s": linear,
        "redis_hgetall_per_front_per_node_s": quad,
        "pg_commits_per_session_second": pg_commits,
        "pg_idle_commits_per_host_s": pg_idle_per_host,
        "pg_backends_per_host": backends_per_host,
        "capacity": capacity,
        "usable_share": USABLE_SHARE,
    }
    if capacity is None:
        return out

    def redis_ops(m: int) -> float:
        return m * n * redis_m + m * linear + m * m * quad

    limits = {
        "redis operations": largest_m(
            redis_ops, USABLE_SHARE * capacity["xadd_ops_s"]
        ),
        "redis network": largest_m(
            lambda m: m * n * bytes_ss, USABLE_SHARE * NETWORK_BYTES_S
        ),
        "redis memory": largest_m(
            lambda m: m * n * ENTRIES_PER_STREAM * BYTES_PER_ENTRY,
            USABLE_SHARE * REDIS_MEMORY_BYTES,
        ),
        "postgresql commits": largest_m(
            lambda m: m * (n * pg_commits + pg_idle_per_host),
            USABLE_SHARE * capacity["pg_insert_commits_s"],
        ),
        "postgresql connections": largest_m(
            lambda m: m * backends_per_host, capacity["pg_max_connections"] - 3
        ),
    }  # fmt: skip
    out["nodes_by_limit"] = dict(sorted(limits.items(), key=lambda item: item[1]))
    out["fails_first"] = min(limits, key=lambda k: limits[k])
    # Where Redis's operations go at its own limit: the sessions' streams, the hosts'
    # fixed polls, and the front ends' registry reads (M^2).
    at = limits["redis operations"]
    out["redis_ops_split_at_limit"] = {
        "nodes": at,
        "sessions": at * n * redis_m,
        "fixed_per_host": at * linear,
        "registry_reads": at * at * quad,
    }
    return out

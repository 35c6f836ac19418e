"""What Redis and PostgreSQL spend on a deployment's sessions: counters sampled before and
after a window, divided by the live session-seconds in it.

- **Redis** (the deployment's private redis-server): ``INFO all``'s ``commandstats`` (calls per
  command), ``total_net_input_bytes``/``total_net_output_bytes`` and ``used_cpu_sys`` +
  ``used_cpu_user``. The bench's own INFO calls are taken out: their calls are not counted,
  and the bytes of the INFO request and reply that fall inside the window are subtracted.
- **PostgreSQL** (our database on the shared server): ``pg_stat_database`` (commits,
  rollbacks, rows inserted, updated, deleted), the database's size, and ``pg_stat_wal``'s
  WAL bytes. WAL is counted for the whole server (PostgreSQL 15 keeps no per-database WAL
  figure), so other databases' writes in the window land in it: an upper bound. The
  backends' CPU comes from /proc (the step's ``postgresql`` part).

Samples are read over connections that are not the deployment's: Redis by a plain socket,
PostgreSQL over the admin database, so that sampling costs our database nothing.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

import psycopg

# Sent inline: its size on the wire is exactly these bytes (what total_net_input_bytes counts).
INFO_REQUEST = b"INFO all\r\n"
PG_COUNTERS = (
    "xact_commit",
    "xact_rollback",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
    "tup_returned",
    "tup_fetched",
    "blks_read",
    "blks_hit",
)


@dataclass(frozen=True)
class RedisSample:
    at: float  # monotonic seconds
    calls: dict[str, int]  # command -> calls since start (INFO itself left out)
    net_in: int  # bytes read from clients, since start
    net_out: int  # bytes written to clients, since start
    cpu_s: float  # used_cpu_sys + used_cpu_user
    reply_bytes: int  # the size of this sample's own INFO reply on the wire


def _read_exactly(sock: socket.socket, size: int, head: bytes) -> bytes:
    data = head
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("redis-server closed the connection")
        data += chunk
    return data


def redis_info(port: int, host: str = "127.0.0.1") -> tuple[dict[str, str], int]:
    """``INFO all`` as {field: value}, and the reply's size on the wire (bytes). A raw
    socket rather than redis-py: the bench must know its own bytes to take them out."""
    with socket.create_connection((host, port), timeout=5.0) as sock:
        sock.sendall(INFO_REQUEST)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis-server closed the connection")
            data += chunk
        header, rest = data.split(b"\r\n", 1)
        if not header.startswith(b"$"):
            raise ConnectionError(f"unexpected INFO reply: {header[:80]!r}")
        size = int(header[1:])
        body = _read_exactly(sock, size + 2, rest)[:size]
    fields = {}
    for line in body.decode().splitlines():
        if ":" in line and not line.startswith("#"):
            name, value = line.split(":", 1)
            fields[name] = value
    return fields, len(header) + 2 + size + 2


def redis_sample(port: int) -> RedisSample:
    fields, reply_bytes = redis_info(port)
    calls = {}
    for name, value in fields.items():
        if name.startswith("cmdstat_"):
            command = name.removeprefix("cmdstat_")
            stats = dict(item.split("=", 1) for item in value.split(","))
            if command != "info":
                calls[command] = int(stats["calls"])
    return RedisSample(
        at=time.monotonic(),
        calls=calls,
        net_in=int(fields["total_net_input_bytes"]),
        net_out=int(fields["total_net_output_bytes"]),
        cpu_s=float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"]),
        reply_bytes=reply_bytes,
    )


@dataclass(frozen=True)
class PgSample:
    at: float
    counters: dict[str, int]  # PG_COUNTERS of our database
    db_bytes: int  # pg_database_size
    wal_bytes: int  # the whole server's (pg_stat_wal)


def pg_sample(admin_url: str, database: str) -> PgSample:
    """Our database's counters, read over the admin database."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT {', '.join(PG_COUNTERS)}, pg_database_size(datname)"
            " FROM pg_stat_database WHERE datname = %s",
            (database,),
        ).fetchone()
        wal = conn.execute("SELECT wal_bytes FROM pg_stat_wal").fetchone()
    assert row is not None and wal is not None
    counters = {name: int(row[i]) for i, name in enumerate(PG_COUNTERS)}
    return PgSample(time.monotonic(), counters, int(row[-1]), int(wal[0]))


@dataclass(frozen=True)
class CostSample:
    redis: RedisSample
    pg: PgSample


def cost_sample(redis_port: int, admin_url: str, database: str) -> CostSample:
    return CostSample(redis_sample(redis_port), pg_sample(admin_url, database))


def redis_delta(before: RedisSample, after: RedisSample) -> dict[str, Any]:
    """What Redis did between two samples, the bench's own INFO taken out."""
    calls = {
        command: n - before.calls.get(command, 0)
        for command, n in after.calls.items()
        if n - before.calls.get(command, 0) > 0
    }
    return {
        "calls": dict(sorted(calls.items(), key=lambda item: -item[1])),
        "ops": sum(calls.values()),
        # The earlier sample's reply went out, and the later one's request came in, inside.
        "bytes_in": after.net_in - before.net_in - len(INFO_REQUEST),
        "bytes_out": after.net_out - before.net_out - before.reply_bytes,
        "cpu_s": after.cpu_s - before.cpu_s,
    }


def pg_delta(before: PgSample, after: PgSample) -> dict[str, Any]:
    out: dict[str, Any] = {k: after.counters[k] - before.counters[k] for k in PG_COUNTERS}
    out["db_bytes_grown"] = after.db_bytes - before.db_bytes
    out["wal_bytes_server"] = after.wal_bytes - before.wal_bytes
    return out


def per(values: dict[str, Any], divisor: float) -> dict[str, Any]:
    """Every number in ``values`` (nested dicts too) divided by ``divisor``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out[key] = per(value, divisor)
        else:
            out[key] = value / divisor if value is not None and divisor > 0 else None
    return out


def costs(
    before: CostSample,
    after: CostSample,
    session_seconds: float,
    postgres_cpu_s: float | None,
    idle: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Redis's and PostgreSQL's work between two samples: totals, per live session-second,
    and (given the deployment's idle rates, per second with no session) per session-second
    above idle: what one more live session costs, without the heartbeats, registry reads and
    call polls that a deployment pays whatever its load."""
    window_s = after.redis.at - before.redis.at
    totals = {
        "redis": redis_delta(before.redis, after.redis),
        "postgresql": {**pg_delta(before.pg, after.pg), "backend_cpu_s": postgres_cpu_s},
    }
    out: dict[str, Any] = {
        "window_s": window_s,
        "session_seconds": session_seconds,
        "totals": totals,
        "per_session_second": per(totals, session_seconds),
    }
    if idle is not None:
        above = {
            engine: {
                key: _above(value, idle[engine].get(key), window_s)
                for key, value in figures.items()
            }
            for engine, figures in totals.items()
        }
        out["per_session_second_above_idle"] = per(above, session_seconds)
        out["idle_per_second"] = idle
    return out


def _above(value: Any, idle_rate: Any, window_s: float) -> Any:
    """``value`` less what idle would have done in ``window_s`` (dicts: key by key)."""
    if isinstance(value, dict):
        rates = idle_rate if isinstance(idle_rate, dict) else {}
        return {k: _above(v, rates.get(k), window_s) for k, v in value.items()}
    if value is None:
        return None
    return value - (idle_rate or 0.0) * window_s


def idle_rates(before: CostSample, after: CostSample, postgres_cpu_s: float) -> dict[str, Any]:
    """Redis's and PostgreSQL's work per second with no session: the deployment's fixed cost
    (heartbeats, registry reads, call polls, the reapers' reads of live sessions)."""
    window_s = after.redis.at - before.redis.at
    totals = {
        "redis": redis_delta(before.redis, after.redis),
        "postgresql": {**pg_delta(before.pg, after.pg), "backend_cpu_s": postgres_cpu_s},
    }
    return per(totals, window_s)

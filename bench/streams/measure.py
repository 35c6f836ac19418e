"""What a step measures with: /proc CPU and RSS, /metrics counters, percentiles, seconds seen."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(root: int) -> list[int]:
    """`root` and every live descendant of it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(
                    int(entry.name)
                )
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


@dataclass(frozen=True)
class Usage:
    cpu_s: float  # user + system CPU seconds, reaped children's included
    rss: float  # resident bytes
    main_thread_s: float  # CPU seconds of the processes' main threads (their event loops)


def tree_usage(pids: Sequence[int]) -> Usage:
    """CPU and memory of the processes `pids`, summed."""
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    cpu = rss = main = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            fields = _stat_fields(pid)
            cpu += sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
            rss += int(fields[21]) * page
            thread = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            main += (int(thread[11]) + int(thread[12])) / tick
    return Usage(cpu, rss, main)


def pid_usage(pid: int) -> Usage | None:
    """One process's usage now; None when it is gone."""
    try:
        return _pid_usage(pid)
    except (OSError, IndexError):
        return None


def _pid_usage(pid: int) -> Usage:
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    fields = _stat_fields(pid)
    thread = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return Usage(
        cpu_s=sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick,
        rss=int(fields[21]) * page,
        main_thread_s=(int(thread[11]) + int(thread[12])) / tick,
    )


# part name -> pid -> its usage: one reading of every process of a server or deployment
PartsSample = dict[str, dict[int, Usage]]


def parts_sample(parts: dict[str, list[int]]) -> PartsSample:
    """Every process of every part, read now (those already gone are left out)."""
    out: PartsSample = {}
    for part, pids in parts.items():
        usages = {pid: pid_usage(pid) for pid in pids}
        out[part] = {pid: usage for pid, usage in usages.items() if usage is not None}
    return out


def usage_delta(before: dict[int, Usage], after: dict[int, Usage]) -> Usage:
    """A group of processes between two readings: CPU seconds and main-thread CPU seconds
    spent, and RSS at the later one. A process that appeared in between counts from zero
    (a new PostgreSQL backend, a worker); one that ended in between is missed, since its CPU
    after the first reading is unknown, rather than subtracted as a whole."""
    cpu = main = rss = 0.0
    for pid, late in after.items():
        early = before.get(pid, Usage(0.0, 0.0, 0.0))
        cpu += late.cpu_s - early.cpu_s
        main += late.main_thread_s - early.main_thread_s
        rss += late.rss
    return Usage(cpu, rss, main)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text -> {(name, sorted labels): value}."""
    samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match and not line.startswith("#"):
            labels = tuple(sorted(_LABEL.findall(match.group(2) or "")))
            samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def series(
    before: dict[Any, float], after: dict[Any, float], name: str, label: str
) -> dict[str, float]:
    """Increase of every `name{label=...}` series between two scrapes, by label value."""
    out: dict[str, float] = {}
    for (metric, labels), value in after.items():
        key = dict(labels).get(label)
        if metric == name and key is not None:
            out[key] = out.get(key, 0.0) + value - before.get((metric, labels), 0.0)
    return out


def total(before: dict[Any, float], after: dict[Any, float], name: str) -> float:
    """Increase of every sample of `name` between two scrapes, whatever its labels."""
    return sum(v - before.get((m, k), 0.0) for (m, k), v in after.items() if m == name)


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    data = np.asarray(values)
    return {
        "p50": float(np.percentile(data, 50)),
        "p95": float(np.percentile(data, 95)),
        "p99": float(np.percentile(data, 99)),
        "max": float(data.max()),
    }


def session_seconds(result: dict[str, Any], seconds: int) -> dict[str, Any]:
    """One session's seconds: the t received in order, and what is missing or repeated."""
    ts = [arrival[0] for arrival in result["arrivals"]]
    seen = set(ts)
    top = max([seconds - 1, *ts]) if ts else seconds - 1
    return {
        "session": result["session"],
        "t": ts,
        "contiguous": ts == list(range(len(ts))) and len(ts) >= seconds,
        "missing": [t for t in range(top + 1) if t not in seen],
        "duplicates": len(ts) - len(seen),
        "final": result["final"],
        "end_reason": result["end_reason"],
        "error": result["error"],
    }

"""The ramp: one server per mode, climbed step by step until a step is not sustainable."""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

# The test helpers (media, peer, server) are plain modules in tests/, not a package.
ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from server import ServerProcess  # noqa: E402

from bench.streams.costs import CostSample, cost_sample, idle_rates  # noqa: E402
from bench.streams.deployment import (  # noqa: E402
    SHARED_MEMORY_PARTS,
    System,
    TwoHostSystem,
    embedded,
    start_two_hosts,
)
from bench.streams.generator import Generators  # noqa: E402
from bench.streams.measure import (  # noqa: E402
    PartsSample,
    parse_metrics,
    parts_sample,
    total,
    usage_delta,
)
from bench.streams.reporting import step_line  # noqa: E402
from bench.streams.step import MODES, Step  # noqa: E402

IDLE_S = 2.0  # how long the idle server is measured (s)
IDLE_TWO_HOSTS_S = 10.0  # and the idle deployment on two hosts


class Bench:
    """One server or deployment per mode, climbed through the ramp; the generators are shared."""

    def __init__(self, args: argparse.Namespace, generators: Generators) -> None:
        self.args = args
        self.generators = generators
        self.system: System | None = None
        self.key = args.key
        self.idle_cores: float | None = None  # the system's CPU with no session (cores)
        self.idle_rss = 0.0  # and its RSS (bytes)
        self.idle_parts: dict[str, float] = {}  # cores per part with no session
        self.idle_costs: dict[str, Any] | None = None  # Redis/PostgreSQL work per idle second
        self.healths: dict[str, dict[str, Any]] = {}  # mode label -> the server's /healthz
        self._next_front = 0

    @property
    def base(self) -> str:
        """The first front end (for a single server, the server)."""
        assert self.system is not None
        return self.system.fronts[0]

    @property
    def hr_headers(self) -> dict[str, str]:
        """/metrics and the details of /healthz need the HR key."""
        return {"Authorization": f"Bearer {self.key}"}

    def log_offsets(self) -> list[int]:
        """Where each local log ends now."""
        paths = self.system.log_paths if self.system else []
        return [path.stat().st_size if path.exists() else 0 for path in paths]

    def log_problems(self, offsets: list[int]) -> list[str]:
        """The local logs' WARNING and ERROR lines since `offsets`, timestamps cut."""
        paths = self.system.log_paths if self.system else []
        lines: list[str] = []
        for path, offset in zip(paths, offsets, strict=False):
            if not path.exists():
                continue
            with path.open("rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
            found = [line for line in text.splitlines() if re.search(r" (WARNING|ERROR) ", line)]
            lines += [line.split(" ", 2)[-1] for line in found]
        return lines

    def sample_parts(self) -> PartsSample | None:
        """Every process of the system now, by part; None when they are not known."""
        parts = self.system.parts() if self.system else {}
        return parts_sample(parts) if parts else None

    def server_rss(self) -> float:
        """The system's RSS now, without the parts that map shared memory (PostgreSQL)."""
        sample = self.sample_parts() or {}
        return sum(
            u.rss
            for part, usages in sample.items()
            if part not in SHARED_MEMORY_PARTS
            for u in usages.values()
        )

    def cost_sample(self) -> CostSample | None:
        """Redis's and PostgreSQL's counters now (a deployment on two hosts only)."""
        system = self.system
        if not isinstance(system, TwoHostSystem):
            return None
        return cost_sample(system.redis_port, system.admin_url, system.database)

    def measure_idle(self) -> None:
        # A deployment's idle work is bursty (heartbeats each second, the outbox's and the
        # reapers' polls): its rate, the baseline of the costs above idle, needs a longer look.
        seconds = IDLE_TWO_HOSTS_S if isinstance(self.system, TwoHostSystem) else IDLE_S
        before, costs0 = self.sample_parts(), self.cost_sample()
        time.sleep(seconds)
        after, costs1 = self.sample_parts(), self.cost_sample()
        if before is None or after is None:
            return
        deltas = {part: usage_delta(before.get(part, {}), after[part]) for part in after}
        self.idle_parts = {part: d.cpu_s / seconds for part, d in deltas.items()}
        self.idle_cores = sum(self.idle_parts.values())
        self.idle_rss = sum(d.rss for part, d in deltas.items() if part not in SHARED_MEMORY_PARTS)
        if costs0 is not None and costs1 is not None:
            pg = deltas.get("postgresql")
            self.idle_costs = idle_rates(costs0, costs1, pg.cpu_s if pg else 0.0)

    def scrape(self) -> dict[Any, float]:
        """The /metrics of every process that runs sessions, summed sample by sample."""
        assert self.system is not None
        summed: dict[Any, float] = {}
        for base in self.system.metrics_bases:
            response = httpx.get(
                f"{base}/metrics", headers=self.hr_headers, timeout=10.0, trust_env=False
            )
            response.raise_for_status()
            for key, value in parse_metrics(response.text).items():
                summed[key] = summed.get(key, 0.0) + value
        return summed

    def create_session(self, http: httpx.Client) -> tuple[str, str, str]:
        """A new session through the next front end: its id, join token and that front end
        (the candidate joins and the observer watches through it)."""
        assert self.system is not None
        fronts = self.system.fronts
        base = fronts[self._next_front % len(fronts)]
        self._next_front += 1
        response = http.post(
            f"{base}/api/v1/sessions",
            json={"candidate": "Bench candidate", "job": "Bench role"},
            headers={"Authorization": f"Bearer {self.key}"},
        )
        if response.status_code != 201:
            raise RuntimeError(f"creating a session: HTTP {response.status_code} {response.text}")
        body = response.json()
        return str(body["id"]), str(body["join_token"]), base

    def wait_idle(self, timeout_s: float = 30.0) -> None:
        """Waits until the server has no live session left from an earlier step."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if total({}, self.scrape(), "rtserver_live_sessions") == 0:
                return
            time.sleep(0.2)
        print(f"warning: sessions still live after {timeout_s:.0f} s", flush=True)

    @contextlib.contextmanager
    def mode_system(self, deployment: str, mode: str, data_dir: Path) -> Iterator[System]:
        """The server (embedded) or the deployment (two-hosts) of one mode, started (unless
        ``--server`` names one) and stopped after."""
        args = self.args
        if args.server:
            self.system = System(
                "embedded",
                self.key,
                [args.server.rstrip("/")],
                [args.server.rstrip("/")],
                server_pid=args.server_pid,
            )
        else:
            self.system = start_system(args, deployment, mode, data_dir)
        self.key = self.system.key
        try:
            yield self.system
        finally:
            self.system.stop()
            self.system = None

    def health(self) -> dict[str, Any]:
        """The /healthz of the first process that runs sessions (a node, when two-hosts)."""
        # Workers and backends are in /healthz for the HR key only.
        assert self.system is not None
        response = httpx.get(
            f"{self.system.metrics_bases[0]}/healthz",
            headers=self.hr_headers,
            timeout=10.0,
            trust_env=False,
        )
        return dict(response.json())

    def run_mode(self, deployment: str, mode: str, data_dir: Path) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = []
        label = mode_label(deployment, mode)
        with self.mode_system(deployment, mode, data_dir):
            health = self.health()
            if health.get("analysis") != MODES[mode]:
                raise SystemExit(
                    f"the server runs --analysis {health.get('analysis')}, not {MODES[mode]}"
                )
            if mode == "asr" and not health.get("transcription"):
                raise SystemExit("the server does not transcribe (--transcribe off)")
            self.healths[label] = health
            workers = health.get("workers")
            count = len(workers) if isinstance(workers, list) else workers or 1
            fronts = ", ".join(self.system.fronts) if self.system else ""
            print(
                f"{label}: {deployment} via {fronts}, {count} worker process(es) per server,"
                f" backends {health.get('backends')}",
                flush=True,
            )
            time.sleep(1.0)  # the server's warm-up threads settle
            self.measure_idle()
            if self.idle_cores is not None:
                parts = ", ".join(f"{k} {v:.3f}" for k, v in self.idle_parts.items())
                print(
                    f"  idle: {self.idle_cores:.3f} cores ({parts}),"
                    f" {self.idle_rss / 2**20:.0f} MB RSS",
                    flush=True,
                )
            for streams in ramp_steps(self.args, steps):
                step = self.run_step(deployment, mode, streams, self.args.limits == "defaults")
                steps.append(step)
                if not step["sustainable"]:
                    print(f"  {label}: not sustainable at {streams}; stopping", flush=True)
                    break
            if self.args.burst:
                print(f"  burst: {self.args.burst} sessions join at once", flush=True)
                burst = self.run_step(deployment, mode, self.args.burst, refusals_allowed=True)
                burst["burst"] = True
                steps.append(burst)
        return steps

    def run_step(
        self, deployment: str, mode: str, streams: int, refusals_allowed: bool
    ) -> dict[str, Any]:
        """Runs one step and prints its line and anything that went wrong in it."""
        started = time.monotonic()
        step = Step(self, mode, streams, refusals_allowed, deployment).run()
        print(step_line(step) + f"  ({time.monotonic() - started:.0f} s)", flush=True)
        if step["refused"]:
            print(f"  admitted {step['admitted']}, refused: {step['refused']}", flush=True)
        if set(step["end_reasons"]) != {"hangup"}:
            print(f"  sessions ended by: {step['end_reasons']}", flush=True)
        problems = step["server_log_problems"]
        if problems["count"]:
            where = f" in {self.args.data_dir}" if self.args.data_dir else ""
            print(f"  {problems['count']} server log warnings/errors{where}, first:")
            print("\n".join(f"    {line[:160]}" for line in problems["first"][:3]))
        return step


def start_system(args: argparse.Namespace, deployment: str, mode: str, data_dir: Path) -> System:
    """Starts one mode's server (embedded) or deployment (two-hosts): the same analysis
    options and admission limits on the server and on each media node."""
    options = ["--analysis", MODES[mode], *limit_options(args)]
    if mode != "off":  # decode-only transcribes nothing; "on" is analysis without it
        options += ["--transcribe", "on" if mode == "asr" else "off"]
    label = mode_label(deployment, mode).replace("/", "-")
    if deployment == "two-hosts":
        # --workers is for --role all: a front end or a node is one process.
        return start_two_hosts(
            data_dir / label,
            node_options=[*options, *shlex.split(args.server_args)],
            front_options=limit_options(args),
            cpu_budget=args.limits == "defaults",
        )
    if args.workers is not None and args.workers_supported:
        options += ["--workers", str(args.workers)]
    options += shlex.split(args.server_args)
    server = ServerProcess(data_dir / label, options=options)
    if hasattr(server, "workers"):
        server.workers = None  # the flag is ours to pass (or to leave to the default)
    server.cpu_budget = args.limits == "defaults"  # else lifted by limit_options
    server.start(timeout_s=180.0)
    return embedded(server)


def mode_label(deployment: str, mode: str) -> str:
    """How a mode is named in the tables: ``off``, or ``off/2h`` on two hosts."""
    return mode if deployment == "embedded" else f"{mode}/2h"


def limit_options(args: argparse.Namespace) -> list[str]:
    """The server's admission flags: none on ``--limits defaults``; with ``--limits off``
    every limit is lifted, so that a step fails by overload rather than by refusal and the
    ramp finds the real maximum. The per-client rate limits go too: every peer of the bench
    comes from one address (the defaults allow 120 sessions and joins a minute)."""
    if args.limits == "defaults":
        return []
    return [
        *("--max-sessions", str(args.max_sessions)),
        *("--max-cpu", "0", "--max-loop-lag", "0", "--max-signal-lag", "0"),
        *("--rate-sessions", "0", "--rate-offers", "0", "--rate-signals", "0"),
    ]


def ramp_steps(args: argparse.Namespace, done: list[dict[str, Any]]) -> Iterator[int]:
    """The ramp's stream counts, then (``--until-fail``) more, by the ramp's last increment
    (at least 4), while the last step was sustainable, up to ``--ramp-max``."""
    yield from args.ramp
    if not args.until_fail:
        return
    increment = max(4, args.ramp[-1] - args.ramp[-2]) if len(args.ramp) > 1 else 4
    streams = args.ramp[-1] + increment
    while streams <= args.ramp_max and done and done[-1]["sustainable"]:
        yield streams
        streams += increment

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

from bench.streams.generator import Generators  # noqa: E402
from bench.streams.measure import Usage, parse_metrics, process_tree, total, tree_usage  # noqa: E402
from bench.streams.reporting import step_line  # noqa: E402
from bench.streams.step import MODES, Step  # noqa: E402


class Bench:
    """One server per mode, climbed through the ramp; the generators are shared."""

    def __init__(self, args: argparse.Namespace, generators: Generators) -> None:
        self.args = args
        self.generators = generators
        self.base = ""
        self.key = args.key
        self.server: ServerProcess | None = None
        self.server_pid: int | None = args.server_pid
        self.idle_cores: float | None = None  # the server tree's CPU with no session (cores)
        self.idle_rss = 0.0  # and its RSS (bytes)
        self.healths: dict[str, dict[str, Any]] = {}  # mode -> the server's /healthz

    @property
    def hr_headers(self) -> dict[str, str]:
        """/metrics and the details of /healthz need the HR key."""
        return {"Authorization": f"Bearer {self.key}"}

    def log_offset(self) -> int:
        """Where the local server's log ends now (0 without one)."""
        path = self.server.log_path if self.server else None
        return path.stat().st_size if path and path.exists() else 0

    def log_problems(self, offset: int) -> list[str]:
        """The local server's WARNING and ERROR lines since `offset`, timestamps cut."""
        path = self.server.log_path if self.server else None
        if not path or not path.exists():
            return []
        with path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        lines = [line for line in text.splitlines() if re.search(r" (WARNING|ERROR) ", line)]
        return [line.split(" ", 2)[-1] for line in lines]

    def server_usage(self) -> Usage | None:
        """The server process tree's usage now; None when its pid is unknown."""
        return None if self.server_pid is None else tree_usage(process_tree(self.server_pid))

    def server_rss(self) -> float:
        usage = self.server_usage()
        return usage.rss if usage else 0.0

    def measure_idle(self, seconds: float = 2.0) -> None:
        before = self.server_usage()
        time.sleep(seconds)
        after = self.server_usage()
        if before is not None and after is not None:
            self.idle_cores = (after.cpu_s - before.cpu_s) / seconds
            self.idle_rss = after.rss

    def scrape(self) -> dict[Any, float]:
        response = httpx.get(
            f"{self.base}/metrics", headers=self.hr_headers, timeout=10.0, trust_env=False
        )
        response.raise_for_status()
        return parse_metrics(response.text)

    def create_session(self, http: httpx.Client) -> tuple[str, str]:
        response = http.post(
            f"{self.base}/api/v1/sessions",
            json={"candidate": "Bench candidate", "job": "Bench role"},
            headers={"Authorization": f"Bearer {self.key}"},
        )
        if response.status_code != 201:
            raise RuntimeError(f"creating a session: HTTP {response.status_code} {response.text}")
        body = response.json()
        return str(body["id"]), str(body["join_token"])

    def wait_idle(self, timeout_s: float = 30.0) -> None:
        """Waits until the server has no live session left from an earlier step."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if total({}, self.scrape(), "rtserver_live_sessions") == 0:
                return
            time.sleep(0.2)
        print(f"warning: sessions still live after {timeout_s:.0f} s", flush=True)

    @contextlib.contextmanager
    def mode_server(self, mode: str, data_dir: Path) -> Any:
        args = self.args
        if args.server:
            self.base = args.server.rstrip("/")
            yield
            return
        options = ["--analysis", MODES[mode], *limit_options(args)]
        if mode != "off":  # decode-only transcribes nothing; "on" is analysis without it
            options += ["--transcribe", "on" if mode == "asr" else "off"]
        if args.workers is not None and args.workers_supported:
            options += ["--workers", str(args.workers)]
        options += shlex.split(args.server_args)
        server = ServerProcess(data_dir / mode, options=options)
        if hasattr(server, "workers"):
            server.workers = None  # the flag is ours to pass (or to leave to the default)
        server.cpu_budget = args.limits == "defaults"  # else lifted by limit_options
        server.start(timeout_s=180.0)
        assert server.process is not None
        self.server, self.base, self.key = server, server.base_url, server.api_key
        self.server_pid = server.process.pid
        try:
            yield
        finally:
            server.stop()
            self.server, self.server_pid = None, None

    def health(self) -> dict[str, Any]:
        # Workers and backends are in /healthz for the HR key only.
        response = httpx.get(
            f"{self.base}/healthz", headers=self.hr_headers, timeout=10.0, trust_env=False
        )
        return dict(response.json())

    def run_mode(self, mode: str, data_dir: Path) -> list[dict[str, Any]]:
        steps = []
        with self.mode_server(mode, data_dir):
            health = self.health()
            if health.get("analysis") != MODES[mode]:
                raise SystemExit(
                    f"the server runs --analysis {health.get('analysis')}, not {MODES[mode]}"
                )
            if mode == "asr" and not health.get("transcription"):
                raise SystemExit("the server does not transcribe (--transcribe off)")
            self.healths[mode] = health
            workers = health.get("workers")
            count = len(workers) if isinstance(workers, list) else workers or 1
            print(
                f"analysis {mode}: server {self.base}, {count} worker process(es),"
                f" backends {health.get('backends')}",
                flush=True,
            )
            time.sleep(1.0)  # the server's warm-up threads settle
            self.measure_idle()
            if self.idle_cores is not None:
                print(
                    f"  idle server tree: {self.idle_cores:.3f} cores,"
                    f" {self.idle_rss / 2**20:.0f} MB RSS",
                    flush=True,
                )
            for streams in ramp_steps(self.args, steps):
                step = self.run_step(mode, streams, self.args.limits == "defaults")
                steps.append(step)
                if not step["sustainable"]:
                    print(f"  analysis {mode}: not sustainable at {streams}; stopping", flush=True)
                    break
            if self.args.burst:
                print(f"  burst: {self.args.burst} sessions join at once", flush=True)
                burst = self.run_step(mode, self.args.burst, refusals_allowed=True)
                burst["burst"] = True
                steps.append(burst)
        return steps

    def run_step(self, mode: str, streams: int, refusals_allowed: bool) -> dict[str, Any]:
        """Runs one step and prints its line and anything that went wrong in it."""
        started = time.monotonic()
        step = Step(self, mode, streams, refusals_allowed).run()
        print(step_line(step) + f"  ({time.monotonic() - started:.0f} s)", flush=True)
        if step["refused"]:
            print(f"  admitted {step['admitted']}, refused: {step['refused']}", flush=True)
        if set(step["end_reasons"]) != {"hangup"}:
            print(f"  sessions ended by: {step['end_reasons']}", flush=True)
        problems = step["server_log_problems"]
        if problems["count"]:
            where = f" in {self.server.log_path}" if self.args.data_dir and self.server else ""
            print(f"  {problems['count']} server log warnings/errors{where}, first:")
            print("\n".join(f"    {line[:160]}" for line in problems["first"][:3]))
        return step


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

"""Soak: does the server's memory stay flat as sessions come and go?

    python -m bench.soak [--sessions 320] [--per-round 8] [--seconds 8] [--warmup-rounds 8]
        [--server-args "..."] [--data-dir DIR] [--json out.json]

It starts one real server on its defaults (``rtserver serve`` with only the loopback and test
options every bench passes: ``--ice-address 127.0.0.1``, the models directory and a free
port; worker processes, session limits, the CPU budget and analysis as the defaults say),
then runs ``--sessions`` sessions in rounds of ``--per-round``. In each round:

- the sessions are created through the HR API, and as many real aiortc peers join them from a
  generator process (``bench.streams``' generator: pre-encoded VP8 and Opus of a real face and
  espeak-ng speech, replayed in real time), each with an observer websocket on its signals;
- every peer sends ``--seconds`` of media, hangs up, and waits for its session's final;
- once the server has no live session left (``/metrics``) and ``--settle`` seconds have passed,
  the RSS of the server's whole process tree (the server and its worker processes, from
  /proc) is sampled, with each process's own.

The report is the table of rounds and the slope of the tree's RSS against finished sessions,
fitted by least squares over the rounds after the warm-up (``--warmup-rounds``: allocator
arenas, model sessions and caches fill up during the first ones), in MB per session. The
target is a flat line: at most 0.1 MB per session (``TARGET_MB_PER_SESSION``). A session
counts as completed when its observer received every second 0..S-1 in order and the final.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

# The test helpers (media, peer, server) are plain modules in tests/, not a package.
ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from server import ServerProcess  # noqa: E402

from bench.streams.generator import Generators  # noqa: E402
from bench.streams.measure import parse_metrics, process_tree, session_seconds, total  # noqa: E402
from bench.streams.media import encode_media  # noqa: E402

TARGET_MB_PER_SESSION = 0.1
PEERS_PER_PROCESS = 12  # peers sharing one generator process's event loop
IDLE_TIMEOUT_S = 60.0  # for the server to end a round's sessions


@dataclass(frozen=True)
class Round:
    """One round's outcome and the memory sampled after it."""

    index: int  # from 1
    sessions_done: int  # sessions finished so far, this round's included
    completed: int  # this round's sessions with every second and the final
    end_reasons: dict[str, int]
    rss_mb: float  # the server's process tree, after the round (MB)
    process_rss_mb: dict[str, float]  # pid -> MB, the server first
    seconds: float  # wall time of the round, settle included


def rss_by_process(root: int) -> dict[int, float]:
    """Resident MB of ``root`` and each of its descendants, from /proc."""
    out: dict[int, float] = {}
    for pid in process_tree(root):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[pid] = int(line.split()[1]) / 1024.0
    return out


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of ys against xs; None with fewer than two distinct xs."""
    if len(set(xs)) < 2:
        return None
    fit = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(fit[0])


class Soak:
    """A server on its defaults, the generator processes, and the rounds run so far."""

    def __init__(self, args: argparse.Namespace, server: ServerProcess, gens: Generators) -> None:
        self.args = args
        self.server = server
        self.generators = gens
        self.headers = server.hr_headers
        self.rounds: list[Round] = []

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def live_sessions(self) -> float:
        response = httpx.get(
            f"{self.server.base_url}/metrics", headers=self.headers, timeout=10.0, trust_env=False
        )
        response.raise_for_status()
        return total({}, parse_metrics(response.text), "rtserver_live_sessions")

    def wait_idle(self) -> None:
        deadline = time.monotonic() + IDLE_TIMEOUT_S
        while self.live_sessions() > 0:
            if time.monotonic() > deadline:
                print(f"warning: sessions still live after {IDLE_TIMEOUT_S:.0f} s", flush=True)
                return
            time.sleep(0.2)

    def sample(self) -> tuple[float, dict[str, float]]:
        """The tree's RSS (MB) and each process's, the server first."""
        by_pid = rss_by_process(self.pid)
        ordered = {str(self.pid): by_pid.pop(self.pid, 0.0)}
        ordered.update({str(pid): mb for pid, mb in sorted(by_pid.items())})
        return sum(ordered.values()), {pid: round(mb, 1) for pid, mb in ordered.items()}

    def create_sessions(self, count: int) -> list[tuple[str, str]]:
        sessions = []
        with httpx.Client(trust_env=False, timeout=30.0) as http:
            for _ in range(count):
                response = http.post(
                    f"{self.server.base_url}/api/v1/sessions",
                    json={"candidate": "Soak candidate", "job": "Soak role"},
                    headers=self.headers,
                )
                if response.status_code != 201:
                    raise RuntimeError(f"creating a session: HTTP {response.status_code}")
                body = response.json()
                sessions.append((str(body["id"]), str(body["join_token"])))
        return sessions

    def run_round(self, index: int, count: int) -> Round:
        args, started = self.args, time.monotonic()
        sessions = self.create_sessions(count)
        conns = self.generators.conns
        shares = {conns[i]: sessions[i :: len(conns)] for i in range(len(conns))}
        used = [conn for conn, share in shares.items() if share]
        for conn in used:
            conn.send(
                {
                    "cmd": "connect",
                    "sessions": shares[conn],
                    "base": self.server.base_url,
                    "key": self.server.api_key,
                }
            )
        self.generators.collect(used, 120.0)
        start_at = time.monotonic() + 0.5
        for conn in used:
            conn.send({"cmd": "run", "start_at": start_at, "seconds": args.seconds})
        results = [
            r for reply in self.generators.collect(used, args.seconds + 120.0) for r in reply
        ]
        self.wait_idle()
        time.sleep(args.settle)
        seen = [session_seconds(r, args.seconds) for r in results]
        completed = sum(1 for s in seen if s["contiguous"] and s["final"])
        reasons: dict[str, int] = {}
        for s in seen:
            reason = s["end_reason"] or (s["error"][:40] if s["error"] else "none")
            reasons[reason] = reasons.get(reason, 0) + 1
        rss_mb, per_process = self.sample()
        done = (self.rounds[-1].sessions_done if self.rounds else 0) + count
        return Round(
            index,
            done,
            completed,
            reasons,
            round(rss_mb, 1),
            per_process,
            round(time.monotonic() - started, 1),
        )


def summarise(
    args: argparse.Namespace, idle: tuple[float, dict[str, float]], rounds: list[Round]
) -> dict[str, Any]:
    """The JSON report: configuration, the rounds, and the fitted slopes."""
    after = [r for r in rounds if r.index > args.warmup_rounds]
    fit = slope([r.sessions_done for r in after], [r.rss_mb for r in after])
    whole = slope([0, *(r.sessions_done for r in rounds)], [idle[0], *(r.rss_mb for r in rounds)])
    return {
        "config": {
            "sessions": args.sessions,
            "per_round": args.per_round,
            "seconds": args.seconds,
            "warmup_rounds": args.warmup_rounds,
            "settle_s": args.settle,
            "server_args": args.server_args,
        },
        "idle_rss_mb": round(idle[0], 1),
        "idle_process_rss_mb": idle[1],
        "rounds": [asdict(r) for r in rounds],
        "sessions_run": rounds[-1].sessions_done if rounds else 0,
        "sessions_completed": sum(r.completed for r in rounds),
        "slope_mb_per_session": fit,
        "slope_rounds": [after[0].index, after[-1].index] if after else None,
        "whole_run_slope_mb_per_session": whole,
        "growth_after_warmup_mb": round(after[-1].rss_mb - after[0].rss_mb, 1) if after else None,
        "target_mb_per_session": TARGET_MB_PER_SESSION,
        "target_met": fit is not None and fit <= TARGET_MB_PER_SESSION,
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        "round  sessions  completed  tree RSS MB  per process MB (server first)   s  ended by",
        f"{0:>5} {0:>9} {'-':>10} {report['idle_rss_mb']:>12.1f}  "
        f"{' '.join(f'{mb:.0f}' for mb in report['idle_process_rss_mb'].values()):<30}"
        "      (idle, before any session)",
    ]
    for r in report["rounds"]:
        per = " ".join(f"{mb:.0f}" for mb in r["process_rss_mb"].values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["end_reasons"].items()))
        lines.append(
            f"{r['index']:>5} {r['sessions_done']:>9} {r['completed']:>10} {r['rss_mb']:>12.1f}"
            f"  {per:<30} {r['seconds']:>4.0f}  {reasons}"
        )
    fit, whole = report["slope_mb_per_session"], report["whole_run_slope_mb_per_session"]
    span = report["slope_rounds"]
    lines += [
        "",
        f"sessions completed: {report['sessions_completed']} of {report['sessions_run']}",
        "slope after warm-up"
        + (f" (rounds {span[0]}-{span[1]})" if span else "")
        + f": {'-' if fit is None else f'{fit:.4f}'} MB/session"
        f" (target <= {TARGET_MB_PER_SESSION}: {'met' if report['target_met'] else 'NOT met'})",
        f"growth after warm-up: {report['growth_after_warmup_mb']} MB;"
        f" whole run, idle included: {'-' if whole is None else f'{whole:.4f}'} MB/session",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sessions", type=int, default=320, help="sessions in all (>= 300)")
    parser.add_argument("--per-round", type=int, default=8, help="sessions at once per round")
    parser.add_argument("--seconds", type=int, default=8, help="media seconds per session")
    parser.add_argument(
        "--warmup-rounds", type=int, default=8, help="rounds left out of the fitted slope"
    )
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds after a round before RSS is sampled"
    )
    parser.add_argument("--server-args", default="", help="more `rtserver serve` options")
    parser.add_argument(
        "--media-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "rtserver-bench-streams",
        help="cache of the generated media (shared with bench.streams)",
    )
    parser.add_argument("--data-dir", type=Path, help="keep the server's data and log here")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.per_round < 1 or args.seconds < 2:
        parser.error("--sessions and --per-round want >= 1, --seconds >= 2")
    if args.warmup_rounds < 0:
        parser.error("--warmup-rounds wants >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.media_dir.mkdir(parents=True, exist_ok=True)
    media = encode_media(args.media_dir, 15, (640, 480), 600, 32)
    rounds_total = math.ceil(args.sessions / args.per_round)
    generators = Generators(math.ceil(args.per_round / PEERS_PER_PROCESS), media)
    try:
        with contextlib.ExitStack() as stack:
            data = args.data_dir or Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="rtserver-soak-"))
            )
            # workers=None: the server's default process model, as a user runs it.
            server = ServerProcess(
                data, options=shlex.split(args.server_args), workers=None, cpu_budget=True
            )
            server.start(timeout_s=180.0)
            stack.callback(server.stop)
            soak = Soak(args, server, generators)
            time.sleep(args.settle)
            idle = soak.sample()
            print(f"server {server.base_url} pid {soak.pid}; idle tree RSS {idle[0]:.1f} MB")
            for index in range(1, rounds_total + 1):
                count = min(args.per_round, args.sessions - (index - 1) * args.per_round)
                soak.rounds.append(soak.run_round(index, count))
                r = soak.rounds[-1]
                print(
                    f"round {index}/{rounds_total}: {r.completed}/{count} completed,"
                    f" tree RSS {r.rss_mb:.1f} MB ({r.seconds:.0f} s)",
                    flush=True,
                )
            report = summarise(args, idle, soak.rounds)
    finally:
        generators.close()
    print("\n" + table(report), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Concurrent streams: signal lag, server CPU and memory per stream, analysis on against off.

    python -m bench.streams [--ramp 1,2,4,8,12,16 | --clients N] [--seconds 20]
        [--analysis on|off|both] [--transcribe off|on|both] [--limits off|defaults]
        [--deployment embedded|two-hosts|both] [--capacity] [--sessions-per-node 20]
        [--[no-]until-fail] [--ramp-max 64]
        [--burst N] [--workers N] [--json out.json] [--plot out.png]
        [--server URL --key KEY [--server-pid PID]] [--server-args "..."] [--data-dir DIR]

For each mode (``off`` = ``rtserver serve --analysis decode``, the baseline, then ``on`` =
``--analysis full --transcribe off``, then, with ``--transcribe both``, ``asr`` = ``--analysis
full --transcribe on``; ``--transcribe on`` runs ``asr`` in place of ``on``) it starts one real
server (``--workers N`` when given, else the server's default) and climbs the ramp. With
``--limits off`` (the default) every admission limit of the server is lifted
(``--max-sessions`` 64 or more, ``--max-cpu 0 --max-loop-lag 0 --max-signal-lag 0``), so that a
step fails by overload, not by refusal, and with ``--until-fail`` (the default) the ramp goes
on past its last step, by its last increment (at least 4), until a step fails or
``--ramp-max``: the maxima compared are real ones. With ``--limits defaults`` the server runs
on its own defaults: refused sessions are counted by error code, and a step counts as sustained
only when none was refused. ``--burst N`` ends each mode with N sessions joining at once
(refusals allowed): how the server meets a burst. At each step of N streams:

- N sessions are created through the HR API (``POST /api/v1/sessions``), and N aiortc client
  peers join them from generator processes (multiprocessing, spawn; ``--peers-per-process``
  peers share one event loop in each). Every peer also holds an observer websocket
  (``/api/v1/sessions/{id}/signals``) in its generator process.
- Peers send pre-encoded media, so the generator costs little: a face video (the astronaut of
  ``tests/media.py``, 640x480 at 15 fps as the candidate page asks for) is encoded once to VP8
  and espeak-ng speech once to Opus, in memory, and every peer replays those packets in real
  time, looped (20 s), through a MediaStreamTrack whose ``recv()`` returns ``av.Packet``s
  (aiortc packetizes them without re-encoding). VP8 has a keyframe every 2 s: a replay cannot
  answer the server's keyframe requests, so periodic keyframes stand in for that.
- All peers start sending at the same instant and send ``--seconds`` S of media (a little more,
  until second S-1 is published, so the last second is not held back waiting for media), then
  hang up and wait for the final message.

Figures per step:

- signal lag p50/p95/p99 on the sender's clock: from the moment the last packet of media second
  t (both tracks) was handed to aiortc's sender to the arrival of that second's signal at the
  observer (same host, same process, monotonic clock); every second 0..S-1 of every session
  counts. The server's own ``lag_ms`` (end of the second on its clock to publication) is kept
  beside it: the difference is what the server cannot see (transport, jitter buffers, decode).
- missing and duplicate seconds: each session's ``t`` must run 0, 1, 2... with no gap or repeat,
  and cover 0..S-1 at least. Also from the signals: video frames decoded per stream-second,
  and seconds with no video or no audio at all (a stalled track, not slow analysis).
- server CPU, in cores per stream, from /proc for the server's process tree (the server and its
  children: workers) over the steady part of the step (after ``--settle`` seconds), and the tree's
  RSS (peak over the step; per stream above the idle server's).
- frames analysed per second and crops dropped, from ``/metrics`` deltas over the same window.
- where the CPU goes: every ``rtserver_stage_cpu_seconds_total{stage}`` and
  ``rtserver_analysis_cpu_seconds_total{path}`` series, as cores per stream, and "other" = tree
  CPU minus the stages (minus the paths where the server exports no stages): decode, RTP, DTLS
  and the event loop, split by thread into the processes' main threads (event loops) and the
  rest (aiortc's decoder threads, ONNX Runtime's pools). Stages subdivide paths: not added.
- the generator's own CPU per stream (its processes, from /proc), and how late it sent (p99).
- how each session ended (the final message's ``end_reason``: ``hangup`` when all is well) and
  the server log's warnings and errors during the step (kept with ``--data-dir``).

A step is sustainable when its p95 lag is at most 1 s, no second is missing and every
admitted session connected; a mode stops climbing after its first step that is not. The targets
(JSON ``"targets"``), with ``--limits off``:

- analysis-on CPU per stream at most 1.25x decode-only, at the largest step both modes sustain;
- the most streams sustained with analysis at least 0.8x the most sustained decode-only (a mode
  that sustains ``--ramp-max`` has a lower bound only: the name shows it as "64+");
- at the most streams sustained with analysis: p95 signal lag (sender clock) at most 400 ms, and
  what the server adds beyond the speech gate's declared 270 ms lookahead (its own ``lag_ms``
  p95 less 270) at most 60 ms.

With ``--transcribe both``, at each step both ``on`` and ``asr`` ran: the server CPU that
speech-to-text adds per stream (``asr`` less ``on``), and per speaking stream (divided by the
share of the loop in which the replayed candidate speaks), with the transcript messages the
observers got (utterances, words, and their ``lag_ms``: the end of an utterance to its
publication). Targets (issue 14): speech-to-text adds at most 0.03 of a core per speaking
stream, at the most streams both modes sustain; transcript lag p95 at most 1.5 s at 8 streams.

    python -m bench.streams --analysis on --transcribe both --ramp 1,4,8 --no-until-fail

With ``--limits defaults`` (analysis on): the server's defaults sustain at least 16 streams with
none refused and no second missing; and each burst refuses only with a 503 reason
(``overloaded``, ``at_capacity``), with no admitted session lost (every one ends by its hangup)
and no second missing. On this 2-core machine:

    python -m bench.streams --analysis on --limits defaults --ramp 1,2,4,8,12,16 \\
        --no-until-fail --burst 24

On a GPU machine, with inference on the GPU (16 cores):

    python -m bench.streams --ramp 8,16,32,48,64,96,128 --seconds 30 --peers-per-process 16 \\
        --workers 4 --server-args "--engine tensorrt --engine onnxruntime-cuda \\
            --engine onnxruntime-cpu --crop-device cuda" \\
        --json gpu.json --plot gpu.png

and the same with ``--analysis on --server-args "--engine onnxruntime-cpu --crop-device cpu"``
for the CPU-inference line to compare with (``--engine torch-cuda`` tries our torch
interpreter). Measured on an H200 machine (16 cores, 4 workers, 10 s steps, TensorRT and
onnxruntime-gpu not installed, so inference ran on torch-cuda): torch-cuda held 32 streams
(p95 362 ms; 48 failed at p95 1589 ms) at 0.145 server cores per stream, while ONNX Runtime
on the CPU held all 48 (p95 362 ms) at 0.110; decode-only: 48+ at 0.071. Face detection, one
frame per call, was the difference: 31-36 thousandths of a core per stream on torch-cuda
against 12 on the CPU.

Many hosts (issue 18): ``--deployment two-hosts`` runs each mode against a deployment on two
"hosts" of this machine, started as tests/cluster.py starts it (bench/streams/deployment.py):
a private redis-server, a fresh PostgreSQL database on the shared server (dropped after), and
on 127.0.0.2 and 127.0.0.3 a front end (``--role front``) and a media node (``--role node``)
each. Session i is created, joined and observed through front end i mod 2, and placed by the
front end on the least-loaded node. ``--deployment both`` runs the embedded server (``--role
all``: SQLite, the in-process bus) first and then the deployment, mode by mode, with the same
ramp, the same generators and the same criteria for a step being sustained; the table "embedded
against two hosts" gives, per step both ran, the CPU per stream of each and their ratio. The
deployment's CPU counts every process that serves the sessions, each shown on its own: both
front ends, both nodes, the redis-server, and the PostgreSQL backends connected to our database
(found in ``pg_stat_activity``; the server's own background processes serve every database and
are left out; /proc counts in 10 ms ticks, so a part that does little may read 0 over a short
window). RSS leaves the PostgreSQL backends out: they map the server's shared buffers.

With two hosts, each step also reports what Redis and PostgreSQL did in its measured window,
per live session-second (sessions x window; the signals the observers got inside it are shown
beside, as the check), both raw and above the idle deployment's rate (measured for 10 s before
the ramp: heartbeats, registry reads, call polls, the reapers' reads), see bench/streams/
costs.py: Redis's ``INFO commandstats`` calls, ``total_net_input_bytes``/``output_bytes`` and
``used_cpu_sys + used_cpu_user`` (the bench's own INFO taken out), and PostgreSQL's
``pg_stat_database`` commits and rows, the database's growth, the server's WAL bytes (all
databases: an upper bound) and the backends' CPU; and the same over the whole step per session
(its create, join, end and final included). ``--capacity`` then measures what this machine's
redis-server (redis-benchmark XADD) and PostgreSQL (pgbench single-row inserts) take, and
"on paper" turns the figures into the nodes one primary serves under each limit, and which
fails first as nodes are added (bench/streams/paper.py has the model). On 2 cores, run it
decode-only:

    python -m bench.streams --deployment both --analysis off --ramp 2,4,8,16 --seconds 20 \\
        --no-until-fail --capacity --json hosts.json

Measured so on this 2-core machine (README, "Many hosts", has the whole of it): both held
16 of 16 decode-only streams (the ramp's top); server cores per stream embedded / two hosts
0.0344 / 0.0394 at 2 streams (1.14x), 0.0264 / 0.0293 at 16 (1.11x), of which at 16 Redis
and the PostgreSQL backends took 0.0002 each. Per live session-second at 16 streams, above
the idle deployment: Redis 1.91 operations (XADD 1.02, XREAD 0.88), 1026 bytes in and 410
out, 0.09 ms CPU; PostgreSQL 0.97 commits, 1.31 rows inserted, 0.21 ms backend CPU.

``--server-args`` go to both modes' servers (decode-only loads no model); with two hosts, to
the media nodes. The line the bench
prints per mode shows the backend each model got (from ``/healthz``): check it says tensorrt
or onnxruntime-cuda, not onnxruntime-cpu. Each worker process holds its own models and CUDA
context, so compare ``--workers`` 2, 4 and 8 rather than the one-per-core default. CPU figures
are the server's CPU only; GPU time is not in them. The generator needs about 0.01-0.02 of a
core per stream (less per stream as its processes fill up), so at 128 streams it takes about
one or two of the 16 cores. To run the server yourself, point the bench at it with ``--server
URL --key KEY --analysis on`` (one mode per server), adding ``--server-pid PID`` when it runs
on this machine: without it, CPU and RSS are not measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.streams.deployment import DEPLOYMENTS
from bench.streams.generator import Generators
from bench.streams.media import encode_media
from bench.streams.paper import SESSIONS_PER_NODE, measure_capacity, on_paper
from bench.streams.ramp import Bench
from bench.streams.reporting import (
    asr_comparison,
    asr_targets,
    comparison,
    defaults_targets,
    deployment_comparison,
    max_sustained,
    plot,
    report,
    targets,
)

ROOT = Path(__file__).resolve().parents[2]


def server_has_workers() -> bool:
    """Whether this checkout's ``rtserver serve`` takes ``--workers``."""
    out = subprocess.run(
        [sys.executable, "-m", "rtserver", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    return "--workers" in out.stdout


def parse_args(argv: Sequence[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--clients", type=int, help="one step of N streams")
    load.add_argument("--ramp", default="1,2,4,8,12,16", help="steps, e.g. 1,2,4,8,12,16")
    parser.add_argument("--seconds", type=int, default=20, help="media seconds per step")
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds after the start before CPU is measured"
    )
    parser.add_argument("--analysis", choices=["on", "off", "both"], default="both")
    parser.add_argument(
        "--deployment",
        choices=["embedded", "two-hosts", "both"],
        default="embedded",
        help="embedded: one `rtserver serve` (SQLite, in-process bus); two-hosts: Redis,"
        " PostgreSQL and two hosts of a front end and a media node; both: each, compared",
    )
    parser.add_argument(
        "--capacity",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="with two-hosts: measure what a redis-server (redis-benchmark XADD) and the"
        " PostgreSQL server (pgbench inserts) take, for the nodes-per-primary estimate",
    )
    parser.add_argument(
        "--sessions-per-node",
        type=int,
        default=SESSIONS_PER_NODE,
        help="live sessions per media node in the nodes-per-primary estimate",
    )
    parser.add_argument(
        "--transcribe",
        choices=["off", "on", "both"],
        default="off",
        help="speech-to-text in analysis-on (mode 'asr'); both: 'on' and 'asr' compared",
    )
    parser.add_argument("--server", help="an already running server's URL (default: start one)")
    parser.add_argument(
        "--key",
        default=os.environ.get("RTSERVER_API_KEY", ""),
        help="HR API key of --server (default: $RTSERVER_API_KEY)",
    )
    parser.add_argument("--server-pid", type=int, help="pid of --server, for /proc CPU and RSS")
    parser.add_argument("--workers", type=int, help="rtserver serve --workers N, if it exists")
    parser.add_argument("--server-args", default="", help="more `rtserver serve` options")
    parser.add_argument(
        "--limits",
        choices=["off", "defaults"],
        default="off",
        help="off: the server's admission limits lifted, to find the real maximum (default);"
        " defaults: the server's own limits, refused sessions counted",
    )
    parser.add_argument(
        "--until-fail",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after the ramp, keep climbing by its last increment until a step fails",
    )
    parser.add_argument("--ramp-max", type=int, default=64, help="where --until-fail stops")
    parser.add_argument(
        "--burst", type=int, default=0, help="after the ramp, N sessions join at once"
    )
    parser.add_argument("--max-sessions", type=int, default=64, help="with --limits off")
    parser.add_argument("--peers-per-process", type=int, default=12)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    parser.add_argument("--video-kbps", type=int, default=600)
    parser.add_argument("--audio-kbps", type=int, default=32)
    parser.add_argument(
        "--media-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "rtserver-bench-streams",
        help="cache of the generated media",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="keep the servers' data and logs here (default: removed)"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    args.ramp = [args.clients] if args.clients else [int(x) for x in args.ramp.split(",") if x]
    if not args.ramp or min(args.ramp) < 1 or args.ramp != sorted(set(args.ramp)):
        parser.error("--ramp wants increasing stream counts >= 1")
    if args.seconds < 2:
        parser.error("--seconds must be at least 2")
    args.size = (args.size[0], args.size[1])
    args.ramp_max = max(args.ramp_max, max(args.ramp))
    args.max_sessions = max(args.max_sessions, args.ramp_max, args.burst)
    if args.server and args.transcribe == "both":
        parser.error("--server runs one mode: give --transcribe on or off")
    if args.server and args.analysis == "both":
        parser.error("--server runs one mode: give --analysis on or off")
    if args.server and not args.key:
        parser.error("--server needs --key (or $RTSERVER_API_KEY)")
    if args.server and args.deployment != "embedded":
        parser.error("--server is one server: --deployment embedded")
    args.deployments = list(DEPLOYMENTS) if args.deployment == "both" else [args.deployment]
    return args


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Runs the bench; `prog` names it in usage lines (argparse's default when None)."""
    args = parse_args(argv, prog)
    notes = []
    args.workers_supported = False
    if args.workers is not None and not args.server:
        args.workers_supported = server_has_workers()
        if not args.workers_supported:
            notes.append(f"rtserver serve has no --workers flag: --workers {args.workers} omitted")
    if args.server and args.server_pid is None:
        notes.append("no --server-pid: server CPU and RSS are not measured")
    for note in notes:
        print(f"note: {note}", flush=True)
    args.media_dir.mkdir(parents=True, exist_ok=True)
    media = encode_media(args.media_dir, args.fps, args.size, args.video_kbps, args.audio_kbps)
    print(
        f"media: {args.size[0]}x{args.size[1]} {args.fps} fps VP8 {media.video_kbps:.0f} kbps,"
        f" Opus {media.audio_kbps:.0f} kbps, {media.loop_s:.0f} s loop",
        flush=True,
    )
    most = max(args.ramp_max if args.until_fail else max(args.ramp), args.burst)
    processes = math.ceil(most / args.peers_per_process)
    generators = Generators(processes, media)
    modes = ["off", "on"] if args.analysis == "both" else [args.analysis]
    if "on" in modes and args.transcribe != "off":
        modes += ["asr"]
        if args.transcribe == "on":
            modes.remove("on")
    every_step: list[dict[str, Any]] = []
    bench = Bench(args, generators)
    capacity: dict[str, Any] | None = None
    try:
        with contextlib.ExitStack() as stack:
            data = args.data_dir or Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="rtserver-streams-"))
            )
            for deployment in args.deployments:
                for mode in modes:
                    every_step += bench.run_mode(deployment, mode, data)
            if args.capacity and "two-hosts" in args.deployments:
                capacity = measure_capacity(data / "capacity")
    finally:
        generators.close()
    # The analysis modes are compared on the first deployment; the deployments, mode by mode.
    steps = [s for s in every_step if s["deployment"] == args.deployments[0]]
    on = [s for s in steps if s["mode"] == "on"]
    off = [s for s in steps if s["mode"] == "off"]
    asr = [s for s in steps if s["mode"] == "asr"]
    rows = comparison(on, off)
    speech_fraction = media.speech_s / media.loop_s
    asr_rows = asr_comparison(asr, on, speech_fraction)
    top = args.ramp_max if args.until_fail else max(args.ramp)
    chosen_targets = []
    if args.limits == "defaults" and on:
        chosen_targets = defaults_targets(on, top)
    elif on and off:
        chosen_targets = targets(on, off, rows, top)
    if asr:
        chosen_targets += asr_targets(asr, asr_rows)
    gen = [s["generator_cpu_per_stream"] for s in every_step]
    result: dict[str, Any] = {
        "config": {
            "ramp": args.ramp,
            "seconds": args.seconds,
            "settle_s": args.settle,
            "limits": args.limits,
            "until_fail": args.until_fail,
            "ramp_max": args.ramp_max,
            "burst": args.burst,
            "analysis": args.analysis,
            "deployment": args.deployment,
            "transcribe": args.transcribe,
            "server": args.server or "local",
            "workers": args.workers if args.workers_supported else None,
            "server_args": args.server_args,
            "generator_processes": processes,
            "peers_per_process": args.peers_per_process,
            "media": {
                "size": list(args.size),
                "fps": args.fps,
                "video_kbps": media.video_kbps,
                "audio_kbps": media.audio_kbps,
                "loop_s": media.loop_s,
                "speech_s": media.speech_s,
            },
        },
        "servers": bench.healths,
        "steps": every_step,
        "comparison": rows,
        "asr_comparison": asr_rows,
        "max_sustainable": {
            mode: dict(zip(("streams", "ramp_top"), max_sustained(group, top), strict=True))
            for mode, group in (("on", on), ("off", off), ("asr", asr))
            if group
        },
        "generator_cpu_per_stream": float(np.mean(gen)) if gen else 0.0,
        "targets": [vars(t) for t in chosen_targets],
        "notes": notes,
    }
    if len(args.deployments) > 1 or args.deployments != ["embedded"]:
        result["deployments"] = deployment_comparison(every_step, modes, top)
        result["on_paper"] = on_paper(every_step, capacity, args.sessions_per_node)
    if args.json:  # first: a long run's figures outlive a failure to print them
        args.json.write_text(json.dumps(result, indent=1))
    print("\n" + report(result), flush=True)
    if args.plot:
        plot(result, args.plot)
    return 0

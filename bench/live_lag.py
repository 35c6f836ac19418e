"""Signal lag and server CPU per stream, for N concurrent real WebRTC peers.

    python -m bench.live_lag [--peers 1 4] [--modes decode full haar] [--json out.json]

For each N it starts the real server once per mode: ``full`` (BlazeFace + tracker, emotion
model, audio), ``decode`` (``--analysis decode``, the baseline measured in the same run),
and optionally ``noemotion`` (``--emotion off``) and ``haar`` (``--detector haar --emotion
off``, the analysis before the DNN detector and the emotion model). It connects N
aiortc peers sending VP8 + Opus over loopback, and reads every signal's ``lag_ms`` from an
observer websocket. Server CPU comes from /proc for the server process alone; the peers run
in this process, so their encoding cost is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from media import make_face_video, make_speech_wav  # noqa: E402
from peer import collect_signals, connect_peer, create_session, signals_url  # noqa: E402
from server import ServerProcess  # noqa: E402

SCRIPT = (
    "Thank you for having me today. I have worked on real time systems for six years.",
    1.0,
    "Most of that time went into audio and video pipelines that had to stay fast.",
    1.5,
    "I enjoy measuring things before changing them, and I like to keep code simple.",
    1.0,
    "In my last role I led a small team that rebuilt our streaming stack.",
)


MODES = {
    "decode": ["--analysis", "decode"],
    "full": ["--analysis", "full"],
    "noemotion": ["--analysis", "full", "--emotion", "off"],
    "haar": ["--analysis", "full", "--detector", "haar", "--emotion", "off"],
}


@dataclass
class RunResult:
    mode: str
    peers: int
    signals: int
    lag_p50_ms: float
    lag_p95_ms: float
    lag_max_ms: float
    server_cpu_s: float
    media_s: float
    video_analysis_cpu_s: float  # thread CPU inside the face detector calls
    audio_analysis_cpu_s: float  # thread CPU inside the audio kernels
    models_cpu_s: float  # thread CPU of the model batcher (face crops + face models)
    detections: float = 0.0  # face detector runs (the tracker covers the other frames)
    frames_analysed: float = 0.0

    @property
    def cpu_per_stream(self) -> float:
        """Server CPU seconds per second of one stream's media (fraction of a core)."""
        return self.server_cpu_s / self.media_s if self.media_s else 0.0


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def metric_value(text: str, name: str) -> float:
    """A sample's value from Prometheus text, 0 when absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def run_once(mode: str, peers: int, video: Path, audio: Path, seconds: float) -> RunResult:
    with tempfile.TemporaryDirectory() as data:
        server = ServerProcess(Path(data), options=[*MODES[mode], "--max-sessions", "16"])
        server.start()
        assert server.process is not None
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=20.0) as client:
                base, key = server.base_url, server.api_key
                sessions = [await create_session(client, base, key) for _ in range(peers)]
                observers = [
                    asyncio.create_task(
                        collect_signals(signals_url(base, s["id"], key), timeout=seconds + 60)
                    )
                    for s in sessions
                ]
                cpu_before = process_cpu_seconds(server.process.pid)
                connected = await asyncio.gather(
                    *(
                        connect_peer(base, s["id"], s["join_token"], video, audio, client=client)
                        for s in sessions
                    )
                )
                await asyncio.gather(*(p.wait_media_ended(seconds + 30) for p in connected))
                for peer in connected:
                    await peer.close()
                results = await asyncio.gather(*observers)
                cpu = process_cpu_seconds(server.process.pid) - cpu_before
                metrics = (await client.get(f"{base}/metrics", headers=server.hr_headers)).text
        finally:
            server.stop()
    signals = [m for messages in results for m in messages if m["type"] == "signal"]
    lags = [float(m["lag_ms"]) for m in signals]
    return RunResult(
        mode=mode,
        peers=peers,
        signals=len(signals),
        lag_p50_ms=statistics.median(lags),
        lag_p95_ms=percentile(lags, 0.95),
        lag_max_ms=max(lags),
        server_cpu_s=cpu,
        media_s=float(len(signals)),
        video_analysis_cpu_s=metric_value(
            metrics, 'rtserver_analysis_cpu_seconds_total{path="video"}'
        ),
        audio_analysis_cpu_s=metric_value(
            metrics, 'rtserver_analysis_cpu_seconds_total{path="audio"}'
        ),
        models_cpu_s=metric_value(metrics, 'rtserver_analysis_cpu_seconds_total{path="models"}'),
        detections=sum(
            metric_value(metrics, f'rtserver_face_detections_total{{reason="{reason}"}}')
            for reason in ("scheduled", "lost")
        ),
        frames_analysed=metric_value(metrics, "rtserver_frames_analysed_total"),
    )


async def main_async(args: argparse.Namespace) -> list[RunResult]:
    media = Path(tempfile.mkdtemp(prefix="rtserver-bench-"))
    speech = make_speech_wav(media / "speech.wav", SCRIPT)
    video = make_face_video(media / "face.y4m", speech.duration_s, fps=args.fps, size=args.size)
    results = []
    for peers in args.peers:
        for mode in args.modes:
            started = time.monotonic()
            result = await run_once(mode, peers, video, speech.path, speech.duration_s)
            results.append(result)
            print(
                f"{mode:>6} x{peers}: {result.signals} signals, lag p50 {result.lag_p50_ms:.0f} ms"
                f" p95 {result.lag_p95_ms:.0f} ms max {result.lag_max_ms:.0f} ms,"
                f" server CPU {result.cpu_per_stream:.3f} core/stream (video analysis"
                f" {result.video_analysis_cpu_s / result.media_s:.3f},"
                f" audio {result.audio_analysis_cpu_s / result.media_s:.4f},"
                f" models {result.models_cpu_s / result.media_s:.4f};"
                f" {result.detections:.0f} detections for {result.frames_analysed:.0f} frames)"
                f" ({time.monotonic() - started:.0f} s)",
                flush=True,
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--size", type=int, nargs=2, default=[320, 240])
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["decode", "full"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if "decode" not in args.modes:
        parser.error("--modes must include decode, the baseline")
    args.size = tuple(args.size)
    results = asyncio.run(main_async(args))
    print("\nmode       peers  lag p50  lag p95  CPU/stream  decode-only  analysis overhead")
    by_key = {(r.mode, r.peers): r for r in results}
    rows: list[dict[str, Any]] = []
    for peers in args.peers:
        decode = by_key[("decode", peers)]
        row: dict[str, Any] = {"peers": peers}
        for mode in args.modes:
            run = by_key[(mode, peers)]
            row[mode] = asdict(run)
            if mode == "decode":
                continue
            overhead = run.cpu_per_stream - decode.cpu_per_stream
            ratio = run.cpu_per_stream / decode.cpu_per_stream if decode.cpu_per_stream else 0
            print(
                f"{mode:<10} {peers:>5}  {run.lag_p50_ms:>5.0f} ms {run.lag_p95_ms:>5.0f} ms"
                f"  {run.cpu_per_stream:>10.3f}  {decode.cpu_per_stream:>11.3f}"
                f"  {overhead:+.3f} core ({ratio:.2f}x decode-only)"
            )
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps({"results": rows}, indent=2))


if __name__ == "__main__":
    main()

"""Concurrent streams: signal lag, server CPU and memory per stream, analysis on against off.

    python -m bench.streams [--ramp 1,2,4,8,12,16 | --clients N] [--seconds 20]
        [--analysis on|off|both] [--workers N] [--json out.json] [--plot out.png]
        [--server URL --key KEY [--server-pid PID]] [--server-args "..."] [--data-dir DIR]

For each mode (``off`` = ``rtserver serve --analysis decode``, the baseline, then ``on`` =
``--analysis full``) it starts one real server (``--max-sessions 64`` or more; ``--workers N``
when given and the server has that flag, else the server's default) and climbs the ramp. At
each step of N streams:

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

A step is sustainable when its p95 lag is at most 1 s and no second is missing; a mode stops
climbing after its first step that is not. The targets (JSON ``"targets"``):

- analysis-on CPU per stream at most 1.25x decode-only, at the largest step both modes sustain;
- the most streams sustained with analysis at least 0.8x the most sustained decode-only (a mode
  that sustains the top of the ramp has a lower bound only: the name shows it as "16+");
- p95 signal lag at most 250 ms at half the most streams sustained with analysis (the largest
  step at or below half).

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

``--server-args`` go to both modes' servers (decode-only loads no model). The line the bench
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
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import wave
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from media import make_face_video, make_speech_wav  # noqa: E402
from peer import (  # noqa: E402
    AUDIO_CODECS,
    VIDEO_CODECS,
    OfferRejected,
    Peer,
    new_peer_connection,
    signals_url,
)
from server import ServerProcess  # noqa: E402

from rtserver.scoring.speech import LOOKAHEAD_HOPS  # noqa: E402

SCRIPT = (
    0.5,
    "Thank you for having me today. I have worked on real time systems for six years.",
    1.0,
    "Most of that time went into audio and video pipelines that had to stay fast.",
    1.5,
    "I enjoy measuring things before changing them, and I like to keep code simple.",
    1.0,
)
"""What the replayed candidate says: about 19 s of speech and pauses, looped every 20 s."""

MODES = {"off": "decode", "on": "full"}  # bench mode -> the server's --analysis
SUSTAINABLE_P95_MS = 1000.0
TARGET_CPU_RATIO = 1.25
TARGET_MAX_RATIO = 0.8
TARGET_HALF_LOAD_P95_MS = 250.0
SPEECH_GATE_LOOKAHEAD_MS = LOOKAHEAD_HOPS * 10.0  # 10 ms hops
KEYFRAME_INTERVAL_S = 2.0
AUDIO_RATE_HZ = 48000
AUDIO_PACKET = 960  # samples per Opus packet: 20 ms
EXTRA_MEDIA_S = 10.0  # the most media sent past S while second S-1 is awaited
FINAL_TIMEOUT_S = 20.0


# --------------------------------------------------------------------------- media


@dataclass(frozen=True)
class EncodedTrack:
    """One track's packets, in order, for one loop: payload bytes and pts in `time_base`."""

    kind: str
    payloads: tuple[bytes, ...]
    pts: tuple[int, ...]
    time_base: Fraction
    period: int  # loop length in `time_base` units: pts of loop k = pts + k * period


@dataclass(frozen=True)
class EncodedMedia:
    video: EncodedTrack
    audio: EncodedTrack
    loop_s: float
    video_kbps: float
    audio_kbps: float


def encode_media(
    cache: Path, fps: int, size: tuple[int, int], video_kbps: int, audio_kbps: int
) -> EncodedMedia:
    """The face video as VP8 and the speech as Opus packets, one loop of whole seconds."""
    speech = make_speech_wav(cache / "speech.wav", SCRIPT)
    loop_s = math.ceil(speech.duration_s)  # whole seconds: both tracks loop in step
    video_path = make_face_video(cache / f"face-{size[0]}x{size[1]}-{fps}.y4m", loop_s, fps, size)

    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height = size
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = Fraction(1, fps)
    encoder.framerate = fps
    encoder.bit_rate = video_kbps * 1000
    encoder.gop_size = round(KEYFRAME_INTERVAL_S * fps)
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    packets: list[av.Packet] = []
    with av.open(str(video_path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            frame.pts = index
            # The y4m demuxer marks every frame as intra, and libvpx obeys: clear it.
            frame.pict_type = av.video.frame.PictureType.NONE
            packets += encoder.encode(frame)
    packets += encoder.encode(None)
    # Frames keep their own pts (in frames): rate control may drop one, leaving a gap.
    kept = [p for p in packets if p.pts is not None and p.pts < loop_s * fps]
    video = EncodedTrack(
        "video",
        tuple(bytes(p) for p in kept),
        tuple(int(p.pts) * 90000 // fps for p in kept),
        Fraction(1, 90000),
        loop_s * 90000,
    )

    with wave.open(str(speech.path), "rb") as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    count = loop_s * AUDIO_RATE_HZ // AUDIO_PACKET
    samples = np.pad(samples, (0, max(0, count * AUDIO_PACKET - samples.size)))
    opus = av.CodecContext.create("libopus", "w")
    opus.sample_rate = AUDIO_RATE_HZ
    opus.layout = "mono"
    opus.format = "s16"
    opus.bit_rate = audio_kbps * 1000
    audio_packets: list[av.Packet] = []
    for index in range(count):
        chunk = samples[index * AUDIO_PACKET : (index + 1) * AUDIO_PACKET].reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), "s16", "mono")
        frame.sample_rate = AUDIO_RATE_HZ
        frame.pts = index * AUDIO_PACKET
        audio_packets += opus.encode(frame)
    audio_packets += opus.encode(None)
    audio = EncodedTrack(
        "audio",
        tuple(bytes(p) for p in audio_packets[:count]),
        tuple(i * AUDIO_PACKET for i in range(count)),
        Fraction(1, AUDIO_RATE_HZ),
        count * AUDIO_PACKET,
    )
    return EncodedMedia(
        video,
        audio,
        float(loop_s),
        video_kbps=sum(map(len, video.payloads)) * 8 / loop_s / 1000,
        audio_kbps=sum(map(len, audio.payloads)) * 8 / loop_s / 1000,
    )


# --------------------------------------------------------------------------- generator


class SendClock:
    """One peer's sending timeline, shared by its tracks: when each media second went out."""

    def __init__(self) -> None:
        self.start_at = 0.0  # monotonic time of media time 0
        self.started = asyncio.Event()
        self.last_sent: dict[int, float] = {}  # media second -> monotonic time of its last packet
        self.late_s: list[float] = []  # how late each packet left against its schedule (s)
        self.sent_until = 0.0  # media time (s) reached

    def start(self, at: float) -> None:
        self.start_at = at
        self.started.set()


class ReplayTrack(MediaStreamTrack):
    """Replays an EncodedTrack in real time, looped, as av.Packets aiortc sends unchanged."""

    def __init__(self, media: EncodedTrack, clock: SendClock) -> None:
        super().__init__()
        self.kind = media.kind
        self.media = media
        self.clock = clock
        self.index = 0

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        await self.clock.started.wait()
        media, clock = self.media, self.clock
        loop, i = divmod(self.index, len(media.payloads))
        self.index += 1
        pts = media.pts[i] + loop * media.period
        media_s = float(pts * media.time_base)
        due = clock.start_at + media_s
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        second = int(media_s)
        clock.last_sent[second] = max(clock.last_sent.get(second, 0.0), now)
        clock.late_s.append(now - due)
        clock.sent_until = max(clock.sent_until, media_s)
        packet = av.Packet(media.payloads[i])
        packet.pts = pts
        packet.time_base = media.time_base
        return packet


@dataclass
class ClientPeer:
    """A replaying candidate peer and the observer watching its session, in a generator."""

    session: str
    token: str
    clock: SendClock = field(default_factory=SendClock)
    peer: Peer | None = None
    ws: ClientConnection | None = None
    # Each signal: t, arrival (monotonic s), the server's lag_ms, video frames, audio hops.
    arrivals: list[tuple[int, float, float, int, int]] = field(default_factory=list)
    last_t_seen: asyncio.Event = field(default_factory=asyncio.Event)
    final: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None
    error: str = ""
    wanted_t: int = -1  # the last second the run waits for
    end_reason: str = ""  # the final message's: "hangup" when the peer's hangup ended it

    async def connect(
        self, base: str, key: str, media: EncodedMedia, http: httpx.AsyncClient
    ) -> None:
        self.ws = await ws_connect(
            signals_url(base, self.session, key), proxy=None, open_timeout=20.0, max_size=None
        )
        self.reader = asyncio.create_task(self._read())
        self.peer = Peer(pc=new_peer_connection())
        for track_media, codecs in ((media.video, VIDEO_CODECS), (media.audio, AUDIO_CODECS)):
            track = ReplayTrack(track_media, self.clock)
            self.peer.tracks.append(track)
            transceiver = self.peer.pc.addTransceiver(track, direction="sendonly")
            capabilities = RTCRtpSender.getCapabilities(track.kind).codecs
            transceiver.setCodecPreferences([c for c in capabilities if c.mimeType in codecs])
        url = f"{base}/api/v1/sessions/{self.session}/offer"

        async def post_offer(offer: RTCSessionDescription) -> RTCSessionDescription:
            body = {"sdp": offer.sdp, "type": offer.type, "token": self.token}
            response = await http.post(url, json=body)
            if response.status_code != 200:
                raise OfferRejected(response.status_code, response.text)
            reply = response.json()
            return RTCSessionDescription(sdp=reply["sdp"], type=reply["type"])

        await self.peer.negotiate(post_offer)
        await self.peer.wait_connected(20.0)

    async def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                at = time.monotonic()
                message = json.loads(raw)
                if message.get("type") == "signal":
                    t = int(message["t"])
                    video, audio = message.get("video") or {}, message.get("audio") or {}
                    lag_ms = float(message["lag_ms"])
                    frames, hops = int(video.get("frames", 0)), int(audio.get("hops", 0))
                    self.arrivals.append((t, at, lag_ms, frames, hops))
                    if t >= self.wanted_t:
                        self.last_t_seen.set()
                elif message.get("type") == "final":
                    self.end_reason = str(message.get("end_reason", ""))
                    self.final.set()
                    break
        self.last_t_seen.set()
        self.final.set()

    async def run(self, seconds: int) -> None:
        """Sends `seconds` of media (and on until second seconds-1 is out), then hangs up."""
        self.wanted_t = seconds - 1
        if any(arrival[0] >= self.wanted_t for arrival in self.arrivals):
            self.last_t_seen.set()
        end_min = self.clock.start_at + seconds + 0.5
        end_max = self.clock.start_at + seconds + EXTRA_MEDIA_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.last_t_seen.wait(), end_max - time.monotonic())
        await asyncio.sleep(max(0.0, end_min - time.monotonic()))
        await self.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.final.wait(), FINAL_TIMEOUT_S)
        if not self.final.is_set():
            self.error = self.error or "no final message"

    async def close(self) -> None:
        if self.peer is not None:
            await self.peer.close()

    async def shut(self) -> None:
        await self.close()
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)

    def result(self) -> dict[str, Any]:
        late = np.asarray(self.clock.late_s or [0.0]) * 1000.0
        return {
            "session": self.session,
            "error": self.error,
            "final": self.final.is_set() and not self.error,
            "end_reason": self.end_reason,
            "last_sent": {str(t): at for t, at in self.clock.last_sent.items()},
            "arrivals": self.arrivals,
            "sent_until_s": self.clock.sent_until,
            "late_p99_ms": float(np.percentile(late, 99)),
        }


def generator_main(conn: Connection, media: EncodedMedia) -> None:
    """A generator process: runs the peers the orchestrator hands it, one step at a time."""
    asyncio.run(_generator_loop(conn, media))


async def _generator_loop(conn: Connection, media: EncodedMedia) -> None:
    peers: list[ClientPeer] = []
    async with httpx.AsyncClient(trust_env=False, timeout=30.0) as http:
        while True:
            try:
                command = await asyncio.to_thread(conn.recv)
            except EOFError:
                return
            if command["cmd"] == "connect":
                peers = [ClientPeer(s, token) for s, token in command["sessions"]]
                outcomes = await asyncio.gather(
                    *(p.connect(command["base"], command["key"], media, http) for p in peers),
                    return_exceptions=True,
                )
                for peer, outcome in zip(peers, outcomes, strict=True):
                    if isinstance(outcome, BaseException):
                        peer.error = f"connect: {outcome!r}"
                conn.send({"connected": sum(not p.error for p in peers)})
            elif command["cmd"] == "run":
                live = [p for p in peers if not p.error]
                for peer in live:
                    peer.clock.start(command["start_at"])
                outcomes = await asyncio.gather(
                    *(p.run(command["seconds"]) for p in live), return_exceptions=True
                )
                for peer, outcome in zip(live, outcomes, strict=True):
                    if isinstance(outcome, BaseException):
                        peer.error = f"run: {outcome!r}"
                await asyncio.gather(*(p.shut() for p in peers), return_exceptions=True)
                conn.send([p.result() for p in peers])
                peers = []
            else:
                await asyncio.gather(*(p.shut() for p in peers), return_exceptions=True)
                return


class Generators:
    """The generator processes, started once (spawn) and reused by every step."""

    def __init__(self, count: int, media: EncodedMedia) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.processes: list[BaseProcess] = []
        for index in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=generator_main, args=(theirs, media), name=f"generator-{index}", daemon=True
            )
            process.start()
            theirs.close()
            self.conns.append(ours)
            self.processes.append(process)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def ask(self, conns: Sequence[Connection], message: Any, timeout_s: float) -> list[Any]:
        """Sends `message` to each of `conns`; returns their replies, in order."""
        for conn in conns:
            conn.send(message)
        return self.collect(conns, timeout_s)

    def collect(self, conns: Sequence[Connection], timeout_s: float) -> list[Any]:
        replies: dict[int, Any] = {}
        deadline = time.monotonic() + timeout_s
        while len(replies) < len(conns):
            ready = wait([c for c in conns if id(c) not in replies], deadline - time.monotonic())
            if not ready:
                raise TimeoutError(f"generators gave no reply in {timeout_s:.0f} s")
            for conn in ready:
                assert isinstance(conn, Connection)
                replies[id(conn)] = conn.recv()
        return [replies[id(c)] for c in conns]

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send({"cmd": "quit"})
        for process in self.processes:
            process.join(10.0)
            if process.is_alive():
                process.terminate()
                process.join(5.0)


# --------------------------------------------------------------------------- /proc, /metrics


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


# --------------------------------------------------------------------------- one step


@dataclass
class Target:
    name: str
    value: float | None
    target: float
    met: bool


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


class Step:
    """Runs one step of `streams` peers against a server and computes its figures."""

    def __init__(self, bench: Bench, mode: str, streams: int) -> None:
        self.bench, self.mode, self.streams = bench, mode, streams

    def run(self) -> dict[str, Any]:
        bench, seconds = self.bench, self.bench.args.seconds
        settle = min(bench.args.settle, seconds / 3)
        bench.wait_idle()
        log_offset = bench.log_offset()
        with httpx.Client(trust_env=False, timeout=30.0) as http:
            sessions = [bench.create_session(http) for _ in range(self.streams)]
        conns = bench.generators.conns
        shares = {conns[i]: sessions[i :: len(conns)] for i in range(len(conns))}
        used = [conn for conn, share in shares.items() if share]
        for conn in used:
            conn.send(
                {"cmd": "connect", "sessions": shares[conn], "base": bench.base, "key": bench.key}
            )
        connected = sum(r["connected"] for r in bench.generators.collect(used, 120.0))

        # Every peer starts sending at the same instant; CPU is measured once they settle.
        start_at = time.monotonic() + 1.0
        for conn in used:
            conn.send({"cmd": "run", "start_at": start_at, "seconds": seconds})
        time.sleep(max(0.0, start_at + settle - time.monotonic()))
        server0, gen0 = bench.server_usage(), tree_usage(bench.generators.pids)
        metrics0, at0 = bench.scrape(), time.monotonic()
        rss_peak = 0.0
        while (left := start_at + seconds - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            rss_peak = max(rss_peak, bench.server_rss())
        server1, gen1 = bench.server_usage(), tree_usage(bench.generators.pids)
        metrics1, at1 = bench.scrape(), time.monotonic()
        rss_peak = max(rss_peak, bench.server_rss())
        results = [r for reply in bench.generators.collect(used, seconds + 120.0) for r in reply]
        step = self.signal_figures(results, connected)
        problems = bench.log_problems(log_offset)
        step["server_log_problems"] = {"count": len(problems), "first": problems[:10]}
        window_s, per_stream = at1 - at0, 1.0 / ((at1 - at0) * self.streams)
        step["window_s"] = round(window_s, 3)
        step.update(self.server_figures(server0, server1, rss_peak, window_s))
        step.update(self.metrics_figures(metrics0, metrics1, window_s))
        step["generator_cpu_per_stream"] = (gen1.cpu_s - gen0.cpu_s) * per_stream
        step["generator_late_p99_ms"] = max(r["late_p99_ms"] for r in results)
        step["breakdown"] = self.breakdown(step, metrics0, metrics1, server0, server1, per_stream)
        p95 = step["lag_ms"]["p95"]
        step["sustainable"] = (
            p95 is not None
            and p95 <= SUSTAINABLE_P95_MS
            and step["seconds_missing"] == 0
            and connected == self.streams
        )
        step["sessions"] = step.pop("sessions")  # last: the long part of the JSON
        return step

    def signal_figures(self, results: list[dict[str, Any]], connected: int) -> dict[str, Any]:
        """Lag on the sender's clock, and missing or repeated seconds."""
        seconds = self.bench.args.seconds
        lags, server_lags, before, frames, no_video, no_audio = [], [], [], [], 0, 0
        for result in results:
            for t, at, lag_ms, video_frames, hops in result["arrivals"]:
                sent = result["last_sent"].get(str(t))
                if t < seconds and sent is not None:
                    lags.append((at - sent) * 1000.0)
                    server_lags.append(lag_ms)
                    before.append(lags[-1] - lag_ms)
                    frames.append(video_frames)
                    no_video += video_frames == 0
                    no_audio += hops == 0
        sessions = [session_seconds(r, seconds) for r in results]
        return {
            "mode": self.mode,
            "server_analysis": MODES[self.mode],
            "streams": self.streams,
            "connected": connected,
            "seconds": seconds,
            "lag_ms": percentiles(lags),
            "server_lag_ms": percentiles(server_lags),
            # Per signal, sender-clock lag less the server's own: transport, the jitter buffers,
            # decoding, and the server's clock reading the second's end a little late.
            "before_server_lag_ms": percentiles(before),
            "seconds_expected": self.streams * seconds,
            "seconds_missing": sum(len([t for t in s["missing"] if t < seconds]) for s in sessions),
            "seconds_duplicate": sum(s["duplicates"] for s in sessions),
            "contiguous": all(s["contiguous"] for s in sessions),
            "finals": sum(s["final"] for s in sessions),
            "end_reasons": dict(Counter(s["end_reason"] or "none" for s in sessions)),
            # Video frames the server decoded per second of a stream (from the signals), and
            # seconds in which a track delivered nothing: a stalled decoder, not slow analysis.
            "video_fps_decoded": float(np.mean(frames)) if frames else None,
            "seconds_without_video": no_video,
            # Decode-only analyses no audio hop, so the signals cannot tell there.
            "seconds_without_audio": no_audio if self.mode == "on" else None,
            "sessions": sessions,
        }

    def server_figures(
        self, before: Usage | None, after: Usage | None, rss_peak: float, window_s: float
    ) -> dict[str, Any]:
        """CPU and memory of the server's process tree (None without its pid)."""
        if before is None or after is None:
            keys = (
                "server_cpu_cores",
                "server_cpu_per_stream",
                "server_idle_cores",
                "rss_mb",
                "rss_idle_mb",
                "rss_per_stream_mb",
            )
            return dict.fromkeys(keys)
        cores = (after.cpu_s - before.cpu_s) / window_s
        bench = self.bench
        return {
            "server_cpu_cores": cores,
            "server_cpu_per_stream": cores / self.streams,
            "server_idle_cores": bench.idle_cores,
            "rss_mb": rss_peak / 2**20,
            "rss_idle_mb": bench.idle_rss / 2**20,
            "rss_per_stream_mb": (rss_peak - bench.idle_rss) / 2**20 / self.streams,
        }

    def metrics_figures(
        self, before: dict[Any, float], after: dict[Any, float], window_s: float
    ) -> dict[str, Any]:
        """Rates from /metrics over the measured window."""
        analysed = total(before, after, "rtserver_frames_analysed_total") / window_s
        crops = series(before, after, "rtserver_crops_dropped_total", "reason")
        return {
            "frames_decoded_per_s": total(before, after, "rtserver_frames_decoded_total")
            / window_s,
            "frames_analysed_per_s": analysed,
            "frames_analysed_per_stream_s": analysed / self.streams,
            "crops_dropped": {reason: int(n) for reason, n in crops.items() if n},
            # The latest reading of the most loaded process's event loop lag (mean over its
            # last 2 s): what admission control compares with --max-loop-lag.
            "loop_lag_ms": max(
                (
                    v * 1000.0
                    for (m, _), v in after.items()
                    if m == "rtserver_event_loop_lag_seconds"
                ),
                default=None,
            ),
            "refused_overloaded": int(
                sum(
                    v - before.get((m, k), 0.0)
                    for (m, k), v in after.items()
                    if m == "rtserver_rejected_total" and dict(k).get("code") == "overloaded"
                )
            ),
        }

    def breakdown(
        self,
        step: dict[str, Any],
        before: dict[Any, float],
        after: dict[Any, float],
        server0: Usage | None,
        server1: Usage | None,
        per_stream: float,
    ) -> dict[str, Any]:
        """The server's CPU per stream by stage (its own counters), and what is left."""
        stages = series(before, after, "rtserver_stage_cpu_seconds_total", "stage")
        paths = series(before, after, "rtserver_analysis_cpu_seconds_total", "path")
        listed = sum(stages.values()) if stages else sum(paths.values())
        tree = step["server_cpu_per_stream"]
        other = event_loop = None
        if tree is not None and server0 is not None and server1 is not None:
            other = tree - listed * per_stream
            event_loop = (server1.main_thread_s - server0.main_thread_s) * per_stream
        return {
            "stages": {k: v * per_stream for k, v in sorted(stages.items())},
            "paths": {k: v * per_stream for k, v in sorted(paths.items())},
            "other": other,
            "other_is_tree_minus": "stages" if stages else "paths",
            # "other" split by thread: the processes' main threads (the event loop: RTP, DTLS,
            # asyncio, publishing) and the rest (aiortc's decoder threads, ONNX Runtime's
            # pools, analysis work outside the timed stages).
            "other_main_threads": event_loop,
            "other_rest": None if other is None or event_loop is None else other - event_loop,
        }


# --------------------------------------------------------------------------- the bench


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
        response = httpx.get(f"{self.base}/metrics", timeout=10.0, trust_env=False)
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
        options = ["--analysis", MODES[mode], "--max-sessions", str(args.max_sessions)]
        if args.workers is not None and args.workers_supported:
            options += ["--workers", str(args.workers)]
        options += shlex.split(args.server_args)
        server = ServerProcess(data_dir / mode, options=options)
        if hasattr(server, "workers"):
            server.workers = None  # the flag is ours to pass (or to leave to the default)
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
        response = httpx.get(f"{self.base}/healthz", timeout=10.0, trust_env=False)
        return dict(response.json())

    def run_mode(self, mode: str, data_dir: Path) -> list[dict[str, Any]]:
        steps = []
        with self.mode_server(mode, data_dir):
            health = self.health()
            if health.get("analysis") != MODES[mode]:
                raise SystemExit(
                    f"the server runs --analysis {health.get('analysis')}, not {MODES[mode]}"
                )
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
            for streams in self.args.ramp:
                started = time.monotonic()
                step = Step(self, mode, streams).run()
                steps.append(step)
                print(step_line(step) + f"  ({time.monotonic() - started:.0f} s)", flush=True)
                if set(step["end_reasons"]) != {"hangup"}:
                    print(f"  sessions ended by: {step['end_reasons']}", flush=True)
                problems = step["server_log_problems"]
                if problems["count"]:
                    where = (
                        f" in {self.server.log_path}" if self.args.data_dir and self.server else ""
                    )
                    print(f"  {problems['count']} server log warnings/errors{where}, first:")
                    print("\n".join(f"    {line[:160]}" for line in problems["first"][:3]))
                if not step["sustainable"]:
                    print(f"  analysis {mode}: not sustainable at {streams}; stopping", flush=True)
                    break
        return steps


# --------------------------------------------------------------------------- report


def _num(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def step_line(s: dict[str, Any]) -> str:
    lag = s["lag_ms"]
    crops = sum(s["crops_dropped"].values())
    return (
        f"{s['mode']:>3} {s['streams']:>4}  {_num(lag['p50'], '.0f', 5)}"
        f" {_num(lag['p95'], '.0f', 5)} {_num(lag['p99'], '.0f', 5)}"
        f"  {s['seconds_missing']:>4} {s['seconds_duplicate']:>3}"
        f"  {_num(s['server_cpu_per_stream'], '.3f', 7)} {_num(s['rss_mb'], '.0f', 6)}"
        f" {_num(s['rss_per_stream_mb'], '.1f', 6)}  {_num(s['video_fps_decoded'], '.1f', 5)}"
        f" {s['frames_analysed_per_s']:>6.1f} {crops:>5}"
        f"  {s['generator_cpu_per_stream']:>6.4f} {s['generator_late_p99_ms']:>5.1f}"
        f" {_num(s.get('loop_lag_ms'), '.0f', 5)}  {'yes' if s['sustainable'] else 'NO'}"
    )


HEADER = (
    "                 signal lag (ms)   seconds   server   tree RSS MB  decoded frames crops"
    "  generator     loop\n"
    "mode   N    p50   p95   p99  miss dup  cores/N  total  per N  fps/N anal/s  drop"
    "  cores/N late99  lag  ok"
)


def max_sustained(steps: list[dict[str, Any]], ramp: Sequence[int]) -> tuple[int, bool]:
    """Most streams sustained (0 if none) and whether that was the ramp's top (a lower bound)."""
    best = 0
    for step in steps:
        if not step["sustainable"]:
            break
        best = step["streams"]
    return best, best == max(ramp)


def comparison(on: list[dict[str, Any]], off: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_n = {s["streams"]: s for s in off}
    rows = []
    for step in on:
        base = by_n.get(step["streams"])
        if base is None:
            continue
        a, b = step["server_cpu_per_stream"], base["server_cpu_per_stream"]
        rows.append(
            {
                "streams": step["streams"],
                "on_cpu_per_stream": a,
                "off_cpu_per_stream": b,
                "ratio": a / b if a is not None and b else None,
                "both_sustainable": step["sustainable"] and base["sustainable"],
            }
        )
    return rows


def targets(
    on: list[dict[str, Any]], off: list[dict[str, Any]], rows: list[dict[str, Any]], ramp: list[int]
) -> list[Target]:
    out = []
    both = [r for r in rows if r["both_sustainable"] and r["ratio"] is not None]
    if both:
        row = both[-1]
        name = f"analysis-on / decode-only CPU per stream at {row['streams']} streams"
        out.append(Target(name, row["ratio"], TARGET_CPU_RATIO, row["ratio"] <= TARGET_CPU_RATIO))
    else:
        out.append(
            Target(
                "analysis-on / decode-only CPU per stream (no step both sustain)",
                None,
                TARGET_CPU_RATIO,
                False,
            )
        )
    max_on, top_on = max_sustained(on, ramp)
    max_off, top_off = max_sustained(off, ramp)
    bounds = f"{max_on}{'+' if top_on else ''} / {max_off}{'+' if top_off else ''}"
    value = max_on / max_off if max_off else None
    out.append(
        Target(
            f"max sustainable streams analysis-on / decode-only ({bounds})",
            value,
            TARGET_MAX_RATIO,
            value is not None and value >= TARGET_MAX_RATIO,
        )
    )
    half = [s for s in on if s["sustainable"] and s["streams"] <= max_on / 2]
    if not half and max_on:
        half = [s for s in on if s["streams"] == min(ramp)]
    if half:
        step = half[-1]
        p95 = step["lag_ms"]["p95"]
        name = f"p95 signal lag (ms) at {step['streams']} streams, half of {max_on} (analysis on)"
        out.append(Target(name, p95, TARGET_HALF_LOAD_P95_MS, p95 <= TARGET_HALF_LOAD_P95_MS))
    else:
        out.append(
            Target(
                "p95 signal lag (ms) at half the maximum analysis-on load (none)",
                None,
                TARGET_HALF_LOAD_P95_MS,
                False,
            )
        )
    return out


def breakdown_lines(steps: list[dict[str, Any]]) -> list[str]:
    """Where the server's CPU goes: one column per step, in thousandths of a core per stream."""
    if not steps:
        return []
    stages = sorted({k for s in steps for k in s["breakdown"]["stages"]})
    paths = sorted({k for s in steps for k in s["breakdown"]["paths"]})
    minus = steps[-1]["breakdown"]["other_is_tree_minus"]
    rows: list[tuple[str, str, str]] = [
        ("server tree", "", "server_cpu_per_stream"),
        *((f"  stage {k}", "stages", k) for k in stages),
        (f"  other (tree - {minus})", "", "other"),
        ("    main threads (event loop)", "", "other_main_threads"),
        ("    other threads (decode, ORT)", "", "other_rest"),
        *((f"path {k} (not added)", "paths", k) for k in paths),
    ]
    head = "".join(f"{s['mode'] + str(s['streams']):>8}" for s in steps)
    lines = [
        "where the server's CPU goes (thousandths of a core per stream, from /metrics and /proc):",
        f"{'':<34}{head}",
    ]
    for label, group, key in rows:
        cells = []
        for s in steps:
            b = s["breakdown"]
            value = b[group].get(key) if group else s.get(key, b.get(key))
            cells.append(_num(None if value is None else value * 1000, ".1f", 8))
        lines.append(f"{label:<34}{''.join(cells)}")
    return lines


def lag_lines(steps: list[dict[str, Any]]) -> list[str]:
    """Where the signal lag goes: one column per step, p50 and p95 in milliseconds."""
    if not steps:
        return []
    rows = [
        ("sender clock to observer", "lag_ms"),
        ("  before the server (network, jitter, decode)", "before_server_lag_ms"),
        ("  on the server (its lag_ms)", "server_lag_ms"),
    ]
    head = "".join(f"{s['mode'] + str(s['streams']):>8}" for s in steps)
    lines = ["where the signal lag goes (ms, p50 / p95):", f"{'':<46}{head}"]
    for label, key in rows:
        for q in ("p50", "p95"):
            cells = "".join(_num(s.get(key, {}).get(q), ".0f", 8) for s in steps)
            lines.append(f"{label + ' ' + q:<46}{cells}")
    lines.append(
        f"  with analysis, the server holds each second {SPEECH_GATE_LOOKAHEAD_MS:.0f} ms for the"
        " speech gate's lookahead (scoring/speech.py), by design"
    )
    return lines


def report(result: dict[str, Any]) -> str:
    lines = [HEADER]
    lines += [step_line(s) for s in result["steps"]]
    if result["comparison"]:
        lines += ["", "   N  on cores/N  off cores/N  on/off  both sustain"]
        for row in result["comparison"]:
            lines.append(
                f"{row['streams']:>4}  {_num(row['on_cpu_per_stream'], '.4f', 10)}"
                f"  {_num(row['off_cpu_per_stream'], '.4f', 11)}  {_num(row['ratio'], '.2f', 6)}"
                f"  {'yes' if row['both_sustainable'] else 'no'}"
            )
    lines.append("")
    for mode, best in result["max_sustainable"].items():
        bound = " (the ramp's top: a lower bound)" if best["ramp_top"] else ""
        lines.append(f"max sustainable streams, analysis {mode}: {best['streams']}{bound}")
    lines.append(
        f"generator CPU per stream: {result['generator_cpu_per_stream']:.4f} cores"
        f" ({result['config']['generator_processes']} processes)"
    )
    lines += ["", *lag_lines(result["steps"])]
    lines += ["", *breakdown_lines(result["steps"])]
    if result["targets"]:
        lines += ["", "targets:"]
        for t in result["targets"]:
            value = "-" if t["value"] is None else f"{t['value']:.3g}"
            verdict = "met" if t["met"] else "MISSED"
            lines.append(f"  {t['name']}: {value} (target {t['target']:g}) {verdict}")
    lines += [f"note: {note}" for note in result["notes"]]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lag_ax, cpu_ax) = plt.subplots(1, 2, figsize=(12, 4.8))
    colours = {"on": "tab:red", "off": "tab:blue"}
    for mode in ("on", "off"):
        steps = [s for s in result["steps"] if s["mode"] == mode and s["lag_ms"]["p50"] is not None]
        if not steps:
            continue
        n = [s["streams"] for s in steps]
        for q, style in (("p50", ":"), ("p95", "-"), ("p99", "--")):
            lag_ax.plot(
                n,
                [s["lag_ms"][q] for s in steps],
                style,
                marker="o",
                color=colours[mode],
                label=f"{mode} {q}",
            )
        cpu = [s["server_cpu_per_stream"] for s in steps]
        if all(c is not None for c in cpu):
            cpu_ax.plot(n, cpu, "-o", color=colours[mode], label=f"server, analysis {mode}")
        cpu_ax.plot(
            n,
            [s["generator_cpu_per_stream"] for s in steps],
            ":x",
            color=colours[mode],
            label=f"generator ({mode} run)",
        )
        bad = [s for s in steps if not s["sustainable"]]
        lag_ax.plot(
            [s["streams"] for s in bad],
            [s["lag_ms"]["p95"] for s in bad],
            "x",
            color="black",
            markersize=12,
        )
    lag_ax.axhline(SUSTAINABLE_P95_MS, color="grey", lw=0.8, label="sustainable p95 (1 s)")
    lag_ax.axhline(
        TARGET_HALF_LOAD_P95_MS, color="grey", lw=0.8, ls="--", label="p95 target at half load"
    )
    lag_ax.set(
        xlabel="concurrent streams",
        ylabel="signal lag, sender clock (ms)",
        yscale="log",
        title="signal lag (x: not sustainable)",
    )
    cpu_ax.set(
        xlabel="concurrent streams",
        ylabel="CPU cores per stream",
        title="CPU per stream (server process tree)",
    )
    cpu_ax.set_ylim(bottom=0)
    for ax in (lag_ax, cpu_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--clients", type=int, help="one step of N streams")
    load.add_argument("--ramp", default="1,2,4,8,12,16", help="steps, e.g. 1,2,4,8,12,16")
    parser.add_argument("--seconds", type=int, default=20, help="media seconds per step")
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds after the start before CPU is measured"
    )
    parser.add_argument("--analysis", choices=["on", "off", "both"], default="both")
    parser.add_argument("--server", help="an already running server's URL (default: start one)")
    parser.add_argument(
        "--key",
        default=os.environ.get("RTSERVER_API_KEY", ""),
        help="HR API key of --server (default: $RTSERVER_API_KEY)",
    )
    parser.add_argument("--server-pid", type=int, help="pid of --server, for /proc CPU and RSS")
    parser.add_argument("--workers", type=int, help="rtserver serve --workers N, if it exists")
    parser.add_argument("--server-args", default="", help="more `rtserver serve` options")
    parser.add_argument("--max-sessions", type=int, default=64)
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
    args.max_sessions = max(args.max_sessions, max(args.ramp))
    if args.server and args.analysis == "both":
        parser.error("--server runs one mode: give --analysis on or off")
    if args.server and not args.key:
        parser.error("--server needs --key (or $RTSERVER_API_KEY)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
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
    processes = math.ceil(max(args.ramp) / args.peers_per_process)
    generators = Generators(processes, media)
    modes = ["off", "on"] if args.analysis == "both" else [args.analysis]
    steps: list[dict[str, Any]] = []
    bench = Bench(args, generators)
    try:
        with contextlib.ExitStack() as stack:
            data = args.data_dir or Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="rtserver-streams-"))
            )
            for mode in modes:
                steps += bench.run_mode(mode, data)
    finally:
        generators.close()
    on = [s for s in steps if s["mode"] == "on"]
    off = [s for s in steps if s["mode"] == "off"]
    rows = comparison(on, off)
    gen = [s["generator_cpu_per_stream"] for s in steps]
    result: dict[str, Any] = {
        "config": {
            "ramp": args.ramp,
            "seconds": args.seconds,
            "settle_s": args.settle,
            "analysis": args.analysis,
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
            },
        },
        "servers": bench.healths,
        "steps": steps,
        "comparison": rows,
        "max_sustainable": {
            mode: dict(zip(("streams", "ramp_top"), max_sustained(group, args.ramp), strict=True))
            for mode, group in (("on", on), ("off", off))
            if group
        },
        "generator_cpu_per_stream": float(np.mean(gen)) if gen else 0.0,
        "targets": [vars(t) for t in targets(on, off, rows, args.ramp)] if on and off else [],
        "notes": notes,
    }
    print("\n" + report(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

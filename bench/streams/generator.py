"""Load generators: processes of aiortc peers replaying the media, each with its observer.

The processes are started once (multiprocessing, spawn) and reused by every step: the
orchestrator hands each its share of the step's sessions, then the instant to start sending,
and gets back when each peer sent each media second and when that second's signal arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from aiortc import RTCRtpSender, RTCSessionDescription
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

# The test helpers (media, peer, server) are plain modules in tests/, not a package.
ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from peer import (  # noqa: E402
    AUDIO_CODECS,
    VIDEO_CODECS,
    OfferRejected,
    Peer,
    new_peer_connection,
    signals_url,
)

from bench.streams.media import EncodedMedia, ReplayTrack, SendClock  # noqa: E402

EXTRA_MEDIA_S = 10.0  # the most media sent past S while second S-1 is awaited
FINAL_TIMEOUT_S = 20.0


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
    # Each transcript message: the server's lag_ms and its number of words.
    transcripts: list[tuple[float, int]] = field(default_factory=list)
    last_t_seen: asyncio.Event = field(default_factory=asyncio.Event)
    final: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None
    error: str = ""
    # The server's error code when it refused the offer (503 overloaded, at_capacity): a
    # refused peer sends nothing, and its session's seconds are not expected.
    refused: str = ""
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
                elif message.get("type") == "transcript":
                    words = len(message.get("words") or ())
                    self.transcripts.append((float(message["lag_ms"]), words))
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
            "refused": self.refused,
            "final": self.final.is_set() and not self.error,
            "end_reason": self.end_reason,
            "last_sent": {str(t): at for t, at in self.clock.last_sent.items()},
            "arrivals": self.arrivals,
            "transcripts": self.transcripts,
            "sent_until_s": self.clock.sent_until,
            "late_p99_ms": float(np.percentile(late, 99)),
        }


def _error_code(body: Any) -> str:
    """The ``error`` code of an API error body (JSON text), or "unknown"."""
    with contextlib.suppress(ValueError, TypeError, KeyError):
        return str(json.loads(body)["error"])
    return "unknown"


def generator_main(conn: Connection, media: EncodedMedia) -> None:
    """A generator process: runs the peers the orchestrator hands it, one step at a time."""
    # At module level, so that spawn finds it by name in the new process.
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
                # Each session is [id, token] or [id, token, base]: the front end it was
                # created on, which its candidate joins and its observer watches through.
                entries = command["sessions"]
                peers = [ClientPeer(entry[0], entry[1]) for entry in entries]
                bases = [entry[2] if len(entry) > 2 else command["base"] for entry in entries]
                outcomes = await asyncio.gather(
                    *(
                        p.connect(base, command["key"], media, http)
                        for p, base in zip(peers, bases, strict=True)
                    ),
                    return_exceptions=True,
                )
                for peer, outcome in zip(peers, outcomes, strict=True):
                    if isinstance(outcome, OfferRejected) and outcome.status == 503:
                        peer.refused = _error_code(outcome.body)
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

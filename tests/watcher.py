"""Test helpers for the live relay and reconnects: an HR observer watching a session over a
real recvonly aiortc connection, and a candidate whose network vanishes.

Everything stays on loopback, as in :mod:`peer`: no STUN/TURN, 127.0.0.1 candidates only.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import av
import httpx
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from peer import ApiError, Peer, new_peer_connection

from rtserver.media.ingest import ice_transports

KEPT_PICTURES = 40  # decoded pictures an observer keeps (downscaled luma) for content checks


@dataclass
class VideoSample:
    at: float  # monotonic arrival time (s)
    width: int
    height: int
    mean_luma: float  # 0-255


@dataclass
class Observer:
    """A recvonly observer connection and what arrived on it."""

    pc: RTCPeerConnection
    video: list[VideoSample] = field(default_factory=list)
    audio: list[float] = field(default_factory=list)  # arrival time of each audio frame
    pictures: list[npt.NDArray[np.uint8]] = field(default_factory=list)  # luma, 1 px in 4
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # connection closed or failed
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def _on_track(self, track: MediaStreamTrack) -> None:
        task = asyncio.ensure_future(self._consume(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            if isinstance(frame, av.VideoFrame):
                luma = frame.to_ndarray(format="gray")
                self.video.append(VideoSample(now, frame.width, frame.height, float(luma.mean())))
                if len(self.pictures) < KEPT_PICTURES:
                    self.pictures.append(luma[::4, ::4].copy())
            else:
                self.audio.append(now)

    def _on_state(self) -> None:
        if self.pc.connectionState in ("closed", "failed"):
            self.ended.set()

    def video_after(self, at: float) -> list[VideoSample]:
        return [s for s in self.video if s.at > at]

    async def close(self) -> None:
        await self.pc.close()
        for task in list(self._tasks):
            task.cancel()


async def watch_session(
    client: httpx.AsyncClient, base_url: str, session_id: str, api_key: str
) -> Observer:
    """Watches a live session as HR: a recvonly offer (one video, one audio transceiver)
    posted to ``/watch``. Raises :class:`ApiError` on a non-200 answer."""
    observer = Observer(new_peer_connection())
    pc = observer.pc
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    pc.on("track", observer._on_track)
    pc.on("connectionstatechange", observer._on_state)
    await pc.setLocalDescription(await pc.createOffer())
    response = await client.post(
        f"{base_url}/api/v1/sessions/{session_id}/watch",
        json={"sdp": pc.localDescription.sdp, "type": "offer"},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    if response.status_code != 200:
        await pc.close()
        raise ApiError(response.status_code, response.json())
    answer: dict[str, Any] = response.json()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    return observer


async def drop_network(peer: Peer) -> None:
    """Makes the candidate's network vanish: its ICE transports close their sockets, so
    nothing more reaches the server (no RTCP BYE, no DTLS close_notify, no consent
    answers), as when a laptop's Wi-Fi dies. The server must notice by itself."""
    for ice in ice_transports(peer.pc):
        await ice.stop()
    for track in peer.tracks:
        track.stop()

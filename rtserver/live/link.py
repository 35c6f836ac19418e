"""One connection of the candidate: its peer and the media paths draining its tracks.

A session outlives a dropped connection; each connection (the first, and each after a
reconnect) is a new :class:`Link` on the session's clock and aggregator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiortc.mediastreams import MediaStreamTrack

from rtserver.media.audio import AudioPath
from rtserver.media.ingest import PeerIngest
from rtserver.media.video import VideoPath


@dataclass
class Link:
    """One connection of the candidate: its peer, and the media paths draining its tracks."""

    video: VideoPath
    audio: AudioPath
    connected_at: float  # monotonic time the offer was answered
    ingest: PeerIngest = field(init=False)
    drains: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # kind -> drain
    retired: bool = False  # closed for good: its late tracks and events are ignored

    @property
    def last_media_at(self) -> float:
        """Monotonic time of the last frame, or of the connection before any frame."""
        return max(self.video.last_media_at, self.audio.last_media_at, self.connected_at)

    @property
    def cpu_s(self) -> float:
        return self.video.cpu_s + self.audio.cpu_s


async def drain(path: Coroutine[Any, Any, None], proxy: MediaStreamTrack) -> None:
    """Runs a media path over its relay proxy, unsubscribing the proxy when it stops."""
    try:
        await path
    finally:
        proxy.stop()

"""The observer relay: one session's live video and audio, shared by its analysis and by
the HR observers watching it, through aiortc's :class:`MediaRelay`.

    candidate track -> MediaRelay -> buffered proxy     -> the session's analysis drain
                                  -> latest-frame proxy -> FeedTrack -> observer connection

The relay reads the candidate's track from the moment it arrives, so nothing else may read
that track: the analysis reads its own buffered proxy (every frame; its queue is aiortc's
unbounded one, kept empty by the drain exactly as the remote track's own queue was).
Observers get latest-frame proxies (``buffered=False``): a slow observer skips frames and
never holds any back.

aiortc relays decoded frames, so every observer connection encodes them again (VP8 or H.264,
Opus) in its own RTCRtpSender: one encoder per observer, hence the cap per session. aiortc's
public API has no pass-through of the candidate's encoded packets.

A :class:`FeedTrack` outlives the candidate's tracks: when the candidate reconnects, each
observer's feed moves to the new tracks, and the observer's connection stays up. The new
tracks' timestamps are unrelated to the old ones, and encoders refuse time going backwards,
so a feed shifts them to go on from where the last frame left off, plus the time between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

import av
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.frame import Frame
from av.packet import Packet

from rtserver.config import Config
from rtserver.errors import AtCapacity, BadSdp, Conflict, NoUdpPort
from rtserver.media.ingest import ice_configuration

log = logging.getLogger(__name__)

WATCHER_RETRY_AFTER_S = 10  # Retry-After for an observer refused at the per-session cap


def own_copy(frame: Frame | Packet) -> Frame | Packet:
    """A copy of a relayed frame that one observer's encoder may change.

    PyAV's encode rebases a video frame's ``pts`` and ``time_base`` in place, in aiortc's
    encoder thread, while the session's analysis reads the same relayed frame's timestamps
    on the event loop: so no encoder is ever handed a shared frame. (Costs ~0.7 ms for a
    720p frame, a fraction of its encoding.)
    """
    copy: av.VideoFrame | av.AudioFrame
    if isinstance(frame, av.VideoFrame):
        if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
            copy = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
        else:
            # A new frame either way: another pixel format, or odd sizes made even (4:2:0
            # planes need them), which the encoder would otherwise do itself.
            copy = frame.reformat(
                width=frame.width & ~1, height=frame.height & ~1, format="yuv420p"
            )
    elif isinstance(frame, av.AudioFrame):
        copy = av.AudioFrame.from_ndarray(
            frame.to_ndarray(), format=frame.format.name, layout=frame.layout.name
        )
        copy.sample_rate = frame.sample_rate
    else:
        return frame
    copy.pts = frame.pts
    copy.time_base = frame.time_base
    return copy


class FeedTrack(MediaStreamTrack):
    """What one observer connection sends for one kind: the candidate's current track of
    that kind, latest frame first, across reconnects; it ends when the session ends."""

    def __init__(self, relay: SessionRelay, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._relay = relay
        self._source: MediaStreamTrack | None = None  # the candidate track followed
        self._proxy: MediaStreamTrack | None = None  # this feed's proxy of it
        self._shift: int | None = None  # pts added to the source's; None: not yet known
        self._last: tuple[float, float] | None = None  # last frame sent: (media s, monotonic s)

    async def recv(self) -> Frame | Packet:
        while self.readyState == "live" and not self._relay.closed:
            source = self._relay.source(self.kind)
            if source is not None and source is not self._source:
                self._unsubscribe()
                self._source = source
                self._proxy = self._relay.latest_frames(source)
                self._shift = None
            if self._proxy is None:
                await self._relay.changed()
                continue
            try:
                frame = await self._proxy.recv()
            except MediaStreamError:
                # The candidate's track ended (a hangup or a drop): wait for the next one.
                self._proxy = None
                continue
            return self._retimed(own_copy(frame))
        raise MediaStreamError

    def _retimed(self, frame: Frame | Packet) -> Frame | Packet:
        """``frame`` (our own copy) with its pts on this feed's timeline: the first
        source's, shifted at each new source to follow on from the last frame sent."""
        if frame.pts is None or frame.time_base is None:
            return frame
        time_base = float(frame.time_base)
        if self._shift is None:
            self._shift = 0
            if self._last is not None:
                sent_s, sent_at = self._last
                follow_s = sent_s + (time.monotonic() - sent_at)
                self._shift = round(follow_s / time_base) - frame.pts
        pts = frame.pts + self._shift
        if self._last is not None and pts * time_base <= self._last[0]:
            pts = int(self._last[0] / time_base) + 1  # never backwards, never repeated
        frame.pts = pts
        self._last = (pts * time_base, time.monotonic())
        return frame

    def _unsubscribe(self) -> None:
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None

    def stop(self) -> None:
        super().stop()
        self._unsubscribe()


class Watcher:
    """One observer's recvonly connection, fed by one FeedTrack per audio/video m-line."""

    def __init__(self, relay: SessionRelay, config: Config) -> None:
        self.relay = relay
        self.pc = RTCPeerConnection(ice_configuration(config))
        self.feeds: list[FeedTrack] = []
        self.pc.on("connectionstatechange", self._on_connection_state)

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """The answer to a recvonly offer, sending the feeds; raises BadSdp when aiortc
        cannot use the offer, NoUdpPort when every port of ``--udp-ports`` is taken."""
        try:
            await self.pc.setRemoteDescription(offer)
            for transceiver in self.pc.getTransceivers():
                if transceiver.kind in ("audio", "video"):
                    feed = FeedTrack(self.relay, transceiver.kind)
                    self.feeds.append(feed)
                    transceiver.sender.replaceTrack(feed)
                    transceiver.direction = "sendonly"
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except NoUdpPort:  # the port range is full (media/ice.py): 503, not the offer's fault
            raise
        except Exception as exc:
            # As for the candidate's offer: aiortc raises anything on odd SDP.
            raise BadSdp(f"cannot use this offer: {exc}") from exc
        local = self.pc.localDescription
        return RTCSessionDescription(sdp=local.sdp, type=local.type)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.info("observer connection %s", state, extra={"session": self.relay.session_id})
        if state in ("failed", "closed"):
            self.relay.spawn(self.relay.release(self))

    async def close(self) -> None:
        """Stops the feeds and closes the connection; never raises."""
        for feed in self.feeds:
            feed.stop()
        try:
            await self.pc.close()
        except Exception:
            log.info(
                "observer connection did not close cleanly",
                exc_info=True,
                extra={"session": self.relay.session_id},
            )


class SessionRelay:
    """The candidate's live tracks of one session, for its analysis and its observers."""

    def __init__(self, session_id: str, config: Config) -> None:
        self.session_id = session_id
        self.config = config
        self.closed = False
        self._relay = MediaRelay()
        self._sources: dict[str, MediaStreamTrack] = {}  # kind -> the candidate's track
        self._changed = asyncio.Event()  # set (and replaced) at each new source or close
        self._watchers: set[Watcher] = set()
        self._background: set[asyncio.Task[None]] = set()

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    # -- sources ----------------------------------------------------------------------

    def analysis_track(self, track: MediaStreamTrack) -> MediaStreamTrack:
        """Makes ``track``, the candidate's track just arrived, its kind's live source and
        returns the analysis's proxy of it (buffered: every frame, in order). Call it before
        anything reads ``track``: from now on only the relay does."""
        self._sources[track.kind] = track
        proxy = self._relay.subscribe(track, buffered=True)
        self._notify()
        return proxy

    def source(self, kind: str) -> MediaStreamTrack | None:
        """The candidate's live track of ``kind``, or None (not yet, or it ended)."""
        track = self._sources.get(kind)
        return track if track is not None and track.readyState == "live" else None

    def latest_frames(self, source: MediaStreamTrack) -> MediaStreamTrack:
        """A new latest-frame proxy of ``source`` (stop it when done)."""
        return self._relay.subscribe(source, buffered=False)

    async def changed(self) -> None:
        """Returns at the next new source, or when the relay closes."""
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- observers --------------------------------------------------------------------

    async def watch(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Answers an observer's recvonly offer with the live feeds.

        Raises Conflict once the session has ended, AtCapacity at ``max_watchers``, BadSdp
        when the offer cannot be used.
        """
        if self.closed:
            raise Conflict("session is not live")
        limit = self.config.max_watchers
        if len(self._watchers) >= limit:
            raise AtCapacity(
                f"at most {limit} observers may watch a session at once",
                retry_after_s=WATCHER_RETRY_AFTER_S,
            )
        watcher = Watcher(self, self.config)
        self._watchers.add(watcher)  # holds the place while negotiating
        try:
            answer = await watcher.answer(offer)
            if self.closed:
                raise Conflict("session is not live")
        except BaseException:
            await self.release(watcher)
            raise
        log.info(
            "observer watching (%d of %d)",
            len(self._watchers),
            limit,
            extra={"session": self.session_id},
        )
        return answer

    async def release(self, watcher: Watcher) -> None:
        """Closes one observer's connection and frees its place."""
        self._watchers.discard(watcher)
        await watcher.close()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Runs ``coroutine`` in the background, holding a reference until it is done."""
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Ends every feed and closes every observer connection (the session ended)."""
        self.closed = True
        self._notify()
        watchers = list(self._watchers)
        self._watchers.clear()
        await asyncio.gather(*(w.close() for w in watchers))
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._background, return_exceptions=True)

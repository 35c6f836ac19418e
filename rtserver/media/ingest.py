"""WebRTC ingest: the server side of one candidate's RTCPeerConnection.

It answers the offer, hands each incoming track to the session, and reports when the
connection is lost. Nothing here touches media: the media paths drain the tracks.

How a connection ends, as aiortc 1.16 reports it (checked against real peers):
- the remote peer closes it (``pc.close()``: RTCP BYE ends its tracks, then a DTLS
  close_notify): aiortc closes its side at once and reports connectionState "closed"; this
  is reported as ``"hangup"``;
- the remote peer vanishes (network gone, process killed: nothing arrives any more): ICE
  consent checks fail (see ``media/ice.py``), aioice closes the ICE connection, DTLS sees its
  transport end and aiortc closes the connection itself. aiortc then reports "closed" too,
  never "failed" (its close has begun before the ICE transport's failure is seen), but the
  ICE transport reports "failed" while that close runs. That, or a connectionState "failed"
  (ICE or DTLS failing outright), is reported as ``"connection_lost"``: a drop the
  candidate may come back from.
A close this side makes (:meth:`PeerIngest.close`) is reported as neither.

When the offer carries data channels (an application m-line), the server opens a
``feedback`` channel for live hints to the candidate, and reads the candidate page's
``control`` channel (``{"type": "question", "index", "at"}``). A control message that is
refused (garbled, oversized, or one the session refuses: see ``rtserver/live/questions.py``) is
answered on the same channel with ``{"type": "error", "error", "reason", "detail"}`` while
the channel's send buffer holds under :data:`MAX_REPLY_BUFFER_BYTES` (a peer that floods the
channel and reads nothing gets no more replies, rather than a send queue that grows), and
reported to the session, which counts it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceTransport,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from rtserver.config import Config
from rtserver.errors import BadSdp, ControlRefused, NoUdpPort
from rtserver.media.turn import server_ice_configuration
from rtserver.messages import ControlMessage, HintMessage

log = logging.getLogger(__name__)

FrameT = TypeVar("FrameT")
MAX_CONTROL_BYTES = 4096  # a control message is a few dozen bytes
MAX_QUEUED_HINTS = 8  # hints held while the feedback channel opens; older ones are dropped
# Refusals are answered on the control channel only while less than this waits to be sent
# on it (bytes); past it a refusal gets no reply (it is still counted).
MAX_REPLY_BUFFER_BYTES = 16 * 1024


async def frames_of(track: MediaStreamTrack, kind: type[FrameT]) -> AsyncIterator[FrameT]:
    """Every decoded frame of ``track`` as it arrives, until the track ends.

    Awaiting this without pause is what drains aiortc's unbounded receive queue.
    """
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if isinstance(frame, kind):
            yield frame


def ice_configuration(config: Config) -> RTCConfiguration:
    """The server's ICE servers, with a fresh TURN credential (media/turn.py): none unless
    configured, so nothing leaves the host."""
    return server_ice_configuration(config)


def parse_control(data: str | bytes) -> ControlMessage:
    """A control-channel message; raises ControlRefused saying what is wrong with it."""
    if len(data) > MAX_CONTROL_BYTES:
        raise ControlRefused("too_large", f"control message over {MAX_CONTROL_BYTES} bytes")
    try:
        message = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: 4 KiB of "[" is enough
        raise ControlRefused("not_json", f"control message is not JSON: {exc}") from exc
    if not isinstance(message, dict) or message.get("type") != "question":
        raise ControlRefused(
            "malformed", 'control messages are {"type": "question", "index", "at"}'
        )
    index, at = message.get("index"), message.get("at")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ControlRefused("malformed", "question index must be a whole number >= 0")
    if not isinstance(at, int | float) or isinstance(at, bool) or not 0 <= at < 1e6:
        raise ControlRefused("malformed", "question 'at' must be a media time in seconds")
    return ControlMessage(index=index, at=float(at))


def ice_transports(pc: RTCPeerConnection) -> list[RTCIceTransport]:
    """Every ICE transport of ``pc`` (media and data channels), each once: with BUNDLE,
    several transceivers share one."""
    transports: dict[int, RTCIceTransport] = {}
    for transceiver in pc.getTransceivers():
        if transceiver.receiver.transport is not None:
            ice = transceiver.receiver.transport.transport
            transports[id(ice)] = ice
    if pc.sctp is not None:
        ice = pc.sctp.transport.transport
        transports[id(ice)] = ice
    return list(transports.values())


# aiortc releases a received audio frame only once 4 more frames are buffered behind it (its
# jitter buffer's prefetch): 80 ms more lag on every signal, bought for nothing here, since
# the buffer hands frames out in sequence order either way and a lost packet stalls it the
# same. With one frame behind, a frame leaves as soon as the next one starts arriving.
AUDIO_PREFETCH_FRAMES = 1


def trim_audio_jitter_buffer(pc: RTCPeerConnection, track: MediaStreamTrack) -> bool:
    """Lowers the prefetch of the jitter buffer that feeds audio ``track`` of ``pc`` to
    :data:`AUDIO_PREFETCH_FRAMES`; False where this aiortc keeps its buffer elsewhere."""
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        if receiver.track is not track:
            continue
        # Private to aiortc (name-mangled, no option for it); aiortc is pinned below 2.
        buffer = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
        if buffer is None or not hasattr(buffer, "_prefetch"):
            return False
        buffer._prefetch = min(buffer._prefetch, AUDIO_PREFETCH_FRAMES)
        return True
    return False


class PeerIngest:
    """One peer connection; ``on_track`` gets each remote track, ``on_lost`` the reason,
    ``on_control`` each well-formed control message (it may raise ControlRefused), and
    ``on_control_refused`` each refusal, after it was answered on the channel."""

    def __init__(
        self,
        session_id: str,
        config: Config,
        on_track: Callable[[MediaStreamTrack], None],
        on_lost: Callable[[str], None],
        on_control: Callable[[ControlMessage], None] | None = None,
        on_control_refused: Callable[[ControlRefused], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self.pc = RTCPeerConnection(ice_configuration(config))
        self._on_lost = on_lost
        self._on_control = on_control
        self._on_control_refused = on_control_refused
        self._closed = False
        self._lost = False  # the loss was reported
        self._ice_failed = False  # an ICE transport of this connection reported "failed"
        self.has_control = False  # the candidate opened a control channel
        self._feedback: RTCDataChannel | None = None
        self._queued: deque[dict[str, Any]] = deque(maxlen=MAX_QUEUED_HINTS)
        self.pc.on("track", functools.partial(self._on_track, on_track))
        self.pc.on("connectionstatechange", self._on_connection_state)
        self.pc.on("datachannel", self._on_datachannel)

    def _on_track(
        self, on_track: Callable[[MediaStreamTrack], None], track: MediaStreamTrack
    ) -> None:
        if track.kind == "audio" and not trim_audio_jitter_buffer(self.pc, track):
            log.warning(
                "cannot lower aiortc's audio jitter buffer: 60 ms more signal lag",
                extra={"session": self.session_id},
            )
        on_track(track)

    # -- data channels --------------------------------------------------------------------

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label == "control":
            self.has_control = True
            channel.on("message", lambda data: self._on_control_message(channel, data))
        elif channel.label == "feedback":
            self._use_feedback(channel)  # the candidate opened it: hints go there

    def _on_control_message(self, channel: RTCDataChannel, data: str | bytes) -> None:
        try:
            message = parse_control(data)
            if self._on_control is not None:
                self._on_control(message)
        except ControlRefused as exc:
            if channel.readyState == "open" and channel.bufferedAmount < MAX_REPLY_BUFFER_BYTES:
                reply = {"type": "error", "error": exc.code, "reason": exc.reason}
                channel.send(json.dumps({**reply, "detail": exc.detail}))
            if self._on_control_refused is not None:
                self._on_control_refused(exc)

    def _use_feedback(self, channel: RTCDataChannel) -> None:
        self._feedback = channel
        channel.on("open", self._send_queued)
        if channel.readyState == "open":
            self._send_queued()

    def _send_queued(self) -> None:
        channel = self._feedback
        while channel is not None and channel.readyState == "open" and self._queued:
            channel.send(json.dumps(self._queued.popleft(), separators=(",", ":")))

    def send_hint(self, hint: HintMessage) -> None:
        """Sends ``hint`` on the feedback channel, or holds it (a few) until it opens.
        Without data channels in the offer there is no channel, and hints are not sent."""
        if self._feedback is None:
            return
        self._queued.append(hint.to_wire())
        self._send_queued()

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """The answer to ``offer``, with ICE candidates included (no trickle).

        Raises BadSdp when aiortc cannot use the offer, NoUdpPort when every port of
        ``--udp-ports`` is taken; the connection is closed then.
        """
        try:
            await self.pc.setRemoteDescription(offer)
            self._watch_ice()
            if self.pc.sctp is not None and self._feedback is None:
                # The offer negotiated data channels: open ours for hints.
                self._use_feedback(self.pc.createDataChannel("feedback"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except NoUdpPort:  # gathering found the port range full: the host's fault, not the offer's
            await self.close()
            raise
        except Exception as exc:
            # The offer is the only input here, so any failure to apply it is the offer's:
            # aiortc raises anything from ValueError to AttributeError on odd SDP.
            log.info("offer refused: %r", exc, extra={"session": self.session_id})
            await self.close()
            raise BadSdp(f"cannot use this offer: {exc}") from exc
        local = self.pc.localDescription
        return RTCSessionDescription(sdp=local.sdp, type=local.type)

    @property
    def connected(self) -> bool:
        """Whether the connection may still carry media: neither side closed it, it did not
        fail, and aiortc has not begun closing it."""
        return (
            not self._closed
            and self.pc.signalingState != "closed"
            and self.pc.connectionState not in ("failed", "closed")
        )

    async def close(self) -> None:
        """Closes the connection; the remote tracks end, which stops their drains.

        Never raises: aiortc can fail to close a connection that a bad offer left half
        built, and a close must always complete.
        """
        if self._closed:
            return
        self._closed = True
        try:
            await self.pc.close()
        except Exception:
            # aiortc's close stops at the first transceiver without a transport and never
            # tries again (a second close waits forever), so release what exists directly.
            log.info(
                "peer connection half built; closing its transports directly",
                extra={"session": self.session_id},
            )
            await self._stop_transports()

    async def _stop_transports(self) -> None:
        for transceiver in self.pc.getTransceivers():
            dtls = transceiver.receiver.transport
            if dtls is None:
                continue
            for transport in (dtls, dtls.transport):
                try:
                    await transport.stop()
                except Exception:
                    log.debug("transport stop failed", exc_info=True)

    def _watch_ice(self) -> None:
        for ice in ice_transports(self.pc):
            ice.on("statechange", functools.partial(self._on_ice_state, ice))

    def _on_ice_state(self, ice: RTCIceTransport) -> None:
        if ice.state == "failed" and not self._ice_failed:
            self._ice_failed = True
            log.info("ICE transport failed", extra={"session": self.session_id})

    def _report_lost(self, reason: str) -> None:
        if self._closed or self._lost:
            return  # this side closed it, or it was reported already
        self._lost = True
        self._on_lost(reason)

    async def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.info("connection %s", state, extra={"session": self.session_id})
        if state == "failed":
            self._report_lost("connection_lost")
        elif state == "closed" and not self._closed:
            # A remote hangup and a vanished peer both end in "closed"; on the second, the
            # ICE transport reports "failed" during aiortc's own close, so wait for it.
            with contextlib.suppress(Exception):
                await self.pc.close()
            self._report_lost("connection_lost" if self._ice_failed else "hangup")

"""WebRTC ingest: the server side of one candidate's RTCPeerConnection.

It answers the offer, hands each incoming track to the session, and reports when the
connection is lost. Nothing here touches media: the media paths drain the tracks.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from rtserver.config import Config
from rtserver.errors import BadSdp

log = logging.getLogger(__name__)

FrameT = TypeVar("FrameT")


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
    """The server's ICE servers: none unless configured, so nothing leaves the host."""
    return RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in config.ice_servers])


class PeerIngest:
    """One peer connection; ``on_track`` gets each remote track, ``on_lost`` the reason."""

    def __init__(
        self,
        session_id: str,
        config: Config,
        on_track: Callable[[MediaStreamTrack], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self.session_id = session_id
        self.pc = RTCPeerConnection(ice_configuration(config))
        self._on_lost = on_lost
        self._closed = False
        self.pc.on("track", on_track)
        self.pc.on("connectionstatechange", self._on_connection_state)

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """The answer to ``offer``, with ICE candidates included (no trickle).

        Raises BadSdp when aiortc cannot use the offer; the connection is closed then.
        """
        try:
            await self.pc.setRemoteDescription(offer)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except Exception as exc:
            # The offer is the only input here, so any failure to apply it is the offer's:
            # aiortc raises anything from ValueError to AttributeError on odd SDP.
            log.info("offer refused: %r", exc, extra={"session": self.session_id})
            await self.close()
            raise BadSdp(f"cannot use this offer: {exc}") from exc
        local = self.pc.localDescription
        return RTCSessionDescription(sdp=local.sdp, type=local.type)

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

    async def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.info("connection %s", state, extra={"session": self.session_id})
        if state == "failed":
            self._on_lost("connection_lost")
        elif state == "closed":
            self._on_lost("hangup")

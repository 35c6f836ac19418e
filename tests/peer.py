"""A real aiortc client peer for the server's v1 API, plus the HR API helpers tests use.

Everything here stays on loopback: peers never use STUN/TURN (``iceServers=[]``) and
:func:`use_loopback_only` makes aioice offer only 127.0.0.1 as a host candidate. HTTP and
WebSocket clients ignore proxy settings from the environment for the same reason.

Media is real: a :class:`aiortc.contrib.media.MediaPlayer` per file decodes it and plays it
in real time, and aiortc encodes it as VP8 (video) and Opus (audio) on the wire.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aioice.ice
import httpx
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaPlayer
from aiortc.sdp import SessionDescription
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosedError

VIDEO_CODECS = ("video/VP8", "video/rtx")
"""Video codecs the test peer offers, in order: VP8 only (rtx is VP8's retransmission)."""
AUDIO_CODECS = ("audio/opus",)
"""Audio codecs the test peer offers: Opus only."""

Answerer = Callable[[RTCSessionDescription], Awaitable[RTCSessionDescription]]
"""Takes the complete (non-trickle) offer and returns the remote side's answer."""


class ApiError(Exception):
    """The server answered an API call with an unexpected HTTP status."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body!r}")
        self.status = status
        self.body = body


class OfferRejected(ApiError):
    """``POST /api/v1/sessions/{id}/offer`` returned a non-200 status."""


class NegotiationError(Exception):
    """The answer does not carry the media the test peer needs (VP8 video, Opus audio)."""


class SignalsIncomplete(Exception):
    """The signals stream timed out or closed before its ``final`` message."""

    def __init__(self, reason: str, messages: list[dict[str, Any]]) -> None:
        super().__init__(f"{reason} after {len(messages)} messages: {messages[-3:]!r}")
        self.reason = reason
        self.messages = messages


# --------------------------------------------------------------------------- loopback


def _loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """Host addresses for ICE gathering: only 127.0.0.1, whatever the interfaces are."""
    return ["127.0.0.1"]


def use_loopback_only() -> None:
    """Make aioice gather only 127.0.0.1 host candidates. Idempotent.

    aioice's own ``get_host_addresses`` skips 127.0.0.1, so without this patch two peers on
    one machine would talk over its external interfaces. Call it before creating any
    RTCPeerConnection (gathering reads the module attribute at call time).
    """
    aioice.ice.get_host_addresses = _loopback_host_addresses


def new_peer_connection() -> RTCPeerConnection:
    """An RTCPeerConnection that can only reach loopback: no STUN/TURN servers at all.

    ``iceServers`` must be an explicit empty list: aiortc fills in Google's public STUN
    server when it is left as None.
    """
    use_loopback_only()
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


# --------------------------------------------------------------------------- peer


def codecs_by_kind(sdp: str) -> dict[str, list[str]]:
    """Codec mime types per media kind in an SDP, in preference order; [] for a rejected m-line.

    When one kind appears in several m-sections, the first one wins.
    """
    out: dict[str, list[str]] = {}
    for media in SessionDescription.parse(sdp).media:
        if media.kind in out:
            continue
        out[media.kind] = [] if media.port == 0 else [c.mimeType for c in media.rtp.codecs]
    return out


@dataclass
class Peer:
    """A sending test peer: one RTCPeerConnection fed by one MediaPlayer per media file."""

    pc: RTCPeerConnection
    players: list[MediaPlayer] = field(default_factory=list)
    tracks: list[MediaStreamTrack] = field(default_factory=list)
    answer: RTCSessionDescription | None = None
    # The session's resume secret from the server's answer (api.md item 4): a rejoin of the
    # live session must send it. None when the answer carried none.
    resume: str | None = None
    # Data channels this peer opened, by label, and every message received on any channel
    # (its own or one the server opened), by label, decoded from JSON when it is JSON.
    channels: dict[str, RTCDataChannel] = field(default_factory=dict)
    received: dict[str, list[Any]] = field(default_factory=dict)
    _ended: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)

    async def negotiate(self, answerer: Answerer) -> RTCSessionDescription:
        """Make the offer, get the answer from `answerer`, apply it; returns the answer.

        Raises :class:`NegotiationError` if the answer does not accept VP8 for the video
        track and Opus for the audio track this peer sends.
        """
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await _gathering_complete(self.pc)
        offer = self.pc.localDescription
        answer = await answerer(RTCSessionDescription(sdp=offer.sdp, type=offer.type))
        if answer.type != "answer":
            raise NegotiationError(f"expected an answer, got type {answer.type!r}")
        await self.pc.setRemoteDescription(answer)
        self.answer = answer
        _check_codecs(answer.sdp, {t.kind for t in self.tracks})
        return answer

    def open_channel(self, label: str) -> RTCDataChannel:
        """Opens data channel ``label`` (before negotiating, so the offer carries SCTP)."""
        channel = self.pc.createDataChannel(label)
        self.channels[label] = channel
        self._record(channel)
        return channel

    def _record(self, channel: RTCDataChannel) -> None:
        messages = self.received.setdefault(channel.label, [])

        def _message(data: str | bytes) -> None:
            try:
                messages.append(json.loads(data))
            except ValueError:
                messages.append(data)

        channel.on("message", _message)

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until the connection state is "connected" (DTLS up), at most `timeout` s."""
        done = asyncio.Event()

        @self.pc.on("connectionstatechange")
        def _changed() -> None:
            if self.pc.connectionState in ("connected", "failed", "closed"):
                done.set()

        if self.pc.connectionState not in ("connected", "failed", "closed"):
            await asyncio.wait_for(done.wait(), timeout)
        if self.pc.connectionState != "connected":
            raise ConnectionError(f"peer connection is {self.pc.connectionState}")

    async def wait_media_ended(self, timeout: float) -> None:
        """Wait until every media file has played to its end, at most `timeout` s."""
        await asyncio.wait_for(self._ended.wait(), timeout)

    async def close(self) -> None:
        """Hang up: close the peer connection, then stop the players. Idempotent."""
        if self._closed:
            return
        self._closed = True
        # Closing the pc first cancels the senders' pending track.recv(), so no sender is
        # left waiting on a player whose decode thread has already been stopped.
        await self.pc.close()
        for track in self.tracks:
            track.stop()


def open_peer(video: Path | None, audio: Path | None) -> Peer:
    """Create a sending peer for `video` (e.g. .y4m) and/or `audio` (e.g. .wav), unnegotiated.

    Each file gets its own MediaPlayer, which plays it in real time once the connection
    starts pulling frames. Video is offered as VP8 only and audio as Opus only. Must be
    called with a running event loop.
    """
    if video is None and audio is None:
        raise ValueError("need at least one of video, audio")
    peer = Peer(pc=new_peer_connection())
    peer.pc.on("datachannel", peer._record)
    try:
        for path, kind, codecs in ((video, "video", VIDEO_CODECS), (audio, "audio", AUDIO_CODECS)):
            if path is None:
                continue
            player = MediaPlayer(str(path))
            peer.players.append(player)
            track = player.video if kind == "video" else player.audio
            if track is None:
                raise ValueError(f"{path} has no {kind} stream")
            peer.tracks.append(track)
            transceiver = peer.pc.addTransceiver(track, direction="sendonly")
            capabilities = RTCRtpSender.getCapabilities(kind).codecs
            transceiver.setCodecPreferences([c for c in capabilities if c.mimeType in codecs])
    except BaseException:
        for track in peer.tracks:
            track.stop()
        raise

    remaining = set(peer.tracks)
    for track in peer.tracks:

        def _ended(track: MediaStreamTrack = track) -> None:
            remaining.discard(track)
            if not remaining:
                peer._ended.set()

        track.on("ended", _ended)
    return peer


async def wait_open(peer: Peer, label: str, timeout: float = 10.0) -> None:
    """Waits until the peer's data channel ``label`` is open (TimeoutError after
    ``timeout`` s)."""
    channel = peer.channels[label]
    async with asyncio.timeout(timeout):
        while channel.readyState != "open":
            await asyncio.sleep(0.05)


async def connect_peer(
    base_url: str,
    session_id: str,
    join_token: str,
    video: Path | None,
    audio: Path | None,
    *,
    client: httpx.AsyncClient | None = None,
    channels: Sequence[str] = (),
    resume: str | None = None,
) -> Peer:
    """Join session `session_id` as the candidate, sending `video` and/or `audio` for real,
    with data channels `channels` opened by the candidate (e.g. "control").

    POSTs the complete offer to ``{base_url}/api/v1/sessions/{session_id}/offer`` with the
    join token (and `resume`, the secret a rejoin of a live session needs) and applies the
    answer; the answer's resume secret is kept in ``Peer.resume``. Raises
    :class:`OfferRejected` on a non-200 reply (the peer is closed first) and
    :class:`NegotiationError` if the answer is not VP8/Opus.
    """
    url = f"{base_url.rstrip('/')}/api/v1/sessions/{session_id}/offer"
    peer = open_peer(video, audio)

    async def post_offer(offer: RTCSessionDescription) -> RTCSessionDescription:
        body = {"sdp": offer.sdp, "type": offer.type, "token": join_token}
        if resume is not None:
            body["resume"] = resume
        if client is not None:
            response = await client.post(url, json=body)
        else:
            async with _http_client() as own:
                response = await own.post(url, json=body)
        if response.status_code != 200:
            raise OfferRejected(response.status_code, _body(response))
        reply = response.json()
        peer.resume = reply.get("resume")
        return RTCSessionDescription(sdp=reply["sdp"], type=reply["type"])

    for label in channels:
        peer.open_channel(label)
    try:
        await peer.negotiate(post_offer)
    except BaseException:
        await peer.close()
        raise
    return peer


async def _gathering_complete(pc: RTCPeerConnection, timeout: float = 10.0) -> None:
    """Wait for ICE gathering to finish (aiortc normally has by setLocalDescription's end)."""
    if pc.iceGatheringState == "complete":
        return
    done = asyncio.Event()

    @pc.on("icegatheringstatechange")
    def _changed() -> None:
        if pc.iceGatheringState == "complete":
            done.set()

    if pc.iceGatheringState != "complete":
        await asyncio.wait_for(done.wait(), timeout)


def _check_codecs(answer_sdp: str, sent_kinds: set[str]) -> None:
    wanted = {"video": VIDEO_CODECS[0], "audio": AUDIO_CODECS[0]}
    got = codecs_by_kind(answer_sdp)
    for kind in sorted(sent_kinds):
        codecs = got.get(kind, [])
        if not codecs or codecs[0] != wanted[kind]:
            raise NegotiationError(f"answer has {kind} codecs {codecs}, need {wanted[kind]}")


# --------------------------------------------------------------------------- HR API


def _http_client() -> httpx.AsyncClient:
    # trust_env=False: a proxy from the environment must never see loopback test traffic.
    return httpx.AsyncClient(trust_env=False, timeout=10.0)


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


async def create_session(
    client: httpx.AsyncClient, base_url: str, api_key: str, **body: Any
) -> dict[str, Any]:
    """Create an interview session (``POST /api/v1/sessions``) as HR; returns its JSON.

    `body` is sent as the JSON request body. Expects 201 with at least ``id``,
    ``join_token``, ``candidate_url`` and ``observe_url``; raises :class:`ApiError` otherwise.
    """
    response = await client.post(
        f"{base_url.rstrip('/')}/api/v1/sessions",
        json=body,
        headers={"Authorization": f"Bearer {api_key}"},
    )
    if response.status_code != 201:
        raise ApiError(response.status_code, _body(response))
    session = response.json()
    missing = {"id", "join_token", "candidate_url", "observe_url"} - set(session)
    if missing:
        raise ApiError(response.status_code, f"missing {sorted(missing)} in {session!r}")
    return dict(session)


async def end_session(
    client: httpx.AsyncClient, base_url: str, session_id: str, join_token: str
) -> httpx.Response:
    """Hang up as the candidate (``POST /api/v1/sessions/{id}/end``); returns the response."""
    return await client.post(
        f"{base_url.rstrip('/')}/api/v1/sessions/{session_id}/end", json={"token": join_token}
    )


def signals_url(base_url: str, session_id: str, api_key: str) -> str:
    """The WebSocket URL of a session's signals stream, from the server's http(s) base URL."""
    parts = urllib.parse.urlsplit(base_url.rstrip("/"))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = urllib.parse.urlencode({"token": api_key})
    path = f"{parts.path}/api/v1/sessions/{urllib.parse.quote(session_id, safe='')}/signals"
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, query, ""))


async def collect_signals(
    ws_url: str,
    until_final: bool = True,
    timeout: float = 60.0,
    *,
    on_message: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every JSON message from a signals WebSocket, in arrival order.

    With `until_final`, returns as soon as a ``{"type": "final"}`` message arrives (it is
    included) and raises :class:`SignalsIncomplete`, carrying what did arrive, if `timeout`
    seconds pass or the server closes the stream first. Without it, returns whatever
    arrived when the stream closes or `timeout` seconds pass. `on_message` is called with
    each message as it arrives (e.g. to timestamp arrivals).
    """
    messages: list[dict[str, Any]] = []

    async def receive() -> bool:
        # proxy=None: websockets otherwise honours proxy settings from the environment.
        async with ws_connect(ws_url, proxy=None, open_timeout=10.0) as ws:
            async for raw in ws:
                message = json.loads(raw)
                messages.append(message)
                if on_message is not None:
                    on_message(message)
                if until_final and isinstance(message, dict) and message.get("type") == "final":
                    return True
        return False

    try:
        got_final = await asyncio.wait_for(receive(), timeout)
    except TimeoutError:
        if until_final:
            raise SignalsIncomplete(f"timed out after {timeout} s", messages) from None
        return messages
    except ConnectionClosedError as exc:
        if until_final:
            raise SignalsIncomplete(f"connection lost ({exc})", messages) from exc
        return messages
    if until_final and not got_final:
        raise SignalsIncomplete("server closed the stream", messages)
    return messages

"""Offers checked before they reach aiortc: malformed SDP and extra m-lines are 400s here,
not exceptions (or unbounded queues) inside a peer connection."""

from __future__ import annotations

from typing import Any

from aiortc import RTCSessionDescription
from aiortc.sdp import SessionDescription

from rtserver.errors import BadRequest, BadSdp


def parse_offer(body: dict[str, Any]) -> RTCSessionDescription:
    """Validates an offer body: an SDP offer with at least one audio or video m-line."""
    sdp, kind = body.get("sdp"), body.get("type")
    if kind != "offer":
        raise BadRequest('type must be "offer"')
    if not isinstance(sdp, str) or not sdp.strip():
        raise BadSdp("sdp must be a non-empty string")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:
        # aiortc's parser raises whatever the bad line provokes (even StopIteration).
        raise BadSdp(f"malformed SDP: {exc!r}") from exc
    if not any(media.kind in ("audio", "video") for media in parsed.media):
        raise BadSdp("the offer has no audio or video m-line")
    return RTCSessionDescription(sdp=sdp, type="offer")


def parse_candidate_offer(body: dict[str, Any]) -> RTCSessionDescription:
    """Validates a candidate's offer: as :func:`parse_offer`, with at most one audio, one
    video and one application (data channels) m-line. A track beyond those would never be
    drained, and aiortc queues its packets without bound."""
    offer = parse_offer(body)
    kinds = [media.kind for media in SessionDescription.parse(offer.sdp).media]
    for kind in ("audio", "video", "application"):
        if kinds.count(kind) > 1:
            raise BadSdp(
                f"the offer has more than one {kind} m-line: an interview takes one camera "
                "and one microphone"
            )
    return offer


def parse_watch_offer(body: dict[str, Any]) -> RTCSessionDescription:
    """Validates an observer's offer: at most one audio and one video m-line, each recvonly
    (an observer sends nothing: media it sent would queue up unread)."""
    offer = parse_offer(body)
    kinds: list[str] = []
    for media in SessionDescription.parse(offer.sdp).media:
        if media.kind not in ("audio", "video"):
            continue
        if media.direction != "recvonly":
            raise BadSdp(f"the observer's {media.kind} m-line must be recvonly")
        if media.kind in kinds:
            raise BadSdp(f"the observer's offer has more than one {media.kind} m-line")
        kinds.append(media.kind)
    return offer

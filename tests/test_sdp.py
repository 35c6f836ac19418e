"""Offer parsing (rtserver/api/sdp.py) under hypothesis: arbitrary bodies, arbitrary text
and mutated real aiortc offers are either accepted, within the limits each parser states,
or refused with a typed 400 (``bad_sdp`` or ``bad_request``); nothing else ever escapes."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from aiortc import RTCSessionDescription
from aiortc.sdp import SessionDescription
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peer import new_peer_connection

from rtserver.api.sdp import parse_candidate_offer, parse_offer, parse_watch_offer
from rtserver.errors import RtServerError, http_status

PARSERS: tuple[Callable[[dict[str, Any]], RTCSessionDescription], ...] = (
    parse_offer,
    parse_candidate_offer,
    parse_watch_offer,
)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


async def _offer(direction: str, channel: bool) -> str:
    pc = new_peer_connection()
    pc.addTransceiver("video", direction=direction)
    pc.addTransceiver("audio", direction=direction)
    if channel:
        pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


@functools.cache
def real_offers() -> tuple[str, ...]:
    """A candidate's offer (sendonly, with the control channel) and an observer's
    (recvonly), as aiortc writes them."""
    return (
        asyncio.run(_offer("sendonly", channel=True)),
        asyncio.run(_offer("recvonly", channel=False)),
    )


def outcome(parse: Callable[[dict[str, Any]], RTCSessionDescription], body: Any) -> str:
    """ "ok", or the typed error's code; any other exception fails the test."""
    try:
        parse(body)
    except RtServerError as error:
        assert http_status(error) == 400, error
        assert error.code in ("bad_sdp", "bad_request"), error.code
        assert error.detail
        return error.code
    return "ok"


def assert_accepted_within_limits(parse: Callable[..., Any], sdp: str) -> None:
    """What a parser accepts, it accepts for the reasons its docstring gives."""
    kinds = [media.kind for media in SessionDescription.parse(sdp).media]
    assert "audio" in kinds or "video" in kinds
    if parse is parse_candidate_offer:
        assert all(kinds.count(k) <= 1 for k in ("audio", "video", "application")), kinds
    if parse is parse_watch_offer:
        media = [m for m in SessionDescription.parse(sdp).media if m.kind in ("audio", "video")]
        assert all(m.direction == "recvonly" for m in media)
        assert all(kinds.count(k) <= 1 for k in ("audio", "video")), kinds


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


@SETTINGS
@given(sdp=json_values, kind=json_values | st.just("offer"))
def test_any_json_body_is_parsed_or_refused_typed(sdp: Any, kind: Any) -> None:
    for parse in PARSERS:
        outcome(parse, {"sdp": sdp, "type": kind})


@SETTINGS
@given(text=st.text(max_size=2000) | st.binary(max_size=500).map(lambda b: b.decode("latin-1")))
def test_arbitrary_text_is_parsed_or_refused_typed(text: str) -> None:
    for parse in PARSERS:
        result = outcome(parse, {"sdp": text, "type": "offer"})
        if result == "ok":
            assert_accepted_within_limits(parse, text)


# Lines an SDP parser has to get right: m-lines with odd fields, attributes with missing or
# odd values, and lines that are nothing at all.
odd_lines = st.sampled_from(
    [
        "m=video",
        "m=video 9",
        "m=video x UDP/TLS/RTP/SAVPF 96",
        "m=audio 9 UDP/TLS/RTP/SAVPF",
        "m=application 9 DTLS/SCTP 5000",
        "m=image 9 udptl t38",
        "a=rtpmap:96",
        "a=rtpmap:x VP8/90000",
        "a=rtpmap:96 VP8",
        "a=fmtp:96",
        "a=rtcp-fb:96",
        "a=ssrc:1",
        "a=ssrc-group:FID 1",
        "a=candidate:1 1 udp 1 127.0.0.1",
        "a=candidate:",
        "a=fingerprint:sha-256",
        "a=setup:",
        "a=mid:",
        "a=group:BUNDLE",
        "a=sctpmap:5000",
        "a=sctp-port:x",
        "a=max-message-size:-1",
        "a=extmap:x",
        "a=msid:",
        "a=recvonly",
        "a=inactive",
        "c=IN IP4",
        "o=-",
        "t=0",
        "b=AS:x",
        "=",
        "",
        "\x00",
    ]
)


@st.composite
def mutated_offer(draw: st.DrawFn) -> str:
    """A real offer with a few lines deleted, repeated, swapped, replaced by odd ones, or
    altered a character at a time, or cut short, with any of the line endings."""
    lines = draw(st.sampled_from(real_offers())).split("\r\n")
    for _ in range(draw(st.integers(1, 6))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "repeat", "swap", "insert", "edit", "cut"]))
        if action == "delete":
            del lines[i]
        elif action == "repeat":
            lines.insert(i, lines[i])
        elif action == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif action == "insert":
            lines.insert(i, draw(odd_lines | st.text(max_size=40)))
        elif action == "edit" and lines[i]:
            at = draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:at] + draw(st.text(min_size=0, max_size=3)) + lines[i][at + 1 :]
        elif action == "cut":
            lines = lines[:i]
    return draw(st.sampled_from(["\r\n", "\n", "\r"])).join(lines)


@SETTINGS
@given(sdp=mutated_offer())
def test_mutated_real_offers_are_parsed_or_refused_typed(sdp: str) -> None:
    for parse in PARSERS:
        if outcome(parse, {"sdp": sdp, "type": "offer"}) == "ok":
            assert_accepted_within_limits(parse, sdp)


def test_the_real_offers_are_accepted_by_their_parsers() -> None:
    """The properties above start from offers the parsers take: the candidate's by
    parse_candidate_offer, the observer's by parse_watch_offer."""
    candidate, observer = real_offers()
    assert outcome(parse_candidate_offer, {"sdp": candidate, "type": "offer"}) == "ok"
    assert outcome(parse_watch_offer, {"sdp": observer, "type": "offer"}) == "ok"
    assert outcome(parse_watch_offer, {"sdp": candidate, "type": "offer"}) == "bad_sdp"

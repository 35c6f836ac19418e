"""The calls a session host answers for another process: a worker for the server process
(``server/worker.py``, over its socketpair) and a media node for the front ends
(``cluster/node.py``, over Redis). Both answer with the same dispatch, so a call means the
same thing wherever it arrives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiortc import RTCSessionDescription

from rtserver.errors import BadRequest

if TYPE_CHECKING:
    from rtserver.live.manager import SessionHost

SESSION_CALLS = frozenset({"join", "reconnect", "watch", "end", "live"})


async def answer_call(host: SessionHost, method: str, args: dict[str, Any]) -> Any:
    """Runs one session call on ``host``; its wire value (SDP answers as plain dicts).
    BadRequest for a method that is not a session call."""
    if method == "join":
        answer = await host.join(args["session"], offer_from(args), _texts(args["questions"]))
        return answer_to_wire(answer)
    if method == "reconnect":
        return answer_to_wire(await host.reconnect(args["session"], offer_from(args)))
    if method == "watch":
        return answer_to_wire(await host.watch(args["session"], offer_from(args)))
    if method == "end":
        return await host.end(args["session"], args["reason"])
    if method == "live":
        return await host.live_figures(args["session"])
    raise BadRequest(f"unknown call {method!r}")


def offer_to_wire(offer: RTCSessionDescription) -> dict[str, str]:
    return {"sdp": offer.sdp, "type": offer.type}


def offer_from(args: dict[str, Any]) -> RTCSessionDescription:
    return RTCSessionDescription(sdp=str(args["sdp"]), type=str(args["type"]))


def answer_to_wire(answer: RTCSessionDescription) -> dict[str, str]:
    return {"sdp": answer.sdp, "type": answer.type}


def _texts(raw: Sequence[Any]) -> list[str]:
    return [str(text) for text in raw]

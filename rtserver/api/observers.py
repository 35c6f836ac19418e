"""HR observers: the live signals over a websocket, the relayed video and audio (``/watch``),
and the ICE servers the observer page needs.

The signals stream sends the backfill from the store, then live messages from the bus. The
subscription opens, and its start is fixed (``Subscription.ready()``: at once in process, one
Redis round trip across hosts), before the backfill is read, so no message can fall between
the two; messages seen in the backfill are skipped when they come again live (by ``seq``). A
message reaches the bus only once it is committed to the store
(``rtserver/store/async_store.py``), so the backfill holds everything the bus carried before
the subscription's start. A live message past a hole in the seqs (the Redis bus drops
messages when Redis is down or its queue is full) has the hole filled from the store first:
a session's messages are committed in seq order, so the store holds every one before it. The
backfill is read, and its messages encoded, on a read thread: a long session's is thousands
of messages.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from rtserver.api.context import api_of
from rtserver.api.http import NO_STORE, error_response, read_json
from rtserver.api.sdp import parse_watch_offer
from rtserver.bus import Bus
from rtserver.errors import RtServerError
from rtserver.media.turn import page_ice_configuration
from rtserver.messages import StoredMessage
from rtserver.metrics import Metrics
from rtserver.store import AsyncStore

log = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_TRY_AGAIN_LATER = 1013  # the observer fell behind; reconnecting resumes losslessly
# A backfill lets the loop run other work after this many messages: sending one may not
# yield, and thousands in a row would hold every peer's packets up.
BACKFILL_YIELD_EVERY = 64


async def stream_session(
    websocket: WebSocket, session_id: str, db: AsyncStore, bus: Bus, metrics: Metrics
) -> None:
    """Sends every message of the session in order, ending after the final message."""
    subscription = bus.subscribe(session_id)
    metrics.observers.inc()
    last_seq = -1

    async def send(message: StoredMessage, text: str | None = None) -> bool:
        """Sends one message in order; True once the final message is out."""
        nonlocal last_seq
        await websocket.send_text(message.encode() if text is None else text)
        last_seq = message.seq
        return message.kind == "final"

    async def backfill(after_seq: int) -> bool:
        """Sends what the store holds after ``after_seq``; True once the final is out."""
        for index, (message, text) in enumerate(await db.encoded_messages(session_id, after_seq)):
            if await send(message, text):
                return True
            if index % BACKFILL_YIELD_EVERY == BACKFILL_YIELD_EVERY - 1:
                await asyncio.sleep(0)
        return False

    try:
        await subscription.ready()  # before the backfill read: see the module docstring
        if await backfill(-1):
            await websocket.close(CLOSE_NORMAL)
            return
        while (live := await subscription.get()) is not None:
            if live.seq > last_seq + 1:
                # The bus lost some (Redis down, its queue full): the store has every one
                # before this one, a session's messages being committed in seq order.
                log.info(
                    "observer: seqs %d to %d read from the store",
                    last_seq + 1,
                    live.seq - 1,
                    extra={"session": session_id},
                )
                if await backfill(last_seq):
                    await websocket.close(CLOSE_NORMAL)
                    return
            if live.seq > last_seq and await send(live):
                await websocket.close(CLOSE_NORMAL)
                return
        if subscription.overflowed:
            await websocket.close(CLOSE_TRY_AGAIN_LATER, "observer fell behind; reconnect")
            return
        # The session ended: send anything the store has that this observer has not seen.
        await backfill(last_seq)
        await websocket.close(CLOSE_NORMAL)
    except WebSocketDisconnect:
        log.info("observer disconnected", extra={"session": session_id})
    finally:
        bus.unsubscribe(subscription)
        metrics.observers.inc(-1)


async def ice_servers(request: Request) -> Response:
    """The observer page's STUN/TURN servers for /watch, with a fresh TURN credential."""
    api = api_of(request)
    await api.require(request)
    return JSONResponse(page_ice_configuration(api.runtime.config, "hr"), headers=NO_STORE)


async def watch(request: Request) -> Response:
    """An HR observer's recvonly offer, answered with the candidate's live video and
    audio (relayed, so re-encoded per observer)."""
    api = api_of(request)
    principal = await api.require(request)
    actor = principal.actor
    record = await api.scoped_session(principal, request.path_params["session_id"])
    offer = parse_watch_offer(await read_json(request))
    answer = await api.manager.watch(record.id, offer)
    await api.db.audit(actor, "watch", record.id)
    return JSONResponse({"sdp": answer.sdp, "type": answer.type})


async def signals(websocket: WebSocket) -> None:
    api = api_of(websocket)
    session_id = websocket.path_params["session_id"]
    try:
        api.rate_limits.check("signals", websocket)
        principal = await api.require(websocket)
        actor = principal.actor
        await api.scoped_session(principal, session_id)
    except RtServerError as error:
        # An HTTP answer to the upgrade (429 with Retry-After, 401, 404), as a REST route's.
        api.runtime.metrics.rejected.inc(code=error.code)
        await websocket.send_denial_response(error_response(error))
        return
    await api.db.audit(actor, "observe", session_id)
    await websocket.accept()
    await stream_session(websocket, session_id, api.db, api.runtime.bus, api.runtime.metrics)

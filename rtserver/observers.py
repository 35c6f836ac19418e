"""HR observers: backfill from the store, then live messages from the bus, over a websocket.

The subscription opens before the backfill is read, so no message can fall between the two;
messages seen in the backfill are skipped when they come again live (by ``seq``).
"""

from __future__ import annotations

import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from rtserver.bus import Bus
from rtserver.messages import StoredMessage
from rtserver.metrics import Metrics
from rtserver.store import Store

log = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_TRY_AGAIN_LATER = 1013  # the observer fell behind; reconnecting resumes losslessly


async def stream_session(
    websocket: WebSocket, session_id: str, store: Store, bus: Bus, metrics: Metrics
) -> None:
    """Sends every message of the session in order, ending after the final message."""
    subscription = bus.subscribe(session_id)
    metrics.observers.inc()
    last_seq = -1

    async def send(message: StoredMessage) -> bool:
        """Sends one message in order; True once the final message is out."""
        nonlocal last_seq
        await websocket.send_text(message.encode())
        last_seq = message.seq
        return message.kind == "final"

    try:
        for message in store.messages(session_id):
            if await send(message):
                await websocket.close(CLOSE_NORMAL)
                return
        while (live := await subscription.get()) is not None:
            if live.seq > last_seq and await send(live):
                await websocket.close(CLOSE_NORMAL)
                return
        if subscription.overflowed:
            await websocket.close(CLOSE_TRY_AGAIN_LATER, "observer fell behind; reconnect")
            return
        # The session ended: send anything the store has that this observer has not seen.
        for message in store.messages(session_id, after_seq=last_seq):
            await send(message)
        await websocket.close(CLOSE_NORMAL)
    except WebSocketDisconnect:
        log.info("observer disconnected", extra={"session": session_id})
    finally:
        bus.unsubscribe(subscription)
        metrics.observers.inc(-1)

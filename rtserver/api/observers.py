"""HR observers: backfill from the store, then live messages from the bus, over a websocket.

The subscription opens before the backfill is read, so no message can fall between the two;
messages seen in the backfill are skipped when they come again live (by ``seq``). A message
reaches the bus only once it is committed to the store (``rtserver/store/async_store.py``), so the
backfill holds everything sent live before it. The backfill is read, and its messages
encoded, on a read thread: a long session's is thousands of messages.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from rtserver.bus.memory import Bus
from rtserver.messages import StoredMessage
from rtserver.metrics import Metrics
from rtserver.store.async_store import AsyncStore

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
        if await backfill(-1):
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
        await backfill(last_seq)
        await websocket.close(CLOSE_NORMAL)
    except WebSocketDisconnect:
        log.info("observer disconnected", extra={"session": session_id})
    finally:
        bus.unsubscribe(subscription)
        metrics.observers.inc(-1)

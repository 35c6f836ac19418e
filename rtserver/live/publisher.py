"""Publishing a session's messages: each gets its log position, is stored, then goes out on
the bus, in that order (backfill must hold everything an observer saw live)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from rtserver.ats.events import session_completed
from rtserver.live.runtime import Runtime
from rtserver.messages import FinalMessage, SignalMessage, StoredMessage, TranscriptMessage


class Publisher:
    """Gives each message of a session its log position, stores it, then fans it out.

    The store's writer thread commits the message, and only then does the bus get it (on
    the event loop, in order): backfill must hold everything an observer saw live.
    """

    def __init__(self, runtime: Runtime, session_id: str, next_seq: int = 0) -> None:
        self.runtime = runtime
        self.session_id = session_id
        self.next_seq = next_seq

    def publish(self, message: SignalMessage | FinalMessage | TranscriptMessage) -> StoredMessage:
        """Hands the message to the store's writer without waiting. Raises StoreBacklogged
        when the writer's queue is full: the message is not taken and its seq stays free."""
        return self._offer(message)[0]

    async def publish_and_wait(
        self, message: SignalMessage | FinalMessage | TranscriptMessage
    ) -> StoredMessage:
        """Publishes the message, waiting for room in the writer's queue, and returns once
        it is committed and on the bus. Its seq is given once there is room, so the
        session's messages stay in seq order in the queue."""
        await self.runtime.db.writer.wait_for_room()
        stored, committed = self._offer(message)  # no await since: the room is still there
        await committed
        return stored

    async def finish(self, final: FinalMessage, reason: str) -> StoredMessage:
        """Publishes the session's final, marks the session ended (``reason``) and closes
        its subscriptions. The final reaches the bus only once both writes are committed,
        and the close follows it in the same step: whoever sees the final and then asks the
        server finds the session ended, as when the store was written on the loop."""
        runtime = self.runtime
        writer, bus, session = runtime.db.writer, runtime.bus, self.session_id
        await writer.wait_for_room()
        stored = self._stored(final)
        written = writer.offer(lambda store: store.append_message(stored), None, session)
        self.next_seq += 1

        def announce() -> None:
            # `written` resolved first (the writer's follow-ups run in order); a final
            # that could not be stored is never sent.
            if written.done() and not written.cancelled() and written.exception() is None:
                bus.publish(stored)
            bus.close_session(session)

        await writer.submit(lambda store: store.mark_ended(session, reason), announce, session)
        await session_completed(runtime, session, final)  # the ATS hears of it once stored
        return stored

    def _stored(self, message: SignalMessage | FinalMessage | TranscriptMessage) -> StoredMessage:
        payload = message.to_wire()
        payload["seq"] = self.next_seq
        return StoredMessage(self.session_id, self.next_seq, message.type, payload)

    def _offer(
        self, message: SignalMessage | FinalMessage | TranscriptMessage
    ) -> tuple[StoredMessage, asyncio.Future[Any]]:
        stored = self._stored(message)
        bus = self.runtime.bus
        committed = self.runtime.db.offer_message(stored, functools.partial(bus.publish, stored))
        self.next_seq += 1
        return stored, committed

"""The bus interface, and the bounded subscription every implementation hands out.

The bus carries a session's stored messages from its pipeline to its observers. Each
subscriber has a bounded queue; a subscriber that falls a whole queue behind is cut off
(``overflowed``) rather than silently skipping messages, and its observer reconnects and
resumes from the store's backfill.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from rtserver.messages import StoredMessage

SUBSCRIBER_QUEUE_BOUND = 1024  # messages; ~17 minutes of signals at one per second


class Subscription:
    """One observer's view of a session's live messages."""

    def __init__(self, session_id: str, bound: int = SUBSCRIBER_QUEUE_BOUND) -> None:
        self.session_id = session_id
        self.bound = bound
        self.overflowed = False
        self.closed = False
        # One place beyond the bound is kept for the closing sentinel.
        self._queue: asyncio.Queue[StoredMessage | None] = asyncio.Queue(maxsize=bound + 1)

    def deliver(self, message: StoredMessage) -> None:
        """Queues a message; on a full queue marks the subscription overflowed and closes it."""
        if self.closed:
            return
        if self._queue.qsize() >= self.bound:
            self.overflowed = True
            self.close()
            return
        self._queue.put_nowait(message)

    def close(self) -> None:
        """Ends the subscription after the messages already queued."""
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(None)

    async def get(self) -> StoredMessage | None:
        """The next message, or None once the subscription is closed."""
        return await self._queue.get()

    async def ready(self) -> None:
        """Returns once the subscription's start is fixed: every message published from
        then on is delivered, and every message published before was committed to the store
        before it (messages reach the bus only after their commit), so a store read made
        after this returns holds it. An observer awaits this before reading its backfill:
        backfill then live leaves no gap, and seq dedup drops the overlap.

        Here the start is the moment of ``subscribe()`` (an in-process bus delivers from
        then on), so it returns at once. A bus whose start needs a round trip (Redis: the
        stream's last entry) returns once it has it."""
        return


class Bus(Protocol):
    """Carries each session's stored messages to the observers subscribed to it."""

    def publish(self, message: StoredMessage) -> None:
        """Fans ``message`` out to its session's subscribers; never blocks."""
        ...

    def subscribe(self, session_id: str) -> Subscription:
        """A bounded subscription to the session's messages published from now on."""
        ...

    def unsubscribe(self, subscription: Subscription) -> None: ...

    def close_session(self, session_id: str) -> None:
        """Ends every subscription of the session, after the messages already published."""
        ...

    async def drain(self) -> None:
        """Returns once everything published before the call has left this process (or was
        dropped from the bus, the store having it)."""
        ...

    async def close(self) -> None:
        """Sends what is queued and releases connections; subscriptions end."""
        ...

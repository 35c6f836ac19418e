"""The message bus between session pipelines and observers.

The embedded default is in-process. Each subscriber has a bounded queue; a subscriber that
falls a whole queue behind is cut off (``overflowed``) rather than silently skipping
messages, and its observer reconnects and resumes from the store's backfill.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Protocol

from rtserver.messages import StoredMessage

SUBSCRIBER_QUEUE_BOUND = 1024  # messages; ~17 minutes of signals at one per second


class Subscription:
    """One observer's view of a session's live messages."""

    def __init__(self, session_id: str, bound: int = SUBSCRIBER_QUEUE_BOUND) -> None:
        self.session_id = session_id
        self.overflowed = False
        self._queue: asyncio.Queue[StoredMessage | None] = asyncio.Queue(maxsize=bound)

    def deliver(self, message: StoredMessage) -> None:
        """Queues a message; on a full queue marks the subscription overflowed and closes it."""
        if self.overflowed:
            return
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True
            self._close_now()

    def close(self) -> None:
        self._close_now()

    def _close_now(self) -> None:
        # The sentinel must get through even on a full queue: make room for it.
        while True:
            try:
                self._queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()

    async def get(self) -> StoredMessage | None:
        """The next message, or None once the subscription is closed."""
        return await self._queue.get()


class Bus(Protocol):
    def publish(self, message: StoredMessage) -> None: ...

    def subscribe(self, session_id: str) -> Subscription: ...

    def unsubscribe(self, subscription: Subscription) -> None: ...

    def close_session(self, session_id: str) -> None: ...


class MemoryBus:
    """In-process bus: publish is synchronous fan-out on the event loop."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)

    def publish(self, message: StoredMessage) -> None:
        for subscription in list(self._subscribers.get(message.session, ())):
            subscription.deliver(message)

    def subscribe(self, session_id: str) -> Subscription:
        subscription = Subscription(session_id)
        self._subscribers[session_id].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.session_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[subscription.session_id]

    def close_session(self, session_id: str) -> None:
        """Ends every subscription of a session (after its final message)."""
        for subscription in list(self._subscribers.get(session_id, ())):
            subscription.close()

    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._subscribers.values())

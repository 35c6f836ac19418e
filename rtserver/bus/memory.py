"""The message bus between session pipelines and observers.

:class:`Bus` is the interface every bus implements: :class:`MemoryBus` (the embedded
default, in-process), :class:`rtserver.server.ipc.IpcBus` (a worker process's bus, forwarding to
the server process over its IPC channel) and, later, a Redis-backed bus for many hosts.

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

"""The embedded default bus: in-process fan-out from a session's pipeline to its observers."""

from __future__ import annotations

from collections import defaultdict

from rtserver.bus.base import Subscription
from rtserver.messages import StoredMessage


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

    async def drain(self) -> None:
        """Nothing to wait for: publish delivers at once."""

    async def close(self) -> None:
        """Nothing to release."""

    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._subscribers.values())

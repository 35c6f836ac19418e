"""A worker process's bus: forwards every message to the server process over its IPC
channel (``rtserver/server/ipc.py``), whose own bus fans it out to the observers."""

from __future__ import annotations

from rtserver.bus.base import Subscription
from rtserver.bus.memory import MemoryBus
from rtserver.messages import StoredMessage, WorkerClose, WorkerPublish
from rtserver.server.ipc import Channel


class IpcBus:
    """A worker process's bus: every message goes to the server process over the channel,
    whose own bus fans it out to the observers (the server owns every observer websocket).

    Subscribers in the worker itself (none today) are served by a local :class:`MemoryBus`.
    """

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._local = MemoryBus()

    def publish(self, message: StoredMessage) -> None:
        self._local.publish(message)
        self._channel.send(WorkerPublish(message))

    def subscribe(self, session_id: str) -> Subscription:
        return self._local.subscribe(session_id)

    def unsubscribe(self, subscription: Subscription) -> None:
        self._local.unsubscribe(subscription)

    def close_session(self, session_id: str) -> None:
        self._local.close_session(session_id)
        self._channel.send(WorkerClose(session_id))

    async def drain(self) -> None:
        """Nothing to wait for: the channel keeps order, so whatever the worker sends next
        (a call's reply) reaches the server after everything published."""

    async def close(self) -> None:
        """The channel is the worker's to close."""

"""The message bus between session pipelines and observers.

:class:`Bus` (``base.py``) is the interface; one module per implementation sits beside it:
``memory.py`` (the embedded default, in-process), ``ipc.py`` (a worker process's bus,
forwarding to the server process) and ``redis.py`` (Redis Streams, for many hosts). Only
the fan-out of stored messages belongs here: what a message holds is
``rtserver/messages.py``'s, and storing it is ``store/``'s. :func:`bus_for` picks one.
"""

from rtserver.bus.base import SUBSCRIBER_QUEUE_BOUND, Bus, Subscription
from rtserver.bus.memory import MemoryBus
from rtserver.config import Config
from rtserver.metrics import Metrics

__all__ = ["SUBSCRIBER_QUEUE_BOUND", "Bus", "MemoryBus", "Subscription", "bus_for"]


def bus_for(config: Config, metrics: Metrics | None = None) -> Bus:
    """The bus ``config.bus`` names: in-process when empty, else Redis at that URL. The
    Redis bus starts its tasks on the running loop at first use; ``await bus.close()`` ends
    them."""
    if not config.bus:
        return MemoryBus()
    # Imported here: one machine never loads redis-py.
    from rtserver.bus.redis import RedisBus

    return RedisBus(config.bus, metrics)

"""The message bus between session pipelines and observers.

:class:`Bus` (``base.py``) is the interface; one module per implementation sits beside it:
``memory.py`` (the embedded default, in-process), ``ipc.py`` (a worker process's bus,
forwarding to the server process) and, for many hosts, Redis. Only the fan-out of stored
messages belongs here: what a message holds is ``rtserver/messages.py``'s, and storing it is
``store/``'s.
"""

from rtserver.bus.base import SUBSCRIBER_QUEUE_BOUND, Bus, Subscription
from rtserver.bus.memory import MemoryBus

__all__ = ["SUBSCRIBER_QUEUE_BOUND", "Bus", "MemoryBus", "Subscription"]

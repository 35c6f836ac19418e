"""Bounded hand-offs between pipeline stages, each with a stated drop policy.

Nothing between two stages is ever an unbounded queue: a stage that falls behind drops the
oldest work (which is stale by then) and counts it, so latency cannot accumulate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldest(Generic[T]):
    """A queue of at most ``bound`` items; putting into a full one drops the oldest item.

    With ``bound=1`` this is a "latest wins" mailbox: a video analyser that is still busy
    when the next sampled frame arrives analyses that newer frame next, never the stale one.
    """

    def __init__(self, bound: int) -> None:
        if bound < 1:
            raise ValueError("bound must be at least 1")
        self.bound = bound
        self.dropped = 0
        self._items: deque[T] = deque()
        self._ready = asyncio.Event()

    def put(self, item: T) -> bool:
        """Adds ``item``; returns False when an older item had to be dropped for it."""
        dropped = False
        if len(self._items) >= self.bound:
            self._items.popleft()
            self.dropped += 1
            dropped = True
        self._items.append(item)
        self._ready.set()
        return not dropped

    async def get(self) -> T:
        await self.wait()
        return self._items.popleft()

    async def wait(self) -> None:
        """Returns once the queue holds an item (which stays in it)."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()

    def take_all(self) -> list[T]:
        items = list(self._items)
        self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)


async def finish_worker(
    worker: asyncio.Task[None], idle: Callable[[], bool], timeout_s: float = 1.0
) -> None:
    """Lets ``worker`` finish the work already handed to it (up to ``timeout_s``), then stops it.

    Used when a track ends: the last frames' analysis still belongs in the last seconds.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        while not idle() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker

"""Memory a finished session leaves behind, handed back to the system.

What stays after a session ends was measured with ``bench.soak`` (rounds of 8 sessions on
the defaults) and, in each worker process, gc's object counts and glibc's ``mallinfo2``:

- Python objects do not stay: from the second round to the twentieth the counts are flat
  (no session, peer connection, relay, proxy, task or metric label outlives its session).
  The one exception was ours, fixed in ``inference/batcher.py``: the batcher kept its last
  batch of frame planes alive while idle.
- glibc keeps the memory sessions freed. Frames are decoded, copied and analysed in
  aiortc's decoder threads and our analysis threads, each allocating from its own malloc
  arena; freed chunks stay in their arena, and glibc gives pages back to the system only
  from an arena's top. After 80 sessions a worker's arenas held 47 MB free (``fordblks``)
  of the 65 MB its RSS had grown, and the growth slowed as the arenas' free lists covered
  what a session needs.

``malloc_trim(0)`` gives every arena's free pages back (``MADV_DONTNEED``, glibc 2.8 on).
:class:`HeapTrimmer` runs it off the event loop a little after sessions end, once for all
the sessions that end together. Without glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

# Sessions that end within this long of each other share one trim (s): a round of
# interviews ending together, or a server shutting down, trims once.
TRIM_DELAY_S = 1.0


def _load_malloc_trim() -> Callable[[int], int] | None:
    with contextlib.suppress(OSError, AttributeError):
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
        return trim
    return None


_malloc_trim = _load_malloc_trim()


def resident_bytes() -> int:
    """This process's resident set size (bytes), from /proc; 0 where there is none."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def trim_heap() -> int:
    """Gives malloc's free pages back to the system; the bytes of RSS released (0 without
    glibc). Takes a few ms on a worker's heap: call it off the event loop."""
    if _malloc_trim is None:
        return 0
    before = resident_bytes()
    _malloc_trim(0)
    return max(0, before - resident_bytes())


class HeapTrimmer:
    """Trims the heap once, ``delay_s`` after the last of the sessions that just ended."""

    def __init__(self, delay_s: float = TRIM_DELAY_S) -> None:
        self.delay_s = delay_s
        self.trims = 0  # trims done
        self.released_bytes = 0  # RSS they gave back, in all
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def session_ended(self) -> None:
        """Asks for a trim; one already waiting to run covers this session too."""
        if _malloc_trim is None or self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.delay_s, self._start)

    def _start(self) -> None:
        self._timer = None
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._trim(), name="heap-trim")

    async def _trim(self) -> None:
        released = await asyncio.to_thread(trim_heap)
        self.trims += 1
        self.released_bytes += released
        log.debug("heap trimmed: %.1f MB given back", released / 2**20)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

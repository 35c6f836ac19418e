"""How the cluster's background loops stop: by being asked, not cancelled.

Cancelling a task in the middle of a redis-py command (a BLPOP waiting for a call, a pipeline
in flight) can leave it hanging in redis-py's connection clean-up: a node's shutdown then
never finished (seen in tests/test_cluster.py). So each loop here checks a stop event
between its Redis calls, every blocking call returns within ``calls.POLL_S``, and
:func:`stop_loop` sets the event and waits; it cancels only a loop that has not stopped in
``STOP_WAIT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)

STOP_WAIT_S = 5.0  # a loop's blocking call returns within 1 s; this is its margin


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Waits ``seconds``, or less if asked to stop; whether it was asked."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def stop_loop(task: asyncio.Task[None] | None, stop: asyncio.Event) -> None:
    """Asks the loop to stop and waits for it; cancels it only as a last resort."""
    stop.set()
    if task is None or task.done():
        return
    done, _ = await asyncio.wait({task}, timeout=STOP_WAIT_S)
    if not done:
        log.warning("%s did not stop in %g s; cancelling it", task.get_name(), STOP_WAIT_S)
        task.cancel()
        await asyncio.wait({task}, timeout=STOP_WAIT_S)

"""A short lock in Redis, held by name, that expires if its holder dies.

Used for one thing: ending a node's leftover sessions (``rt:reap:<node>``). A front end that
finds the node lost and the node itself restarting with the same id may both want to end
them; the lock makes one do it and the other find them ended (``finish_sessions`` skips
sessions the store no longer has live).
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

# Deletes the key only if it still holds our value: never another holder's lock, taken
# after ours expired.
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
POLL_S = 0.2


def reap_lock_key(node: str) -> str:
    return f"rt:reap:{node}"


async def acquire(redis: Redis, key: str, holder: str, ttl_s: float, wait_s: float = 0.0) -> bool:
    """Takes the lock for ``ttl_s``, waiting up to ``wait_s`` for another holder to let go;
    whether it was taken."""
    deadline = time.monotonic() + wait_s
    while True:
        if await redis.set(key, holder, nx=True, px=int(ttl_s * 1000)):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_S)


async def release(redis: Redis, key: str, holder: str) -> None:
    """Lets go of the lock if ``holder`` still holds it."""
    await redis.eval(_RELEASE, 1, key, holder)

"""Ends the sessions of media nodes that stopped heartbeating (``end_reason`` ``node_lost``).

Every front end runs one, on each registry read (``cluster/host.py``): a node that still has
live sessions in the store, but whose heartbeat this front end has not seen for
``node_ttl_s``, is lost. One front end (the one that takes the lock ``rt:reap:<node>``,
``locks.py``) ends its sessions as a restart would: a final scored from the stored signals,
published on the bus so every observer, on every front end, gets it; then the session's
subscriptions close. Only that node's sessions are touched.

What a front end counts is its own observation, not the key's TTL alone: a front end that has
just started, or that could not read Redis (Redis restarting, a network blip), gives every
node a full TTL from then on, so a Redis restart (which drops every heartbeat at once) ends
nothing: the nodes heartbeat again within ``node_ttl_s / 5``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis

from rtserver.cluster.locks import acquire, reap_lock_key, release
from rtserver.live.manager import finish_sessions
from rtserver.live.runtime import Runtime

log = logging.getLogger(__name__)

END_REASON = "node_lost"
REAP_LOCK_S = 60  # held while one front end ends a lost node's sessions (released after)


class NodeReaper:
    """Decides, from registry reads, which nodes are lost, and ends their sessions."""

    def __init__(
        self,
        runtime: Runtime,
        redis: Redis,
        holder: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runtime = runtime
        self.redis = redis
        self.holder = holder  # who holds the lock: this front end's id
        self.ttl_s = runtime.config.node_ttl_s
        self.clock = clock
        self._last_seen: dict[str, float] = {}
        self._blind_until = clock()  # every node gets a full TTL from here

    async def tick(self, present: set[str] | None) -> list[str]:
        """One look: ``present`` are the nodes the registry holds now (None: it could not be
        read). Returns the sessions it ended."""
        now = self.clock()
        if present is None:
            self._blind_until = now
            return []
        for node in present:
            self._last_seen[node] = now
        by_node = await self.runtime.db.live_sessions_by_node()
        ended: list[str] = []
        for owner, sessions in by_node.items():
            if owner is None or owner in present:
                continue
            seen = max(self._last_seen.get(owner, self._blind_until), self._blind_until)
            if now - seen < self.ttl_s:
                continue
            ended += await self._reap(owner, sessions, now - seen)
        return ended

    async def _reap(self, node: str, sessions: list[str], silent_s: float) -> list[str]:
        key = reap_lock_key(node)
        if not await acquire(self.redis, key, self.holder, REAP_LOCK_S):
            return []  # another front end, or the node itself restarting, is at it
        try:
            ended = await finish_sessions(self.runtime, sessions, END_REASON)
        finally:
            await release(self.redis, key, self.holder)
        if ended:
            log.error(
                "node %s lost (no heartbeat for %.1f s): ended its %d live sessions",
                node,
                silent_s,
                len(ended),
            )
            self.runtime.metrics.sessions_total.inc(len(ended), outcome=END_REASON)
        return ended

"""A media node (``--role node``): runs the sessions front ends place on it.

A node is one process with one :class:`~rtserver.live.manager.SessionManager`: the candidates'
peers, media paths, models and batcher, and the relays observers watch from. It

- **claims its id**: a node id is held by one process at a time; a second process with the
  same id refuses to start while the first still heartbeats;
- **finishes its own leftovers**: the sessions a previous run of this node id left live end as
  ``server_restart`` (scored from what was stored). Other nodes' sessions are never touched:
  a restarting node does not end sessions it does not own;
- **heartbeats** every ``node_ttl_s / 5`` into the registry (``cluster/registry.py``): its
  capacity, live sessions and admission readings, which front ends place by;
- **answers calls** from front ends over Redis (``cluster/calls.py``), with the same dispatch
  as a worker process (``server/calls.py``). An ``end`` is answered only once the final is
  on the bus, so the front end's reply comes after observers can have it;
- on shutdown, drains: it refuses new sessions, ends its own (``server_shutdown``) while
  still heartbeating, then leaves the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from rtserver.cluster.calls import CallServer, Signer
from rtserver.cluster.locks import acquire, reap_lock_key, release
from rtserver.cluster.loops import pause, stop_loop
from rtserver.cluster.reaper import REAP_LOCK_S
from rtserver.cluster.registry import HEARTBEATS_PER_TTL, NodeStatus, Registry
from rtserver.errors import Overloaded
from rtserver.live.manager import SessionManager, finish_sessions
from rtserver.server.calls import answer_call

log = logging.getLogger(__name__)

RESTART_REASON = "server_restart"  # what a node's previous run left live ends as
LOAD_CHANGING_CALLS = frozenset({"join", "end"})
DRAINING = "the node is shutting down"


class NodeIdTaken(RuntimeError):
    """Another running process heartbeats with this node id."""


class MediaNode:
    """Registers a session manager in the registry and answers front ends' calls for it."""

    def __init__(self, manager: SessionManager, redis: Redis, signer: Signer) -> None:
        self.manager = manager
        self.runtime = manager.runtime
        config = self.runtime.config
        self.node = config.node
        self.redis = redis
        self.registry = Registry(redis, config.node_ttl_s)
        self.instance = secrets.token_hex(8)
        self.started_at = time.time()
        self.calls = CallServer(redis, self.node, signer, self._answer)
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._calls_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.draining = False  # shutting down: no new session

    async def start(self) -> list[str]:
        """Claims the id, finishes what a previous run left live, announces the node and
        starts answering calls. Returns the sessions it finished."""
        await self._claim_id()
        finished = await self._finish_leftovers()
        if finished:
            log.warning("node %s: ended %d sessions left live", self.node, len(finished))
        await self.registry.announce(self.status())
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="heartbeat")
        self._calls_task = asyncio.create_task(self.calls.serve(), name="calls")
        log.info("node %s up (instance %s)", self.node, self.instance)
        return finished

    async def stop(self) -> None:
        """Drains: refuses new sessions at once (front ends place them elsewhere) while it
        keeps heartbeating and answering calls for its live ones, ends each of them
        (``server_shutdown``), then stops and leaves the registry. Heartbeating through
        the drain matters: a node that fell silent would have its sessions ended as
        ``node_lost`` by a front end while it is still ending them itself."""
        self.draining = True
        with contextlib.suppress(RedisError):
            await self.registry.announce(self.status())
        await self.manager.shutdown()
        await self.runtime.bus.drain()
        self._stop.set()
        await stop_loop(self._calls_task, self.calls.stopping)
        await stop_loop(self._heartbeat_task, self._stop)
        with contextlib.suppress(RedisError):
            await self.registry.withdraw(self.node, self.instance)

    async def _claim_id(self) -> None:
        """Waits out a heartbeat that may be this id's last run's; refuses to start when
        another process keeps heartbeating with it."""
        deadline = time.monotonic() + self.registry.ttl_s * 1.5
        while (holder := await self.registry.status(self.node)) is not None:
            if time.monotonic() > deadline:
                raise NodeIdTaken(
                    f"node id {self.node!r} is in use by a running process (instance "
                    f"{holder.instance}); give each node its own --node-id"
                )
            await asyncio.sleep(self.registry.ttl_s / HEARTBEATS_PER_TTL)

    async def _finish_leftovers(self) -> list[str]:
        """Ends what this node id's last run left live, under the lock a front end takes to
        end a lost node's sessions: whichever comes second finds them ended."""
        key, holder = reap_lock_key(self.node), f"node-{self.instance}"
        if not await acquire(self.redis, key, holder, REAP_LOCK_S, wait_s=REAP_LOCK_S):
            raise NodeIdTaken(f"the sessions of node {self.node!r} are being ended elsewhere")
        try:
            by_node = await self.runtime.db.live_sessions_by_node()
            own = by_node.get(self.node, [])
            return await finish_sessions(self.runtime, own, RESTART_REASON)
        finally:
            await release(self.redis, key, holder)

    def status(self, joining: int = 0) -> NodeStatus:
        """This node's heartbeat: capacity, load (with ``joining`` joins about to start)
        and what admission control says now."""
        manager = self.manager
        admission = manager.admission
        try:
            if self.draining:
                raise Overloaded(DRAINING)
            admission.check()
            admits, refusal = True, ""
        except Overloaded as exc:
            admits, refusal = False, exc.detail
        budget = manager.cpu_budget
        headroom = budget.headroom_sessions() if budget is not None else -1
        asr = self.runtime.asr
        return NodeStatus(
            node=self.node,
            instance=self.instance,
            capacity=self.runtime.config.session_limit,
            live=manager.live_count() + joining,
            admits=admits,
            refusal=refusal,
            headroom=headroom,
            loop_lag_s=round(admission.loop_lag.lag_s, 4),
            signal_lag_s=round(admission.signal_lag.mean_s(), 4),
            asr_backlog_s=round(asr.backlog_s, 3) if asr is not None else 0.0,
            started_at=self.started_at,
            heartbeat_at=time.time(),
        )

    async def _heartbeat(self) -> None:
        period = self.registry.ttl_s / HEARTBEATS_PER_TTL
        while not await pause(self._stop, period):
            try:
                await self.registry.announce(self.status())
            except RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
            self.runtime.metrics.observe_admission(self.manager.admission)

    async def _answer(self, method: str, args: dict[str, Any]) -> Any:
        if method == "join" and self.draining:
            raise Overloaded(DRAINING)  # the front end tries the next node
        if method == "join":
            # Counted before it starts: joins that other front ends send meanwhile see it.
            with contextlib.suppress(RedisError):
                await self.registry.announce(self.status(joining=1))
        try:
            value = await answer_call(self.manager, method, args)
            if method == "end":
                await self.runtime.bus.drain()  # the final is on the bus before the reply
        finally:
            if method in LOAD_CHANGING_CALLS:
                # The registry has the new load before the front end hears back, so the
                # next placement (from any front end) does not go by a heartbeat-old count.
                with contextlib.suppress(RedisError):
                    await self.registry.announce(self.status())
        return value

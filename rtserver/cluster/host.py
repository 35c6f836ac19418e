"""A front end's session host: places new sessions on media nodes, forwards the rest.

A front end (``--role front``) runs no peer and no model. It is stateless: what it needs to
know it reads from the store (which node runs a session: ``sessions.node``) and from the
registry in Redis (which nodes are up, and how loaded), so any number of front ends can sit
behind any load balancer, and any of them can serve any request.

- **Join**: the registry's nodes with room, least loaded first
  (:func:`~rtserver.cluster.registry.placement_order`); the first that accepts runs it. A node
  that refuses (at capacity, overloaded: its own admission control decides, with readings
  fresher than the registry's) passes the session to the next.
- **Rejoin, end, watch, live figures**: a call to the node the store names.
- **Lost nodes**: every ``REFRESH_S`` the host reads the registry and lets the
  :class:`~rtserver.cluster.reaper.NodeReaper` end the sessions of nodes that stopped
  heartbeating.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from aiortc import RTCSessionDescription
from redis.asyncio import Redis
from redis.exceptions import RedisError

from rtserver.cluster.calls import CallClient
from rtserver.cluster.loops import pause, stop_loop
from rtserver.cluster.reaper import NodeReaper
from rtserver.cluster.registry import NodeStatus, Registry, placement_order
from rtserver.errors import AtCapacity, Conflict, Overloaded, WorkerLost
from rtserver.live.runtime import Runtime
from rtserver.server.calls import offer_to_wire
from rtserver.store import STATUS_LIVE

log = logging.getLogger(__name__)

REFRESH_S = 1.0  # how often the registry is read (placement reads it afresh)
JOIN_TIMEOUT_S = 45.0  # a join gathers ICE and starts the media paths
CALL_TIMEOUT_S = 15.0  # rejoin, watch, end (an end waits for the final)
LIVE_TIMEOUT_S = 2.0  # the live figures are a nicety: never hold a page for them


class ClusterHost:
    """The :class:`rtserver.live.manager.SessionHost` of a front end."""

    def __init__(self, runtime: Runtime, redis: Redis, calls: CallClient) -> None:
        self.runtime = runtime
        self.redis = redis
        self.registry = Registry(redis, runtime.config.node_ttl_s)
        self.calls = calls
        self.reaper = NodeReaper(runtime, redis, calls.client)
        self._nodes: list[NodeStatus] = []
        # Joins this front end has sent to each node and not yet heard back from.
        self._placing: Counter[str] = Counter()
        self._refresher: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self.calls.start()
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh(), name="registry")

    async def shutdown(self) -> None:
        """Stops reading the registry; the sessions go on on their nodes."""
        await stop_loop(self._refresher, self._stop)
        self._refresher = None
        await self.calls.close()

    async def _refresh(self) -> None:
        while not self._stop.is_set():
            present: set[str] | None
            try:
                self._nodes = await self.registry.nodes()
                present = {n.node for n in self._nodes}
            except RedisError as exc:
                log.warning("cannot read the node registry: %s", exc)
                present = None
            try:
                await self.reaper.tick(present)
            except Exception:
                log.exception("ending the sessions of lost nodes failed; trying again")
            await pause(self._stop, REFRESH_S)

    # -- SessionHost ------------------------------------------------------------------

    async def join(
        self, session_id: str, offer: RTCSessionDescription, questions: Sequence[str] = ()
    ) -> RTCSessionDescription:
        nodes = await self._fresh_nodes()
        order = placement_order(nodes, self._placing)
        if not order:
            raise _no_room(nodes)
        args = {"session": session_id, **offer_to_wire(offer), "questions": list(questions)}
        refusals: list[str] = []
        for node in order:
            self._placing[node.node] += 1
            try:
                answer = await self.calls.call(node.node, "join", args, JOIN_TIMEOUT_S)
            except AtCapacity as exc:  # Overloaded too: that node's own admission said no
                refusals.append(f"{node.node}: {exc.detail}")
                continue
            finally:
                self._placing[node.node] -= 1
            log.info("placed on node %s", node.node, extra={"session": session_id})
            return RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])
        raise Overloaded(f"every media node refused the session: {'; '.join(refusals)}")

    async def reconnect(
        self, session_id: str, offer: RTCSessionDescription
    ) -> RTCSessionDescription:
        node = await self._owner(session_id)
        args = {"session": session_id, **offer_to_wire(offer)}
        answer = await self.calls.call(node, "reconnect", args, CALL_TIMEOUT_S)
        return RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])

    async def end(self, session_id: str, reason: str) -> bool:
        try:
            node = await self._owner(session_id)
        except Conflict:
            return False
        if not self._registered(node):
            return False  # lost: its sessions are being ended as node_lost
        args = {"session": session_id, "reason": reason}
        return bool(await self.calls.call(node, "end", args, CALL_TIMEOUT_S))

    async def watch(self, session_id: str, offer: RTCSessionDescription) -> RTCSessionDescription:
        node = await self._owner(session_id)
        args = {"session": session_id, **offer_to_wire(offer)}
        answer = await self.calls.call(node, "watch", args, CALL_TIMEOUT_S)
        return RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])

    async def live_figures(self, session_id: str) -> dict[str, Any] | None:
        try:
            node = await self._owner(session_id)
            figures = await self.calls.call(node, "live", {"session": session_id}, LIVE_TIMEOUT_S)
        except (Conflict, WorkerLost):
            return None
        return dict(figures) if figures is not None else None

    def live_count(self) -> int:
        """Sessions live on every node, as the registry last said."""
        return sum(node.live for node in self._nodes)

    def health(self) -> dict[str, Any]:
        return {
            "role": "front",
            "front_end": self.calls.client,
            "nodes": [
                {
                    "node": n.node,
                    "live_sessions": n.live,
                    "capacity": n.capacity,
                    "admits": n.admits,
                    "refusal": n.refusal,
                    "cpu_headroom_sessions": n.headroom,
                    "loop_lag_s": n.loop_lag_s,
                    "signal_lag_s": n.signal_lag_s,
                    "asr_backlog_s": n.asr_backlog_s,
                }
                for n in self._nodes
            ],
        }

    async def render_metrics(self) -> str:
        self.runtime.metrics.observe_nodes(self._nodes)
        return self.runtime.metrics.render()

    # -- helpers ----------------------------------------------------------------------

    async def _fresh_nodes(self) -> list[NodeStatus]:
        """The registry now (a placement must not go by a reading a second old)."""
        try:
            self._nodes = await self.registry.nodes()
        except RedisError as exc:
            raise WorkerLost(f"cannot read the node registry: {exc}") from None
        return self._nodes

    def _registered(self, node: str) -> bool:
        return any(n.node == node for n in self._nodes)

    async def _owner(self, session_id: str) -> str:
        """The node that runs a live session; Conflict when it is not live on any."""
        record = await self.runtime.db.get_session(session_id)
        if record is None or record.status != STATUS_LIVE or not record.node:
            raise Conflict("session is not live")
        return record.node


def _no_room(nodes: list[NodeStatus]) -> AtCapacity:
    """Why no node may take a session: none registered, or each full or overloaded."""
    if not nodes:
        return AtCapacity("no media node is up; try again shortly", retry_after_s=5)
    reasons = "; ".join(
        f"{n.node}: {n.refusal or f'{n.live} of {n.capacity} sessions live'}" for n in nodes
    )
    if all(n.live >= n.capacity for n in nodes):
        return AtCapacity(f"every media node is at capacity ({reasons})")
    return Overloaded(f"every media node is busy ({reasons})")

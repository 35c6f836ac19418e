"""The node registry in Redis: which media nodes are up, how loaded, and whether they admit.

Each media node writes one hash, ``rt:node:<id>``, every heartbeat (``node_ttl_s / 5``) with
its capacity, live sessions and admission readings, and gives it a TTL of ``node_ttl_s``: a
node that stops heartbeating drops out of the registry by itself. The set ``rt:nodes`` lists
the ids ever announced, so a front end reads every node with one SMEMBERS and one pipelined
HGETALL each; ids whose hash has expired are taken out of the set as they are found.

Per node and heartbeat that is one pipeline of HSET (12 fields, ~300 bytes), PEXPIRE and SADD.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from redis.asyncio import Redis

NODES_KEY = "rt:nodes"
HEARTBEATS_PER_TTL = 5  # a node heartbeats this many times per TTL: one lost beat is no loss


def node_key(node: str) -> str:
    return f"rt:node:{node}"


@dataclass(frozen=True)
class NodeStatus:
    """One media node as its last heartbeat described it."""

    node: str
    instance: str  # random per process: tells a restarted node from the one before
    capacity: int  # live sessions it takes at most (--max-sessions)
    live: int  # sessions live or joining on it
    admits: bool  # whether its admission control would take one more now
    refusal: str  # why not, when it does not ("" when it admits)
    headroom: int  # sessions its CPU budget would still take (-1: budget off)
    loop_lag_s: float
    signal_lag_s: float
    asr_backlog_s: float
    started_at: float
    heartbeat_at: float

    @property
    def load(self) -> float:
        """Share of its capacity in use."""
        return self.live / self.capacity if self.capacity > 0 else 1.0

    @property
    def has_room(self) -> bool:
        return self.admits and self.live < self.capacity and self.headroom != 0

    def to_fields(self) -> dict[str, str]:
        return {name: _text(value) for name, value in asdict(self).items()}

    @classmethod
    def from_fields(cls, raw: dict[Any, Any]) -> NodeStatus | None:
        """The status in a node's hash; None when the hash is gone or malformed."""
        values = {_str(k): _str(v) for k, v in raw.items()}
        try:
            return cls(
                node=values["node"],
                instance=values["instance"],
                capacity=int(values["capacity"]),
                live=int(values["live"]),
                admits=values["admits"] == "1",
                refusal=values.get("refusal", ""),
                headroom=int(values["headroom"]),
                loop_lag_s=float(values["loop_lag_s"]),
                signal_lag_s=float(values["signal_lag_s"]),
                asr_backlog_s=float(values["asr_backlog_s"]),
                started_at=float(values["started_at"]),
                heartbeat_at=float(values["heartbeat_at"]),
            )
        except (KeyError, ValueError):
            return None


STATUS_FIELDS = tuple(f.name for f in fields(NodeStatus))


def placement_order(
    nodes: list[NodeStatus], placing: Mapping[str, int] | None = None
) -> list[NodeStatus]:
    """The nodes a new session may go to, best first: those with room, the least loaded
    (share of capacity) first, then the one with the most CPU headroom, then by id.
    ``placing`` counts the joins this front end has in flight on each node, which no
    heartbeat has reported yet: joins that arrive together spread instead of all going to
    the node that was least loaded a moment ago."""
    placing = placing or {}
    counted = [replace(n, live=n.live + placing.get(n.node, 0)) for n in nodes]
    with_room = [n for n in counted if n.has_room]
    order = sorted(with_room, key=lambda n: (n.load, n.live, -n.headroom, n.node))
    by_id = {n.node: n for n in nodes}
    return [by_id[n.node] for n in order]


class Registry:
    """Reads and writes the node registry on one Redis connection pool."""

    def __init__(self, redis: Redis, ttl_s: float) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    async def announce(self, status: NodeStatus) -> None:
        """One heartbeat: the node's status, alive for another TTL."""
        key = node_key(status.node)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=status.to_fields())  # type: ignore[arg-type]
            pipe.pexpire(key, int(self.ttl_s * 1000))
            pipe.sadd(NODES_KEY, status.node)
            await pipe.execute()

    async def withdraw(self, node: str, instance: str) -> None:
        """Takes the node out at once (a clean shutdown), unless another process has since
        announced the same id."""
        key = node_key(node)
        if _str(await self.redis.hget(key, "instance")) == instance:
            await self.redis.delete(key)
            await self.redis.srem(NODES_KEY, node)

    async def status(self, node: str) -> NodeStatus | None:
        return NodeStatus.from_fields(await self.redis.hgetall(node_key(node)))

    async def nodes(self) -> list[NodeStatus]:
        """Every node whose heartbeat is current, by id; forgets the expired ones."""
        ids = sorted(_str(n) for n in await self.redis.smembers(NODES_KEY))
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for node in ids:
                pipe.hgetall(node_key(node))
            hashes = await pipe.execute()
        present: list[NodeStatus] = []
        expired: list[str] = []
        for node, raw in zip(ids, hashes, strict=True):
            status = NodeStatus.from_fields(raw) if raw else None
            if status is None:
                expired.append(node)
            else:
                present.append(status)
        if expired:
            await self.redis.srem(NODES_KEY, *expired)
        return present


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

"""The pieces of many hosts on a real (private) Redis: the node registry, placement, calls
between front ends and nodes, and the reaper that ends a lost node's sessions (and no other's).
The processes put together are in test_cluster_e2e.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis_server import RedisServer

from rtserver.cluster.calls import CallClient, CallServer, Signer, calls_key
from rtserver.cluster.locks import acquire, reap_lock_key, release
from rtserver.cluster.loops import stop_loop
from rtserver.cluster.node import MediaNode
from rtserver.cluster.reaper import NodeReaper
from rtserver.cluster.registry import NodeStatus, Registry, placement_order
from rtserver.config import Config
from rtserver.errors import Overloaded, WorkerLost
from rtserver.live.manager import SessionManager
from rtserver.live.runtime import Runtime, build_front_runtime
from rtserver.store import STATUS_ENDED, STATUS_LIVE


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


def status(node: str, live: int = 0, capacity: int = 4, **changes: Any) -> NodeStatus:
    values: dict[str, Any] = {
        "node": node,
        "instance": f"{node}-1",
        "capacity": capacity,
        "live": live,
        "admits": True,
        "refusal": "",
        "headroom": -1,
        "loop_lag_s": 0.001,
        "signal_lag_s": 0.2,
        "asr_backlog_s": 0.0,
        "started_at": time.time(),
        "heartbeat_at": time.time(),
    }
    values.update(changes)
    return NodeStatus(**values)


# -- registry and placement ----------------------------------------------------------------


async def test_a_node_is_in_the_registry_until_its_heartbeat_expires(redis: Redis) -> None:
    registry = Registry(redis, ttl_s=1.0)
    await registry.announce(status("a", live=2))
    await registry.announce(status("b", admits=False, refusal="its event loop runs late"))
    nodes = {n.node: n for n in await registry.nodes()}
    assert set(nodes) == {"a", "b"}
    assert nodes["a"].live == 2 and nodes["a"].admits
    assert not nodes["b"].admits and nodes["b"].refusal == "its event loop runs late"
    await asyncio.sleep(0.6)
    await registry.announce(status("a", live=3))  # a keeps heartbeating, b has stopped
    await asyncio.sleep(0.6)
    assert [n.node for n in await registry.nodes()] == ["a"]
    assert await redis.smembers("rt:nodes") == {b"a"}  # b's expired id is forgotten


async def test_a_node_id_is_withdrawn_only_by_the_process_that_holds_it(redis: Redis) -> None:
    registry = Registry(redis, ttl_s=5.0)
    await registry.announce(status("a", instance="second-run"))
    await registry.withdraw("a", "first-run")  # a late shutdown of the run before
    assert [n.node for n in await registry.nodes()] == ["a"]
    await registry.withdraw("a", "second-run")
    assert await registry.nodes() == []


def test_placement_prefers_the_least_loaded_node_with_room() -> None:
    nodes = [
        status("full", live=4, capacity=4),
        status("busy", live=3, capacity=4),
        status("refusing", live=0, admits=False, refusal="signals late"),
        status("no-cpu", live=0, headroom=0),
        status("big", live=3, capacity=16),
        status("idle", live=1, capacity=4),
    ]
    assert [n.node for n in placement_order(nodes)] == ["big", "idle", "busy"]
    # Joins in flight that no heartbeat has counted yet: "big" is then as loaded as "busy".
    placing = {"big": 9, "idle": 1}
    assert [n.node for n in placement_order(nodes, placing)] == ["idle", "busy", "big"]
    assert placement_order(nodes, placing)[0].live == 1  # the node as its heartbeat said


# -- calls ---------------------------------------------------------------------------------


@dataclass
class Serving:
    """A CallServer answering with an echo, running as a task, and the calls it saw."""

    server: CallServer
    task: asyncio.Task[None]
    seen: list[tuple[str, dict[str, Any]]]

    async def stop(self) -> None:
        await stop_loop(self.task, self.server.stopping)
        assert self.task.done() and not self.task.cancelled()  # it stopped when asked


async def serve_calls(redis: Redis, node: str, signer: Signer) -> Serving:
    seen: list[tuple[str, dict[str, Any]]] = []

    async def handler(method: str, args: dict[str, Any]) -> Any:
        seen.append((method, args))
        if method == "join" and args["session"] == "refused":
            raise Overloaded("this node's signals go out 900 ms late")
        return {"echo": args, "node": node}

    server = CallServer(redis, node, signer, handler)
    return Serving(server, asyncio.create_task(server.serve()), seen)


async def test_a_call_reaches_the_named_node_and_its_typed_errors_come_back(redis: Redis) -> None:
    signer = Signer(b"cluster secret")
    a = await serve_calls(redis, "a", signer)
    b = await serve_calls(redis, "b", signer)
    client = CallClient(redis, signer)
    try:
        value = await client.call("b", "live", {"session": "s1"}, timeout_s=5)
        assert value == {"echo": {"session": "s1"}, "node": "b"}
        assert b.seen == [("live", {"session": "s1"})] and a.seen == []
        with pytest.raises(Overloaded, match="900 ms late"):
            await client.call("a", "join", {"session": "refused"}, timeout_s=5)
        # Many calls at once, each answered to its own caller.
        values = await asyncio.gather(
            *(client.call("a", "live", {"session": f"s{i}"}, timeout_s=5) for i in range(20))
        )
        assert [v["echo"]["session"] for v in values] == [f"s{i}" for i in range(20)]
    finally:
        await a.stop()
        await b.stop()
        await client.close()


async def test_a_call_signed_with_another_secret_is_refused(redis: Redis) -> None:
    node = await serve_calls(redis, "a", Signer(b"the deployment's secret"))
    forger = CallClient(redis, Signer(b"a guess"))
    unsigned = CallClient(redis, Signer())
    try:
        for client in (forger, unsigned):
            with pytest.raises(WorkerLost, match="did not answer"):
                await client.call("a", "end", {"session": "s1", "reason": "x"}, timeout_s=1.5)
        assert node.seen == []  # neither reached the handler
    finally:
        await node.stop()
        await forger.close()
        await unsigned.close()


async def test_a_call_to_a_node_that_is_gone_fails_and_does_not_pile_up(redis: Redis) -> None:
    client = CallClient(redis, Signer())
    try:
        started = time.monotonic()
        with pytest.raises(WorkerLost, match="node gone did not answer join"):
            await client.call("gone", "join", {"session": "s1"}, timeout_s=1.0)
        assert time.monotonic() - started < 3.0
        # The unanswered call expires with its list instead of waiting for a node to return.
        ttl_ms = await redis.pttl(calls_key("gone"))
        assert 0 < ttl_ms <= 3000
    finally:
        await client.close()


async def test_a_node_drops_calls_whose_caller_gave_up(redis: Redis) -> None:
    signer = Signer()
    client = CallClient(redis, signer)
    with pytest.raises(WorkerLost):
        await client.call("late", "join", {"session": "stale"}, timeout_s=0.2)
    await asyncio.sleep(2.5)  # past the deadline and the clock slack, while the node was away
    await redis.persist(calls_key("late"))  # as if the list had not expired yet
    node = await serve_calls(redis, "late", signer)
    try:
        assert await client.call("late", "live", {"session": "fresh"}, timeout_s=5)
        assert node.seen == [("live", {"session": "fresh"})]  # the stale join never ran
    finally:
        await node.stop()
        await client.close()


# -- the reaper ----------------------------------------------------------------------------


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    runtime = build_front_runtime(
        Config(data_dir=tmp_path, transcribe="off", node_ttl_s=5.0, role="all")
    )
    yield runtime
    runtime.store.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_lost_node_has_its_sessions_ended_and_no_other_node_s(
    runtime: Runtime, redis: Redis
) -> None:
    store = runtime.store
    sessions = {}
    for name, node in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        record, _ = store.create_session(None, None, [])
        assert store.mark_live(record.id, node)
        sessions[name] = record.id
    clock = Clock()
    reaper = NodeReaper(runtime, redis, "front-1", clock)
    other_front = NodeReaper(runtime, redis, "front-2", clock)
    assert await reaper.tick({"a", "b"}) == []
    clock.now += 2.0
    assert await reaper.tick({"b"}) == []  # a's heartbeat is 2 s old: not yet lost
    clock.now += 3.5
    ended = await reaper.tick({"b"})
    assert sorted(ended) == sorted([sessions["a1"], sessions["a2"]])
    assert await other_front.tick({"b"}) == []  # nothing left; and the lock is held
    for name, session_id in sessions.items():
        record = store.get_session(session_id)
        assert record is not None
        if name.startswith("a"):
            assert (record.status, record.end_reason) == (STATUS_ENDED, "node_lost")
            final = store.final_message(session_id)
            assert final is not None and final.payload["end_reason"] == "node_lost"
        else:
            assert record.status == STATUS_LIVE  # b's session is untouched
    await runtime.db.close()


async def test_a_registry_that_cannot_be_read_ends_nothing(runtime: Runtime, redis: Redis) -> None:
    """A Redis restart drops every heartbeat at once: a front end gives every node a full
    TTL from the moment it can read the registry again."""
    record, _ = runtime.store.create_session(None, None, [])
    assert runtime.store.mark_live(record.id, "a")
    clock = Clock()
    reaper = NodeReaper(runtime, redis, "front-1", clock)
    await reaper.tick({"a"})
    clock.now += 4.0
    await reaper.tick(None)  # Redis down
    clock.now += 4.0
    assert await reaper.tick(set()) == []  # back, empty: a has not had its TTL since
    clock.now += 0.5
    assert await reaper.tick({"a"}) == []  # a heartbeats again
    clock.now += 30.0
    assert await reaper.tick({"a"}) == []
    assert runtime.store.get_session(record.id).status == STATUS_LIVE  # type: ignore[union-attr]
    await runtime.db.close()


async def test_the_reap_lock_has_one_holder_and_outlives_no_dead_one(redis: Redis) -> None:
    key = reap_lock_key("a")
    assert await acquire(redis, key, "front-1", ttl_s=0.5)
    assert not await acquire(redis, key, "node-a", ttl_s=5, wait_s=0.1)  # held
    await release(redis, key, "node-a")  # not its lock: nothing happens
    assert await redis.get(key) == b"front-1"
    # front-1 dies holding it: the lock runs out, and the waiting node gets it.
    assert await acquire(redis, key, "node-a", ttl_s=5, wait_s=2.0)
    await release(redis, key, "front-1")  # a late release by the dead holder changes nothing
    assert await redis.get(key) == b"node-a"
    await release(redis, key, "node-a")
    assert await redis.get(key) is None


async def test_a_node_ends_only_its_own_leftovers_and_drains_before_it_leaves(
    runtime: Runtime, redis: Redis
) -> None:
    store, me = runtime.store, runtime.config.node
    leftovers = {}
    for node in (me, "another-node"):
        record, _ = store.create_session(None, None, [])
        assert store.mark_live(record.id, node)
        leftovers[node] = record.id
    node = MediaNode(SessionManager(runtime), redis, Signer())
    assert await node.start() == [leftovers[me]]
    mine = store.get_session(leftovers[me])
    assert mine is not None and (mine.status, mine.end_reason) == (STATUS_ENDED, "server_restart")
    assert store.get_session(leftovers["another-node"]).status == STATUS_LIVE  # type: ignore[union-attr]
    registry = Registry(redis, runtime.config.node_ttl_s)
    [announced] = await registry.nodes()
    assert (announced.node, announced.admits) == (me, True)

    node.draining = True  # as stop() begins: its live sessions are being ended
    with pytest.raises(Overloaded, match="shutting down"):
        await node._answer("join", {"session": "new", "sdp": "", "type": "offer", "questions": []})
    assert not node.status().admits
    await node.stop()
    assert await registry.nodes() == []  # gone at once, not after its TTL
    await runtime.db.close()

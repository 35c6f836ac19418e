"""The Redis Streams bus (rtserver/bus/redis.py) against a real, private redis-server
(tests/redis_server.py, one per test): ordered fan-out to several front ends, the stream's
cap and close, backfill then live with no gap (a real SQLite store behind the publisher),
Redis lost and back mid-session, and what one message costs Redis.

Each RedisBus here is what one process would hold: the "node" publishes, the "front ends"
subscribe. They share one event loop, but nothing else: each has its own connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from fake_websocket import FakeWebSocket
from redis_server import RedisServer

from rtserver.api.observers import CLOSE_NORMAL, CLOSE_TRY_AGAIN_LATER, stream_session
from rtserver.bus import MemoryBus, Subscription, bus_for
from rtserver.bus.redis import (
    CLOSED_STREAM_TTL_S,
    OPEN_STREAM_TTL_S,
    STREAM_MAXLEN,
    RedisBus,
    pack_message,
    stream_key,
    unpack_message,
)
from rtserver.config import Config
from rtserver.live.publisher import Publisher
from rtserver.live.runtime import Runtime
from rtserver.messages import AudioSecond, FinalMessage, SignalMessage, StoredMessage, VideoSecond
from rtserver.metrics import Metrics
from rtserver.scoring.rubric import Interview, score_interview
from rtserver.store import AsyncStore, Store

WAIT_S = 10.0  # the most any step here may take on a loaded 2-core box


def signal(session: str, t: int) -> SignalMessage:
    """A signal with every field filled, as a live second has."""
    return SignalMessage(
        session=session,
        t=t,
        video=VideoSecond(fps=14.9, face=0.93, box=(112, 64, 96, 118), frames=15),
        audio=AudioSecond(speech=0.62, loudness_dbfs=-27.4, pitch_hz=143.2, hops=100),
        lag_ms=312.5,
        emotion={"neutral": 0.71, "happy": 0.18, "surprise": 0.05, "sad": 0.06},
        fluency={"rate_sps": 3.9, "pause_ratio": 0.21},
        question=1,
    )


def stored(session: str, seq: int, kind: str = "signal") -> StoredMessage:
    payload = signal(session, seq).to_wire()
    payload["seq"] = seq
    return StoredMessage(session, seq, kind, payload)


async def received(subscription: Subscription) -> list[StoredMessage]:
    """Everything the subscription delivers until it is closed."""
    messages = []
    while (message := await asyncio.wait_for(subscription.get(), WAIT_S)) is not None:
        messages.append(message)
    return messages


async def ready(*subscriptions: Subscription) -> None:
    await asyncio.wait_for(asyncio.gather(*(s.ready() for s in subscriptions)), WAIT_S)


async def until(condition: Any, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class SlowReads(Store):
    """The real store, its message reads slow after their query, as a long backfill's
    (thousands of rows to fetch and encode): messages published meanwhile are not in it and
    must come live."""

    read_s = 0.0

    def messages(self, session_id: str, after_seq: int = -1) -> list[StoredMessage]:
        found = super().messages(session_id, after_seq)
        time.sleep(self.read_s)
        return found


def make_runtime(path: Path, bus: RedisBus, reads: Store | None = None) -> Runtime:
    """A node's runtime: the real SQLite store (writer thread, read threads) and ``bus``."""
    reads = reads if reads is not None else Store(path)
    metrics = Metrics()
    return Runtime(
        config=Config(data_dir=path.parent, analysis="decode"),
        store=reads,
        db=AsyncStore(reads, Store(path), metrics),
        bus=bus,
        metrics=metrics,
        executor=ThreadPoolExecutor(1),
        detector=None,
    )


def new_session(runtime: Runtime) -> str:
    record, _ = runtime.store.create_session("Ada", "Engineer", [])
    assert runtime.store.mark_live(record.id, "node-a")
    return record.id


def final(session: str) -> FinalMessage:
    return score_interview(Interview(session, [], "hangup", True, ()))


def is_contiguous(seqs: list[int], last: int) -> bool:
    return seqs == list(range(last + 1))


# -- fan-out, cap, close ----------------------------------------------------------------


async def test_two_front_ends_get_every_sessions_messages_in_order(
    redis_server: RedisServer,
) -> None:
    """A node publishes three sessions interleaved, in several batches; both front ends'
    subscriptions (two per session on the first) get exactly their session's messages, in
    seq order, then the close, and none is cut off."""
    metrics = Metrics()
    node = RedisBus(redis_server.url, metrics)
    front_a, front_b = RedisBus(redis_server.url), RedisBus(redis_server.url)
    counts = {"s1": 300, "s2": 120, "s3": 250}
    subscriptions = [
        (session, bus.subscribe(session))
        for bus in (front_a, front_a, front_b)
        for session in counts
    ]
    await ready(*(s for _, s in subscriptions))
    for seq in range(max(counts.values())):
        for session, count in counts.items():
            if seq < count:
                node.publish(stored(session, seq))
        if seq % 40 == 0:
            await asyncio.sleep(0)  # the publishing task sends what is queued so far
    for session in counts:
        node.close_session(session)
    await node.drain()
    assert metrics.bus_published.value() == sum(counts.values())
    for session, subscription in subscriptions:
        messages = await received(subscription)
        assert [m.seq for m in messages] == list(range(counts[session]))
        assert {m.session for m in messages} == {session}
        assert messages[7].payload == stored(session, 7).payload
        assert not subscription.overflowed
    assert front_a.subscriber_count() == front_b.subscriber_count() == 0
    for bus in (node, front_a, front_b):
        await bus.close()


async def test_the_stream_is_capped_near_its_stated_length(redis_server: RedisServer) -> None:
    """A long session keeps about STREAM_MAXLEN entries (Redis trims whole nodes of 100),
    the newest, and its stream carries the open TTL."""
    bus = RedisBus(redis_server.url)
    total = STREAM_MAXLEN + 1000
    for seq in range(total):
        bus.publish(stored("long", seq))
    await bus.drain()
    client = aioredis.from_url(redis_server.url)
    key = stream_key("long")
    length = await client.xlen(key)
    assert STREAM_MAXLEN <= length <= STREAM_MAXLEN + 100
    ((_, newest),) = await client.xrevrange(key, "+", "-", count=1)
    assert unpack_message(newest[b"m"]).seq == total - 1
    assert 0 < await client.ttl(key) <= OPEN_STREAM_TTL_S
    await client.aclose()
    await bus.close()


async def test_a_close_ends_subscriptions_after_the_final_and_expires_the_stream(
    redis_server: RedisServer,
) -> None:
    node, front = RedisBus(redis_server.url), RedisBus(redis_server.url)
    subscription = front.subscribe("s")
    await ready(subscription)
    for seq in range(5):
        node.publish(stored("s", seq))
    node.publish(stored("s", 5, kind="final"))
    node.close_session("s")
    await node.drain()
    messages = await received(subscription)
    assert [m.seq for m in messages] == [0, 1, 2, 3, 4, 5] and messages[-1].kind == "final"
    assert not subscription.overflowed
    client = aioredis.from_url(redis_server.url)
    assert 0 < await client.ttl(stream_key("s")) <= CLOSED_STREAM_TTL_S
    await client.aclose()
    # Subscribing after the close: ready, and ended at once (not cut off), not left waiting.
    late = front.subscribe("s")
    await ready(late)
    assert await asyncio.wait_for(late.get(), WAIT_S) is None and not late.overflowed
    await node.close()
    await front.close()


# -- backfill then live ------------------------------------------------------------------


async def test_backfill_then_live_has_no_gap_while_the_node_publishes(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A node publishes a session through the real store (commit, then Redis) while
    observers join on two other front ends at random moments, their backfill reads slowed
    so messages are published between a subscription's start and its read. Two kinds of
    observer, each must see every seq from 0 to the final exactly once, in order:

    - the bare algorithm (ready, backfill, live, drop seqs already seen), which checks
      Subscription.ready()'s promise alone: it fills no holes;
    - stream_session itself, the websocket's, through a FakeWebSocket.
    """
    random.seed(18)
    path = tmp_path / "db.sqlite3"
    node = RedisBus(redis_server.url)
    reads = SlowReads(path)
    runtime = make_runtime(path, node, reads)
    session = new_session(runtime)
    fronts = [RedisBus(redis_server.url), RedisBus(redis_server.url)]
    front_db = AsyncStore(reads, Store(path))  # a front end's own store handle
    reads.read_s = 0.03
    total_signals = 250
    published = asyncio.Event()

    async def publish() -> None:
        publisher = Publisher(runtime, session)
        for t in range(total_signals):
            publisher.publish(signal(session, t))
            if t == 20:
                published.set()
            await asyncio.sleep(random.uniform(0.0, 0.008))
        await publisher.finish(
            score_interview(Interview(session, [], "hangup", True, ())), "hangup"
        )

    async def bare_observer(bus: RedisBus) -> tuple[list[int], int]:
        """Seqs seen, and how many came live."""
        subscription = bus.subscribe(session)
        await subscription.ready()
        seqs = [m.seq for m in await front_db.messages(session)]
        from_store = len(seqs)
        while (live := await asyncio.wait_for(subscription.get(), WAIT_S)) is not None:
            if live.seq > (seqs[-1] if seqs else -1):
                seqs.append(live.seq)
        bus.unsubscribe(subscription)
        return seqs, len(seqs) - from_store

    async def websocket_observer(bus: RedisBus) -> FakeWebSocket:
        websocket = FakeWebSocket()
        await stream_session(websocket, session, front_db, bus, Metrics())  # type: ignore[arg-type]
        return websocket

    async def later(delay_s: float, work: Any) -> Any:
        await asyncio.sleep(delay_s)
        return await work

    publishing = asyncio.create_task(publish())
    await published.wait()
    bare = [
        asyncio.create_task(later(random.uniform(0, 1.2), bare_observer(fronts[i % 2])))
        for i in range(12)
    ]
    sockets = [
        asyncio.create_task(later(random.uniform(0, 1.2), websocket_observer(fronts[i % 2])))
        for i in range(12)
    ]
    await asyncio.wait_for(publishing, 30)
    last = total_signals  # the final's seq
    live_counts = []
    for seqs, live in await asyncio.wait_for(asyncio.gather(*bare), WAIT_S):
        assert is_contiguous(seqs, last), f"gap or repeat: {seqs}"
        live_counts.append(live)
    # Most joined mid-session: the switch from backfill to live was really exercised.
    assert sum(1 for live in live_counts if 0 < live < last) >= 6, live_counts
    for websocket in await asyncio.wait_for(asyncio.gather(*sockets), WAIT_S):
        assert is_contiguous(websocket.seqs(), last) and websocket.closed == CLOSE_NORMAL
    for bus in (node, *fronts):
        await bus.close()
    await runtime.db.close()
    await front_db.close()


async def test_an_observer_fills_a_hole_the_bus_left_from_the_store(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Messages the bus dropped (Redis was down, or its queue full) never reach Redis; the
    observer sees the hole in the seqs at the next live message and reads it from the
    store, so its websocket still gets every seq in order."""
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    record, _ = store.create_session("Ada", "Engineer", [])
    node, front = RedisBus(redis_server.url), RedisBus(redis_server.url)
    db = AsyncStore(store, Store(path))
    for seq in range(10):
        store.append_message(stored(record.id, seq))
    websocket = FakeWebSocket()
    observing = asyncio.create_task(
        stream_session(websocket, record.id, db, front, Metrics())  # type: ignore[arg-type]
    )
    await until(lambda: len(websocket.sent) == 10, "the backfill")
    for seq in range(10, 30):
        store.append_message(stored(record.id, seq, "final" if seq == 29 else "signal"))
    for seq in (10, 15, 29):  # the others were "dropped from the bus"
        node.publish(stored(record.id, seq, "final" if seq == 29 else "signal"))
    node.close_session(record.id)
    await asyncio.wait_for(observing, WAIT_S)
    assert is_contiguous(websocket.seqs(), 29) and websocket.closed == CLOSE_NORMAL
    await node.close()
    await front.close()
    await db.close()


# -- Redis lost ----------------------------------------------------------------------------


async def test_a_redis_restart_mid_session_loses_nothing_an_observer_sees(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis is killed (as a crash) and restarted empty while a node publishes a session and
    an observer watches it through a front end. The observer is told to reconnect (1013)
    with what it got in order; the node's publishing never raises and resumes on the new
    Redis; a new observer gets every seq from the store, then live, to the final. Nothing
    raises on the event loop, and each side logs the outage once."""
    caplog.set_level(logging.INFO, logger="rtserver.bus.redis")
    loop_errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: loop_errors.append(context))
    path = tmp_path / "db.sqlite3"
    node_metrics, front_metrics = Metrics(), Metrics()
    node = RedisBus(redis_server.url, node_metrics)
    front = RedisBus(redis_server.url, front_metrics)
    runtime = make_runtime(path, node)
    session = new_session(runtime)
    front_db = AsyncStore(Store(path), Store(path))
    restarted = asyncio.Event()
    total_signals = 300

    async def publish() -> None:
        publisher = Publisher(runtime, session)
        for t in range(total_signals):
            publisher.publish(signal(session, t))  # raises nothing, Redis or not
            await asyncio.sleep(0.01)
            if t == total_signals - 50:
                await asyncio.wait_for(restarted.wait(), WAIT_S)
        await publisher.finish(
            score_interview(Interview(session, [], "hangup", True, ())), "hangup"
        )

    publishing = asyncio.create_task(publish())
    first = FakeWebSocket()
    watching = asyncio.create_task(stream_session(first, session, front_db, front, Metrics()))  # type: ignore[arg-type]
    await until(lambda: len(first.sent) >= 30, "the first observer's messages")
    redis_server.stop(kill=True)
    await asyncio.wait_for(watching, WAIT_S)
    assert first.closed == CLOSE_TRY_AGAIN_LATER
    assert is_contiguous(first.seqs(), len(first.sent) - 1)
    assert front_metrics.bus_overflows.value(reason="redis_lost") == 1
    await until(lambda: node_metrics.bus_dropped.value(reason="redis_error") > 0, "a drop")
    assert not publishing.done()
    redis_server.start()
    restarted.set()
    before = node_metrics.bus_published.value()
    await until(lambda: node_metrics.bus_published.value() > before, "publishing again")
    client = aioredis.from_url(redis_server.url)
    assert await client.xlen(stream_key(session)) > 0  # the new, empty Redis has them
    await client.aclose()
    second = FakeWebSocket()
    await asyncio.wait_for(
        asyncio.gather(
            publishing,
            stream_session(second, session, front_db, front, Metrics()),  # type: ignore[arg-type]
        ),
        30,
    )
    assert is_contiguous(second.seqs(), total_signals) and second.closed == CLOSE_NORMAL
    assert json.loads(second.sent[-1])["type"] == "final"
    assert loop_errors == []
    logged = [r.getMessage() for r in caplog.records if r.name == "rtserver.bus.redis"]
    assert sum("publishing failed" in m for m in logged) == 1, logged
    assert sum("reading failed" in m for m in logged) == 1, logged
    assert sum("publishing again" in m for m in logged) == 1, logged
    for bus in (node, front):
        await bus.close()
    await runtime.db.close()
    await front_db.close()


async def test_with_redis_down_publish_never_waits_and_subscriptions_are_cut_off(
    redis_server: RedisServer,
) -> None:
    """Redis is down from the start: publish returns at once (past the queue's bound it
    drops, counted), drain returns once the queued batch failed, and a subscription gets
    ready and is closed as overflowed, so its observer reconnects later."""
    redis_server.stop()
    metrics = Metrics()
    bus = RedisBus(redis_server.url, metrics, queue_bound=100)
    started = time.perf_counter()
    for seq in range(1000):
        bus.publish(stored("s", seq))
    elapsed_s = time.perf_counter() - started
    assert elapsed_s < 0.5, f"1000 publishes took {elapsed_s:.3f} s"
    assert metrics.bus_dropped.value(reason="queue_full") == 900
    await asyncio.wait_for(bus.drain(), WAIT_S)
    assert metrics.bus_dropped.value(reason="redis_error") == 100
    assert metrics.bus_published.value() == 0
    subscription = bus.subscribe("s")
    await ready(subscription)
    assert await asyncio.wait_for(subscription.get(), WAIT_S) is None
    assert subscription.overflowed
    await bus.close()


def test_the_config_picks_the_bus() -> None:
    assert isinstance(bus_for(Config()), MemoryBus)
    bus = bus_for(Config(bus="redis://127.0.0.1:6390/2", role="front"))
    assert isinstance(bus, RedisBus) and bus.url == "redis://127.0.0.1:6390/2"


# -- what a message costs Redis -------------------------------------------------------------


async def test_redis_cost_per_message(redis_server: RedisServer) -> None:
    """The figures in rtserver/bus/redis.py's docstring, measured: a real signal with a
    real-length session id, published a "second" at a time (each sent alone, as one
    session's are). First the node alone (nobody reads), then with two front ends reading.
    Operations from INFO commandstats, bytes from INFO stats' network totals, memory from
    MEMORY USAGE; statistics reset (CONFIG RESETSTAT) before each phase."""
    client = aioredis.from_url(redis_server.url)
    count = 600

    async def phase(session: str, subscriptions: list[Subscription]) -> tuple[Any, Any]:
        await client.config_resetstat()
        for seq in range(count):
            node.publish(stored(session, seq))
            await node.drain()
            for subscription in subscriptions:
                message = await asyncio.wait_for(subscription.get(), WAIT_S)
                assert message is not None and message.seq == seq
        return await client.info("commandstats"), await client.info("stats")

    node = RedisBus(redis_server.url)
    alone = uuid.uuid4().hex  # as long as a real session id (32 characters)
    _, alone_stats = await phase(alone, [])
    watched = uuid.uuid4().hex
    fronts = [RedisBus(redis_server.url), RedisBus(redis_server.url)]
    subscriptions = [bus.subscribe(watched) for bus in fronts]
    await ready(*subscriptions)
    commands, stats = await phase(watched, subscriptions)
    memory = await client.memory_usage(stream_key(alone), samples=0)
    entries = await client.xlen(stream_key(alone))
    await client.aclose()
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in commands.items()}
    node_in = alone_stats["total_net_input_bytes"] / count
    node_out = alone_stats["total_net_output_bytes"] / count
    figures = {
        "xadd_per_message": calls.get("xadd", 0) / count,
        "expire_per_message": calls.get("expire", 0) / count,
        "xread_per_message_per_front_end": calls.get("xread", 0) / count / len(fronts),
        "node_bytes_in_per_message": node_in,
        "node_bytes_out_per_message": node_out,
        "front_end_bytes_in_per_message": (stats["total_net_input_bytes"] / count - node_in) / 2,
        "front_end_bytes_out_per_message": (stats["total_net_output_bytes"] / count - node_out) / 2,
        "memory_bytes_per_entry": memory / entries,
        "json_bytes_per_message": len(stored(watched, 0).encode()),
        "msgpack_bytes_per_message": len(pack_message(stored(watched, 0))),
    }
    print("redis bus cost:", {k: round(v, 2) for k, v in figures.items()})
    assert figures["xadd_per_message"] == 1.0
    assert figures["expire_per_message"] <= 3 / 256
    assert 0.5 <= figures["xread_per_message_per_front_end"] <= 1.1
    assert figures["node_bytes_in_per_message"] < figures["msgpack_bytes_per_message"] + 200
    assert figures["front_end_bytes_out_per_message"] < figures["msgpack_bytes_per_message"] + 200
    assert figures["memory_bytes_per_entry"] < 2 * figures["msgpack_bytes_per_message"]
    for bus in (node, *fronts):
        await bus.close()


async def test_a_restart_while_the_node_is_quiet_drops_nothing(redis_server: RedisServer) -> None:
    """Redis restarts between two messages: the node's pooled connection is dead, and is
    remade for the next message, which is not dropped."""
    metrics = Metrics()
    node = RedisBus(redis_server.url, metrics)
    node.publish(stored("s", 0))
    await node.drain()
    redis_server.restart()
    node.publish(stored("s", 1))
    await asyncio.wait_for(node.drain(), WAIT_S)
    assert metrics.bus_published.value() == 2
    assert metrics.bus_dropped.value(reason="redis_error") == 0
    await node.close()


async def test_a_close_redis_did_not_take_is_sent_once_it_is_back(
    redis_server: RedisServer,
) -> None:
    """A session ends while Redis is down: its final is dropped from the bus (the store has
    it) but its close is kept and sent once Redis is back, with nothing else published, so
    every observer's stream ends."""
    metrics = Metrics()
    node = RedisBus(redis_server.url, metrics)
    redis_server.stop()
    node.publish(stored("s", 0, kind="final"))
    node.close_session("s")
    await asyncio.wait_for(node.drain(), WAIT_S)
    assert metrics.bus_dropped.value(reason="redis_error") == 1
    redis_server.start()
    client = aioredis.from_url(redis_server.url)
    deadline = time.monotonic() + WAIT_S
    while not (entries := await client.xrevrange(stream_key("s"), "+", "-", count=1)):
        assert time.monotonic() < deadline, "the close never reached Redis"
        await asyncio.sleep(0.05)
    assert b"close" in entries[0][1]
    assert 0 < await client.ttl(stream_key("s")) <= CLOSED_STREAM_TTL_S
    await client.aclose()
    await node.close()

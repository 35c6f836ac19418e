"""The store off the event loop (rtserver/store/async_store.py): order, commit-before-bus, retries,
the bound, shutdown, and an event loop that a slow store no longer holds up.

The stores here are the real SQLite store, made slow or failing by overriding one method: a
write that sleeps, or raises ``sqlite3.OperationalError`` as a locked database does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_websocket import FakeWebSocket

from rtserver.api.app import routed_app
from rtserver.api.context import Api
from rtserver.api.observers import stream_session
from rtserver.bus import MemoryBus, Subscription
from rtserver.config import Config
from rtserver.errors import StoreUnavailable
from rtserver.live.publisher import Publisher
from rtserver.live.runtime import Runtime
from rtserver.live.session import LiveSession
from rtserver.messages import AudioSecond, SignalMessage, StoredMessage, VideoSecond
from rtserver.metrics import Metrics
from rtserver.scoring.rubric import Interview, score_interview
from rtserver.store import (
    STATUS_ENDED,
    Actor,
    AsyncStore,
    Store,
    StoreBacklogged,
    StoreClosed,
    engine,
)
from rtserver.store.encryption import Keyring
from rtserver.store.engine import StoreTarget

SLOW_WRITE_S = 0.2
SLOW_READ_S = 0.3
# The most the loop may run late while the store is slow: well under one slow call.
LAG_LIMIT_S = 0.1


class SlowStore(Store):
    """Every message write, audit row or message read takes its time, as on a busy disk or
    behind another process's lock."""

    write_s = 0.0
    read_s = 0.0

    def append_message(self, message: StoredMessage) -> None:
        time.sleep(self.write_s)
        super().append_message(message)

    def audit(
        self,
        actor: Actor,
        action: str,
        session_id: str | None,
        detail: str = "",
        obj: str | None = None,
    ) -> None:
        time.sleep(self.write_s)
        super().audit(actor, action, session_id, detail, obj)

    def messages(self, session_id: str, after_seq: int = -1) -> list[StoredMessage]:
        time.sleep(self.read_s)
        return super().messages(session_id, after_seq)


class FlakyStore(Store):
    """Message writes fail like a locked database: the first ``failures`` tries of each seq
    listed, then succeed; a random short delay on the others shuffles the timing."""

    def __init__(
        self, path: StoreTarget, failing: dict[tuple[str, int], int], keyring: Keyring | None = None
    ) -> None:
        super().__init__(path, keyring)
        self.failing = dict(failing)
        self.tries = 0

    def append_message(self, message: StoredMessage) -> None:
        self.tries += 1
        left = self.failing.get((message.session, message.seq), 0)
        if left:
            self.failing[(message.session, message.seq)] = left - 1
            raise sqlite3.OperationalError("database is locked")
        time.sleep(random.uniform(0.0, 0.002))
        super().append_message(message)


class GatedStore(Store):
    """Message writes wait for ``gate``: a writer stuck behind a lock, held at will."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()

    def append_message(self, message: StoredMessage) -> None:
        assert self.gate.wait(30.0)
        super().append_message(message)


class CheckingBus(MemoryBus):
    """A MemoryBus that records what it was given, checking on its own connection that
    every message it fans out is already committed."""

    def __init__(self, path: StoreTarget) -> None:
        super().__init__()
        self.check = engine.connect(path)
        self.events: list[tuple[str, str, int]] = []  # (what, session, seq)
        self.uncommitted: list[tuple[str, int]] = []
        self.status_at_final: dict[str, str | None] = {}  # session -> its status then

    def publish(self, message: StoredMessage) -> None:
        row = self.check.execute(
            "SELECT 1 FROM messages WHERE session_id = ? AND seq = ?",
            (message.session, message.seq),
        ).fetchone()
        if row is None:
            self.uncommitted.append((message.session, message.seq))
        if message.kind == "final":
            status = self.check.execute(
                "SELECT status FROM sessions WHERE id = ?", (message.session,)
            ).fetchone()
            self.status_at_final[message.session] = status[0] if status else None
        self.events.append((message.kind, message.session, message.seq))
        super().publish(message)

    def close_session(self, session_id: str) -> None:
        self.events.append(("close", session_id, -1))
        super().close_session(session_id)


def make_runtime(
    path: StoreTarget, writes: Store, bus: MemoryBus | None = None, **config: Any
) -> Runtime:
    reads, metrics = Store(path, writes.keyring), Metrics()
    data_dir = path.parent if isinstance(path, Path) else Path("unused-data-dir")
    return Runtime(
        config=Config(data_dir=data_dir, analysis="decode", **config),
        store=reads,
        db=AsyncStore(reads, writes, metrics),
        bus=bus if bus is not None else MemoryBus(),
        metrics=metrics,
        executor=ThreadPoolExecutor(1),
        detector=None,
    )


def signal(session: str, t: int) -> SignalMessage:
    return SignalMessage(
        session=session,
        t=t,
        video=VideoSecond(fps=10.0, face=1.0, box=(1, 2, 3, 4), frames=15),
        audio=AudioSecond(speech=0.5, loudness_dbfs=-30.0, pitch_hz=150.0, hops=100),
        lag_ms=300.0,
    )


async def drain(subscription: Subscription) -> list[StoredMessage]:
    received = []
    while (message := await asyncio.wait_for(subscription.get(), 10.0)) is not None:
        received.append(message)
    return received


async def max_loop_lag_during(work: Awaitable[Any], period_s: float = 0.01) -> tuple[float, Any]:
    """Runs ``work`` while a probe asks to wake every ``period_s``; returns the largest lag
    the probe saw (s) and the work's result."""
    lags: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            asked = time.monotonic()
            await asyncio.sleep(period_s)
            lags.append(time.monotonic() - asked - period_s)

    prober = asyncio.create_task(probe())
    await asyncio.sleep(period_s * 2)
    try:
        result = await work
    finally:
        done.set()
        await prober
    return max(lags), result


# -- the ordering invariant -----------------------------------------------------------


async def test_each_sessions_messages_reach_the_bus_in_order_after_commit_then_close(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    """Three sessions publish interleaved, as their tickers do, through a store whose writes
    fail now and then (a locked database, a lost connection) and take varying time. Each
    observer gets its session's messages in seq order, each only once committed, the final
    last (once the session reads as ended), then the close; nothing is lost or repeated.
    On SQLite and PostgreSQL."""
    random.seed(7)
    path = store_target
    setup = Store(path, keyring)
    sessions = [setup.create_session(None, None, [])[0].id for _ in range(3)]
    for session in sessions:
        assert setup.mark_live(session, "test-node")
    counts = dict(zip(sessions, (15, 9, 12), strict=True))
    failing = {(s, seq): random.choice([1, 2]) for s in sessions for seq in (0, 3, 7, 12)}
    bus = CheckingBus(path)
    runtime = make_runtime(path, FlakyStore(path, failing, keyring), bus)
    subscriptions = {s: bus.subscribe(s) for s in sessions}
    publishers = {s: Publisher(runtime, s) for s in sessions}

    async def run_session(session: str) -> None:
        for t in range(counts[session]):
            publishers[session].publish(signal(session, t))
            await asyncio.sleep(random.uniform(0.0, 0.003))
        final = score_interview(Interview(session, [], "hangup", True, ()))
        await publishers[session].finish(final, "hangup")

    await asyncio.gather(*(run_session(s) for s in sessions))
    received = {s: await drain(subscriptions[s]) for s in sessions}
    await runtime.db.close()

    assert bus.uncommitted == []
    failed = sum(n for (s, seq), n in failing.items() if seq <= counts[s])
    assert runtime.metrics.store_retries.value() == failed
    for session in sessions:
        seqs = [m.seq for m in received[session]]
        assert seqs == list(range(counts[session] + 1)), (session, seqs)
        assert [m.payload["t"] for m in received[session][:-1]] == list(range(counts[session]))
        assert received[session][-1].kind == "final"
        mine = [e for e in bus.events if e[1] == session]
        assert mine[-1] == ("close", session, -1) and mine[-2][0] == "final"
        stored = runtime.store.messages(session)
        assert [m.seq for m in stored] == seqs
        assert bus.status_at_final[session] == STATUS_ENDED


# -- failures, the bound, shutdown ------------------------------------------------------


async def test_a_permanent_failure_fails_that_write_alone_and_sends_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    bus = CheckingBus(path)
    runtime = make_runtime(path, Store(path), bus)
    subscription = bus.subscribe("s")
    publisher = Publisher(runtime, "s")
    await publisher.publish_and_wait(signal("s", 0))
    publisher.next_seq = 0  # a bug: the same seq twice breaks the primary key
    with pytest.raises(sqlite3.IntegrityError):
        await publisher.publish_and_wait(signal("s", 1))
    await publisher.publish_and_wait(signal("s", 2))  # seq 1: the writer goes on
    await runtime.db.after_writes(lambda: bus.close_session("s"))
    assert [m.payload["t"] for m in await drain(subscription)] == [0, 2]
    assert runtime.metrics.store_failures.value() == 1
    await runtime.db.close()


async def test_at_the_bound_the_publisher_is_refused_and_the_awaiting_path_waits(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    gated = GatedStore(path)
    runtime = make_runtime(path, gated)
    runtime.db.writer.bound = 4
    publisher = Publisher(runtime, "s")
    for t in range(4):
        publisher.publish(signal("s", t))
    with pytest.raises(StoreBacklogged):
        publisher.publish(signal("s", 4))
    assert publisher.next_seq == 4  # the refused message took no seq
    assert runtime.metrics.store_backlogged.value() == 1
    waiting = asyncio.create_task(publisher.publish_and_wait(signal("s", 4)))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # it waits for room rather than growing the queue
    gated.gate.set()
    stored = await asyncio.wait_for(waiting, 10.0)
    assert stored.seq == 4
    assert [m.seq for m in runtime.store.messages("s")] == [0, 1, 2, 3, 4]
    await runtime.db.close()


async def test_a_session_keeps_refused_seconds_and_publishes_them_in_order_later(
    tmp_path: Path,
) -> None:
    """The live path: a session whose seconds the full writer turns back keeps them, offers
    them again, and ends with every second, its final, and the close after it."""
    path = tmp_path / "db.sqlite3"
    gated = GatedStore(path)
    bus = CheckingBus(path)
    runtime = make_runtime(path, gated, bus)
    runtime.db.writer.bound = 2
    record, _ = runtime.store.create_session(None, None, [])
    assert runtime.store.mark_live(record.id, "test-node")
    subscription = bus.subscribe(record.id)
    session = LiveSession(runtime, record.id)
    with pytest.raises(StoreBacklogged):
        session.seconds.publish_seconds(range(5))
    assert [s.t for s in session.signals] == [0, 1]
    assert [t for t, _ in session.seconds._unpublished] == [2, 3, 4]
    gated.gate.set()
    await session.end("hangup")  # publishes what it kept, waiting for room, then the final
    received = await drain(subscription)
    await runtime.db.close()

    assert [m.payload["t"] for m in received if m.kind == "signal"] == [0, 1, 2, 3, 4]
    assert [m.seq for m in received] == list(range(6)) and received[-1].kind == "final"
    assert bus.events[-1] == ("close", record.id, -1) and bus.uncommitted == []
    ended = runtime.store.get_session(record.id)
    assert ended is not None and ended.status == STATUS_ENDED


async def test_close_writes_everything_queued_then_refuses_more(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    slow = SlowStore(path)
    slow.write_s = 0.002
    bus = CheckingBus(path)
    runtime = make_runtime(path, slow, bus)
    publisher = Publisher(runtime, "s")
    for t in range(200):
        publisher.publish(signal("s", t))
    assert runtime.db.writer.pending > 100  # most are still queued when the close begins
    await runtime.db.close()
    assert len(runtime.store.messages("s")) == 200
    assert [e[2] for e in bus.events] == list(range(200)) and bus.uncommitted == []
    with pytest.raises(StoreClosed):
        publisher.publish(signal("s", 200))


# -- the event loop stays free -----------------------------------------------------------


async def test_publishing_to_a_slow_store_does_not_block_the_event_loop(tmp_path: Path) -> None:
    """Before the writer thread, each publish wrote on the loop: with 0.2 s writes the loop
    stalled 0.2 s per second published. Now the loop stays on time while the writes, still
    slow, happen on the writer thread."""
    path = tmp_path / "db.sqlite3"
    slow = SlowStore(path)
    slow.write_s = SLOW_WRITE_S
    bus = CheckingBus(path)
    runtime = make_runtime(path, slow, bus)
    subscription = bus.subscribe("s")
    publisher = Publisher(runtime, "s")

    async def publish_like_a_ticker() -> float:
        started = time.monotonic()
        for t in range(6):
            publisher.publish(signal("s", t))
            await asyncio.sleep(0.05)
        await publisher.publish_and_wait(score_interview(Interview("s", [], "hangup", True, ())))
        return time.monotonic() - started

    lag_s, took_s = await max_loop_lag_during(publish_like_a_ticker())
    await runtime.db.after_writes(lambda: bus.close_session("s"))
    assert len(await drain(subscription)) == 7 and bus.uncommitted == []
    assert took_s >= 7 * SLOW_WRITE_S  # the store really was slow
    assert lag_s < LAG_LIMIT_S, f"the event loop ran {lag_s * 1000:.0f} ms late"
    await runtime.db.close()


async def test_backfill_from_a_slow_store_does_not_block_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    reads = SlowStore(path)
    runtime = make_runtime(path, Store(path))
    runtime.db = AsyncStore(reads, Store(path), runtime.metrics)
    publisher = Publisher(runtime, "s")
    for t in range(300):
        publisher.publish(signal("s", t))
    await publisher.publish_and_wait(score_interview(Interview("s", [], "hangup", True, ())))
    reads.read_s = SLOW_READ_S
    websocket = FakeWebSocket()
    streaming = stream_session(websocket, "s", runtime.db, runtime.bus, runtime.metrics)  # type: ignore[arg-type]
    lag_s, _ = await max_loop_lag_during(streaming)
    assert len(websocket.sent) == 301 and websocket.closed == 1000
    assert lag_s < LAG_LIMIT_S, f"the event loop ran {lag_s * 1000:.0f} ms late"
    await runtime.db.close()


async def test_report_and_audit_from_a_slow_store_do_not_block_the_event_loop(
    tmp_path: Path,
) -> None:
    """The HTTP handlers: a report read (slow reads) and its audit row (slow writes)."""
    path = tmp_path / "db.sqlite3"
    reads, writes = SlowStore(path), SlowStore(path)
    runtime = make_runtime(path, writes)
    runtime.db = AsyncStore(reads, writes, runtime.metrics)
    record, _ = runtime.store.create_session("Ada", "Engineer", [])
    publisher = Publisher(runtime, record.id)
    for t in range(100):
        publisher.publish(signal(record.id, t))
    await publisher.publish_and_wait(score_interview(Interview(record.id, [], "hangup", True, ())))
    api = Api(runtime, "key")
    app = routed_app(api, lambda app: _no_lifespan())
    reads.read_s, writes.write_s = SLOW_READ_S, SLOW_WRITE_S
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        get = client.get(
            f"/api/v1/sessions/{record.id}/report", headers={"Authorization": "Bearer key"}
        )
        lag_s, response = await max_loop_lag_during(get)
    assert response.status_code == 200, response.text
    report = response.json()
    assert len(report["signals"]) == 100 and report["final"]["type"] == "final"
    assert [e["action"] for e in runtime.store.audit_log(record.id)] == ["view_report"]
    assert lag_s < LAG_LIMIT_S, f"the event loop ran {lag_s * 1000:.0f} ms late"
    await runtime.db.close()


@contextlib.asynccontextmanager
async def _no_lifespan() -> AsyncIterator[None]:
    yield


class LockedAtCommitStore(Store):
    """``erase`` meets a lock at its COMMIT once, leaving its transaction open, as a
    writer in another process can cause."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.failed = False

    def erase(self, session_id: str) -> bool:
        if not self.failed:
            self.failed = True
            with self._locked() as db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
            raise sqlite3.OperationalError("database is locked")
        return super().erase(session_id)


async def test_a_write_failing_inside_its_transaction_is_retried_from_the_start(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    writes = LockedAtCommitStore(path)
    runtime = make_runtime(path, writes)
    record, _ = runtime.store.create_session("Ada", None, [])
    assert await asyncio.wait_for(runtime.db.erase(record.id), 10.0)
    erased = runtime.store.get_session(record.id)
    assert erased is not None and erased.candidate is None
    assert runtime.metrics.store_retries.value() == 1
    await runtime.db.close()


# -- deadlines of the writes HTTP handlers await ------------------------------------------


class LockedStore(Store):
    """A store whose session writes and reads fail as a locked (or unreachable) one does."""

    def create_session(self, *args: Any, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("database is locked")

    def get_session(self, session_id: str) -> Any:
        raise sqlite3.OperationalError("database is locked")


async def test_an_awaited_write_not_begun_by_its_deadline_is_refused_and_never_done(
    tmp_path: Path,
) -> None:
    """The writer is stuck on a session's second (the store is down); HR creating a session
    is answered StoreUnavailable at the deadline, and once the store is back the session is
    not made behind their back, while the second is written."""
    path = tmp_path / "db.sqlite3"
    gated = GatedStore(path)
    runtime = make_runtime(path, gated)
    runtime.db.write_deadline_s = 0.3
    Publisher(runtime, "s").publish(signal("s", 0))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"within 0\.3 s"):
        await runtime.db.create_session("Ada", None, [])
    assert 0.25 <= time.monotonic() - started < 2.0
    gated.gate.set()
    await runtime.db.close()
    assert [m.seq for m in runtime.store.messages("s")] == [0]
    assert runtime.store.list_sessions() == []  # withdrawn: never done


async def test_an_awaited_write_is_not_retried_past_its_deadline(tmp_path: Path) -> None:
    """A write that keeps failing (a locked file, PostgreSQL down) is given up at its
    deadline, with nothing committed; the writer goes on with the next write."""
    path = tmp_path / "db.sqlite3"
    runtime = make_runtime(path, LockedStore(path))
    runtime.db.write_deadline_s = 0.5
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await runtime.db.create_session("Ada", None, [])
    assert time.monotonic() - started < 2.0
    assert runtime.metrics.store_retries.value() >= 1
    await Publisher(runtime, "s").publish_and_wait(signal("s", 0))  # the writer goes on
    assert [m.seq for m in runtime.store.messages("s")] == [0]
    await runtime.db.close()


async def test_a_read_the_store_cannot_answer_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    reads = LockedStore(path)
    db = AsyncStore(reads, Store(path))
    with pytest.raises(StoreUnavailable, match="cannot answer"):
        await db.get_session("nope")
    await db.close()
    reads.close()

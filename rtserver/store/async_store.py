"""The store, off the event loop: one writer thread for every write, reads in threads.

The event loop carries every session's RTP, DTLS and ICE, so it must never wait on the store:
a write that waits out another process's lock (up to ``BUSY_TIMEOUT_S``), a slow disk, a
PostgreSQL server that is down or far away, or a report read of an hour of signals would
stall every peer at once. :class:`AsyncStore` is the
async face of :class:`rtserver.store.sqlite.Store` that the event loop uses:

- **Writes** (messages, session status, audit rows) go to one :class:`StoreWriter` thread, in
  the order they were submitted, each committed on its own. What must follow a write (a
  message's fan-out on the bus, a session's bus close) runs on the event loop after the write
  is committed, in the same order. So a message is in the store before any observer can see
  it live (backfill-then-live never misses one), a session's messages keep their order, and a
  session's bus close comes after its final. A final goes on the bus only once the session's
  ended status is committed too (``Publisher.finish`` in ``live/session.py``).
- **Failures**: a write that fails with an OperationalError (``engine.OPERATIONAL_ERRORS``:
  a SQLite database locked past the busy timeout, a full disk, an I/O error; PostgreSQL
  down, restarting or unreachable, a connection lost) is rolled back and retried, with
  backoff, on a fresh connection where the old one broke, until it succeeds; everything
  after it waits its turn. Other errors (a constraint broken, i.e. a
  bug) fail that one write, are logged, and are raised to whoever awaits it; what should have
  followed it does not run (a message that is not stored is never sent).
- **Deadlines**: a write an HTTP handler awaits (:class:`AsyncStore`'s, but ``mark_ended``)
  has ``HTTP_WRITE_DEADLINE_S``. If the writer has not begun it by then, it is withdrawn and
  never done, and the caller gets :class:`StoreUnavailable` (503, Retry-After); one that
  has begun is not tried again past its deadline (StoreUnavailable too, nothing committed),
  and one that commits on its first try stands. So with the store down, creating a session
  or joining one is refused within seconds, while the live sessions' seconds wait.
- **Outage bound**: with the store down, a live session's seconds wait in this queue, then
  (past ``WRITE_QUEUE_BOUND`` writes for the whole process) in the session itself, each
  summarised second kept in order (``live/seconds.py``) for as long as the interview lasts
  (``--max-interview``); none is dropped, and all are written in order once the store is
  back. Reads that fail (after one more try on a fresh connection) raise StoreUnavailable.
- **Bound**: at most ``WRITE_QUEUE_BOUND`` writes wait for the writer. At the bound,
  :meth:`StoreWriter.offer` (the per-second publisher's path, which must never wait) raises
  :class:`StoreBacklogged` and takes nothing: the session keeps its summarised seconds and
  offers them again on its next tick, so nothing is lost and the loop never blocks. The
  awaiting path (:meth:`StoreWriter.submit`: HTTP handlers, a session's final) waits for room.
- **Shutdown**: :meth:`StoreWriter.close` writes everything queued before it returns. Writes
  that still fail ``SHUTDOWN_RETRY_S`` after the close began are given up, each logged as an
  error with its session: a disk that never comes back cannot hold the process forever.
- **Reads** (backfill, reports, lists, token checks) run in a small thread pool on their own
  connection: readers never wait for the writer (SQLite's WAL, PostgreSQL's MVCC).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

from rtserver.errors import StoreUnavailable
from rtserver.messages import StoredMessage
from rtserver.metrics import Metrics
from rtserver.store import engine
from rtserver.store.records import (
    DEFAULT_EXPIRES_IN_S,
    ROOT_UNIT,
    Actor,
    Question,
    SessionRecord,
)
from rtserver.store.sqlite import Store

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Writes waiting for the writer thread. 4096 is ~85 s of 48 sessions' signals (~12 MB of
# messages): a store outage that long is absorbed here, and past it each session holds its
# own seconds (see StoreWriter.offer).
WRITE_QUEUE_BOUND = 4096
RETRY_FIRST_S = 0.05  # first wait before a failed write is tried again
RETRY_MAX_S = 2.0  # the wait doubles up to this
SHUTDOWN_RETRY_S = 30.0  # at shutdown, failing writes are given up this long after close()
READ_THREADS = 2  # reads queue on one connection; two threads keep one read from idling it
# How long a write an HTTP handler awaits may wait to be begun (s): a store that is down
# answers 503 within this, not when the client has long given up.
HTTP_WRITE_DEADLINE_S = 5.0


class StoreBacklogged(Exception):
    """The writer's queue is full: the write was not taken (try again later)."""


class StoreClosed(Exception):
    """The writer has been closed; no more writes are taken."""


@dataclass(eq=False)
class _Write:
    """One queued write: what to do with the store, and what must follow on the loop."""

    write: Callable[[Store], Any] | None  # None: only ``then``, in order after earlier writes
    then: Callable[[], None] | None  # runs on the event loop once ``write`` is committed
    future: asyncio.Future[Any] | None  # resolved on the event loop, after ``then``
    session: str | None = None  # for logs
    deadline: float | None = None  # monotonic time after which it is not begun or retried
    result: Any = None
    error: BaseException | None = field(default=None)
    # Under the writer's lock: begun by the writer, or withdrawn by its waiter first.
    begun: bool = False
    withdrawn: bool = False


class StoreWriter:
    """The one thread that writes to the store, in submission order (module docstring)."""

    def __init__(
        self, store: Store, metrics: Metrics | None = None, bound: int = WRITE_QUEUE_BOUND
    ) -> None:
        if bound < 1:
            raise ValueError("bound must be at least 1")
        self.store = store
        self.bound = bound
        self._metrics = metrics
        self._queue: deque[_Write] = deque()  # shared with the thread, under _wake
        self._wake = threading.Condition()
        self._closing_at: float | None = None  # monotonic time close() began
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Writes taken and not yet done (queued, or being written). Only the event loop
        # reads or changes it, so the bound needs no lock.
        self._pending = 0
        self._room = asyncio.Event()

    @property
    def pending(self) -> int:
        """Writes taken whose follow-up has not run yet."""
        return self._pending

    def offer(
        self,
        write: Callable[[Store], Any] | None,
        then: Callable[[], None] | None = None,
        session: str | None = None,
    ) -> asyncio.Future[Any]:
        """Queues a write without waiting; raises StoreBacklogged at the bound (nothing is
        queued then). The future resolves once it is committed and ``then`` has run."""
        if self._pending >= self.bound:
            if self._metrics is not None:
                self._metrics.store_backlogged.inc()
            raise StoreBacklogged(f"{self._pending} store writes are waiting")
        return self._enqueue(_Write(write, then, None, session))

    async def submit(
        self,
        write: Callable[[Store], Any] | None,
        then: Callable[[], None] | None = None,
        session: str | None = None,
        deadline_s: float | None = None,
    ) -> Any:
        """Queues a write (waiting for room at the bound) and returns its result once it is
        committed and ``then`` has run; raises what the write raised if it failed. With
        ``deadline_s``, StoreUnavailable when it was not begun (or could not be done
        without a retry) within that many seconds: then it is never done (module
        docstring)."""
        if deadline_s is None:
            await self.wait_for_room()
            return await self._enqueue(_Write(write, then, None, session))
        deadline = time.monotonic() + deadline_s
        try:
            await asyncio.wait_for(self.wait_for_room(), deadline_s)
        except TimeoutError:
            raise _unavailable(deadline_s) from None
        item = _Write(write, then, None, session, deadline)
        future = self._enqueue(item)
        try:
            return await asyncio.wait_for(
                asyncio.shield(future), max(0.0, deadline - time.monotonic())
            )
        except TimeoutError:
            with self._wake:
                if not item.begun:
                    item.withdrawn = True
            if item.withdrawn:
                raise _unavailable(deadline_s) from None
        # Begun in time: its one try (no retry past the deadline) decides.
        return await future

    def queue_action(
        self, then: Callable[[], None], session: str | None = None
    ) -> asyncio.Future[Any]:
        """Queues ``then`` after every write queued so far, whatever the bound: it holds no
        data, and a close that waited for room could be lost to a cancellation."""
        return self._enqueue(_Write(None, then, None, session))

    async def wait_for_room(self) -> None:
        """Returns once the queue is below its bound."""
        while self._pending >= self.bound:
            self._room.clear()
            await self._room.wait()

    def _enqueue(self, item: _Write) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        if self._closing_at is not None:
            raise StoreClosed("the store writer is closed")
        if self._thread is None:
            self._loop = loop
            self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
            self._thread.start()
        elif loop is not self._loop:
            raise RuntimeError("the store writer belongs to another event loop")
        item.future = loop.create_future()
        self._pending += 1
        self._count()
        with self._wake:
            self._queue.append(item)
            self._wake.notify()
        return item.future

    async def close(self) -> None:
        """Writes everything queued (see SHUTDOWN_RETRY_S), then stops the thread."""
        if self._closing_at is not None:
            return
        with self._wake:
            self._closing_at = time.monotonic()
            self._wake.notify()
        if self._thread is not None:
            # The thread's last follow-ups were scheduled before it ended: they run before
            # this await returns (the loop runs callbacks in the order they were scheduled).
            await asyncio.to_thread(self._thread.join)

    # -- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and self._closing_at is None:
                    self._wake.wait()
                if not self._queue:
                    return  # closing, and everything is written
                item = self._queue.popleft()
                late = item.deadline is not None and time.monotonic() >= item.deadline
                if item.withdrawn or late:
                    item.withdrawn = True  # never begun: its waiter hears StoreUnavailable
                else:
                    item.begun = True
            if item.withdrawn:
                item.error = _unavailable(None)
            else:
                self._write(item)
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._done, item)
            except RuntimeError:
                return  # the event loop is closed: nobody is left to tell

    def _write(self, item: _Write) -> None:
        """Runs one write, retrying what may pass (OperationalError) until it does, or
        until its deadline (if it has one)."""
        if item.write is None:
            return
        delay = RETRY_FIRST_S
        while True:
            try:
                item.result = item.write(self.store)
                return
            except engine.OPERATIONAL_ERRORS as exc:
                with contextlib.suppress(*engine.STORE_ERRORS):
                    self.store.rollback_open_transaction()
                if item.deadline is not None and time.monotonic() + delay >= item.deadline:
                    log.warning(
                        "store write failed (%s); not retried past its deadline",
                        exc,
                        extra={"session": item.session or "-"},
                    )
                    item.error = _unavailable(None)
                    item.error.__cause__ = exc
                    return
                closing_at = self._closing_at
                if closing_at is not None and time.monotonic() - closing_at > SHUTDOWN_RETRY_S:
                    log.error(
                        "store write given up at shutdown: %s",
                        exc,
                        extra={"session": item.session or "-"},
                    )
                    item.error = exc
                    return
                if self._metrics is not None:
                    self._metrics.store_retries.inc()
                log.warning(
                    "store write failed (%s); retrying in %.2f s",
                    exc,
                    delay,
                    extra={"session": item.session or "-"},
                )
                time.sleep(delay)
                delay = min(delay * 2.0, RETRY_MAX_S)
            except Exception as exc:
                # Not something waiting fixes (a broken constraint is a bug): this write
                # fails alone, and what should have followed it does not run.
                log.exception("store write failed", extra={"session": item.session or "-"})
                if self._metrics is not None:
                    self._metrics.store_failures.inc()
                item.error = exc
                return

    # -- back on the event loop -------------------------------------------------------

    def _count(self) -> None:
        if self._metrics is not None:
            self._metrics.store_queue.set(self._pending)

    def _done(self, item: _Write) -> None:
        self._pending -= 1
        self._count()
        if self._pending < self.bound:
            self._room.set()
        future = item.future
        try:
            if item.error is None and item.then is not None:
                item.then()
        except Exception as exc:
            log.exception("after a store write", extra={"session": item.session or "-"})
            item.error = item.error or exc
        if future is None or future.done():
            return
        if item.error is not None:
            future.set_exception(item.error)
            future.exception()  # retrieved: a write nobody awaits was logged already
        else:
            future.set_result(item.result)


class AsyncStore:
    """What the event loop calls instead of :class:`Store`: the same operations, awaited.

    ``reads`` serves reads in a thread pool; ``writes`` (its own connection) belongs to the
    writer thread. Each method says which it is.
    """

    def __init__(
        self,
        reads: Store,
        writes: Store,
        metrics: Metrics | None = None,
        write_deadline_s: float | None = HTTP_WRITE_DEADLINE_S,
    ) -> None:
        self.reads = reads
        self.writer = StoreWriter(writes, metrics)
        self.write_deadline_s = write_deadline_s
        self._executor = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="store-read")

    async def read(
        self, fn: Callable[Concatenate[Store, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(store, *args, **kwargs)`` on a read thread. StoreUnavailable when the store
        cannot answer: a connection found broken (a PostgreSQL restart) is replaced and the
        read tried once more first."""
        call = functools.partial(_read, fn, self.reads, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def write(
        self, fn: Callable[Concatenate[Store, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(store, *args, **kwargs)`` on the writer thread, after every earlier write,
        within ``write_deadline_s`` (StoreUnavailable past it: module docstring)."""
        result: T = await self.writer.submit(
            lambda store: fn(store, *args, **kwargs), deadline_s=self.write_deadline_s
        )
        return result

    async def close(self) -> None:
        """Writes what is queued, then closes the writer's connection and the read pool.
        The read connection (``reads``) is its owner's to close."""
        await self.writer.close()
        self._executor.shutdown(wait=True)
        self.writer.store.close()

    # -- messages ---------------------------------------------------------------------

    def offer_message(
        self, message: StoredMessage, then: Callable[[], None]
    ) -> asyncio.Future[Any]:
        """Queues ``message`` for the log without waiting; ``then`` (its fan-out) runs once
        it is committed, and then the future resolves. Raises StoreBacklogged at the bound
        (the message is not taken)."""
        return self.writer.offer(lambda store: store.append_message(message), then, message.session)

    def after_writes(
        self, action: Callable[[], None], session: str | None = None
    ) -> asyncio.Future[Any]:
        """Queues ``action`` to run on the loop once every write queued so far is done (a
        session's bus close, after its final); at once if the writer is closed. Queued
        whatever the bound (it carries no data), so it is never lost to a cancelled wait;
        await the future to know it has run."""
        try:
            return self.writer.queue_action(action, session)
        except StoreClosed:
            action()
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    async def messages(self, session_id: str, after_seq: int = -1) -> list[StoredMessage]:
        """Read: the session's log after ``after_seq``, in order."""
        return await self.read(lambda store: store.messages(session_id, after_seq))

    async def encoded_messages(
        self, session_id: str, after_seq: int = -1
    ) -> list[tuple[StoredMessage, str]]:
        """Read: the session's log after ``after_seq`` with each message's wire text, both
        made on the read thread (a long session's backfill is thousands of messages)."""
        return await self.read(_encoded_messages, session_id, after_seq)

    async def final_message(self, session_id: str) -> StoredMessage | None:
        """Read."""
        return await self.read(lambda store: store.final_message(session_id))

    # -- sessions ---------------------------------------------------------------------

    async def create_session(
        self,
        candidate: str | None,
        job: str | None,
        questions: list[Question],
        expires_in_s: float = DEFAULT_EXPIRES_IN_S,
        job_version: int | None = None,
        unit: str = ROOT_UNIT,
        retention_days: int | None = None,
    ) -> tuple[SessionRecord, str]:
        """Write: a new session of ``unit`` whose join link lasts ``expires_in_s``, and its
        join token; ``job_version`` when ``job`` is a job's id, and that job's
        ``retention_days``."""
        return await self.write(
            lambda store: store.create_session(
                candidate, job, questions, expires_in_s, job_version, unit, retention_days
            )
        )

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """Read."""
        return await self.read(lambda store: store.get_session(session_id))

    async def list_sessions(
        self, limit: int = 100, units: frozenset[str] | None = None
    ) -> list[SessionRecord]:
        """Read: the newest ``limit`` sessions, of ``units`` only when given."""
        return await self.read(lambda store: store.list_sessions(limit, units))

    async def check_join_token(self, session_id: str, token: str) -> bool:
        """Read."""
        return await self.read(lambda store: store.check_join_token(session_id, token))

    async def set_resume_secret(self, session_id: str, secret: str) -> bool:
        """Write: the hash of the session's resume secret; False when it already has one."""
        return await self.write(lambda store: store.set_resume_secret(session_id, secret))

    async def check_resume_secret(self, session_id: str, secret: str) -> bool:
        """Read."""
        return await self.read(lambda store: store.check_resume_secret(session_id, secret))

    async def sessions_with_status(self, status: str) -> list[str]:
        """Read."""
        return await self.read(lambda store: store.sessions_with_status(status))

    async def live_sessions_by_node(self) -> dict[str | None, list[str]]:
        """Read."""
        return await self.read(lambda store: store.live_sessions_by_node())

    async def mark_live(self, session_id: str, node: str) -> bool:
        """Write: created -> live on ``node``; False when the session was not waiting for
        its peer."""
        return await self.write(lambda store: store.mark_live(session_id, node))

    async def mark_ended(self, session_id: str, reason: str) -> None:
        """Write, after every write queued before it (a session's final among them); no
        deadline: a session's end is written whenever the store can take it."""
        await self.writer.submit(lambda store: store.mark_ended(session_id, reason))

    async def erase(self, session_id: str) -> bool:
        """Write: the candidate's data erased (the audit log stays); False when there is
        no such session or it is under a legal hold."""
        return await self.write(lambda store: store.erase(session_id))

    # -- audit log (store/audit_log.py) -----------------------------------------------

    async def audit(
        self,
        actor: Actor,
        action: str,
        session_id: str | None,
        detail: str = "",
        obj: str | None = None,
    ) -> None:
        """Write, returning once the row is committed: a view is logged before it is shown.
        A list read already written this minute for the same actor is folded (not written).
        ``detail`` holds ids and enums only; ``obj`` names a non-session object."""
        await self.write(lambda store: store.audit(actor, action, session_id, detail, obj))

    async def audit_log(
        self, session_id: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Read."""
        return await self.read(lambda store: store.audit_log(session_id, limit))

    async def audit_rows(
        self,
        since: float | None = None,
        until: float | None = None,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Read: a page of audit rows, oldest first (Store.audit_rows)."""
        return await self.read(lambda store: store.audit_rows(since, until, after_id, limit))

    async def prune_audit_log(self, before: float) -> int:
        """Write: one batch of audit rows older than ``before`` (unix s) pruned."""
        return await self.write(lambda store: store.prune_audit_log(before))


def _unavailable(deadline_s: float | None) -> StoreUnavailable:
    within = "in time" if deadline_s is None else f"within {deadline_s:g} s"
    return StoreUnavailable(f"the store could not take the write {within}; nothing was done")


def _read(fn: Callable[..., T], store: Store, *args: Any, **kwargs: Any) -> T:
    """``fn(store, ...)``, tried once more when it failed on a broken connection (reads
    are idempotent); StoreUnavailable when the store still cannot answer."""
    for attempt in range(2):
        try:
            return fn(store, *args, **kwargs)
        except engine.OPERATIONAL_ERRORS as exc:
            with contextlib.suppress(*engine.STORE_ERRORS):
                store.rollback_open_transaction()
            if attempt or not engine.connection_lost(exc):
                raise StoreUnavailable(f"the store cannot answer: {exc}") from exc
    raise AssertionError("unreachable")


def _encoded_messages(
    store: Store, session_id: str, after_seq: int
) -> list[tuple[StoredMessage, str]]:
    return [(m, m.encode()) for m in store.messages(session_id, after_seq)]

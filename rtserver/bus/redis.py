"""The bus for many hosts: Redis Streams, one stream per session (``--bus redis://…``).

A media node publishes each stored message of a session to the stream ``rt:stream:<id>``;
any front end's observers read it from there. What crosses Redis:

- **An entry per message**: ``XADD rt:stream:<id> MAXLEN ~ STREAM_MAXLEN * m <msgpack>``,
  where ``m`` packs ``[WIRE_VERSION, session, seq, kind, payload]`` (:func:`pack_message`).
  The stream keeps about ``STREAM_MAXLEN`` entries: observers never need more, since a
  backfill comes from the store.
- **A close per session**: an entry ``close 1`` after the final, then ``EXPIRE`` so an ended
  session's stream goes away ``CLOSED_STREAM_TTL_S`` later. An open stream carries a longer
  TTL, refreshed every ``REFRESH_TTL_EVERY`` messages, so a stream whose node died without
  closing it goes away too.

Publishing (:meth:`RedisBus.publish`) never blocks: it is called on the event loop once the
message is committed to the store (``store/async_store.py``). It queues the message (at most
``PUBLISH_QUEUE_BOUND``; past that, a message is dropped from the bus and counted) for one
task that sends the queue in order, as one pipeline per batch. **Redis down**: the batch in
flight is dropped from the bus, logged once per outage and counted
(``rtserver_bus_dropped_total``); the task retries with backoff. Nothing is lost for an
observer: the store has every message, and an observer that sees a hole in the seqs reads it
from the store (``api/observers.py``). A session's close is never dropped: it is retried until
Redis takes it, so every observer's stream ends.

Reading: one task per :class:`RedisBus` reads every subscribed stream with one
``XREAD BLOCK``, each stream from the last entry it delivered, and fans the entries out to
the stream's subscriptions. A subscription's start is fixed before :meth:`Subscription.ready`
returns: for a stream this bus already reads, the last entry it delivered; otherwise the
stream's last entry (``XREVRANGE … COUNT 1``, or ``0-0`` for an empty stream). Every entry
after that point is delivered; every entry up to it was added after its message was
committed, so a store read made after ``ready()`` holds it. That is what makes backfill then
live gapless across hosts (seq dedup absorbs the overlap). A new stream wakes the blocked
XREAD through this bus's own small wake stream, so it is read at once. **Redis lost while
reading**: every subscription is closed as overflowed (its observer gets 1013, reconnects,
and resumes from the store), and the task reconnects with backoff.

Cost, measured on a private redis-server 7.0 (2-core x86) by ``tests/test_redis_bus.py::
test_redis_cost_per_message``: 600 real signals of one session with a 32-character id, each
sent alone as one session's are, first with nobody reading, then with two front ends reading;
``CONFIG RESETSTAT`` before each phase, then ``INFO commandstats`` (operations), ``INFO stats``
``total_net_input_bytes``/``total_net_output_bytes`` (bytes) and ``MEMORY USAGE`` (memory):

- per published message, from the node: 1 XADD (and 1/256 EXPIRE), 521 bytes in and 23 out
  (the entry's ``m`` is 402 bytes of msgpack, against 398 of the JSON observers get);
- per message per front end reading the session: 1 XREAD, 210 bytes in and 508 out (an XREAD
  that finds several entries, of one stream or many, costs one operation for all of them);
- Redis memory: 515 bytes per entry, so a stream at its cap holds ~1 MB.

A session-second is one signal (transcripts add about one message per utterance), so a live
session costs Redis 1 + F operations a second, ~0.55 kB in and 0.5·F kB out, for the F front
ends that have an observer of it: 1 operation per session-second for a session nobody watches.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from rtserver.bus.base import SUBSCRIBER_QUEUE_BOUND, Subscription
from rtserver.messages import StoredMessage
from rtserver.metrics import Metrics

log = logging.getLogger(__name__)

STREAM_PREFIX = "rt:stream:"
WAKE_PREFIX = "rt:wake:"
WIRE_VERSION = 1  # of the packed entry; a reader skips (and logs) an entry of another version
# Entries a session's stream keeps (approximately: Redis trims whole nodes of 100 entries).
# 2048 is ~34 minutes of one-a-second signals; observers never read further back than their
# own subscription, and the store holds everything.
STREAM_MAXLEN = 2048
CLOSED_STREAM_TTL_S = 600  # an ended session's stream goes away 10 minutes after its close
OPEN_STREAM_TTL_S = 3600  # a stream nobody closes (its node died) goes away after an hour
REFRESH_TTL_EVERY = 256  # messages between refreshes of an open stream's TTL (~4 minutes)
# Messages waiting for the publishing task: ~85 s of 48 sessions' signals. Past it, a
# message is dropped from the bus (the store has it; observers read it from there).
PUBLISH_QUEUE_BOUND = 4096
PUBLISH_BATCH = 256  # queue items sent in one pipeline
READ_COUNT = 256  # entries per stream in one XREAD
# How long one XREAD waits for entries. New streams wake it, so this only bounds how late
# the reader notices a connection that died silently.
READ_BLOCK_MS = 2000
RECONNECT_FIRST_S = 0.1  # first wait after a failed Redis call; doubles up to the next
RECONNECT_MAX_S = 2.0
CONNECT_TIMEOUT_S = 2.0
CLOSE_DRAIN_S = 5.0  # at close, the most spent sending what is queued (Redis may be down)
COMMAND_TIMEOUT_S = 5.0  # a reply slower than this counts as Redis lost (plus the block)
WAKE_MAXLEN = 16
WAKE_TTL_S = 3600


def stream_key(session_id: str) -> str:
    return STREAM_PREFIX + session_id


def pack_message(message: StoredMessage) -> bytes:
    """The stream entry's ``m`` field: ``[WIRE_VERSION, session, seq, kind, payload]``."""
    packed: bytes = msgpack.packb(
        [WIRE_VERSION, message.session, message.seq, message.kind, message.payload]
    )
    return packed


def unpack_message(data: bytes) -> StoredMessage:
    """The message of an ``m`` field; ValueError when it is not one this version reads."""
    fields = msgpack.unpackb(data)  # its errors are ValueErrors
    if not isinstance(fields, list) or len(fields) != 5 or fields[0] != WIRE_VERSION:
        raise ValueError("not a version-1 message")
    _, session, seq, kind, payload = fields
    return StoredMessage(str(session), int(seq), str(kind), dict(payload))


# -- the publishing queue's items -------------------------------------------------------


@dataclass(frozen=True)
class _Close:
    session: str


@dataclass(eq=False)
class _Drained:
    """Resolved once every item queued before it is sent (or dropped)."""

    done: asyncio.Future[None]


@dataclass(frozen=True)
class _Wake:
    """Adds an entry to this bus's wake stream, so its blocked XREAD returns."""


_Item = StoredMessage | _Close | _Drained | _Wake


# -- reading ----------------------------------------------------------------------------


@dataclass(eq=False)
class _Stream:
    """A session's stream as this bus reads it: from ``last_id``, once it is fixed."""

    session: str
    key: str
    last_id: bytes | None = None  # None until the position is fixed
    positioned: asyncio.Event = field(default_factory=asyncio.Event)
    subscriptions: set[RedisSubscription] = field(default_factory=set)


class RedisSubscription(Subscription):
    """A subscription fed by a :class:`RedisBus`'s reader; :meth:`ready` waits for its start."""

    def __init__(self, session_id: str, stream: _Stream, bound: int) -> None:
        super().__init__(session_id, bound)
        self._stream = stream

    async def ready(self) -> None:
        """Returns once this subscription's start in the stream is fixed (module docstring):
        every message on Redis after it is delivered, every one before it is in the store.
        Also returns (and the subscription is closed as overflowed) if Redis is down."""
        await self._stream.positioned.wait()


class RedisBus:
    """The Redis Streams bus (module docstring). Its tasks start on the running loop at
    first use, so it may be built before the loop runs; :meth:`close` ends them."""

    def __init__(
        self,
        url: str,
        metrics: Metrics | None = None,
        *,
        maxlen: int = STREAM_MAXLEN,
        queue_bound: int = PUBLISH_QUEUE_BOUND,
        subscriber_bound: int = SUBSCRIBER_QUEUE_BOUND,
    ) -> None:
        self.url = url
        self.maxlen = maxlen
        self.queue_bound = queue_bound
        self.subscriber_bound = subscriber_bound
        self._metrics = metrics
        self._wake_key = WAKE_PREFIX + uuid.uuid4().hex
        self._closed = False
        # Publishing: only the event loop touches these.
        self._queue: deque[_Item] = deque()
        self._queued_messages = 0  # StoredMessages in _queue (the bound counts only them)
        self._have_work = asyncio.Event()
        self._unsent_closes: dict[str, None] = {}  # closes Redis did not take yet, in order
        self._since_ttl: dict[str, int] = {}  # session -> messages since its TTL was set
        self._publish_down = False
        self._writer_task: asyncio.Task[None] | None = None
        self._writes: aioredis.Redis | None = None
        # Reading.
        self._streams: dict[str, _Stream] = {}  # session -> stream
        self._by_key: dict[bytes, _Stream] = {}
        self._wake_id = b"0-0"
        self._read_down = False
        self._reader_task: asyncio.Task[None] | None = None
        self._reads: aioredis.Redis | None = None

    # -- Bus ----------------------------------------------------------------------------

    def publish(self, message: StoredMessage) -> None:
        """Queues ``message`` for Redis without waiting; drops it from the bus (counted) when
        the queue is full or the bus closed: the store has it."""
        if self._closed:
            self._dropped(1, "closed")
            return
        if self._queued_messages >= self.queue_bound:
            self._dropped(1, "queue_full")
            return
        self._queued_messages += 1
        self._enqueue(message)

    def subscribe(self, session_id: str) -> Subscription:
        """A subscription to the session's messages; await its ``ready()`` before reading
        the backfill."""
        if self._closed:
            # Ready at once and ended: the observer reconnects, to another front end.
            gone = _Stream(session_id, stream_key(session_id))
            gone.positioned.set()
            subscription = RedisSubscription(session_id, gone, self.subscriber_bound)
            subscription.overflowed = True
            subscription.close()
            return subscription
        stream = self._streams.get(session_id)
        if stream is None:
            stream = _Stream(session_id, stream_key(session_id))
            self._streams[session_id] = stream
            self._by_key[stream.key.encode()] = stream
            self._start_reader()
            self._enqueue(_Wake())  # the reader fixes its start now, not after a block
        # A stream already read starts this subscription after its last delivered entry
        # (or, still pending, at the position about to be fixed): either way, every entry
        # up to there was added before now, so its message is in the store already.
        subscription = RedisSubscription(session_id, stream, self.subscriber_bound)
        stream.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if not isinstance(subscription, RedisSubscription):
            return
        stream = subscription._stream  # not the session's newer stream, if it has one
        stream.subscriptions.discard(subscription)
        if not stream.subscriptions:
            self._forget(stream)  # the next XREAD leaves it out

    def close_session(self, session_id: str) -> None:
        """Adds the session's close after everything published so far (never dropped); its
        subscriptions, here and on other hosts, end when it is read back."""
        self._since_ttl.pop(session_id, None)
        if self._closed:
            return
        self._enqueue(_Close(session_id))

    async def drain(self) -> None:
        """Returns once everything published before the call is on Redis, or was dropped
        (Redis down: counted and logged). A node replies to ``end`` after this."""
        if self._writer_task is None and not self._queue:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(_Drained(done))
        await done

    async def close(self) -> None:
        """Sends what is queued (see :meth:`drain`), stops both tasks and closes every
        subscription as overflowed: its observer reconnects, to another front end."""
        if self._closed:
            return
        try:
            await asyncio.wait_for(self.drain(), CLOSE_DRAIN_S)
        except TimeoutError:
            log.warning("redis bus: closed with %d messages not sent", self._queued_messages)
        self._closed = True
        for task in (self._writer_task, self._reader_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._lose_all("bus_closed")
        for client in (self._writes, self._reads):
            if client is not None:
                await client.aclose()

    def subscriber_count(self) -> int:
        return sum(len(stream.subscriptions) for stream in self._streams.values())

    # -- publishing ---------------------------------------------------------------------

    def _enqueue(self, item: _Item) -> None:
        self._queue.append(item)
        self._have_work.set()
        if self._writer_task is None:
            self._writes = _client(self.url, COMMAND_TIMEOUT_S)
            self._writer_task = asyncio.get_running_loop().create_task(
                self._write_loop(), name="redis-bus-writer"
            )

    async def _write_loop(self) -> None:
        """Sends the queue in order, a batch per pipeline; backs off while Redis is down."""
        delay = RECONNECT_FIRST_S
        while True:
            if not self._queue and not self._unsent_closes:
                self._have_work.clear()
                await self._have_work.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(PUBLISH_BATCH, len(self._queue)))]
            self._queued_messages -= sum(isinstance(item, StoredMessage) for item in batch)
            try:
                ok = await self._send(batch)
            except Exception:
                # A bug, not Redis: the batch is lost to the bus, the task carries on (a dead
                # task would leave every drain() waiting).
                log.exception("redis bus: sending a batch failed")
                ok = False
            for item in batch:
                if isinstance(item, _Drained) and not item.done.done():
                    item.done.set_result(None)
            if ok:
                delay = RECONNECT_FIRST_S
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2.0, RECONNECT_MAX_S)

    async def _send(self, batch: list[_Item]) -> bool:
        """One pipeline: closes left over from an outage, then the batch, in order. True
        when Redis took all of it; what it did not take is counted (and closes kept)."""
        assert self._writes is not None
        pipe = self._writes.pipeline(transaction=False)
        sent: list[tuple[StoredMessage | _Close, int]] = []  # item, its first command
        commands = 0
        closes = [_Close(session) for session in self._unsent_closes]
        self._unsent_closes.clear()
        for item in [*closes, *batch]:
            if isinstance(item, StoredMessage):
                first = commands
                commands += self._queue_message(pipe, item)
                if commands > first:
                    sent.append((item, first))
            elif isinstance(item, _Close):
                key = stream_key(item.session)
                pipe.xadd(key, {"close": 1}, maxlen=self.maxlen, approximate=True)
                pipe.expire(key, CLOSED_STREAM_TTL_S)
                sent.append((item, commands))
                commands += 2
            elif isinstance(item, _Wake):
                pipe.xadd(self._wake_key, {"w": 1}, maxlen=WAKE_MAXLEN, approximate=True)
                pipe.expire(self._wake_key, WAKE_TTL_S)
                commands += 2
        if commands == 0:
            return True
        try:
            results: list[Any] = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            results = [exc] * commands  # nothing is known to have been taken
        failed = [item for item, first in sent if isinstance(results[first], Exception)]
        published = sum(isinstance(item, StoredMessage) for item, _ in sent) - sum(
            isinstance(item, StoredMessage) for item in failed
        )
        if self._metrics is not None and published:
            self._metrics.bus_published.inc(published)
        for item in failed:
            if isinstance(item, _Close):
                self._unsent_closes[item.session] = None  # retried with the next batch
        dropped = len(failed) - sum(isinstance(item, _Close) for item in failed)
        if dropped:
            self._dropped(dropped, "redis_error")
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            self._redis_error("publish", errors[0])
            if not self._publish_down:
                self._publish_down = True
                log.warning(
                    "redis bus: publishing failed (%s); messages are dropped from the bus"
                    " (observers read them from the store) until Redis is back",
                    errors[0],
                )
            return False
        if self._publish_down:
            self._publish_down = False
            log.info("redis bus: publishing again")
        return True

    def _queue_message(self, pipe: Any, message: StoredMessage) -> int:
        """Adds a message's commands to the pipeline; how many (0: it cannot be packed)."""
        try:
            packed = pack_message(message)
        except (TypeError, ValueError, OverflowError):
            log.exception("redis bus: message not packable", extra={"session": message.session})
            self._dropped(1, "unpackable")
            return 0
        key = stream_key(message.session)
        pipe.xadd(key, {"m": packed}, maxlen=self.maxlen, approximate=True)
        since = self._since_ttl.get(message.session)
        if since is None or since >= REFRESH_TTL_EVERY:
            # The first message, then every REFRESH_TTL_EVERY: a stream whose node dies
            # before its close still goes away, for 1/256 of an operation per message.
            pipe.expire(key, OPEN_STREAM_TTL_S)
            self._since_ttl[message.session] = 1
            return 2
        self._since_ttl[message.session] = since + 1
        return 1

    def _dropped(self, count: int, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.bus_dropped.inc(count, reason=reason)

    def _redis_error(self, side: str, exc: BaseException) -> None:
        if self._metrics is not None:
            self._metrics.bus_redis_errors.inc(side=side)
        log.debug("redis bus: %s failed: %r", side, exc)

    # -- reading ------------------------------------------------------------------------

    def _start_reader(self) -> None:
        if self._reader_task is None:
            # Its own connection: an XREAD BLOCK holds it for up to READ_BLOCK_MS.
            self._reads = _client(self.url, COMMAND_TIMEOUT_S + READ_BLOCK_MS / 1000.0)
            self._reader_task = asyncio.get_running_loop().create_task(
                self._read_loop(), name="redis-bus-reader"
            )

    async def _read_loop(self) -> None:
        """Fixes new streams' starts, reads every stream, fans out; on Redis lost, closes
        every subscription as overflowed and reconnects with backoff."""
        delay = RECONNECT_FIRST_S
        while True:
            try:
                await self._position_new_streams()
                reply = await self._read_once()
            except (RedisError, OSError) as exc:
                self._redis_error("read", exc)
                if not self._read_down:
                    self._read_down = True
                    log.warning(
                        "redis bus: reading failed (%s); observers are told to reconnect", exc
                    )
                self._lose_all("redis_lost")
                await asyncio.sleep(delay)
                delay = min(delay * 2.0, RECONNECT_MAX_S)
                continue
            if self._read_down:
                self._read_down = False
                log.info("redis bus: reading again")
            delay = RECONNECT_FIRST_S
            self._dispatch(reply)

    async def _position_new_streams(self) -> None:
        """Fixes the start of every stream not yet read: after its last entry (or from the
        beginning when it has none). A stream whose last entry is its close ends at once."""
        pending = [s for s in self._streams.values() if s.last_id is None]
        if not pending:
            return
        assert self._reads is not None
        pipe = self._reads.pipeline(transaction=False)
        for stream in pending:
            pipe.xrevrange(stream.key, "+", "-", count=1)
        results = await pipe.execute()
        for stream, entries in zip(pending, results, strict=True):
            if self._streams.get(stream.session) is not stream:
                continue  # unsubscribed meanwhile
            if entries and b"close" in entries[0][1]:
                self._end(stream, None)  # ended before the subscription
            else:
                stream.last_id = entries[0][0] if entries else b"0-0"
            stream.positioned.set()

    async def _read_once(self) -> Any:
        assert self._reads is not None
        positions: dict[Any, Any] = {
            s.key: s.last_id for s in self._streams.values() if s.last_id is not None
        }
        positions[self._wake_key] = self._wake_id
        return await self._reads.xread(positions, count=READ_COUNT, block=READ_BLOCK_MS)

    def _dispatch(self, reply: Any) -> None:
        """Delivers an XREAD reply's entries to their subscriptions, in order."""
        # RESP2 replies are a list of [key, entries]; RESP3 ones a map.
        streams = reply.items() if isinstance(reply, dict) else reply or ()
        for key, entries in streams:
            if key == self._wake_key.encode():
                self._wake_id = entries[-1][0]
                continue
            stream = self._by_key.get(key)
            if stream is None or stream.last_id is None:
                # Nobody here reads it any more; or it was unsubscribed and subscribed again
                # while this XREAD ran, and its new start (fixed next) is after these.
                continue
            for entry_id, fields in entries:
                stream.last_id = entry_id
                if b"close" in fields:
                    self._end(stream, None)
                    break
                self._deliver(stream, fields)

    def _deliver(self, stream: _Stream, fields: dict[bytes, bytes]) -> None:
        try:
            message = unpack_message(fields[b"m"])
        except (KeyError, ValueError, TypeError) as exc:
            # Skipped: the observer sees a hole in the seqs and reads it from the store.
            log.error("redis bus: unreadable entry (%s)", exc, extra={"session": stream.session})
            return
        for subscription in list(stream.subscriptions):
            subscription.deliver(message)
            if subscription.overflowed:
                stream.subscriptions.discard(subscription)
                self._overflowed("behind")
        if not stream.subscriptions:
            self._forget(stream)

    def _end(self, stream: _Stream, overflow: str | None) -> None:
        """Closes every subscription of the stream and stops reading it; as overflowed, for
        the reason ``overflow``, when that is given (its observers resume from the store)."""
        for subscription in stream.subscriptions:
            if overflow is not None:
                subscription.overflowed = True
                self._overflowed(overflow)
            subscription.close()
        stream.subscriptions.clear()
        stream.positioned.set()
        self._forget(stream)

    def _lose_all(self, reason: str) -> None:
        for stream in list(self._streams.values()):
            self._end(stream, reason)

    def _forget(self, stream: _Stream) -> None:
        if self._streams.get(stream.session) is stream:
            del self._streams[stream.session]
            del self._by_key[stream.key.encode()]

    def _overflowed(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.bus_overflows.inc(reason=reason)


def _client(url: str, timeout_s: float) -> aioredis.Redis:
    """A client that fails fast: the bus does its own backoff, and a call that waits out
    redis-py's default retries (10, backing off) would hold every message queued behind it.
    One immediate retry stays: a pooled connection that died while idle (Redis restarted
    between two messages) is remade instead of dropping the next batch. A retried pipeline
    may add an entry twice; observers drop the repeat by seq."""
    client: aioredis.Redis = aioredis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        retry=Retry(NoBackoff(), 1),
    )
    return client

"""Calls from front ends to media nodes over Redis: request/reply on lists.

A front end that needs a session's live state (a join, a rejoin, an end, a watch, the live
figures) calls the node that runs it: it pushes the call onto the node's list
``rt:calls:<node>`` and waits for the reply on its own list ``rt:replies:<client>``, where a
reader task matches replies to calls by id. The node pops its list (BLPOP), answers each call
with :func:`rtserver.server.calls.answer_call` on its session host, and pushes the reply.

Why lists and not pub/sub or HTTP: a call pushed while the node is busy or reconnecting waits
in its list instead of being lost; nodes need no inbound port beyond WebRTC; and Redis's
authentication (``requirepass``/ACL, ``rediss://`` for TLS) already guards who may talk.
With ``--cluster-secret`` (RTSERVER_CLUSTER_SECRET) each call and reply also carries an
HMAC-SHA256 of its body, and a node refuses a call that is unsigned or signed wrongly: whoever
can write to Redis still cannot start, end or watch a session.

A call carries its deadline (unix time): a node drops a call whose caller has given up, so a
node that comes back after a pause does not act on stale joins. Hosts keep their clocks in
step (NTP); a node allows ``CLOCK_SLACK_S`` of difference.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from redis.asyncio import Redis
from redis.exceptions import RedisError

from rtserver.cluster.loops import pause, stop_loop
from rtserver.errors import RtServerError, WorkerLost, error_from_code

log = logging.getLogger(__name__)

POLL_S = 1.0  # a blocking pop returns after this long, so a stop is noticed
REPLY_TTL_S = 60.0  # an unread reply list expires after this long
CLOCK_SLACK_S = 2.0  # hosts' clocks may differ by this much
RETRY_S = 0.5  # after a lost Redis connection, before trying again


def calls_key(node: str) -> str:
    return f"rt:calls:{node}"


def replies_key(client: str) -> str:
    return f"rt:replies:{client}"


class BadCall(Exception):
    """A call or reply that is malformed, unsigned or signed with another secret."""


@dataclass(frozen=True)
class Signer:
    """Signs and checks call bodies with the cluster secret; no secret: no signature."""

    secret: bytes = b""

    def seal(self, body: dict[str, Any]) -> bytes:
        packed = msgpack.packb(body, use_bin_type=True)
        return msgpack.packb([self._mac(packed), packed], use_bin_type=True)

    def open(self, raw: bytes) -> dict[str, Any]:
        try:
            mac, packed = msgpack.unpackb(raw, raw=False)
            body = msgpack.unpackb(packed, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise BadCall(f"unreadable: {exc}") from None
        if not isinstance(body, dict) or not isinstance(mac, bytes):
            raise BadCall("not a call")
        if not hmac.compare_digest(mac, self._mac(packed)):
            raise BadCall("wrong signature (is --cluster-secret the same everywhere?)")
        return body

    def _mac(self, packed: bytes) -> bytes:
        if not self.secret:
            return b""
        return hmac.new(self.secret, packed, hashlib.sha256).digest()


class CallClient:
    """A front end's side: calls nodes and waits for their replies."""

    def __init__(self, redis: Redis, signer: Signer) -> None:
        self.redis = redis
        self.signer = signer
        self.client = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        if self._reader is None:
            self._stop.clear()
            self._reader = asyncio.create_task(self._read_replies(), name="call-replies")

    async def close(self) -> None:
        await stop_loop(self._reader, self._stop)
        self._reader = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerLost("the front end is shutting down"))

    async def call(self, node: str, method: str, args: dict[str, Any], timeout_s: float) -> Any:
        """Calls ``method`` on ``node``; its value, or the typed error it raised. WorkerLost
        when Redis cannot be reached or the node does not answer within ``timeout_s``."""
        self.start()
        call_id = next(self._ids)
        body = {
            "id": call_id,
            "reply_to": replies_key(self.client),
            "method": method,
            "args": args,
            "deadline": time.time() + timeout_s,
        }
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        try:
            key = calls_key(node)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, self.signer.seal(body))
                # Calls to a node that is gone expire instead of piling up.
                pipe.pexpire(key, int((timeout_s + CLOCK_SLACK_S) * 1000))
                await pipe.execute()
            return await asyncio.wait_for(future, timeout_s)
        except RedisError as exc:
            raise WorkerLost(f"cannot reach the bus to call node {node}: {exc}") from None
        except TimeoutError:
            raise WorkerLost(f"node {node} did not answer {method} in {timeout_s:g} s") from None
        finally:
            self._pending.pop(call_id, None)

    async def _read_replies(self) -> None:
        key = replies_key(self.client)
        await _pop_each(self.redis, key, "call replies", self._resolve, self._stop)

    def _resolve(self, raw: bytes) -> None:
        try:
            reply = self.signer.open(raw)
        except BadCall as exc:
            log.error("dropped a call reply: %s", exc)
            return
        future = self._pending.get(reply.get("id", -1))
        if future is None or future.done():
            return  # its caller gave up
        error = reply.get("error")
        if error is None:
            future.set_result(reply.get("value"))
        else:
            future.set_exception(error_from_code(str(error), str(reply.get("detail", ""))))


Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class CallServer:
    """A node's side: answers the calls pushed onto its list, each in its own task."""

    def __init__(self, redis: Redis, node: str, signer: Signer, handler: Handler) -> None:
        self.redis = redis
        self.node = node
        self.signer = signer
        self.handler = handler
        self._tasks: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()  # set: serve() returns within POLL_S

    async def serve(self) -> None:
        """Pops and answers calls until :attr:`stopping` is set; the answers under way are
        finished first."""
        key = calls_key(self.node)
        await _pop_each(self.redis, key, "calls", self._start_answer, self.stopping)
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    def _start_answer(self, raw: bytes) -> None:
        task = asyncio.create_task(self._answer(raw))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, raw: bytes) -> None:
        try:
            call = self.signer.open(raw)
            call_id, reply_to = call["id"], str(call["reply_to"])
            method, args = str(call["method"]), dict(call["args"])
            deadline = float(call["deadline"])
        except (BadCall, KeyError, TypeError, ValueError) as exc:
            log.error("refused a call: %s", exc)
            return
        if time.time() > deadline + CLOCK_SLACK_S:
            log.warning("dropped a %s call its caller has given up on", method)
            return
        reply: dict[str, Any] = {"id": call_id}
        try:
            reply["value"] = await self.handler(method, args)
        except RtServerError as error:
            reply.update(error=error.code, detail=error.detail)
        except Exception as exc:
            log.exception("call %s failed", method)
            reply.update(error="internal", detail=repr(exc))
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(reply_to, self.signer.seal(reply))
                pipe.pexpire(reply_to, int(REPLY_TTL_S * 1000))
                await pipe.execute()
        except RedisError as exc:
            log.error("could not reply to a %s call: %s", method, exc)


async def _pop_each(
    redis: Redis, key: str, what: str, handle: Callable[[bytes], None], stop: asyncio.Event
) -> None:
    """Hands each entry pushed onto list ``key`` to ``handle``, in order, until ``stop`` is
    set (``loops.py``: never cancelled mid-command); a lost connection is retried (what
    was pushed meanwhile waits in the list)."""
    while not stop.is_set():
        try:
            popped = await redis.blpop([key], timeout=POLL_S)
        except RedisError as exc:
            log.warning("reading %s failed (%s); retrying", what, exc)
            await pause(stop, RETRY_S)
            continue
        if popped is not None:
            raw = popped[1]
            handle(raw.encode() if isinstance(raw, str) else raw)

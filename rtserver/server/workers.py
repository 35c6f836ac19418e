"""Worker processes: live sessions spread over several cores (``rtserver serve --workers N``).

One aiortc process tops out at a little over one core (the GIL), so with ``--workers N``
(N > 1) the server is split in two kinds of process:

- The **server process** (this module's :class:`WorkerPool`, used by ``api/app.py``) owns HTTP,
  every route, placement, and the observer websockets. It runs no peer and no model.
- Each **worker process** (``rtserver/server/worker.py``) owns whole live sessions: the candidate's
  peer connection, media paths, models and batcher, and the relay that ``/watch`` answers
  from. It loads and warms up its models before it says it is ready.

IPC. Each worker is started with one end of a ``socketpair`` (``pass_fds``); nothing listens
on a port or a path. Over it run framed msgpack messages (``rtserver/server/ipc.py``, the types in
``rtserver/messages.py``): the worker's bus (:class:`rtserver.server.ipc.IpcBus`) sends each
published :class:`~rtserver.messages.StoredMessage` and each session's close; the server
feeds them to its own :class:`~rtserver.bus.memory.MemoryBus`, so its observers get backfill from
the store and live messages from the bus exactly as with one process (deduplicated by seq).

Forwarding. Requests that need a session's live state are calls over the same channel
(request/response matched by id) rather than HTTP proxied to per-worker ports: the server
keeps authentication, validation and the audit log in one place, a worker needs no HTTP
server, and one ordered stream means a call's reply arrives after every message the call
published (``/end`` returns after the final is on the server's bus). Calls: ``join`` (a new
session, on the least-loaded ready worker: fewest sessions), ``reconnect``, ``end``,
``watch`` and ``live`` (to the worker that owns the session), and ``shutdown``. Typed
errors come back by code and are raised again here.

Metrics. Every process of the run keeps its metrics in files of one private directory
(``rtserver/metrics.py``; its path is in each worker's start message), and ``/metrics`` reads
them all here, without a call: counters summed over every process the run has had, gauges
over the live ones. A worker that exits is forgotten there, so its gauges go with it.

Store. Workers write their sessions' messages and statuses to the same SQLite file the
server reads (and writes sessions and the audit log to); WAL mode and a busy timeout
(``store/sqlite.py``) make concurrent writers wait instead of failing. A message is in the store
before it is sent to the server (each process writes on its own writer thread and sends a
message on only once it is committed: ``store/async_store.py``), which is what makes
backfill-then-live lossless.

Failure. A worker that dies (its channel closes) has its sessions ended by the server as a
restart would end them: a final scored from the stored signals, ``end_reason``
``"worker_restart"``, nothing already published lost. It is then started again. On
shutdown every worker ends its sessions and exits; workers also exit when the server's end
of the channel closes, and ask the kernel for SIGTERM if the server dies (no orphans).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCSessionDescription

from rtserver.config import config_to_wire
from rtserver.errors import AtCapacity, Conflict, Overloaded, WorkerLost, error_from_code
from rtserver.live.manager import finish_sessions
from rtserver.live.runtime import Runtime
from rtserver.messages import (
    WorkerCall,
    WorkerClose,
    WorkerPublish,
    WorkerReady,
    WorkerReply,
    WorkerStart,
)
from rtserver.server.calls import offer_to_wire
from rtserver.server.cpu_budget import CpuBudget
from rtserver.server.ipc import Channel

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 180.0  # a worker loads and warms up its models in this time, or is killed
CALL_TIMEOUT_S = 60.0  # a call unanswered for this long fails (joins gather ICE first)
SHUTDOWN_TIMEOUT_S = 20.0  # for the workers to end their sessions and exit
RESTART_DELAY_S = 1.0  # before a dead worker is started again


@dataclass
class Worker:
    """The server's handle on one worker process."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    channel: Channel | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    sessions: set[str] = field(default_factory=set)  # placed here: joining or live
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)  # call id -> reply
    restarts: int = 0
    pid_ready: int | None = None  # the pid of the last process that said it was ready
    reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class WorkerPool:
    """Runs the live sessions in worker processes; the server's :class:`SessionHost`."""

    def __init__(self, runtime: Runtime, count: int) -> None:
        self.runtime = runtime
        if runtime.metrics.shared is None:
            raise RuntimeError("worker processes need shared metrics (share_between_processes)")
        self.metrics = runtime.metrics.shared
        self.workers = [Worker(i) for i in range(count)]
        self._ids = itertools.count(1)
        # The machine's CPU budget: this process places every session, so it alone keeps it.
        config = runtime.config
        self.cpu_budget = CpuBudget(
            config.max_cpu, config.analysis, self.live_count, prior_cores=config.session_cpu
        )
        self._stopping = False
        # Set when a worker dies before it was ever ready: the server cannot start.
        self._broken: asyncio.Event = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Starts every worker and waits until all have loaded their models."""
        for worker in self.workers:
            await self._spawn(worker)
        ready: asyncio.Future[Any] = asyncio.gather(*(w.ready.wait() for w in self.workers))
        broken: asyncio.Future[Any] = asyncio.ensure_future(self._broken.wait())
        done, _ = await asyncio.wait(
            {ready, broken}, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        ready.cancel()
        broken.cancel()
        if ready not in done:
            raise RuntimeError("a worker process failed to start (see its log above)")
        # Read the machine from now on: the workers' start-up (model loading, JIT) is no
        # measure of what it does for sessions.
        self.cpu_budget.start()
        log.info("%d workers ready", len(self.workers))

    async def _spawn(self, worker: Worker) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            worker.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rtserver.server.worker",
                    str(theirs.fileno()),
                    str(os.getpid()),
                ],
                pass_fds=(theirs.fileno(),),
            )
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        worker.channel = Channel(reader, writer)
        config = config_to_wire(self.runtime.config)
        worker.channel.send(WorkerStart(worker.index, config, str(self.metrics.path)))
        worker.reader = asyncio.create_task(self._read(worker), name=f"worker-{worker.index}")
        log.info("worker %d started (pid %d)", worker.index, worker.process.pid)

    async def _read(self, worker: Worker) -> None:
        """Feeds what a worker sends to the server's bus and pending calls, until it is gone."""
        channel = worker.channel
        assert channel is not None
        try:
            while (message := await channel.recv()) is not None:
                if isinstance(message, WorkerPublish):
                    self.runtime.bus.publish(message.message)
                elif isinstance(message, WorkerClose):
                    worker.sessions.discard(message.session)
                    self.runtime.bus.close_session(message.session)
                elif isinstance(message, WorkerReply):
                    self._resolve(worker, message)
                elif isinstance(message, WorkerReady):
                    if not self.runtime.backends:
                        self.runtime.backends.update(message.backends)
                    worker.ready.set()
                    worker.pid_ready = message.pid
                    log.info("worker %d ready (pid %d)", worker.index, message.pid)
        except Exception:
            log.exception("worker %d sent something unreadable", worker.index)
        await self._lost(worker)

    def _resolve(self, worker: Worker, reply: WorkerReply) -> None:
        future = worker.pending.pop(reply.id, None)
        if future is None or future.done():
            return
        if reply.error is None:
            future.set_result(reply.value)
        else:
            future.set_exception(error_from_code(reply.error, reply.detail))

    async def _lost(self, worker: Worker) -> None:
        """The worker's channel closed: reaps it, ends its sessions, starts a new one."""
        if not worker.ready.is_set() and worker.pid_ready is None:
            self._broken.set()  # it never got as far as loading its models
        worker.ready.clear()
        if worker.channel is not None:
            worker.channel.close()
        for future in worker.pending.values():
            if not future.done():
                future.set_exception(WorkerLost(f"worker {worker.index} stopped"))
        worker.pending.clear()
        process = worker.process
        if process is not None:
            code = await asyncio.to_thread(_reap, process, 5.0)
            self.metrics.forget(process.pid)  # its live sessions, store queue, lags
            if not self._stopping:
                log.error("worker %d (pid %d) died with %s", worker.index, process.pid, code)
        ended = await finish_sessions(self.runtime, list(worker.sessions), "worker_restart")
        worker.sessions.clear()
        if ended:
            log.warning("worker %d: ended %d sessions it left live", worker.index, len(ended))
        if self._stopping:
            return
        worker.restarts += 1
        await asyncio.sleep(RESTART_DELAY_S)
        if not self._stopping:
            await self._spawn(worker)

    async def shutdown(self) -> None:
        """Ends every worker's sessions, then stops the workers (killed if they hang)."""
        self._stopping = True
        await self.cpu_budget.stop()
        calls = [
            self._call(w, "shutdown", timeout_s=SHUTDOWN_TIMEOUT_S)
            for w in self.workers
            if w.ready.is_set()
        ]
        await asyncio.gather(*calls, return_exceptions=True)
        for worker in self.workers:
            if worker.channel is not None:
                worker.channel.close()
        readers = [w.reader for w in self.workers if w.reader is not None]
        await asyncio.gather(*readers, return_exceptions=True)

    # -- calls ------------------------------------------------------------------------

    async def _call(
        self,
        worker: Worker,
        method: str,
        args: dict[str, Any] | None = None,
        timeout_s: float = CALL_TIMEOUT_S,
    ) -> Any:
        """Calls ``method`` on ``worker``; its value, or the typed error it raised."""
        channel = worker.channel
        if channel is None or channel.closed:
            raise WorkerLost(f"worker {worker.index} is not running")
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        worker.pending[call_id] = future
        channel.send(WorkerCall(call_id, method, args or {}))
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise WorkerLost(f"worker {worker.index} did not answer {method}") from None
        finally:
            worker.pending.pop(call_id, None)

    def _owner(self, session_id: str) -> Worker | None:
        for worker in self.workers:
            if session_id in worker.sessions:
                return worker
        return None

    def _placements(self) -> list[Worker]:
        """The ready workers, least loaded first: fewest sessions, then lowest index."""
        ready = [w for w in self.workers if w.ready.is_set()]
        if not ready:
            raise WorkerLost("no worker is ready; try again in a few seconds")
        return sorted(ready, key=lambda w: (len(w.sessions), w.index))

    # -- SessionHost ------------------------------------------------------------------

    async def join(
        self, session_id: str, offer: RTCSessionDescription, questions: Sequence[str] = ()
    ) -> RTCSessionDescription:
        if self._owner(session_id) is not None:
            raise Conflict("session is already live")
        capacity = self.runtime.config.session_limit
        if self.live_count() >= capacity:
            raise AtCapacity(f"server is at its capacity of {capacity} live sessions")
        self.cpu_budget.start()
        place = self.cpu_budget.reserve()
        try:
            return await self._place(session_id, offer, questions)
        except BaseException:
            self.cpu_budget.release(place)
            raise

    async def _place(
        self, session_id: str, offer: RTCSessionDescription, questions: Sequence[str]
    ) -> RTCSessionDescription:
        """Joins the session on the least loaded worker that takes it."""
        args = {"session": session_id, **offer_to_wire(offer), "questions": list(questions)}
        refusals: list[Overloaded] = []
        for worker in self._placements():
            worker.sessions.add(session_id)
            try:
                answer = await self._call(worker, "join", args)
            except Overloaded as exc:
                # That worker is falling behind; another may still have room.
                worker.sessions.discard(session_id)
                refusals.append(exc)
                continue
            except BaseException:
                worker.sessions.discard(session_id)
                raise
            log.info("placed on worker %d", worker.index, extra={"session": session_id})
            return RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])
        raise Overloaded(f"every worker is overloaded: {refusals[-1].detail}")

    async def reconnect(
        self, session_id: str, offer: RTCSessionDescription
    ) -> RTCSessionDescription:
        worker = self._owner(session_id)
        if worker is None:
            raise Conflict("session is live in another process")
        answer = await self._call(
            worker, "reconnect", {"session": session_id, **offer_to_wire(offer)}
        )
        return RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])

    async def end(self, session_id: str, reason: str) -> bool:
        worker = self._owner(session_id)
        if worker is None:
            return False
        return bool(await self._call(worker, "end", {"session": session_id, "reason": reason}))

    async def watch(self, session_id: str, offer: RTCSessionDescription) -> RTCSessionDescription:
        worker = self._owner(session_id)
        if worker is None:
            raise Conflict("session is not live")
        answer = await self._call(worker, "watch", {"session": session_id, **offer_to_wire(offer)})
        return RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])

    async def live_figures(self, session_id: str) -> dict[str, Any] | None:
        worker = self._owner(session_id)
        if worker is None:
            return None
        with contextlib.suppress(WorkerLost):
            figures = await self._call(worker, "live", {"session": session_id})
            return dict(figures) if figures is not None else None
        return None

    def live_count(self) -> int:
        return sum(len(w.sessions) for w in self.workers)

    def health(self) -> dict[str, Any]:
        return {
            "workers": [
                {
                    "index": w.index,
                    "pid": w.pid,
                    "ready": w.ready.is_set(),
                    "live_sessions": len(w.sessions),
                    "restarts": w.restarts,
                }
                for w in self.workers
            ]
        }

    async def render_metrics(self) -> str:
        """Every process's metrics, read from the run's metrics files (no worker is asked)."""
        self.runtime.metrics.observe_cpu_budget(self.cpu_budget)
        return self.runtime.metrics.render()


def _reap(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """Waits for a process to exit, killing it after ``timeout_s``; its exit status."""
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()

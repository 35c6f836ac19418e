"""One worker process: runs whole live sessions for the server process (see server/workers.py).

Started as ``python -m rtserver.server.worker FD PARENT_PID`` with FD its end of the channel. It
reads its configuration from the channel, loads and warms up the models, says it is
ready, then answers calls until the server asks it to shut down or goes away. It ignores
SIGINT (a Ctrl-C reaches the whole process group; the server decides when workers stop)
and ends its sessions on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rtserver.bus.ipc import IpcBus
from rtserver.config import config_from_wire
from rtserver.errors import RtServerError
from rtserver.live.manager import SessionManager
from rtserver.live.runtime import build_runtime, start_queues, stop_queues, warm_up
from rtserver.logs import setup_logging
from rtserver.media.ice import (
    parse_port_range,
    quicken_consent_checks,
    restrict_host_addresses,
    restrict_host_ports,
)
from rtserver.messages import WorkerCall, WorkerReady, WorkerReply, WorkerStart
from rtserver.metrics import share_between_processes
from rtserver.server.calls import answer_call
from rtserver.server.ipc import Channel

log = logging.getLogger("rtserver.server.worker")  # __name__ is __main__ under -m

_PR_SET_PDEATHSIG = 1
GAUGE_PERIOD_S = 1.0  # how often the loop and signal lag gauges are brought up to date


def _die_with_parent(parent_pid: int) -> None:
    """Asks Linux for SIGTERM when the server process dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # it died before the request took effect
        sys.exit(0)


class WorkerServer:
    """Answers the server's calls with this process's :class:`SessionManager`."""

    def __init__(self, manager: SessionManager, channel: Channel) -> None:
        self.manager = manager
        self.channel = channel
        self.stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        """Answers calls until the channel closes or a shutdown is asked for."""
        tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._keep_gauges())]
        await self.stop.wait()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep_gauges(self) -> None:
        """Copies admission control's readings into their gauges every GAUGE_PERIOD_S: the
        server process reads them from the metrics files, without asking this one."""
        while True:
            self.manager.runtime.metrics.observe_admission(self.manager.admission)
            await asyncio.sleep(GAUGE_PERIOD_S)

    async def _receive(self) -> None:
        while (message := await self.channel.recv()) is not None:
            if isinstance(message, WorkerCall):
                task = asyncio.create_task(self._answer(message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        self.stop.set()  # the server is gone

    async def _answer(self, call: WorkerCall) -> None:
        try:
            value = await self._dispatch(call.method, call.args)
            reply = WorkerReply(call.id, value)
        except RtServerError as error:
            reply = WorkerReply(call.id, error=error.code, detail=error.detail)
        except Exception as exc:
            log.exception("call %s failed", call.method)
            reply = WorkerReply(call.id, error="internal", detail=f"{exc!r}")
        self.channel.send(reply)

    async def _dispatch(self, method: str, args: dict[str, Any]) -> Any:
        if method == "shutdown":
            await self.manager.shutdown()
            self.stop.set()
            return True
        return await answer_call(self.manager, method, args)


async def run(sock: socket.socket) -> None:
    """The worker's whole life, from its configuration to the end of its last session."""
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    channel = Channel(reader, writer)
    start = await channel.recv()
    if not isinstance(start, WorkerStart):
        return
    config = config_from_wire(start.config)
    share_between_processes(Path(start.metrics_dir))  # before build_runtime makes the metrics
    setup_logging(config.log_level)
    restrict_host_addresses(config.ice_addresses)
    restrict_host_ports(parse_port_range(config.udp_ports))  # shared with the other workers
    quicken_consent_checks()
    loop = asyncio.get_running_loop()
    # The server process fetched the models before starting this worker: verify only.
    runtime = build_runtime(config, bus=IpcBus(channel), fetch_missing_models=False)
    manager = SessionManager(runtime, places_sessions=False)  # the server keeps the CPU budget
    server = WorkerServer(manager, channel)
    loop.add_signal_handler(signal.SIGTERM, server.stop.set)
    try:
        await loop.run_in_executor(runtime.executor, warm_up, runtime)
        start_queues(runtime)
        channel.send(WorkerReady(start.index, os.getpid(), runtime.backends))
        log.info("worker %d ready", start.index)
        await server.serve()
    finally:
        await manager.shutdown()  # no-op after a shutdown call; else ends what is left
        await stop_queues(runtime)
        # Everything queued is written, and so sent on, before the channel closes.
        await runtime.db.close()
        await channel.drain()
        channel.close()
        runtime.executor.shutdown(wait=False, cancel_futures=True)
        runtime.store.close()
        if runtime.outbox is not None:
            runtime.outbox.close()


def main(argv: Sequence[str]) -> int:
    fd, parent_pid = int(argv[0]), int(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    sock = socket.socket(fileno=fd)
    asyncio.run(run(sock))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

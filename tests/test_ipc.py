"""The server <-> worker channel: framed msgpack messages in order, and the worker's bus."""

from __future__ import annotations

import asyncio
import socket

from rtserver.bus.ipc import IpcBus
from rtserver.messages import (
    StoredMessage,
    WorkerCall,
    WorkerClose,
    WorkerPublish,
    WorkerReply,
    WorkerStart,
)
from rtserver.server.ipc import Channel


async def channel_pair() -> tuple[Channel, Channel]:
    a, b = socket.socketpair()
    ends = []
    for sock in (a, b):
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        ends.append(Channel(reader, writer))
    return ends[0], ends[1]


async def test_messages_cross_in_order_and_end_with_none() -> None:
    server, worker = await channel_pair()
    payload = {"type": "signal", "t": 0, "video": {"box": [1, 2, 3, 4]}, "lag_ms": 12.5}
    sent = [
        WorkerStart(1, {"workers": 2, "engine": ["onnxruntime-cpu"]}, "/tmp/rtserver-metrics-x"),
        WorkerCall(7, "join", {"session": "s", "sdp": "v=0\r\n", "questions": []}),
        WorkerPublish(StoredMessage("s", 0, "signal", payload)),
        WorkerClose("s"),
        WorkerReply(7, error="conflict", detail="session is already live"),
    ]
    for message in sent:
        server.send(message)
    received = [await worker.recv() for _ in sent]
    assert received == sent
    server.close()
    assert await worker.recv() is None
    worker.close()


async def test_ipc_bus_forwards_publish_and_close() -> None:
    server, worker = await channel_pair()
    bus = IpcBus(worker)
    local = bus.subscribe("s")
    message = StoredMessage("s", 3, "final", {"score": 50.0, "seq": 3})
    bus.publish(message)
    bus.close_session("s")
    assert await server.recv() == WorkerPublish(message)
    assert await server.recv() == WorkerClose("s")
    assert await local.get() == message and await local.get() is None
    worker.close()
    assert await server.recv() is None
    worker.send(WorkerClose("x"))  # a closed channel drops what is sent, silently
    server.close()

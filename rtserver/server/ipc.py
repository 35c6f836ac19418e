"""The channel between the server process and one worker process.

A channel is one stream socket (a ``socketpair`` made when the worker is started) carrying
frames: a 4-byte big-endian length, then one msgpack map, the wire form of a
:data:`rtserver.messages.IpcMessage`. A stream keeps order, so a session's messages reach
the server in the order they were published, its close after its final, and a call's reply
after everything the call published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgpack

from rtserver.messages import IpcMessage, ipc_from_wire, ipc_to_wire

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 16 * 1024 * 1024  # far above any SDP, message or metrics page
_HEADER_BYTES = 4


class ChannelClosed(Exception):
    """The other process closed the channel (or died)."""


class Channel:
    """Framed msgpack messages over a stream; ``send`` never blocks (the stream buffers)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @property
    def closed(self) -> bool:
        return self._writer.is_closing()

    def send(self, message: IpcMessage) -> None:
        """Queues one message; dropped silently once the channel is closed (the other side
        is gone and will learn nothing more from this one)."""
        if self._writer.is_closing():
            return
        body = msgpack.packb(ipc_to_wire(message), use_bin_type=True)
        self._writer.write(len(body).to_bytes(_HEADER_BYTES, "big") + body)

    async def recv(self) -> IpcMessage | None:
        """The next message, or None once the other side has closed the channel."""
        try:
            header = await self._reader.readexactly(_HEADER_BYTES)
            size = int.from_bytes(header, "big")
            if size > MAX_FRAME_BYTES:
                raise ChannelClosed(f"frame of {size} bytes is over the limit")
            body = await self._reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return ipc_from_wire(msgpack.unpackb(body, raw=False))

    async def drain(self) -> None:
        """Waits until what was sent has been handed to the socket."""
        if not self._writer.is_closing():
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()

    def close(self) -> None:
        self._writer.close()

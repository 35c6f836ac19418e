"""A stand-in for the observer's websocket: the two calls ``stream_session`` makes on it
(``api/observers.py``), recorded, so a test can drive the observer algorithm without HTTP."""

from __future__ import annotations

import json


class FakeWebSocket:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: int | None = None

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = code

    def seqs(self) -> list[int]:
        """The seq of each message sent, in order."""
        return [json.loads(text)["seq"] for text in self.sent]

"""Handing freed memory back to the system (rtserver/server/memory.py), on this machine's glibc."""

from __future__ import annotations

import asyncio
import threading

import pytest

from rtserver.server import memory
from rtserver.server.memory import HeapTrimmer, resident_bytes, trim_heap

pytestmark = pytest.mark.skipif(memory._malloc_trim is None, reason="needs glibc's malloc_trim")


def fragment_a_thread_heap() -> list[bytearray]:
    """Allocates ~60 MB in a thread's arena and frees most of it, keeping every 50th block
    so that nothing frees from the arena's top: what a session's frames leave behind."""
    kept: list[bytearray] = []

    def work() -> None:
        blocks = [bytearray(100_000) for _ in range(600)]
        kept.extend(blocks[::50])

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return kept


def test_trim_gives_a_fragmented_heap_back() -> None:
    kept = fragment_a_thread_heap()
    before = resident_bytes()
    released = trim_heap()
    assert released > 30 * 2**20, released  # of ~58 MB freed
    assert resident_bytes() < before - 30 * 2**20
    assert len(kept) == 12


async def test_sessions_ending_together_share_one_trim_off_the_loop() -> None:
    trimmer = HeapTrimmer(delay_s=0.05)
    kept = fragment_a_thread_heap()
    for _ in range(8):
        trimmer.session_ended()
    await asyncio.sleep(0.5)
    assert trimmer.trims == 1
    assert trimmer.released_bytes > 30 * 2**20
    trimmer.session_ended()
    await trimmer.stop()  # a trim still waiting is dropped at shutdown
    await asyncio.sleep(0.1)
    assert trimmer.trims == 1 and len(kept) == 12

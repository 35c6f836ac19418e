import asyncio

import pytest

from rtserver.handoff import DropOldest, finish_worker


async def test_latest_wins_with_bound_one() -> None:
    slot: DropOldest[int] = DropOldest(bound=1)
    assert slot.put(1)
    assert not slot.put(2)  # 1 was stale and is dropped
    assert slot.dropped == 1
    assert await slot.get() == 2
    assert len(slot) == 0


async def test_bounded_queue_keeps_newest_and_wakes_getter() -> None:
    queue: DropOldest[int] = DropOldest(bound=3)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put(0)
    assert await getter == 0
    for item in range(1, 6):
        queue.put(item)
    assert queue.take_all() == [3, 4, 5]
    with pytest.raises(ValueError):
        DropOldest(bound=0)


async def test_finish_worker_waits_for_idle_then_stops() -> None:
    done = asyncio.Event()

    async def work() -> None:
        await asyncio.sleep(0.05)
        done.set()
        await asyncio.sleep(10)

    worker = asyncio.create_task(work())
    await finish_worker(worker, done.is_set, timeout_s=2.0)
    assert done.is_set() and worker.cancelled()

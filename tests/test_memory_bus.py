from rtserver.bus import MemoryBus, Subscription
from rtserver.messages import StoredMessage


def message(seq: int, session: str = "s") -> StoredMessage:
    return StoredMessage(session, seq, "signal", {"seq": seq})


async def test_fan_out_to_each_subscriber_of_the_session() -> None:
    bus = MemoryBus()
    a, b, other = bus.subscribe("s"), bus.subscribe("s"), bus.subscribe("x")
    bus.publish(message(0))
    first_a, first_b = await a.get(), await b.get()
    assert first_a is not None and first_b is not None
    assert first_a.seq == first_b.seq == 0
    bus.close_session("s")
    assert await a.get() is None
    bus.unsubscribe(a)
    bus.unsubscribe(b)
    assert bus.subscriber_count() == 1
    other.close()
    assert await other.get() is None


async def test_a_slow_subscriber_is_cut_off_not_silently_skipped() -> None:
    subscription = Subscription("s", bound=3)
    for seq in range(5):
        subscription.deliver(message(seq))
    assert subscription.overflowed
    received = []
    while (item := await subscription.get()) is not None:
        received.append(item.seq)
    # What it got is an in-order prefix; the close tells it to resume from the backfill.
    assert received == [0, 1, 2]

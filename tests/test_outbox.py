"""The webhook outbox shared by several front ends (on SQLite or PostgreSQL): a due delivery
is claimed by one dispatcher at a time, and comes back when its claimer dies mid-attempt."""

from __future__ import annotations

import threading
import time

from rtserver.store.encryption import Keyring
from rtserver.store.engine import StoreTarget
from rtserver.store.outbox import Outbox


def test_two_front_ends_never_claim_the_same_delivery(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    first, second = Outbox(store_target, keyring), Outbox(store_target, keyring)
    keys = first.add("decision.made", [f"http://ats.invalid/{i}" for i in range(40)], {}, None)
    now = time.time() + 1
    claims: dict[str, list[str]] = {}

    def claim(name: str, outbox: Outbox) -> None:
        claims[name] = [d.id for d in outbox.claim_due(now, lease_s=60, limit=40)]

    threads = [
        threading.Thread(target=claim, args=(name, outbox))
        for name, outbox in (("first", first), ("second", second))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    taken = claims["first"] + claims["second"]
    assert sorted(taken) == sorted(keys)  # every delivery once, none twice
    assert first.claim_due(now, lease_s=60) == []  # all leased
    first.close()
    second.close()


def test_a_claim_runs_out_when_its_dispatcher_dies(
    store_target: StoreTarget, keyring: Keyring
) -> None:
    outbox = Outbox(store_target, keyring)
    [key] = outbox.add("session.completed", ["http://ats.invalid/"], {"c": 1}, None)
    now = time.time() + 1
    assert [d.id for d in outbox.claim_due(now, lease_s=30)] == [key]
    assert outbox.claim_due(now + 29, lease_s=30) == []  # still leased
    again = outbox.claim_due(now + 31, lease_s=30)  # nobody recorded an attempt: it is due
    assert [d.id for d in again] == [key]
    outbox.record(key, True, 200, "", None)
    assert outbox.claim_due(now + 1000, lease_s=30) == []  # delivered: never again
    outbox.close()

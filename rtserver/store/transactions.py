"""The one way every store module writes more than one statement: a write transaction that
no other writer runs beside.

The server and its worker processes open the same SQLite file, and many hosts the same
PostgreSQL database. On SQLite the transaction is IMMEDIATE: it takes the write lock up
front, waiting out other processes' writes (the connection's busy timeout). On PostgreSQL
it takes one transaction-scoped advisory lock (``engine.begin_write``). Either way a
transaction never fails half way on a lock it would need to upgrade, and no other writer can
slip in between a read and the write that depends on it (the audit chain's head, a data
key's existence).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rtserver.store.engine import Connection, begin_write


@contextmanager
def write_transaction(db: Connection) -> Iterator[None]:
    """Runs the block in one write transaction on ``db`` (an autocommit connection):
    committed when it ends, rolled back when it raises."""
    begin_write(db)
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        db.rollback()
        raise

"""The one way every store module writes more than one statement: an IMMEDIATE transaction.

The server and its worker processes open the same SQLite file. IMMEDIATE takes the write lock
up front, waiting out other processes' writes (the connection's busy timeout), so a
transaction never fails half way on a lock it would need to upgrade, and no other writer can
slip in between a read and the write that depends on it (the audit chain's head, a data key's
existence).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[None]:
    """Runs the block in one IMMEDIATE transaction on ``db`` (an autocommit connection):
    committed when it ends, rolled back when it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise

"""Durable state: sessions, their message logs, reports and the audit log.

One implementation of each store class (``sqlite.py``'s Store, accounts, the audit log,
encryption, the outbox, retention) runs on SQLite (the embedded default) or PostgreSQL (many
hosts, ``--store postgresql://…``) through one connection layer, ``engine.py``, which holds
every difference between the two (placeholders, schema and its versioned PostgreSQL
migrations in ``migrations/postgresql/``, write locks, error families). ``records.py``
holds what every implementation keeps and returns; ``async_store.py`` puts a store off the
event loop (one writer thread for every write, reads in threads), whatever the engine;
``audit_log.py`` is the hash-chained, append-only audit log the store writes through
(folding, retention, verification); ``accounts.py`` holds users, org units, logins and API
tokens; ``encryption.py`` seals candidate data at rest (AES-GCM data keys wrapped by the
keyring's master keys, their rotation). Schema, queries and retention belong here; what is
judged of a session (``scoring/``) and who may see it (``api/``) do not.
"""

from rtserver.store.async_store import AsyncStore, StoreBacklogged, StoreClosed, StoreWriter
from rtserver.store.records import (
    CLI_ACTOR,
    DEFAULT_EXPIRES_IN_S,
    ROOT_UNIT,
    STATUS_CREATED,
    STATUS_ENDED,
    STATUS_ERASED,
    STATUS_LIVE,
    SYSTEM_ACTOR,
    Actor,
    JobRecord,
    Outcome,
    Question,
    ScoredSession,
    SessionRecord,
)
from rtserver.store.sqlite import Store

__all__ = [
    "CLI_ACTOR",
    "DEFAULT_EXPIRES_IN_S",
    "ROOT_UNIT",
    "STATUS_CREATED",
    "STATUS_ENDED",
    "STATUS_ERASED",
    "STATUS_LIVE",
    "SYSTEM_ACTOR",
    "Actor",
    "AsyncStore",
    "JobRecord",
    "Outcome",
    "Question",
    "ScoredSession",
    "SessionRecord",
    "Store",
    "StoreBacklogged",
    "StoreClosed",
    "StoreWriter",
]

"""Retention: when a candidate's data is erased without anyone asking, and what stops it.

**The rule.** A session's data is erased ``days`` after the time its retention counts from
(the session row's ``retain_from``, kept by the store as the session moves on):

- the latest decision a person recorded on it (``POST .../decision``);
- with no decision, the end of the interview: an undecided candidate is not kept forever
  waiting for one;
- never joined, the expiry of its join link: nobody can use it after that;
- while it is live, nothing counts yet.

``days`` is the job's ``retention_days`` (its latest version's: a job whose retention is
shortened erases its earlier candidates sooner too), else the server's ``retention_days``
(default 180), which sessions without a job use as well.

**Legal hold.** A session under a legal hold (``PUT .../legal-hold``) is erased by nothing:
not by this sweep, not by HR's ``DELETE``, not by the candidate's request, which is
recorded and carried out once the hold is lifted (by the lift itself, or by the next sweep).
The store's ``erase`` checks the hold in its own transaction, so a hold set between finding
a session due and erasing it is kept.

**One path.** HR's ``DELETE``, the candidate's request and this sweep all erase through
:func:`erase_candidate_data`: the store's erase (messages, personal fields, decisions,
outcomes, self-identification), the session's webhook events, and one audit row, which
keeps ids, actions and times, never content.

The server runs :class:`RetentionSweeper` in its own process (never in a worker), every
``retention_sweep_s``; ``rtserver retention sweep [--dry-run]`` runs :func:`sweep` once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rtserver.store.async_store import AsyncStore
from rtserver.store.outbox import Outbox
from rtserver.store.records import DAY_S, SYSTEM_ACTOR, Actor
from rtserver.store.sqlite import Store

log = logging.getLogger(__name__)

RETENTION_ERASE = "retention_erase"  # the audit action of an erasure by retention
REQUESTED_ERASE = "erase"  # of a candidate's request carried out after a hold was lifted
REQUESTED_DETAIL = "the candidate's erasure request"


@dataclass(frozen=True)
class Due:
    """A session whose retention has run out."""

    session: str
    since: float  # unix time (s) its retention counted from
    days: int

    @property
    def erase_after(self) -> float:
        """Unix time (s) from which it is erased."""
        return self.since + self.days * DAY_S

    @property
    def detail(self) -> str:
        """The audit row's detail: the rule that applied, with no content."""
        return f"{self.days} days from {iso(self.since)}"


@dataclass
class Sweep:
    """What one sweep found, and what it erased (nothing on a dry run)."""

    due: list[Due] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)  # requests no longer held
    erased: list[str] = field(default_factory=list)


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def erase_candidate_data(
    store: Store,
    outbox: Outbox | None,
    session_id: str,
    actor: Actor,
    action: str,
    detail: str = "",
) -> bool:
    """Erases the session's data (see the module docstring) and audit-logs it as
    ``action`` by ``actor``; False, erasing and logging nothing, when there is no such
    session or it is under a legal hold. A live session must be ended first."""
    if not store.erase(session_id):
        return False
    if outbox is not None:  # its webhook events carry its data too, delivered or not
        outbox.erase(session_id)
    store.audit(actor, action, session_id, detail)
    return True


def find_due(store: Store, now: float, default_days: int) -> Sweep:
    """What a sweep at unix time ``now`` (s) would erase."""
    due = [Due(*row) for row in store.due_for_erasure(now, default_days)]
    return Sweep(due=due, requested=store.pending_erasure_requests())


def sweep(
    store: Store, outbox: Outbox | None, now: float, default_days: int, dry_run: bool = False
) -> Sweep:
    """Erases every session due at unix time ``now`` (s), each audit-logged by the system:
    ``retention_erase`` with the rule's days and start, or ``erase`` for a candidate's
    request whose hold was lifted. ``default_days``: the server's retention."""
    found = find_due(store, now, default_days)
    if dry_run:
        return found
    for item in found.due:
        if erase_candidate_data(
            store, outbox, item.session, SYSTEM_ACTOR, RETENTION_ERASE, item.detail
        ):
            found.erased.append(item.session)
    for session_id in found.requested:
        if erase_candidate_data(
            store, outbox, session_id, SYSTEM_ACTOR, REQUESTED_ERASE, REQUESTED_DETAIL
        ):
            found.erased.append(session_id)
    return found


class RetentionSweeper:
    """Sweeps in the server process every ``interval_s`` seconds, first at its start. Each
    erasure is its own write on the store's writer thread, so live sessions' writes wait
    for one erasure at most, never for a whole sweep."""

    def __init__(
        self, db: AsyncStore, outbox: Outbox | None, default_days: int, interval_s: float
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.default_days = default_days
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def sweep(self, now: float) -> list[str]:
        """Erases what is due at unix time ``now`` (s); returns the sessions erased."""
        found = await self.db.read(find_due, now, self.default_days)
        erased = []
        work = [(d.session, RETENTION_ERASE, d.detail) for d in found.due]
        work += [(s, REQUESTED_ERASE, REQUESTED_DETAIL) for s in found.requested]
        for session_id, action, detail in work:
            done = await self.db.write(
                erase_candidate_data, self.outbox, session_id, SYSTEM_ACTOR, action, detail
            )
            if done:
                erased.append(session_id)
                log.info("erased by %s", action, extra={"session": session_id})
        return erased

    async def _run(self) -> None:
        while True:
            try:
                erased = await self.sweep(time.time())
                if erased:
                    log.info("retention erased %d sessions", len(erased))
            except asyncio.CancelledError:
                raise
            except Exception:  # a locked or full database must not end the sweeps for good
                log.exception("retention sweep failed; trying again at the next one")
            await asyncio.sleep(self.interval_s)

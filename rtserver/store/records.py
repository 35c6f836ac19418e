"""What every store keeps and returns: session records, their questions and statuses.

These are the store's interface types; each implementation (``sqlite.py`` today) returns them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

# A join link lasts this long unless the session was created with another expires_in (s).
DEFAULT_EXPIRES_IN_S = 7 * 24 * 3600.0

STATUS_CREATED = "created"
STATUS_LIVE = "live"
STATUS_ENDED = "ended"
STATUS_ERASED = "erased"

# The top of the org tree (accounts/): made on first start. Jobs and sessions made before
# there were units belong to it.
ROOT_UNIT = "hq"


@dataclass(frozen=True)
class Actor:
    """Who did something the audit log records: a user, an API token, the bootstrap key, a
    candidate (by join token), the command line or the server itself."""

    user: str  # "user:<id>", "token:<id>", "bootstrap", "candidate", "cli", "system"
    role: str  # "admin", "recruiter", "viewer", "candidate" or "system"
    unit: str | None  # the org unit the actor acts in; None for candidates and the system
    client: str  # the client's address, or "local"

    @property
    def label(self) -> str:
        """The audit row's ``actor`` text (wire v1): ``<user>@<client>``."""
        return f"{self.user}@{self.client}"


CLI_ACTOR = Actor("cli", "admin", None, "local")
SYSTEM_ACTOR = Actor("system", "system", None, "local")


@dataclass(frozen=True)
class Question:
    text: str
    seconds: int


@dataclass(frozen=True)
class JobRecord:
    """One version of a job: its body is the job file's format (``scoring/jobs.py``)."""

    id: str
    version: int  # 1, 2, ...: each edit makes a new version; old ones are kept
    body: dict[str, Any]
    created_at: float
    created_by: str
    unit: str = ROOT_UNIT  # the org unit that owns the job (every version: the first's)

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "unit": self.unit,
            **self.body,
        }


@dataclass(frozen=True)
class Outcome:
    """What became of a candidate after the interview, as the company's HR system knows it:
    linked to the scored session, and erased with it."""

    session: str
    hired: bool | None  # None: not known (yet)
    performance: float | None  # the company's own rating, any scale; None: not rated
    rated_at: str | None  # the date of that rating, as given (ISO 8601)

    def to_wire(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "hired": self.hired,
            "performance": self.performance,
            "rated_at": self.rated_at,
        }


@dataclass(frozen=True)
class ScoredSession:
    """An ended session of a job with its final report and the latest decision on it: one
    row of what calibration and the bias audit read."""

    id: str
    candidate: str | None
    job_version: int | None
    ended_at: float | None  # unix time (s)
    final: dict[str, Any]  # the final message's payload
    decision: str | None  # the latest person's decision ("advance", "reject", "hold"), if any


DAY_S = 86400.0  # retention is counted in days of this many seconds


@dataclass(frozen=True)
class LegalHold:
    """Why and since when a session's data must be kept: no erasure, by retention, by HR or
    by the candidate's request, happens while it is held (``store/retention.py``)."""

    reason: str
    at: float  # unix time (s)
    by: str  # the audit label of who set it

    def to_wire(self) -> dict[str, Any]:
        return {"reason": self.reason, "at": self.at, "by": self.by}


@dataclass(frozen=True)
class SessionRecord:
    id: str
    candidate: str | None
    job: str | None  # a job's id (then job_version is set) or, before jobs, a free label
    questions: tuple[Question, ...]
    status: str
    created_at: float
    started_at: float | None
    ended_at: float | None
    end_reason: str | None
    expires_at: float  # unix time (s) after which the join link is refused
    job_version: int | None = None  # the version of the job it is scored with
    unit: str = ROOT_UNIT  # the org unit it belongs to: who may see it (accounts/)
    # Retention (store/retention.py): the time its retention counts from (unix s; None
    # while live or once erased), its job's retention_days (None: the server's default),
    # a legal hold, and the time of the candidate's pending erasure request.
    retain_from: float | None = None
    retention_days: int | None = None
    legal_hold: LegalHold | None = None
    erasure_requested_at: float | None = None
    node: str | None = None  # the node id of the process that ran it (None: never joined)

    def erase_after(self, default_days: int) -> float | None:
        """Unix time (s) from which retention erases the session, with ``default_days`` as
        the server's default; None while it is live, held or already erased."""
        if self.retain_from is None or self.legal_hold is not None:
            return None
        if self.status == STATUS_ERASED:
            return None
        days = self.retention_days if self.retention_days is not None else default_days
        return self.retain_from + days * DAY_S

    def is_expired(self, now: float | None = None) -> bool:
        """Whether the join link has expired at unix time ``now`` (s; default: now)."""
        return (time.time() if now is None else now) >= self.expires_at

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "candidate": self.candidate,
            "job": self.job,
            "questions": [{"text": q.text, "seconds": q.seconds} for q in self.questions],
            "status": self.status,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "end_reason": self.end_reason,
            "expires_at": self.expires_at,
            "job_version": self.job_version,
            "unit": self.unit,
            "legal_hold": self.legal_hold.to_wire() if self.legal_hold else None,
            "erasure_requested_at": self.erasure_requested_at,
            "node": self.node,
        }

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

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "created_at": self.created_at,
            "created_by": self.created_by,
            **self.body,
        }


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
        }

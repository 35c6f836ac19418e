"""The events the ATS is told of, queued in the outbox for the dispatcher to deliver.

- ``session.completed``, when a session's final is stored: the candidate, the job, the
  score, the recommendation ("advance": invite to the human interview; "review": a person
  looks again) and where HR reads the report;
- ``decision.made``, when a person records a decision (advance, reject or hold) with its
  reason and reviewer, beside the recommendation it follows or overrides.

Each goes to the server's receivers (``webhook_urls``) and the job's own. Queuing never
holds up the session: a failure is logged, and the final is already stored.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rtserver.live.runtime import Runtime
from rtserver.messages import FinalMessage

log = logging.getLogger(__name__)

COMPLETED = "session.completed"
DECIDED = "decision.made"


def report_url(runtime: Runtime, session_id: str) -> str:
    return f"{runtime.config.url}/api/v1/sessions/{session_id}/report"


async def receivers(runtime: Runtime, job: dict[str, Any] | None) -> list[str]:
    """The server's receivers and those of the job version ``job`` ({"id", "version"})."""
    urls = list(runtime.config.webhook_urls)
    if job is not None:
        job_id, version = str(job["id"]), int(job["version"])
        stored = await runtime.db.read(lambda store: store.get_job(job_id, version))
        if stored is not None:
            urls += [str(url) for url in stored.body.get("webhooks", [])]
    return urls


async def session_completed(runtime: Runtime, session_id: str, final: FinalMessage) -> None:
    try:
        urls = await receivers(runtime, final.job)
        if not urls or runtime.outbox is None:
            return
        record = await runtime.db.get_session(session_id)
        payload = {
            "session": session_id,
            "candidate": record.candidate if record else None,
            "job": final.job,
            "score": final.score,
            "recommendation": final.recommendation,
            "threshold": final.threshold,
            "end_reason": final.end_reason,
            "report_url": report_url(runtime, session_id),
        }
        await asyncio.to_thread(runtime.outbox.add, COMPLETED, urls, payload, session_id)
    except Exception:
        log.exception(
            "could not queue the session.completed webhook", extra={"session": session_id}
        )


async def decision_made(
    runtime: Runtime, session_id: str, decision: dict[str, Any], job: dict[str, Any] | None
) -> list[str]:
    """Queues the decision for the receivers; the delivery keys (none without receivers)."""
    urls = await receivers(runtime, job)
    if not urls or runtime.outbox is None:
        return []
    payload = {**decision, "job": job, "report_url": report_url(runtime, session_id)}
    return await asyncio.to_thread(runtime.outbox.add, DECIDED, urls, payload, session_id)

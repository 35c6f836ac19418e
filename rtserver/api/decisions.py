"""What people decide, and what the candidate is told: the decision on a candidate, the
explanation of a recommendation (EU AI Act Art. 86) and the ATS webhook delivery log.

A recommendation never changes a candidate's status by itself: only a decision recorded
here does, by a named reviewer, and a decision against the recommendation needs a reason.
Every request is audit-logged."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rtserver.accounts.principal import VIA_COOKIE
from rtserver.accounts.roles import Permission
from rtserver.api.context import api_of
from rtserver.api.http import read_json
from rtserver.ats.events import decision_made
from rtserver.errors import BadRequest, Conflict, NotFound
from rtserver.scoring.feedback import explanation as explain

DECISIONS = ("advance", "reject", "hold")
MAX_REASON = 2000


def against(decision: str, recommendation: str | None) -> bool:
    """Whether ``decision`` goes against the recommendation: not advancing a candidate
    recommended to advance, or advancing one the score left for review."""
    if recommendation == "advance":
        return decision != "advance"
    if recommendation == "review":
        return decision == "advance"
    return False


async def decide(request: Request) -> Response:
    """A person's decision. A signed-in user is the reviewer; an API token (an ATS) or the
    bootstrap key must name the person in ``reviewer``."""
    api = api_of(request)
    principal = await api.require(request, Permission.MANAGE)
    actor = principal.actor
    record = await api.scoped_session(principal, request.path_params["session_id"])
    body = await read_json(request)
    decision, reason, reviewer = body.get("decision"), body.get("reason", ""), body.get("reviewer")
    if decision not in DECISIONS:
        raise BadRequest(f"decision must be one of {', '.join(DECISIONS)}")
    if principal.via == VIA_COOKIE:
        reviewer = principal.name  # who signed in, not what they typed
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise BadRequest("reviewer must name the person who decides")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise BadRequest(f"reason must be a text of at most {MAX_REASON} characters")
    final = await api.db.final_message(record.id)
    if final is None:
        raise Conflict("the interview has not ended: there is nothing to decide on yet")
    recommendation = final.payload.get("recommendation")
    if against(decision, recommendation) and not reason.strip():
        raise BadRequest(
            f"a decision to {decision} against the recommendation ({recommendation}) needs a reason"
        )
    stored: dict[str, Any] = await api.db.write(
        lambda store: store.add_decision(
            record.id, decision, reason.strip(), reviewer.strip()[:200], recommendation, actor.label
        )
    )
    # The decision only: the reviewer's name is free text, kept with the decision itself.
    await api.db.audit(actor, "decision", record.id, decision)
    keys = await decision_made(api.runtime, record.id, stored, final.payload.get("job"))
    return JSONResponse({**stored, "webhooks": keys}, status_code=201)


async def list_decisions(request: Request) -> Response:
    api = api_of(request)
    principal = await api.require(request)
    actor = principal.actor
    record = await api.scoped_session(principal, request.path_params["session_id"])
    decisions = await api.db.read(lambda store: store.decisions(record.id))
    await api.db.audit(actor, "view_decisions", record.id)
    return JSONResponse({"decisions": decisions})


async def explanation(request: Request) -> Response:
    """For HR to give the candidate: the main elements behind the recommendation."""
    api = api_of(request)
    principal = await api.require(request)
    actor = principal.actor
    record = await api.scoped_session(principal, request.path_params["session_id"])
    final = await api.db.final_message(record.id)
    if final is None:
        raise Conflict("the interview has not ended: there is no recommendation yet")
    if not final.payload.get("job"):
        raise Conflict("this session has no job: it was not scored against competencies")
    await api.db.audit(actor, "view_explanation", record.id)
    return JSONResponse(explain(final.payload))


async def deliveries(request: Request) -> Response:
    """The webhook delivery log, newest first (``?session=`` for one session's). Without a
    session it covers every unit, so it is for admins; with one, for whoever sees it."""
    api = api_of(request)
    session = request.query_params.get("session")
    if session is None:
        actor = (await api.require(request, Permission.ADMINISTER)).actor
    else:
        principal = await api.require(request)
        actor = principal.actor
        # An erased session's log is asked for too (to see that it is empty): its record
        # stays, with its unit, so the scope still holds.
        record = await api.db.get_session(session)
        if record is None or not principal.sees(record.unit):
            raise NotFound(f"no session {session}")
    outbox = api.runtime.outbox
    rows = await asyncio.to_thread(outbox.deliveries, session) if outbox is not None else []
    await api.db.audit(actor, "view_webhooks", session)
    return JSONResponse({"deliveries": [row.to_wire() for row in rows]})

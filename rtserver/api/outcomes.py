"""What became of a job's past candidates: outcomes HR links to the scored sessions, which
calibration learns from (``scoring/outcomes.py`` checks and links them).

A batch is taken whole or refused whole with every problem listed (400
``invalid_outcomes``). Every request is audit-logged."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rtserver.accounts.roles import Permission
from rtserver.api.context import api_of
from rtserver.api.http import read_json
from rtserver.api.jobs import job_or_404
from rtserver.errors import InvalidOutcomes
from rtserver.scoring.outcomes import OutcomesInvalid, link_outcomes, parse_outcomes
from rtserver.store import Outcome


async def record_outcomes(request: Request) -> Response:
    """``{"outcomes": [{"session" or "candidate", "hired", "performance", "rated_at"}]}``."""
    api = api_of(request)
    principal = await api.require(request, Permission.MANAGE)
    actor = principal.actor
    job = await job_or_404(api, principal, request.path_params["job_id"])
    body = await read_json(request)
    sessions = await api.db.read(lambda store: store.scored_sessions(job.id))
    try:
        outcomes = link_outcomes(parse_outcomes(body.get("outcomes")), sessions)
    except OutcomesInvalid as exc:
        raise InvalidOutcomes(exc.problems) from exc
    await api.db.write(lambda store: store.save_outcomes(job.id, outcomes, actor.label))
    detail = f"job {job.id}: {len(outcomes)} outcomes"
    await api.db.audit(actor, "record_outcomes", None, detail, f"job:{job.id}")
    return JSONResponse({"job": job.id, "recorded": len(outcomes)}, status_code=201)


async def list_outcomes(request: Request) -> Response:
    api = api_of(request)
    principal = await api.require(request)
    actor = principal.actor
    job = await job_or_404(api, principal, request.path_params["job_id"])
    outcomes: dict[str, Outcome] = await api.db.read(lambda store: store.outcomes(job.id))
    await api.db.audit(actor, "view_outcomes", None, f"job {job.id}", f"job:{job.id}")
    return JSONResponse({"job": job.id, "outcomes": [o.to_wire() for o in outcomes.values()]})

"""A job's bias audit and its calibration history, for HR (the jobs page shows both).

``GET /api/v1/jobs/{id}/audit`` runs the audit (``scoring/audit.py``) on the job's decided,
scored sessions, optionally from and to a date (``?from=YYYY-MM-DD&to=YYYY-MM-DD``, the day
each interview ended, UTC), as JSON or, with ``?format=html``, as the report's HTML fragment
(the same tables and chart ``rtserver audit --html`` prints). The candidates'
self-identification is read here and nowhere else in the API. Every request is
audit-logged."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from rtserver.api.context import api_of
from rtserver.api.jobs import job_of, job_or_404
from rtserver.errors import BadRequest, Conflict
from rtserver.scoring.audit import run_audit
from rtserver.scoring.audit_report import audit_fragment
from rtserver.scoring.jobs import Job
from rtserver.scoring.samples import (
    AuditSample,
    audit_sample,
    job_audit_extras,
    job_competency_effects,
)


def _date(request: Request, name: str) -> dt.date | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be a date (YYYY-MM-DD)") from exc


async def bias_audit(request: Request) -> Response:
    api = api_of(request)
    principal = await api.require(request)
    actor = principal.actor
    record = await job_or_404(api, principal, request.path_params["job_id"])
    job = job_of(record)
    since, until = _date(request, "from"), _date(request, "to")
    sessions = await api.db.read(lambda store: store.scored_sessions(record.id))
    ids = [s.id for s in sessions]
    demographics = await api.db.read(lambda store: store.self_identification_for_audit(ids))
    sample = audit_sample(job, sessions, demographics, since, until)
    await api.db.audit(actor, "bias_audit", None, f"job {record.id}", f"job:{record.id}")
    if not sample.rows:
        raise Conflict("no decided, scored sessions of this job to audit in that period")
    result = await asyncio.to_thread(_audit, job, sample)
    result |= job_audit_extras(record, job, sample, since, until)
    if request.query_params.get("format") == "html":
        return HTMLResponse(audit_fragment(result, result.get("competencies")))
    return JSONResponse(result)


def _audit(job: Job, sample: AuditSample) -> dict[str, Any]:
    result = run_audit(sample.rows)
    effects = job_competency_effects(job, sample)
    if effects is not None:
        result["competencies"] = effects
    return result


async def calibrations(request: Request) -> Response:
    """The calibrations applied to the job: who, when, from which version, and the figures."""
    api = api_of(request)
    principal = await api.require(request)
    actor = principal.actor
    record = await job_or_404(api, principal, request.path_params["job_id"])
    applied = await api.db.read(lambda store: store.calibrations(record.id))
    await api.db.audit(actor, "view_calibrations", None, f"job {record.id}", f"job:{record.id}")
    return JSONResponse({"job": record.id, "calibrations": applied})

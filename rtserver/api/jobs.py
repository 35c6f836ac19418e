"""Jobs, as HR edits them: create, list, view and edit a job's competency model.

A job is checked by ``scoring/jobs.py``: an invalid one is refused with 400 ``invalid_job``
and every problem listed. Editing a job makes a new version and keeps the old ones, so a
session scored with version 2 can always be explained by version 2. Every change is
audit-logged."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rtserver.accounts.principal import Principal
from rtserver.accounts.roles import Permission
from rtserver.api.context import Api, api_of
from rtserver.api.http import read_json
from rtserver.errors import BadRequest, InvalidJob, NotFound
from rtserver.scoring.jobs import Job, JobInvalid, parse_job
from rtserver.store import JobRecord


async def create_job(request: Request) -> Response:
    """A new job, owned by ``?unit=`` (in the caller's scope) or the caller's own unit."""
    api = api_of(request)
    principal = await api.require(request, Permission.MANAGE)
    unit = _unit(principal, request.query_params.get("unit"))
    job = _valid(api, await read_json(request))
    record: JobRecord = await api.db.write(
        lambda store: store.save_job(job.to_wire(), principal.actor.label, unit=unit)
    )
    detail = f"job {record.id} version {record.version}"
    await api.db.audit(principal.actor, "create_job", None, detail, f"job:{record.id}")
    return JSONResponse(record.to_wire(), status_code=201)


async def update_job(request: Request) -> Response:
    """A new version of the job; the old ones stay as they were."""
    api = api_of(request)
    principal = await api.require(request, Permission.MANAGE)
    job_id = request.path_params["job_id"]
    await job_or_404(api, principal, job_id)
    job = _valid(api, await read_json(request))
    record: JobRecord = await api.db.write(
        lambda store: store.save_job(job.to_wire(), principal.actor.label, job_id)
    )
    detail = f"job {record.id} version {record.version}"
    await api.db.audit(principal.actor, "update_job", None, detail, f"job:{record.id}")
    return JSONResponse(record.to_wire())


async def list_jobs(request: Request) -> Response:
    """The jobs in the caller's scope."""
    api = api_of(request)
    principal = await api.require(request)
    records: list[JobRecord] = await api.db.read(lambda store: store.list_jobs(principal.scope))
    await api.db.audit(principal.actor, "list_jobs", None, f"{len(records)} jobs")
    return JSONResponse({"jobs": [r.to_wire() for r in records]})


async def get_job(request: Request) -> Response:
    """The job's latest version, or ``?version=N``."""
    api = api_of(request)
    principal = await api.require(request)
    version = _version(request.query_params.get("version"))
    record = await job_or_404(api, principal, request.path_params["job_id"], version)
    detail = f"job {record.id} version {record.version}"
    await api.db.audit(principal.actor, "view_job", None, detail, f"job:{record.id}")
    return JSONResponse(record.to_wire())


async def job_or_404(
    api: Api, principal: Principal, job_id: str, version: int | None = None
) -> JobRecord:
    """The job, when it is in ``principal``'s scope; 404 otherwise, as for no job."""
    record: JobRecord | None = await api.db.read(lambda store: store.get_job(job_id, version))
    if record is None or not principal.sees(record.unit):
        which = f" version {version}" if version is not None else ""
        raise NotFound(f"no job {job_id}{which}")
    return record


def _unit(principal: Principal, raw: str | None) -> str:
    if raw is None:
        return principal.unit
    if not principal.sees(raw):
        raise NotFound(f"no unit {raw!r} in your scope")
    return raw


def job_of(record: JobRecord) -> Job:
    """The job a stored version describes (it was checked when it was saved)."""
    return parse_job(record.body)


def _valid(api: Api, body: dict[str, Any]) -> Job:
    try:
        job = parse_job(body)
    except JobInvalid as exc:
        raise InvalidJob(exc.problems) from exc
    if job.webhooks and not api.runtime.config.webhook_secret:
        raise InvalidJob(["webhooks need the server's webhook secret (--webhook-secret)"])
    return job


def _version(raw: str | None) -> int | None:
    if raw is None:
        return None
    # isdecimal, not isdigit: int() refuses some digits isdigit takes ("²"); and a version
    # is never more than a few digits (int() refuses over 4300).
    if not raw.isdecimal() or len(raw) > 18 or int(raw) < 1:
        raise BadRequest("version must be a positive integer")
    return int(raw)

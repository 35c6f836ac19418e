"""Sessions, as HR sees them: create, list, view, end, report, erase and the audit log.

Every HR request needs a principal (api/auth.py) whose scope holds the session, and is
audit-logged; a candidate may end their own session with its join token."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rtserver.accounts.principal import Principal
from rtserver.accounts.roles import Permission
from rtserver.api.context import api_of
from rtserver.api.http import read_json
from rtserver.api.jobs import job_of
from rtserver.errors import BadRequest, Conflict, NotFound
from rtserver.live.job_scoring import with_job
from rtserver.live.publisher import Publisher
from rtserver.live.transcripts import with_transcript
from rtserver.messages import StoredMessage
from rtserver.scoring.rubric import Interview, score_interview
from rtserver.store import (
    DEFAULT_EXPIRES_IN_S,
    STATUS_ENDED,
    STATUS_LIVE,
    Question,
    SessionRecord,
    Store,
)
from rtserver.store.retention import erase_candidate_data

log = logging.getLogger(__name__)


MAX_QUESTIONS = 50
MAX_EXPIRES_IN_S = 365 * 24 * 3600  # the longest a join link may last (s)


async def create_session(request: Request) -> Response:
    api = api_of(request)
    api.rate_limits.check("sessions", request)
    principal = await api.require(request, Permission.MANAGE)
    actor = principal.actor
    body = await read_json(request)
    candidate = _optional_str(body, "candidate")
    job = _optional_str(body, "job")
    questions = _questions(body.get("questions"))
    expires_in_s = _expires_in(body.get("expires_in"))
    unit = _unit(principal, body.get("unit"))
    job_version = retention_days = None
    stored = await api.db.read(lambda store: store.get_job(job)) if job else None
    if stored is not None and not principal.sees(stored.unit):
        raise NotFound(f"no job {job}")
    if stored is not None:
        # A job's id: the session takes the job's questions and is scored with this version.
        # Any other "job" text is a label, as before jobs existed.
        if body.get("questions"):
            raise BadRequest("give a job or questions, not both: a job brings its questions")
        parsed = job_of(stored)
        questions = [Question(q.text, q.seconds) for q in parsed.questions]
        job_version, retention_days = stored.version, parsed.retention_days
    record, join_token = await api.db.create_session(
        candidate, job, questions, expires_in_s, job_version, unit, retention_days
    )
    await api.db.audit(actor, "create", record.id)
    base = api.base_url(request)
    return JSONResponse(
        {
            "id": record.id,
            "join_token": join_token,
            "candidate_url": f"{base}/candidate/{record.id}?token={join_token}",
            "observe_url": f"{base}/observe/{record.id}",
            "expires_at": record.expires_at,
        },
        status_code=201,
    )


async def list_sessions(request: Request) -> Response:
    """The newest sessions in the caller's scope."""
    api = api_of(request)
    principal = await api.require(request)
    records = await api.db.list_sessions(units=principal.scope)
    await api.db.audit(principal.actor, "list", None, f"{len(records)} sessions")
    return JSONResponse({"sessions": [r.to_wire() for r in records]})


async def get_session(request: Request) -> Response:
    api = api_of(request)
    principal = await api.require(request)
    record = await api.scoped_session(principal, request.path_params["session_id"])
    await api.db.audit(principal.actor, "view_session", record.id)
    data = record.to_wire()
    figures = await api.manager.live_figures(record.id)
    data["live"] = figures is not None
    data["signals"] = figures["signals"] if figures else None
    data["analysis_cpu_per_media_s"] = figures["analysis_cpu_per_media_s"] if figures else None
    # When retention erases it (store/retention.py); null while live or held.
    data["erase_after"] = record.erase_after(api.runtime.config.retention_days)
    return JSONResponse(data)


async def end_session(request: Request) -> Response:
    api = api_of(request)
    session_id = request.path_params["session_id"]
    record = await api.session_or_404(session_id)
    actor = await api.hr_or_candidate(request, record, await _join_token(request))
    if record.status == STATUS_ENDED:
        raise Conflict("session has already ended")
    ended_by = "ended_by_candidate" if actor.role == "candidate" else "ended_by_hr"
    if not await api.manager.end(record.id, ended_by):
        if record.status == STATUS_LIVE:
            raise Conflict("session is live in another process")
        # Never joined: end it here, with an empty final so observers are not left waiting.
        emotion_on = api.runtime.config.emotion == "on"
        texts = [q.text for q in record.questions]
        final = score_interview(Interview(record.id, [], ended_by, emotion_on, texts))
        final = with_transcript(final, [], on=api.runtime.config.transcribe == "on")
        final = await with_job(api.runtime, record.id, final, [])
        await Publisher(api.runtime, record.id).finish(final, ended_by)
    await api.db.audit(actor, "end", record.id)
    ended = await api.session_or_404(session_id)
    return JSONResponse(ended.to_wire())


async def _join_token(request: Request) -> str:
    """The join token a candidate ending their own session sends: ``?token=``, or
    ``{"token"}`` in the body (the page's beacon when it closes); "" for none."""
    token = request.query_params.get("token", "")
    if not token and int(request.headers.get("content-length") or 0) > 0:
        body = await read_json(request)
        token = body.get("token", "") if isinstance(body.get("token"), str) else ""
    return token


async def report(request: Request) -> Response:
    api = api_of(request)
    principal = await api.require(request)
    actor = principal.actor
    record = await api.scoped_session(principal, request.path_params["session_id"])
    final = await api.db.final_message(record.id)
    if final is None:
        raise Conflict(f"session is {record.status}; the report exists once it has ended")
    await api.db.audit(actor, "view_report", record.id)
    # An hour is 3600 signals: read, decoded and encoded again on a read thread.
    body = await api.db.read(_report_body, record, final)
    return Response(body, media_type="application/json")


async def erase(request: Request) -> Response:
    """Erases a candidate's data (GDPR-style), by the path retention and the candidate's
    request take too (store/retention.py). Live sessions are ended first; 409 under a
    legal hold."""
    api = api_of(request)
    principal = await api.require(request, Permission.MANAGE)
    actor = principal.actor
    record = await api.scoped_session(principal, request.path_params["session_id"])
    if record.legal_hold is None:
        await api.manager.end(record.id, "erased")
        outbox = api.runtime.outbox
        if await api.db.write(erase_candidate_data, outbox, record.id, actor, "erase"):
            return Response(status_code=204)
    raise Conflict("this session is under a legal hold: lift it first (DELETE .../legal-hold)")


async def audit_log(request: Request) -> Response:
    api = api_of(request)
    principal = await api.require(request)
    record = await api.scoped_session(principal, request.path_params["session_id"])
    await api.db.audit(principal.actor, "view_audit", record.id)
    return JSONResponse({"audit": await api.db.audit_log(record.id)})


def _report_body(store: Store, record: SessionRecord, final: StoredMessage) -> bytes:
    """The report as JSON bytes, as JSONResponse would write it (runs on a read thread)."""
    messages = store.messages(record.id)
    report = {
        "session": record.to_wire(),
        "final": final.payload,
        "signals": [m.payload for m in messages if m.kind == "signal"],
        # What the candidate said, utterance by utterance, as the observers received it.
        "transcript": [m.payload for m in messages if m.kind == "transcript"],
    }
    return json.dumps(
        report, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode()


def _optional_str(body: dict[str, Any], key: str, limit: int = 500) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(f"{key} must be a string of at most {limit} characters")
    return value


def _unit(principal: Principal, raw: Any) -> str:
    """The org unit a new session belongs to: ``unit`` when given and in the caller's scope
    (404 otherwise, as for a unit that does not exist), else the caller's own."""
    if raw is None:
        return principal.unit
    if not isinstance(raw, str) or not principal.sees(raw):
        raise NotFound(f"no unit {raw!r} in your scope")
    return raw


def _expires_in(raw: Any) -> float:
    """How long a new session's join link lasts (s): ``expires_in``, 1 s to a year, or the
    default week when absent."""
    if raw is None:
        return DEFAULT_EXPIRES_IN_S
    number = isinstance(raw, int | float) and not isinstance(raw, bool)
    if not number or not 1 <= raw <= MAX_EXPIRES_IN_S:
        raise BadRequest(f"expires_in must be a number of seconds from 1 to {MAX_EXPIRES_IN_S}")
    return float(raw)


def _questions(raw: Any) -> list[Question]:
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_QUESTIONS:
        raise BadRequest(f"questions must be a list of at most {MAX_QUESTIONS} items")
    questions = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise BadRequest('each question must be {"text": str, "seconds": int}')
        seconds = item.get("seconds", 120)
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 1 <= seconds <= 3600:
            raise BadRequest("question seconds must be an integer from 1 to 3600")
        questions.append(Question(item["text"][:2000], seconds))
    return questions

"""A candidate's data and their rights over it: the legal hold that keeps it, the export of
everything held (GDPR Art. 15 and 20), the candidate's erasure request (Art. 17), and what
the consent notice says about automated assessment and retention (NYC Local Law 144).

Who may ask:

- the legal hold: a recruiter (or an admin) in the session's scope sets it; only an admin
  lifts it, so that a hold placed for a legal claim cannot be undone, and the data then
  erased, by whoever could erase it;
- the export: a recruiter (or an admin) in scope, or the candidate with their join token
  (``?token=``) **even after the link has expired**. The token is the candidate's proof of
  who they are; its expiry bounds when an interview may be joined, not how long they may
  see what is kept about them, which is until it is erased. The export HR gets withholds
  the self-identification answers, which the hiring team never sees
  (``api/self_identification.py``); the candidate's own has them;
- the erasure request: the candidate with their join token, also after the link expired.
  It erases at once, by the one path of HR's ``DELETE`` (``store/retention.py``), unless a
  legal hold stops it: then it is recorded, answered 202, shown to HR on the session
  (``erasure_requested_at``) and carried out when the hold is lifted.

Every request is audit-logged (ids, actions and times; never a hold's reason nor content).
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rtserver.accounts.roles import Permission
from rtserver.api.context import Api, api_of, candidate_actor
from rtserver.api.http import NO_STORE, read_json
from rtserver.api.jobs import job_of
from rtserver.errors import BadRequest, NotFound, Unauthorized
from rtserver.store import STATUS_ERASED, STATUS_LIVE, SYSTEM_ACTOR, Actor, SessionRecord, Store
from rtserver.store.retention import REQUESTED_DETAIL, REQUESTED_ERASE, erase_candidate_data

MAX_REASON = 2000
EXPORT_FORMAT = "rtserver.candidate_export"
EXPORT_VERSION = 1
AUDIT_ROWS_EXPORTED = 100_000  # far above any session's; the audit log keeps every row
HELD_DETAIL = (
    "Your data is under a legal hold: the law requires it to be kept for now (for example "
    "for a legal claim). Your request is recorded, and your data will be erased as soon as "
    "the hold is lifted."
)


# -- legal hold (HR) -----------------------------------------------------------------------


async def set_legal_hold(request: Request) -> Response:
    """``{"reason"}``: holds the session's data until the hold is lifted."""
    api = api_of(request)
    principal = await api.require(request, Permission.MANAGE)
    actor = principal.actor
    record = await api.scoped_session(principal, request.path_params["session_id"])
    body = await read_json(request)
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise BadRequest(f"reason must be a non-empty text of at most {MAX_REASON} characters")
    held = await api.db.write(
        lambda store: store.set_legal_hold(record.id, reason.strip(), actor.label)
    )
    if not held:  # erased meanwhile
        await api.session_or_404(record.id)
    # The reason is HR's own words and may name people: the audit row records the act only.
    await api.db.audit(actor, "legal_hold", record.id)
    return JSONResponse(await _hold_answer(api, record.id))


async def lift_legal_hold(request: Request) -> Response:
    """Lifts the session's legal hold, and carries out a pending erasure request at once
    (``"erased": true``). Admins only."""
    api = api_of(request)
    principal = await api.require(request, Permission.ADMINISTER)
    actor = principal.actor
    record = await api.scoped_session(principal, request.path_params["session_id"])
    lifted = await api.db.write(lambda store: store.lift_legal_hold(record.id))
    await api.db.audit(actor, "legal_hold_lift", record.id, "" if lifted else "there was none")
    erased = False
    if record.erasure_requested_at is not None and lifted:
        if record.status == STATUS_LIVE:
            await api.manager.end(record.id, "erased")
        erased = await _erase(api, record.id, SYSTEM_ACTOR, REQUESTED_ERASE, REQUESTED_DETAIL)
    if erased:
        return JSONResponse({"session": record.id, "legal_hold": None, "erased": True})
    return JSONResponse({**await _hold_answer(api, record.id), "erased": False})


async def _hold_answer(api: Api, session_id: str) -> dict[str, Any]:
    record = await api.session_or_404(session_id)
    return {
        "session": record.id,
        "legal_hold": record.legal_hold.to_wire() if record.legal_hold else None,
        "erasure_requested_at": record.erasure_requested_at,
    }


# -- export (HR or the candidate) ---------------------------------------------------------


async def export(request: Request) -> Response:
    """Everything held about the candidate, as a JSON attachment."""
    api = api_of(request)
    record = await api.session_or_404(request.path_params["session_id"])
    actor = await api.hr_or_candidate(request, record, request.query_params.get("token", ""))
    # Logged before it is shown, so the export lists its own row.
    await api.db.audit(actor, "export", record.id)
    body = await api.db.read(
        export_body,
        record.id,
        actor.role == "candidate",
        api.runtime.config.retention_days,
        time.time(),
    )
    headers = {
        **NO_STORE,
        "Content-Disposition": f'attachment; filename="interview-data-{record.id}.json"',
    }
    return Response(body, media_type="application/json", headers=headers)


def export_body(
    store: Store, session_id: str, for_candidate: bool, default_days: int, now: float
) -> bytes:
    """The export as JSON bytes (runs on a read thread: a long interview is thousands of
    messages). ``for_candidate``: the candidate's own, with their self-identification and
    without the hold's reason; else HR's, without the self-identification answers."""
    record = store.get_session(session_id)
    if record is None or record.status == STATUS_ERASED:  # erased since the route's check
        raise NotFound(f"no session {session_id}")
    session = record.to_wire()
    if for_candidate and record.legal_hold is not None:
        session["legal_hold"] = {"at": record.legal_hold.at}
    answers = store.self_identification_of(session_id)
    if for_candidate:
        self_identification: dict[str, Any] | None = answers
    else:
        self_identification = {
            "answered": answers is not None,
            "answers": "withheld: the hiring team never sees them; the candidate's own "
            "export has them",
        }
    audit = sorted(store.audit_log(session_id, AUDIT_ROWS_EXPORTED), key=lambda row: row["id"])
    data = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": now,
        "session": session,
        "retention": {
            "days": record.retention_days or default_days,
            "counts_from": record.retain_from,
            "erase_after": record.erase_after(default_days),
            "legal_hold": record.legal_hold is not None,
        },
        "questions": session["questions"],
        # Every stored message: the per-second signals, the transcript, the final report.
        "messages": [
            {"seq": m.seq, "kind": m.kind, "payload": m.payload} for m in store.messages(session_id)
        ],
        "decisions": store.decisions(session_id),
        "outcome": store.outcome_of(session_id),
        "self_identification": self_identification,
        "erasure_requests": store.erasure_requests(session_id),
        # Who did what with the data, and when: ids, actions and times only.
        "audit": [
            {
                "id": row["id"],
                "at": row["at"],
                "action": row["action"],
                "by": str(row["actor"]).rsplit("@", 1)[0],
            }
            for row in audit
        ],
    }
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


# -- erasure request (the candidate) ------------------------------------------------------


async def request_erasure(request: Request) -> Response:
    """The candidate asks for their data to be erased (join token in the body or the
    query): 200 ``{"status": "erased"}``, or 202 ``{"status": "pending", "reason":
    "legal_hold"}`` while a legal hold stops it."""
    api = api_of(request)
    record = await api.session_or_404(request.path_params["session_id"])
    actor = await _candidate(api, request, record)
    requested_at = await api.db.write(lambda store: store.request_erasure(record.id))
    held = record.legal_hold is not None
    await api.db.audit(actor, "erasure_request", record.id, "held" if held else "")
    if not held:
        if record.status == STATUS_LIVE:
            await api.manager.end(record.id, "erased")
        if await _erase(api, record.id, actor, "erase", REQUESTED_DETAIL):
            return JSONResponse(
                {
                    "status": "erased",
                    "requested_at": requested_at,
                    "detail": "Your interview data has been erased.",
                }
            )
    # Held, now or since the check: kept, and erased once the hold is lifted.
    return JSONResponse(
        {
            "status": "pending",
            "reason": "legal_hold",
            "requested_at": requested_at,
            "detail": HELD_DETAIL,
        },
        status_code=202,
    )


async def _erase(api: Api, session_id: str, actor: Actor, action: str, detail: str) -> bool:
    erased: bool = await api.db.write(
        erase_candidate_data, api.runtime.outbox, session_id, actor, action, detail
    )
    return erased


# -- who asks -------------------------------------------------------------------------


async def _candidate(api: Api, request: Request, record: SessionRecord) -> Actor:
    """The candidate, by the session's join token (in the JSON body or ``?token=``),
    whether or not the link has expired; 401 otherwise."""
    token = request.query_params.get("token", "")
    if not token and int(request.headers.get("content-length") or 0) > 0:
        body = await read_json(request)
        token = body.get("token", "") if isinstance(body.get("token"), str) else ""
    if token and await api.db.check_join_token(record.id, token):
        return candidate_actor(request)
    raise Unauthorized("wrong or missing join token")


# -- the consent notice (the questions answer) -------------------------------------------


async def notice(api: Api, record: SessionRecord) -> dict[str, Any]:
    """What the candidate page's notice needs (NYC Local Law 144): what the automated
    assessment rates, how long the data is kept, and whom to ask for an alternative."""
    config = api.runtime.config
    job = None
    job_id, version = record.job, record.job_version
    if job_id is not None and version is not None:
        stored = await api.db.read(lambda store: store.get_job(job_id, version))
        if stored is not None:
            parsed = job_of(stored)
            job = {
                "title": parsed.title,
                "competencies": [
                    {"name": c.name, "description": c.description} for c in parsed.competencies
                ],
            }
    return {
        "assessment": {"automated": True, "job": job},
        "retention_days": record.retention_days or config.retention_days,
        "alternative_process_contact": config.alternative_process_contact,
    }

"""The candidate's side of a session (join token): its questions, the offer that joins it or
rejoins it after a drop, and their summary once it has ended."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from aiortc import RTCSessionDescription
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rtserver.api.candidate_data import notice
from rtserver.api.context import Api, api_of, candidate_actor
from rtserver.api.http import NO_STORE, read_json
from rtserver.api.sdp import parse_candidate_offer
from rtserver.api.self_identification import categories as self_identification_categories
from rtserver.errors import Conflict, Expired, ResumeRequired, Unauthorized
from rtserver.media.turn import page_ice_configuration
from rtserver.scoring.feedback import content_feedback
from rtserver.scoring.summary import summarise
from rtserver.store import STATUS_ENDED, STATUS_LIVE, Actor, SessionRecord

log = logging.getLogger(__name__)


async def get_questions(request: Request) -> Response:
    """The interview questions and what the candidate page needs to know before it
    starts (join token)."""
    api = api_of(request)
    token = request.query_params.get("token", "")
    record = await api.candidate_session(request.path_params["session_id"], token)
    config = api.runtime.config
    questions = [{"text": q.text, "seconds": q.seconds} for q in record.questions]
    # The page's STUN/TURN servers come with them: one TURN credential per fetch, so the
    # page fetches this again before each connection; never cached.
    ice = page_ice_configuration(config, record.id)
    return JSONResponse(
        {
            "questions": questions,
            "status": record.status,
            "emotion": config.emotion,
            # Whether the words are transcribed: the consent says so only when they are.
            "transcription": config.transcribe,
            "expires_at": record.expires_at,
            "max_interview_s": config.max_interview_s,
            # The optional form offered once the interview has ended (bias audits only).
            "self_identification": self_identification_categories(),
            # The notice: automated assessment, retention, an alternative (NYC LL144).
            **await notice(api, record),
            **ice,
        },
        headers=NO_STORE,
    )


async def offer(request: Request) -> Response:
    """The candidate joins, or, while the session is live, comes back after a drop.

    The first answer carries the session's resume secret; a rejoin of the live session
    must send it back (its hash is checked here, in the process that checks the join
    token, wherever the session runs), so a join link alone cannot take a live session
    over. A live session is not cut off by its link expiring: its rejoin needs the
    secret, and ``--max-interview`` bounds it.
    """
    api = api_of(request)
    api.rate_limits.check("offers", request)  # before the token: guessing one is limited too
    session_id = request.path_params["session_id"]
    record = await api.session_or_404(session_id)
    body = await read_json(request)
    token = body.get("token")
    if not isinstance(token, str) or not await api.db.check_join_token(record.id, token):
        raise Unauthorized("wrong or missing join token")
    actor = candidate_actor(request)
    if record.status == STATUS_LIVE:
        resume = await _check_resume(api, record, body.get("resume"), actor)
        answer = await api.manager.reconnect(record.id, parse_candidate_offer(body))
        await api.db.audit(actor, "rejoin", record.id)
        return _answer_response(answer, resume)
    if record.is_expired():
        raise Expired("this interview link has expired; ask for a new one")
    if record.status == STATUS_ENDED:
        raise Conflict("session has already ended")
    offer = parse_candidate_offer(body)
    texts = [q.text for q in record.questions]
    answer = await api.manager.join(record.id, offer, texts)
    resume = secrets.token_urlsafe(32)
    if not await api.db.set_resume_secret(record.id, resume):
        # Only the one join that made the session live gets here (store.mark_live).
        log.error("session already had a resume secret", extra={"session": record.id})
    await api.db.audit(actor, "join", record.id)
    return _answer_response(answer, resume)


async def _check_resume(api: Api, record: SessionRecord, resume: Any, actor: Actor) -> str:
    """The resume secret a rejoin of live ``record`` carries; raises ResumeRequired
    (audited) when it is missing or wrong."""
    if not isinstance(resume, str) or not resume:
        problem = "no resume secret"
    elif not await api.db.check_resume_secret(record.id, resume):
        problem = "wrong resume secret"
    else:
        return resume
    await api.db.audit(actor, "rejoin_refused", record.id, problem)
    raise ResumeRequired(
        f"this session is live: {problem}. A rejoin must send the resume secret of the "
        'first answer ("resume")'
    )


async def summary(request: Request) -> Response:
    """The candidate's summary (join token): plain strengths and things to work on,
    once the final exists; never the score."""
    api = api_of(request)
    token = request.query_params.get("token", "")
    record = await api.candidate_session(request.path_params["session_id"], token)
    final = await api.db.final_message(record.id)
    if final is None:
        status = "live" if record.status == STATUS_LIVE else "pending"
        return JSONResponse({"status": status, "strengths": [], "improvements": []})
    # Audited when it is actually shown, not for every poll while it is pending.
    await api.db.audit(candidate_actor(request), "view_summary", record.id)
    payload = final.payload
    delivery = payload.get("delivery")
    if delivery:  # a job session: its dimensions are competencies; delivery advice as ever
        payload = {**payload, "dimensions": delivery["dimensions"]}
    summary = summarise(payload)
    return JSONResponse(
        {
            "status": "ended",
            "strengths": list(summary.strengths),
            "improvements": list(summary.improvements),
            # Per question, what the answer could add (a job session; no score).
            "answers": content_feedback(final.payload),
            # Why it ended (e.g. max_length), so the page can say so plainly.
            "end_reason": final.payload.get("end_reason") or None,
        }
    )


def _answer_response(answer: RTCSessionDescription, resume: str) -> JSONResponse:
    return JSONResponse({"sdp": answer.sdp, "type": answer.type, "resume": resume})

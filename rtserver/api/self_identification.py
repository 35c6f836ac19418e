"""Voluntary demographic self-identification, for the bias audit only.

The candidate page offers an optional form once the interview has ended, never before it:
asked before, it could colour how a candidate answers, and nothing scored may depend on
it. The categories are the EEO-1 ones (the US Equal Employment Opportunity Commission's
Component 1 report, which NYC Local Law 144's audits use); "decline" (or leaving a
question out) is recorded as unknown.

The answers go to their own store table, which only the bias audit reads: no report, list,
export of scores or job-fit reads them, and no endpoint returns them to HR. The candidate's
own export of their data (``api/candidate_data.py``, join token) is the one place they are
given back, to the candidate. They are erased with the candidate's session.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rtserver.api.context import api_of, candidate_actor
from rtserver.api.http import read_json
from rtserver.errors import BadRequest, Conflict
from rtserver.store import STATUS_ENDED

SEXES = ("Female", "Male")
RACES = (
    "Hispanic or Latino",
    "White",
    "Black or African American",
    "Native Hawaiian or Other Pacific Islander",
    "Asian",
    "American Indian or Alaska Native",
    "Two or More Races",
)
DECLINE = "decline"


def categories() -> dict[str, Any]:
    """What the form offers (the candidate page reads it with the questions)."""
    return {"sex": list(SEXES), "race": list(RACES), "decline": DECLINE}


def _answer(body: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str | None:
    value = body.get(name)
    if value is None or value == "" or value == DECLINE:
        return None
    if value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)} or {DECLINE!r}")
    assert isinstance(value, str)
    return value


async def self_identify(request: Request) -> Response:
    """The candidate's answers (join token in the body), accepted only after the interview
    has ended; a later answer replaces an earlier one. Nothing of them is echoed back."""
    api = api_of(request)
    body = await read_json(request)
    record = await api.candidate_session(request.path_params["session_id"], body.get("token"))
    if record.status != STATUS_ENDED:
        raise Conflict("self-identification is offered only after the interview has ended")
    sex = _answer(body, "sex", SEXES)
    race = _answer(body, "race", RACES)
    await api.db.write(lambda store: store.save_self_identification(record.id, sex, race))
    # The audit log records that the form was answered, never what it said.
    await api.db.audit(candidate_actor(request), "self_identify", record.id)
    return JSONResponse({"saved": True}, status_code=201)

"""The whole audit log, for admins of the top unit: ``GET /api/v1/audit-log`` (JSON, oldest
first).

``?from=`` and ``?to=`` bound the period (ISO 8601 date or time, UTC; ``to`` is exclusive,
and a bare date includes that day); pages of ``?limit=`` rows (default 1000, at most
10000) follow each other with ``?after=<next_after>``. Each row carries its hashes, so an
export can be checked against the chain. Every request is itself audit-logged (never
folded: each page read is a row)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rtserver.accounts.roles import Permission
from rtserver.api.context import api_of
from rtserver.errors import BadRequest, Forbidden
from rtserver.store import ROOT_UNIT
from rtserver.store.audit_log import parse_bound

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000


async def audit_log(request: Request) -> Response:
    api = api_of(request)
    principal = await api.require(request, Permission.ADMINISTER)
    if principal.unit != ROOT_UNIT:
        # Its rows are every unit's: an admin of a region or store reads their sessions'
        # audit through /api/v1/sessions/{id}/audit instead.
        raise Forbidden("the whole audit log is for admins at the top unit")
    actor = principal.actor
    query = request.query_params
    since = _bound(query.get("from"), "from", end=False)
    until = _bound(query.get("to"), "to", end=True)
    after = _integer(query.get("after"), "after", 0, 0, 2**62)
    limit = _integer(query.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    # The parsed bounds (unix s), never the query's own text: a detail holds no free text.
    detail = f"from={_text(since)} to={_text(until)} after={after} limit={limit}"
    await api.db.audit(actor, "view_audit_log", None, detail)
    rows = await api.db.audit_rows(since, until, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return JSONResponse({"entries": rows, "next_after": rows[-1]["id"] if more and rows else None})


def _bound(raw: str | None, name: str, end: bool) -> float | None:
    if not raw:
        return None
    try:
        return parse_bound(raw, end)
    except ValueError as exc:
        raise BadRequest(f"{name} must be an ISO 8601 date or time") from exc


def _text(bound: float | None) -> str:
    return "-" if bound is None else f"{bound:.0f}"


def _integer(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    # isdecimal, not isdigit: int() refuses some digits isdigit takes ("²"), and more than
    # 4300 of them; 19 digits hold every bound here.
    if not raw.isdecimal() or len(raw) > 19 or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}")
    return int(raw)

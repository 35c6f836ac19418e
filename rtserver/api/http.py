"""What every route shares: reading a JSON body within bounds, and typed errors
(``rtserver.errors``) turned into JSON responses."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rtserver.api.context import api_of
from rtserver.errors import (
    BadRequest,
    InvalidJob,
    InvalidOutcomes,
    PayloadTooLarge,
    RateLimited,
    RetryLater,
    RtServerError,
    StoreUnavailable,
    http_status,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
# No body the API takes nests deeper than a few levels (a job: 4). A bound far above that
# keeps whatever walks a body (repr in a message, json.dumps, the store) from recursing
# near Python's limit, where a RecursionError would be a 500.
MAX_BODY_DEPTH = 32
NO_STORE = {"Cache-Control": "no-store"}  # responses that carry credentials


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object body; 413 over 64 KiB, 400 when it is not a JSON object."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"body is over {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"body is over {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(body)
        # A lone surrogate ("\ud800") is valid JSON but no text: UTF-8 cannot encode it, so it
        # could be neither stored nor answered. Encoding the body back finds one at any depth.
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise BadRequest("body holds a lone surrogate (\\ud800-\\udfff): it is not text") from exc
    except RecursionError as exc:  # deeper than json recurses: 64 KiB of "[" is plenty
        raise BadRequest("body is not valid JSON: it is nested too deep") from exc
    except ValueError as exc:  # not JSON, not UTF-8, or an integer of over 4300 digits
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    if _depth(data) > MAX_BODY_DEPTH:
        raise BadRequest(f"body is nested deeper than {MAX_BODY_DEPTH} levels")
    return data


def _depth(value: Any) -> int:
    """How deep ``value`` nests (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth + 1)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return deepest


def error_response(error: RtServerError) -> JSONResponse:
    headers = {}
    if isinstance(error, RetryLater):
        headers["Retry-After"] = str(error.retry_after_s)
    body: dict[str, Any] = {"error": error.code, "detail": error.detail}
    if isinstance(error, InvalidJob | InvalidOutcomes):
        body["problems"] = error.problems
    return JSONResponse(
        body,
        status_code=http_status(error),
        headers=headers,
    )


async def handle_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RtServerError)
    api = api_of(request)
    api.runtime.metrics.rejected.inc(code=exc.code)
    if isinstance(exc, RateLimited):
        return error_response(exc)  # logged once per flood, by the limiter (rate_limits.py)
    log.info("%s %s refused: %s", request.method, request.url.path, exc.detail)
    return error_response(exc)


async def handle_store_error(request: Request, exc: Exception) -> Response:
    """A store call made outside the AsyncStore (accounts, the outbox) that failed as an
    unreachable store does (``engine.OPERATIONAL_ERRORS``): 503 store_unavailable with
    Retry-After, as the AsyncStore's own refusals, never a 500."""
    return await handle_error(request, StoreUnavailable(f"the store cannot answer: {exc}"))

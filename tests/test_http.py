"""Request bodies (rtserver/api/http.py ``read_json``) over real HTTP, in process: any bytes
are a JSON object or a typed 400/413 ``{"error", "detail"}``, never a 500 (hypothesis), and
the bodies that once escaped as exceptions are refused."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from rtserver.api.http import MAX_BODY_BYTES, MAX_BODY_DEPTH, error_response, read_json
from rtserver.errors import RtServerError


async def echo(request: Request) -> Response:
    body = await read_json(request)
    # What every handler does with a body next: store it (UTF-8) and answer (JSON).
    return JSONResponse({"keys": sorted(body)})


async def refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RtServerError)
    return error_response(exc)


APP = Starlette(
    routes=[Route("/", echo, methods=["POST"])], exception_handlers={RtServerError: refused}
)
CLIENT = TestClient(APP, raise_server_exceptions=False)


def post(body: bytes) -> tuple[int, Any]:
    response = CLIENT.post("/", content=body, headers={"Content-Type": "application/json"})
    return response.status_code, response.json() if response.status_code != 500 else None


def assert_typed_refusal(status: int, body: Any, code: str = "bad_request") -> None:
    assert status == (413 if code == "payload_too_large" else 400), (status, body)
    assert body["error"] == code and body["detail"], body


json_text = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
).map(lambda value: json.dumps(value).encode())
# Bytes a client may send: JSON, JSON cut or spliced, any bytes, deep nesting, JSON escapes
# of lone surrogates, integers of thousands of digits.
bodies = (
    json_text
    | st.builds(lambda b, n: b[:n], json_text, st.integers(0, 50))
    | st.binary(max_size=300)
    | st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n)
    | st.integers(1, 2500).map(lambda n: b'{"a":' * n + b"1" + b"}" * n)
    | st.sampled_from([b'{"a": "\\ud800"}', b'{"\\udfff": 1}', b'{"a": ["\\ud83d"]}'])
    | st.integers(4000, 5000).map(lambda n: b'{"a": ' + b"9" * n + b"}")
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies)
def test_any_body_is_an_object_or_a_typed_refusal(body: bytes) -> None:
    status, answer = post(body)
    assert status != 500, body[:200]
    if status == 200:  # an object (read_json's promise), whose keys come back
        assert isinstance(answer["keys"], list)
    else:
        assert_typed_refusal(status, answer)


def test_the_bodies_that_escaped_are_refused() -> None:
    """Each was a 500 before: RecursionError (nesting), ValueError from the integer digit
    limit (not a JSONDecodeError), and a lone surrogate that UTF-8 could not store or send."""
    for body in (
        b"[" * 5000,
        b'{"a": ' + b"1" * 5000 + b"}",
        b'{"candidate": "\\ud800"}',
        b'{"\\udc00": "key"}',
    ):
        status, answer = post(body)
        assert_typed_refusal(status, answer)
    # Nesting is bounded well below where anything walking a body could recurse.
    status, answer = post(b'{"a": ' + b"[" * MAX_BODY_DEPTH + b"]" * MAX_BODY_DEPTH + b"}")
    assert_typed_refusal(status, answer)
    assert "nested deeper" in answer["detail"]
    status, answer = post(b'{"a": ' + b"[" * 20 + b"]" * 20 + b"}")
    assert status == 200
    status, answer = post(b'{"candidate": "\\ud83d\\ude00"}')  # a surrogate pair is text
    assert status == 200 and answer == {"keys": ["candidate"]}


def test_over_the_limit_is_413() -> None:
    status, answer = post(b'{"a": "' + b"x" * MAX_BODY_BYTES + b'"}')
    assert_typed_refusal(status, answer, "payload_too_large")

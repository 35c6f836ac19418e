"""The OpenAPI document (rtserver/api/openapi.py) against the route table (api/app.py).

Every /api/v1 route (path and method) of the app is documented and every documented
operation is a route; the websocket routes are in ``x-websockets``; the document is valid
OpenAPI 3.1 and loads in schemathesis; and each request body schema accepts the bodies the
tests send (and refuses the ones they expect refused for their shape).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import schemathesis
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from peer import new_peer_connection
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.testclient import TestClient

from rtserver.api.app import routed_app
from rtserver.api.auth import CSRF_HEADER, SESSION_COOKIE
from rtserver.api.context import Api
from rtserver.api.openapi import DOCUMENT, error_codes_by_status
from rtserver.errors import HTTP_STATUS

JOBS = Path(__file__).parent / "jobs"
API_PREFIX = "/api/v1/"
PASSWORD = "correct horse battery staple"  # as tests/test_accounts_api_e2e.py's
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


@contextlib.asynccontextmanager
async def _no_lifespan(app: Starlette) -> AsyncIterator[None]:
    yield


def route_app() -> Starlette:
    """The server's app with its real route table, and no runtime behind it (none of these
    tests reaches a handler that needs one): a stand-in for the Api with what building the
    app reads of it."""
    return routed_app(cast(Api, SimpleNamespace(bootstrap_key="")), _no_lifespan)


def _template(path: str) -> str:
    """A Starlette path as OpenAPI writes it: ``{id:int}`` -> ``{id}``."""
    return re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", path)


def _walk(routes: Iterable[BaseRoute], prefix: str = "") -> Iterable[tuple[str, str]]:
    for route in routes:
        if isinstance(route, Route):
            # HEAD comes with every GET (Starlette adds it); it is not an operation of its own.
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                yield method.lower(), _template(prefix + route.path)
        elif isinstance(route, WebSocketRoute):
            yield "websocket", _template(prefix + route.path)
        elif isinstance(route, Mount):
            yield from _walk(route.routes, prefix + route.path)


def route_table(app: Starlette | None = None) -> set[tuple[str, str]]:
    """(method, path) of every /api/v1 route of the app; method "websocket" for those."""
    routes = (app or route_app()).routes
    return {(m, p) for m, p in _walk(routes) if p.startswith(API_PREFIX)}


def documented() -> set[tuple[str, str]]:
    ops = {
        (method, path)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    return ops | {("websocket", path) for path in DOCUMENT["x-websockets"]}


def undocumented(table: set[tuple[str, str]]) -> str:
    """What the route table has and the document lacks, one route a line ("" if nothing)."""
    missing = sorted(table - documented())
    return "\n".join(f"  {method.upper()} {path}" for method, path in missing)


def test_every_api_route_is_documented() -> None:
    missing = undocumented(route_table())
    assert not missing, (
        "routes in rtserver/api/app.py that rtserver/api/openapi.py does not document "
        "(add each to _paths(), or to WEBSOCKETS for a websocket):\n" + missing
    )


def test_a_route_added_without_documentation_is_named() -> None:
    """The check above would catch a new route: one added to the real app is named, with
    its method, and a websocket too."""
    app = route_app()

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    app.router.routes.append(Route("/api/v1/users/{user_id}/tokens", handler, methods=["POST"]))
    app.router.routes.append(WebSocketRoute("/api/v1/audit-log/live", handler))
    named = set(undocumented(route_table(app)).splitlines())
    assert {"  POST /api/v1/users/{user_id}/tokens", "  WEBSOCKET /api/v1/audit-log/live"} <= named


def test_every_documented_operation_is_a_route() -> None:
    extra = sorted(documented() - route_table())
    assert not extra, "documented in rtserver/api/openapi.py but not in the route table:\n" + (
        "\n".join(f"  {method.upper()} {path}" for method, path in extra)
    )


def test_the_route_table_is_read_for_real() -> None:
    """The comparison above sees what it should: a known route of each kind, and nothing
    outside /api/v1 (the pages are not API operations)."""
    table = route_table()
    assert ("post", "/api/v1/sessions/{session_id}/offer") in table
    assert ("websocket", "/api/v1/sessions/{session_id}/signals") in table
    assert ("get", "/api/v1/openapi.json") in table
    assert not any(path.startswith("/candidate") for _, path in table)
    assert len(table) >= 27


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.")
    errors = [e.message for e in OpenAPIV31SpecValidator(DOCUMENT).iter_errors()]
    assert not errors, errors
    # Every operation has an id (schemathesis' links and clients' generators use them),
    # each once.
    ids = [
        op["operationId"]
        for item in DOCUMENT["paths"].values()
        for method, op in item.items()
        if method in HTTP_METHODS
    ]
    assert len(ids) == len(set(ids)), ids


def test_schemathesis_loads_every_operation() -> None:
    schema = schemathesis.openapi.from_dict(DOCUMENT)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.lower(), op.path) for op in operations} == documented() - {
        ("websocket", p) for p in DOCUMENT["x-websockets"]
    }


def test_every_typed_error_is_documented() -> None:
    """Each status of rtserver.errors has its response, and every error body's code is one
    the Error schema lists."""
    responses = DOCUMENT["components"]["responses"]
    for status in set(HTTP_STATUS.values()):
        assert f"Error{status}" in responses, status
    enum = set(DOCUMENT["components"]["schemas"]["Error"]["properties"]["error"]["enum"])
    assert {code for codes in error_codes_by_status().values() for code in codes} == enum
    assert {"bad_sdp", "invalid_job", "resume_required", "overloaded"} <= enum
    assert "Retry-After" in responses["Error503"]["headers"]


def test_security_schemes() -> None:
    schemes = DOCUMENT["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["cookieSession"]["in"] == "cookie"
    assert schemes["csrfToken"] == {**schemes["csrfToken"], "in": "header", "name": "X-CSRF-Token"}
    # The names the server reads (api/auth.py).
    assert schemes["cookieSession"]["name"] == SESSION_COOKIE
    assert schemes["csrfToken"]["name"].lower() == CSRF_HEADER
    create = DOCUMENT["paths"]["/api/v1/sessions"]["post"]
    # A cookie session's state-changing request needs the CSRF header; a bearer one does not.
    assert {"cookieSession": [], "csrfToken": []} in create["security"]
    assert {"bearerAuth": []} in create["security"]
    offer = DOCUMENT["paths"]["/api/v1/sessions/{session_id}/offer"]["post"]
    assert offer["security"] == []  # the join token in the body is the credential


def test_the_document_is_served() -> None:
    with TestClient(route_app()) as client:
        response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == json.loads(json.dumps(DOCUMENT))


# -- request bodies ------------------------------------------------------------------------


def body_validator(name: str) -> Draft202012Validator:
    """A validator of ``#/components/schemas/<name>`` with the document's refs resolvable
    (OpenAPI 3.1's schema dialect is JSON Schema 2020-12)."""
    root = {"$ref": f"#/components/schemas/{name}", "components": DOCUMENT["components"]}
    return Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)


def request_body_schemas() -> dict[str, str]:
    """Operation id -> the name of its request body's schema."""
    out = {}
    for item in DOCUMENT["paths"].values():
        for method, op in item.items():
            if method in HTTP_METHODS and "requestBody" in op:
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                out[op["operationId"]] = ref.rsplit("/", 1)[1]
    return out


async def real_offer(direction: str) -> str:
    """A genuine aiortc offer with a video and an audio m-line (what the tests' peers send,
    sendonly, and the observers', recvonly)."""
    pc = new_peer_connection()
    pc.addTransceiver("video", direction=direction)
    pc.addTransceiver("audio", direction=direction)
    pc.createDataChannel("control") if direction == "sendonly" else None
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


def job_files() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(JOBS.glob("*.json"))]


async def accepted_examples() -> dict[str, list[dict[str, Any]]]:
    """Bodies the tests send and the server takes, by the schema that describes them."""
    token = "join-token"
    send, receive = await real_offer("sendonly"), await real_offer("recvonly")
    good_outcomes = [
        {"candidate": "Female-0", "hired": True, "performance": 4.0, "rated_at": "2026-06-30"},
        {"session": "a" * 32, "hired": True, "performance": 3.5},
    ]
    return {
        "CreateSession": [
            {},
            {"candidate": "Test"},
            {"candidate": "A", "job": "0123456789abcdef0123456789abcdef"},
            {"job": "Night shift", "questions": [{"text": "Why us?", "seconds": 60}]},
            {"candidate": "Demo", "expires_in": 3600, "questions": [{"text": "Hello?"}]},
        ],
        "Job": job_files(),
        "Offer": [
            {"sdp": send, "type": "offer", "token": token},
            {"sdp": send, "type": "offer", "token": token, "resume": "secret"},
        ],
        "WatchOffer": [{"sdp": receive, "type": "offer"}],
        "EndSession": [{"token": token}, {}],
        "Decision": [
            {"decision": "advance", "reviewer": "Sam"},
            {"decision": "advance", "reviewer": "Sam", "reason": "Strong in person."},
        ],
        "Outcomes": [{"outcomes": good_outcomes}],
        # tests/test_accounts_api_e2e.py's
        "Login": [
            {"username": "locked", "password": "wrong!"},
            {"username": "admin2", "password": PASSWORD, "totp": "123456"},
        ],
        "CreateUser": [
            {"username": "viewer1", "password": PASSWORD, "role": "viewer", "unit": "store-1"},
            {"username": "admin2", "password": PASSWORD, "role": "admin"},
        ],
        "UpdateUser": [{"disabled": True}, {"role": "recruiter", "unit": "store-2"}],
        "CreateUnit": [{"id": "store-1", "name": "store-1", "parent": "north"}],
        "CreateToken": [
            {"name": "ATS store 2", "role": "recruiter", "unit": "store-2", "expires_in_days": 30}
        ],
        "TotpCode": [{"code": "123456"}],
        "LegalHold": [{"reason": "Claim by a third party"}, {"reason": "Claim 2025-18"}],
        "PasswordChange": [{"current": PASSWORD, "new": PASSWORD + " again"}],
        "SelfIdentification": [
            {"token": token, "sex": "Female", "race": "Asian"},
            {"token": token, "sex": "Female", "race": "decline"},
            {"token": token},
        ],
    }


def refused_examples() -> dict[str, list[dict[str, Any]]]:
    """Bodies the tests expect refused (400) for their shape alone."""
    return {
        "CreateSession": [{"questions": [{"text": 3}]}, {"expires_in": 0}],
        "Job": [{}, {**job_files()[0], "threshold": 101}, {**job_files()[0], "extra": 1}],
        "Offer": [{"sdp": "v=0", "type": "answer", "token": "t"}, {"sdp": " ", "type": "offer"}],
        "Decision": [{"decision": "maybe", "reviewer": "Sam"}, {"decision": "hold"}],
        "Outcomes": [{"outcomes": []}, {}],
        "SelfIdentification": [{"token": "t", "sex": "Robot"}],
        "Login": [{"username": "x"}, {"username": "", "password": "p"}],
        "LegalHold": [{"reason": " "}, {}],
        "CreateUser": [{"username": "a b", "password": PASSWORD, "role": "viewer"}],
        "CreateUnit": [{"id": "Store 1", "name": "x"}],
        "CreateToken": [
            {"name": "ATS", "role": "owner"},
            {"name": "x", "role": "admin", "expires_in_days": 400},
        ],
    }


async def test_each_request_schema_accepts_what_the_tests_send() -> None:
    examples = await accepted_examples()
    schemas = set(request_body_schemas().values())
    assert not schemas - set(examples), (
        f"request schemas without an example here: {sorted(schemas - set(examples))}"
    )
    for name, bodies in examples.items():
        validator = body_validator(name)
        for body in bodies:
            problems = [e.message for e in validator.iter_errors(body)]
            assert not problems, (name, body, problems)


def test_each_request_schema_refuses_what_the_server_refuses_for_its_shape() -> None:
    for name, bodies in refused_examples().items():
        validator = body_validator(name)
        for body in bodies:
            assert not validator.is_valid(body), (name, body)


def test_the_documented_examples_are_valid() -> None:
    """Each request body example in the document passes its schema, and the job's passes
    parse_job too (schemathesis' examples phase sends them as they are)."""
    from rtserver.scoring.jobs import parse_job

    examples = 0
    for item in DOCUMENT["paths"].values():
        for method, op in item.items():
            media = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            if method in HTTP_METHODS and "example" in media:
                name = media["schema"]["$ref"].rsplit("/", 1)[1]
                problems = [e.message for e in body_validator(name).iter_errors(media["example"])]
                assert not problems, (op["operationId"], problems)
                examples += 1
    assert examples >= 6
    job = DOCUMENT["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert parse_job(job["example"]).title == "Store assistant"


@pytest.mark.parametrize("path", sorted(JOBS.glob("*.json")), ids=lambda p: p.stem)
def test_job_files_pass_the_schema_and_the_server_rules(path: Path) -> None:
    """The schema agrees with parse_job on the real job files (both accept them)."""
    from rtserver.scoring.jobs import parse_job

    body = json.loads(path.read_text())
    assert body_validator("Job").is_valid(body)
    assert parse_job(body).title

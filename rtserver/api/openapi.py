"""The OpenAPI 3.1 document of the HTTP API (v1), served at ``GET /api/v1/openapi.json``.

The document is data, built once at import from the handlers' real shapes and bounds (the
request bodies' fields, limits and defaults as ``sessions.py``, ``scoring/jobs.py``,
``scoring/outcomes.py`` and the others check them). Rules a JSON Schema cannot say (a job's
weights summing to 1, each question naming known competencies) are in the descriptions, and
break them answers 400 ``invalid_job`` with every problem listed.

Every error is a typed :mod:`rtserver.errors` exception answered as ``{"error", "detail"}``;
the error codes and their statuses are read from that module, so a new typed error is
documented by being defined there. The signals websocket is not an HTTP operation: it is
described in the vendor extension ``x-websockets``.

``tests/test_openapi.py`` keeps this document in step with the route table in ``app.py``:
a route added there without its operation here fails that test, naming the route.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from rtserver import errors
from rtserver.accounts import passwords
from rtserver.accounts.roles import ROLES
from rtserver.api import accounts, audit_log
from rtserver.api.auth import SESSION_COOKIE
from rtserver.api.http import MAX_BODY_BYTES
from rtserver.api.self_identification import DECLINE, RACES, SEXES
from rtserver.api.sessions import MAX_EXPIRES_IN_S, MAX_QUESTIONS
from rtserver.scoring import jobs as job_rules

# The one typed error defined beside what raises it (scoring/audit.py's AuditInvalid, 400
# invalid_audit from the bias audit): imported so that the document, built from the error
# classes that exist, lists it whatever was imported before.
from rtserver.scoring.audit import AuditInvalid  # noqa: F401
from rtserver.store import STATUS_CREATED, STATUS_ENDED, STATUS_ERASED, STATUS_LIVE

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
CSRF_HEADER = "X-CSRF-Token"  # what a cookie login's state-changing request carries (auth.py)

Schema = dict[str, Any]

NONBLANK = "\\S"  # a text with at least one non-space character (handlers strip)


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


# -- errors ---------------------------------------------------------------------------


def _error_classes() -> list[type[errors.RtServerError]]:
    """Every typed error class, the base included, in definition order."""
    found: list[type[errors.RtServerError]] = [errors.RtServerError]
    for cls in found:
        found.extend(sub for sub in cls.__subclasses__() if sub not in found)
    return found


def _status_of(cls: type[errors.RtServerError]) -> int:
    for base in cls.__mro__:
        if base in errors.HTTP_STATUS:
            return errors.HTTP_STATUS[base]
    return 500


def error_codes_by_status() -> dict[int, list[str]]:
    """The typed errors' codes, by the HTTP status each is answered with."""
    by_status: dict[int, list[str]] = {}
    for cls in _error_classes():
        codes = by_status.setdefault(_status_of(cls), [])
        if cls.code not in codes:
            codes.append(cls.code)
    return dict(sorted(by_status.items()))


_ERROR_TITLES = {
    400: "The request is malformed or breaks a rule of the API",
    401: "No credential, a wrong one, or (offers) no resume secret for a live session",
    404: "No such session or job (or it was erased)",
    409: "The session or job is in a state that does not allow this",
    410: "The interview link has expired",
    413: f"The body is over {MAX_BODY_BYTES} bytes",
    500: "An unexpected server error",
    503: (
        "The server is at capacity, overloaded, a worker is not ready, or the store is"
        " unreachable: retry later"
    ),
}


def _error_response(status: int, codes: list[str]) -> Schema:
    response: Schema = {
        "description": f"{_ERROR_TITLES.get(status, 'Refused')} (error: {', '.join(codes)}).",
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    if status == 503:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before trying again.",
                "schema": {"type": "integer", "minimum": 0},
            }
        }
    return response


# -- schemas --------------------------------------------------------------------------


def _schemas() -> dict[str, Schema]:
    nullable_time = {"type": ["number", "null"], "description": "Unix time (s), or null."}
    text = {"type": "string"}
    return {
        "Error": {
            "type": "object",
            "required": ["error", "detail"],
            "properties": {
                "error": {
                    "type": "string",
                    "enum": sorted({c.code for c in _error_classes()}),
                    "description": "The stable machine-readable code of the typed error.",
                },
                "detail": {"type": "string", "description": "What is wrong, for people."},
                "problems": {
                    "type": "array",
                    "items": text,
                    "description": "invalid_job and invalid_outcomes: every problem found.",
                },
            },
        },
        "Question": {
            "type": "object",
            "required": ["text"],
            "properties": {
                "text": {"type": "string", "description": "Cut to 2000 characters."},
                "seconds": {"type": "integer", "minimum": 1, "maximum": 3600, "default": 120},
            },
        },
        "CreateSession": {
            "type": "object",
            "description": (
                "A new interview. `job` naming a job's id in scope takes that job's questions "
                "(then `questions` must be empty: 400 otherwise); any other `job` text is a "
                "label. Unknown fields are ignored."
            ),
            "properties": {
                "candidate": {"type": ["string", "null"], "maxLength": 500},
                "job": {"type": ["string", "null"], "maxLength": 500},
                "questions": {
                    "type": ["array", "null"],
                    "maxItems": MAX_QUESTIONS,
                    "items": _ref("Question"),
                },
                "unit": {
                    "type": ["string", "null"],
                    "description": "The org unit it belongs to: one in the caller's scope "
                    "(404 otherwise), default the caller's own.",
                },
                "expires_in": {
                    "type": ["number", "null"],
                    "minimum": 1,
                    "maximum": MAX_EXPIRES_IN_S,
                    "description": "How long the join link lasts (s); default one week.",
                },
            },
        },
        "SessionCreated": {
            "type": "object",
            "required": ["id", "join_token", "candidate_url", "observe_url", "expires_at"],
            "properties": {
                "id": text,
                "join_token": {"type": "string", "description": "The candidate's secret."},
                "candidate_url": text,
                "observe_url": text,
                "expires_at": nullable_time,
            },
        },
        "Session": {
            "type": "object",
            "required": ["id", "status", "questions"],
            "properties": {
                "id": text,
                "candidate": {"type": ["string", "null"]},
                "job": {"type": ["string", "null"]},
                "questions": {"type": "array", "items": _ref("Question")},
                "status": {"enum": [STATUS_CREATED, STATUS_LIVE, STATUS_ENDED, STATUS_ERASED]},
                "created_at": nullable_time,
                "started_at": nullable_time,
                "ended_at": nullable_time,
                "end_reason": {"type": ["string", "null"]},
                "expires_at": nullable_time,
                "job_version": {"type": ["integer", "null"]},
                "live": {"type": "boolean", "description": "GET of one session only."},
            },
        },
        "Competency": {
            "type": "object",
            "required": ["id", "weight", "anchors"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string", "pattern": job_rules.ID_PATTERN.pattern},
                "name": {"type": "string", "pattern": NONBLANK, "description": "Default: id."},
                "weight": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1,
                    "description": "Share of the job-fit score; a job's weights sum to 1.",
                },
                "description": {"type": ["string", "null"]},
                "anchors": {
                    "type": "object",
                    "description": "Rating level (1-5) to what an answer at that level shows; "
                    "at least two levels.",
                    "minProperties": 2,
                    "propertyNames": {"pattern": "^0*[1-5]$"},
                    "additionalProperties": {"type": "string", "pattern": NONBLANK},
                },
                "skills": {
                    "type": "array",
                    "maxItems": job_rules.MAX_SKILLS,
                    "items": {"type": "string", "pattern": NONBLANK},
                },
            },
        },
        "JobQuestion": {
            "type": "object",
            "required": ["text", "competencies"],
            "additionalProperties": False,
            "properties": {
                "text": {"type": "string", "pattern": NONBLANK},
                "seconds": {"type": "integer", "minimum": 1, "maximum": 3600, "default": 120},
                "competencies": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "string"},
                    "description": "Ids of the job's competencies an answer is rated on.",
                },
            },
        },
        "Job": {
            "type": "object",
            "description": (
                "A job's competency model (scoring/jobs.py). Also: the competencies' weights "
                "sum to 1, every question names known competencies, every competency is "
                "targeted by a question, and webhooks need the server's webhook secret; a "
                "job breaking any of these is refused with 400 invalid_job, every problem "
                "listed."
            ),
            "required": ["title", "competencies", "questions"],
            "additionalProperties": False,
            "properties": {
                "title": {"type": "string", "pattern": NONBLANK},
                "threshold": {"type": "number", "minimum": 0, "maximum": 100, "default": 70},
                "competencies": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": job_rules.MAX_COMPETENCIES,
                    "items": _ref("Competency"),
                },
                "questions": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": job_rules.MAX_QUESTIONS,
                    "items": _ref("JobQuestion"),
                },
                "delivery_weight": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": job_rules.MAX_DELIVERY_WEIGHT,
                    "default": 0,
                },
                "face_signals": {"type": "boolean", "default": False},
                "webhooks": {
                    "type": "array",
                    "maxItems": job_rules.MAX_WEBHOOKS,
                    "items": {"type": "string", "pattern": "^https?://"},
                },
                "retention_days": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "maximum": job_rules.MAX_RETENTION_DAYS,
                    "description": "Days a candidate's data is kept after the decision; "
                    "null: the server's setting.",
                },
            },
        },
        "JobRecord": {
            "type": "object",
            "description": "A stored version of a job: its body with these fields.",
            "required": ["id", "version", "title", "competencies", "questions"],
            "properties": {
                "id": text,
                "version": {"type": "integer", "minimum": 1},
                "created_at": {"type": "number"},
                "created_by": text,
                "title": text,
                "competencies": {"type": "array"},
                "questions": {"type": "array"},
            },
        },
        "Offer": {
            "type": "object",
            "required": ["sdp", "type", "token"],
            "description": (
                "The candidate's complete (non-trickle) offer: at least one audio or video "
                "m-line, at most one audio, one video and one application m-line."
            ),
            "properties": {
                "sdp": {"type": "string", "pattern": NONBLANK},
                "type": {"const": "offer"},
                "token": {"type": "string", "description": "The session's join token."},
                "resume": {
                    "type": "string",
                    "description": "A rejoin of a live session: the first answer's resume.",
                },
            },
        },
        "WatchOffer": {
            "type": "object",
            "required": ["sdp", "type"],
            "description": "An observer's offer: at most one audio and one video m-line, "
            "each recvonly.",
            "properties": {
                "sdp": {"type": "string", "pattern": NONBLANK},
                "type": {"const": "offer"},
            },
        },
        "Answer": {
            "type": "object",
            "required": ["sdp", "type"],
            "properties": {
                "sdp": text,
                "type": {"const": "answer"},
                "resume": {
                    "type": "string",
                    "description": "The candidate's answer: the session's resume secret.",
                },
            },
        },
        "LegalHold": {
            "type": "object",
            "required": ["reason"],
            "properties": {"reason": {"type": "string", "pattern": NONBLANK, "maxLength": 2000}},
        },
        "HoldState": {
            "type": "object",
            "required": ["session", "legal_hold"],
            "properties": {
                "session": text,
                "legal_hold": {"type": ["object", "null"]},
                "erasure_requested_at": nullable_time,
                "erased": {"type": "boolean"},
            },
        },
        "EndSession": {
            "type": "object",
            "description": "A candidate hanging up: the join token (or ?token=).",
            "properties": {"token": text},
        },
        "Decision": {
            "type": "object",
            "required": ["decision", "reviewer"],
            "description": "A decision against the recommendation needs a non-blank reason.",
            "properties": {
                "decision": {"enum": ["advance", "reject", "hold"]},
                "reviewer": {"type": "string", "pattern": NONBLANK},
                "reason": {"type": "string", "maxLength": 2000, "default": ""},
            },
        },
        "Outcome": {
            "type": "object",
            "description": "Names a session (by id) or a candidate (by label), and gives "
            "hired or performance or both.",
            "properties": {
                "session": {"type": ["string", "null"], "maxLength": 200},
                "candidate": {"type": ["string", "null"], "maxLength": 200},
                "hired": {
                    "type": ["boolean", "integer", "string", "null"],
                    "description": "true/false, 1/0, yes/no, y/n; empty or null: unknown.",
                },
                "performance": {
                    "type": ["number", "string", "null"],
                    "description": "A finite number on the company's own scale.",
                },
                "rated_at": {"type": ["string", "null"], "description": "YYYY-MM-DD."},
            },
        },
        "Outcomes": {
            "type": "object",
            "required": ["outcomes"],
            "description": "Recorded whole or refused whole (400 invalid_outcomes).",
            "properties": {
                "outcomes": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 100_000,
                    "items": _ref("Outcome"),
                }
            },
        },
        "SelfIdentification": {
            "type": "object",
            "required": ["token"],
            "description": "Voluntary, after the interview has ended; absent, empty or "
            f"{DECLINE!r} is recorded as unknown.",
            "properties": {
                "token": {"type": "string", "description": "The session's join token."},
                "sex": {"enum": [*SEXES, DECLINE, "", None]},
                "race": {"enum": [*RACES, DECLINE, "", None]},
            },
        },
        "Login": {
            "type": "object",
            "required": ["username", "password"],
            "description": "Sent as application/json (400 otherwise: no login from a "
            "cross-site form). totp or recovery_code when the account has a second factor.",
            "properties": {
                "username": {"type": "string", "minLength": 1, "maxLength": accounts.MAX_NAME},
                "password": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": passwords.MAX_LENGTH,
                },
                "totp": {"type": "string", "maxLength": 20},
                "recovery_code": {"type": "string", "maxLength": 40},
            },
        },
        "LoggedIn": {
            "type": "object",
            "required": ["user", "csrf_token", "expires_at", "enrol_totp"],
            "properties": {
                "user": _ref("User"),
                "csrf_token": {"type": "string", "description": f"Send it in {CSRF_HEADER}."},
                "expires_at": {"type": "number"},
                "enrol_totp": {
                    "type": "boolean",
                    "description": "A login that can only enrol a second factor.",
                },
                "recovery_codes_left": {"type": "integer"},
            },
        },
        "Me": {
            "type": "object",
            "required": ["id", "role", "unit", "via"],
            "properties": {
                "id": text,
                "name": text,
                "role": {"enum": list(ROLES)},
                "unit": text,
                "via": text,
                "csrf_token": {"type": ["string", "null"]},
                "enrol_totp": {"type": "boolean"},
            },
        },
        "TotpEnrolment": {
            "type": "object",
            "required": ["otpauth_uri", "secret", "qr_svg"],
            "properties": {"otpauth_uri": text, "secret": text, "qr_svg": text},
        },
        "TotpCode": {
            "type": "object",
            "required": ["code"],
            "properties": {"code": {"type": "string", "minLength": 1, "maxLength": 20}},
        },
        "TotpConfirmed": {
            "type": "object",
            "required": ["recovery_codes", "csrf_token"],
            "properties": {
                "recovery_codes": {"type": "array", "items": text, "description": "Shown once."},
                "csrf_token": text,
            },
        },
        "PasswordChange": {
            "type": "object",
            "required": ["current", "new"],
            "properties": {
                "current": {"type": "string", "minLength": 1, "maxLength": passwords.MAX_LENGTH},
                "new": {
                    "type": "string",
                    "minLength": passwords.MIN_LENGTH,
                    "maxLength": passwords.MAX_LENGTH,
                },
            },
        },
        "User": {
            "type": "object",
            "required": ["id", "username", "role", "unit"],
            "properties": {
                "id": text,
                "username": text,
                "name": text,
                "role": {"enum": list(ROLES)},
                "unit": text,
                "disabled": {"type": "boolean"},
                "require_totp": {"type": "boolean"},
                "totp_enrolled": {"type": "boolean"},
            },
        },
        "CreateUser": {
            "type": "object",
            "required": ["username", "password", "role"],
            "description": "unit: one in the admin's scope (404 otherwise), default the "
            "admin's own.",
            "properties": {
                "username": {"type": "string", "pattern": "^[^\\s]{1,64}$"},
                "password": {
                    "type": "string",
                    "minLength": passwords.MIN_LENGTH,
                    "maxLength": passwords.MAX_LENGTH,
                },
                "role": {"enum": list(ROLES)},
                "unit": {"type": ["string", "null"]},
                "name": {"type": "string", "maxLength": accounts.MAX_NAME},
                "require_totp": {"type": "boolean", "default": False},
            },
        },
        "UpdateUser": {
            "type": "object",
            "description": "At least one field (400 otherwise). A change of role, unit or "
            "password, or disabling, ends the user's logins.",
            "properties": {
                "role": {"enum": list(ROLES)},
                "unit": {"type": ["string", "null"]},
                "name": {"type": "string", "maxLength": accounts.MAX_NAME},
                "disabled": {"type": "boolean"},
                "require_totp": {"type": "boolean"},
                "password": {
                    "type": "string",
                    "minLength": passwords.MIN_LENGTH,
                    "maxLength": passwords.MAX_LENGTH,
                },
            },
        },
        "Unit": {
            "type": "object",
            "required": ["id", "name"],
            "properties": {"id": text, "name": text, "parent": {"type": ["string", "null"]}},
        },
        "CreateUnit": {
            "type": "object",
            "required": ["id", "name"],
            "description": "parent: a unit in the admin's scope, default the admin's own.",
            "properties": {
                "id": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"},
                "name": {"type": "string", "minLength": 1, "maxLength": accounts.MAX_NAME},
                "parent": {"type": ["string", "null"]},
            },
        },
        "ApiToken": {
            "type": "object",
            "required": ["id", "name", "role", "unit", "expires_at"],
            "properties": {
                "id": text,
                "name": text,
                "role": {"enum": list(ROLES)},
                "unit": text,
                "expires_at": {"type": "number"},
                "revoked_at": {"type": ["number", "null"]},
                "token": {
                    "type": "string",
                    "description": "The secret (Authorization: Bearer), in the 201 only.",
                },
            },
        },
        "CreateToken": {
            "type": "object",
            "required": ["name", "role"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": accounts.MAX_NAME},
                "role": {"enum": list(ROLES)},
                "unit": {"type": ["string", "null"]},
                "expires_in_days": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": accounts.MAX_TOKEN_DAYS,
                    "default": 90,
                },
            },
        },
        "IceConfiguration": {
            "type": "object",
            "required": ["ice_servers", "ice_transport_policy"],
            "properties": {
                "ice_servers": {"type": "array", "items": {"type": "object"}},
                "ice_transport_policy": {"enum": ["all", "relay"]},
            },
        },
    }


# -- operations -------------------------------------------------------------------------

Security = list[dict[str, list[str]]]
HR_READ: Security = [{"bearerAuth": []}, {"cookieSession": []}]
HR_WRITE: Security = [{"bearerAuth": []}, {"cookieSession": [], "csrfToken": []}]
NONE: Security = []  # the join token, in the body or ?token=
HR_OR_CANDIDATE: Security = [*HR_WRITE, {}]  # HR, or the join token without any scheme
BROWSER: Security = [{"cookieSession": [], "csrfToken": []}]  # a browser login only
USER_ID = {
    "name": "user_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The user's id.",
}
TOKEN_ID = {
    "name": "token_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The API token's id.",
}

SESSION_ID = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The session's id (32 hex digits).",
}
JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The job's id.",
}


def _query(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema or {"type": "string"},
        "description": description,
    }


TOKEN_QUERY = _query("token", "The session's join token.")


def _op(
    operation_id: str,
    summary: str,
    tag: str,
    security: Security,
    ok: tuple[int, str, Schema | None],
    errors_: tuple[int, ...],
    *,
    body: str | None = None,
    body_required: bool = True,
    parameters: tuple[Schema, ...] = (),
    description: str | None = None,
    links: dict[str, Schema] | None = None,
    html: bool = False,
    accepted: tuple[int, str] | None = None,
) -> Schema:
    status, what, schema = ok
    success: Schema = {"description": what}
    if schema is not None:
        success["content"] = {"application/json": {"schema": schema}}
    if html:
        success["content"]["text/html"] = {"schema": {"type": "string"}}
    if links:
        success["links"] = links
    responses: Schema = {str(status): success}
    if accepted is not None:  # a second success (202), shaped as the first
        responses[str(accepted[0])] = {**success, "description": accepted[1]}
    statuses = set(errors_)
    if body is not None:
        statuses |= {400, 413}
    if security is not NONE:
        # A role that may not, a login still enrolling its second factor, or a browser
        # request without its CSRF token; and a store that is unreachable (every HR call
        # reads it and writes its audit row): store_unavailable.
        statuses |= {401, 403, 503}
    for code in sorted(statuses):
        responses[str(code)] = {"$ref": f"#/components/responses/Error{code}"}
    responses["default"] = {"$ref": "#/components/responses/ErrorOther"}
    operation: Schema = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "security": security,
        "responses": responses,
    }
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        media: Schema = {"schema": _ref(body)}
        if body in BODY_EXAMPLES:
            media["example"] = BODY_EXAMPLES[body]
        operation["requestBody"] = {
            "required": body_required,
            "content": {"application/json": media},
        }
    return operation


# A body each route takes (the Job one as parse_job accepts it; tests/test_openapi.py
# checks them), for readers, and for schemathesis' examples phase: generated jobs almost
# never have weights summing to 1.
BODY_EXAMPLES: dict[str, Schema] = {
    "Job": {
        "title": "Store assistant",
        "threshold": 65,
        "competencies": [
            {
                "id": "customer_focus",
                "name": "Customer focus",
                "weight": 0.6,
                "anchors": {"1": "Talks only about tasks.", "5": "Says how a customer was helped."},
            },
            {
                "id": "teamwork",
                "name": "Teamwork",
                "weight": 0.4,
                "anchors": {"1": "Works alone.", "5": "Brings others along."},
            },
        ],
        "questions": [
            {"text": "Tell us about a customer you helped.", "competencies": ["customer_focus"]},
            {"text": "Tell us about a busy shift.", "seconds": 90, "competencies": ["teamwork"]},
        ],
    },
    "CreateSession": {
        "candidate": "Alex Doe",
        "questions": [{"text": "Why this role?", "seconds": 60}],
        "expires_in": 86400,
    },
    "Decision": {"decision": "advance", "reviewer": "Sam", "reason": "Strong examples."},
    "Outcomes": {"outcomes": [{"candidate": "Alex Doe", "hired": True, "performance": 4.0}]},
    "SelfIdentification": {"token": "<join token>", "sex": "decline"},
    "LegalHold": {"reason": "A claim was filed: keep until it is settled."},
    "CreateUser": {"username": "dana", "password": "a long passphrase", "role": "recruiter"},
    "CreateUnit": {"id": "store-12", "name": "Store 12"},
    "CreateToken": {"name": "ATS", "role": "recruiter", "expires_in_days": 90},
    "Login": {"username": "dana", "password": "a long passphrase", "totp": "123456"},
    "EndSession": {"token": "<join token>"},
}


def _list_of(key: str, items: Schema | None = None) -> Schema:
    return {
        "type": "object",
        "required": [key],
        "properties": {key: {"type": "array", "items": items or {"type": "object"}}},
    }


def _paths() -> dict[str, Schema]:
    session = "/api/v1/sessions/{session_id}"
    job = "/api/v1/jobs/{job_id}"
    obj: Schema = {"type": "object"}
    session_links = {
        name: {"operationId": name, "parameters": {"session_id": "$response.body#/id"}}
        for name in ("getSession", "getSessionAudit", "listDecisions")
    }
    session_links["getQuestions"] = {
        "operationId": "getQuestions",
        "parameters": {"session_id": "$response.body#/id", "token": "$response.body#/join_token"},
    }
    job_links = {
        name: {"operationId": name, "parameters": {"job_id": "$response.body#/id"}}
        for name in ("getJob", "listOutcomes", "listCalibrations")
    }
    return {
        "/api/v1/openapi.json": {
            "get": _op("getOpenApi", "This document", "meta", NONE, (200, "OpenAPI 3.1", obj), ())
        },
        "/api/v1/ice-servers": {
            "get": _op(
                "getIceServers",
                "The observer page's STUN/TURN servers, with a fresh TURN credential",
                "observers",
                HR_READ,
                (200, "The ICE configuration", _ref("IceConfiguration")),
                (),
            )
        },
        "/api/v1/jobs": {
            "post": _op(
                "createJob",
                "Create a job (version 1)",
                "jobs",
                HR_WRITE,
                (201, "The stored job", _ref("JobRecord")),
                (404,),
                body="Job",
                parameters=(
                    _query("unit", "The org unit that owns it: one in scope (404 otherwise)."),
                ),
                links=job_links,
            ),
            "get": _op(
                "listJobs",
                "Every job's latest version",
                "jobs",
                HR_READ,
                (200, "The jobs", _list_of("jobs", _ref("JobRecord"))),
                (),
            ),
        },
        job: {
            "get": _op(
                "getJob",
                "A job's latest version, or ?version=N",
                "jobs",
                HR_READ,
                (200, "The job", _ref("JobRecord")),
                (400, 404),
                parameters=(
                    JOB_ID,
                    _query("version", "A positive integer.", {"type": "string"}),
                ),
            ),
            "put": _op(
                "updateJob",
                "Edit a job: a new version, the old ones kept",
                "jobs",
                HR_WRITE,
                (200, "The new version", _ref("JobRecord")),
                (404,),
                body="Job",
                parameters=(JOB_ID,),
            ),
        },
        f"{job}/outcomes": {
            "post": _op(
                "recordOutcomes",
                "Record past candidates' outcomes, linked to their scored sessions",
                "audits",
                HR_WRITE,
                (201, "How many were recorded", {"type": "object", "required": ["recorded"]}),
                (404,),
                body="Outcomes",
                parameters=(JOB_ID,),
            ),
            "get": _op(
                "listOutcomes",
                "The job's recorded outcomes",
                "audits",
                HR_READ,
                (200, "The outcomes", _list_of("outcomes")),
                (404,),
                parameters=(JOB_ID,),
            ),
        },
        f"{job}/audit": {
            "get": _op(
                "biasAudit",
                "The bias audit of the job's decided, scored sessions",
                "audits",
                HR_READ,
                (200, "The audit (JSON, or the report's HTML with ?format=html)", obj),
                (400, 404, 409),
                parameters=(
                    JOB_ID,
                    _query("from", "First day (YYYY-MM-DD, UTC) an interview ended."),
                    _query("to", "Last day (YYYY-MM-DD, UTC)."),
                    _query(
                        "format",
                        "html for the report's HTML fragment; anything else is JSON.",
                        {"type": "string", "examples": ["html", "json"]},
                    ),
                ),
                html=True,
            )
        },
        f"{job}/calibrations": {
            "get": _op(
                "listCalibrations",
                "The calibrations applied to the job",
                "audits",
                HR_READ,
                (200, "The calibrations", _list_of("calibrations")),
                (404,),
                parameters=(JOB_ID,),
            )
        },
        "/api/v1/sessions": {
            "post": _op(
                "createSession",
                "Create an interview session and its join link",
                "sessions",
                HR_WRITE,
                (201, "The session and its join token", _ref("SessionCreated")),
                (404, 429),
                body="CreateSession",
                links=session_links,
            ),
            "get": _op(
                "listSessions",
                "Every session",
                "sessions",
                HR_READ,
                (200, "The sessions", _list_of("sessions", _ref("Session"))),
                (),
            ),
        },
        session: {
            "get": _op(
                "getSession",
                "A session, with its live figures while it runs",
                "sessions",
                HR_READ,
                (200, "The session", _ref("Session")),
                (404,),
                parameters=(SESSION_ID,),
            ),
            "delete": _op(
                "eraseSession",
                "Erase a candidate's data (a live session is ended first; 409 under a legal hold)",
                "sessions",
                HR_WRITE,
                (204, "Erased", None),
                (404, 409),
                parameters=(SESSION_ID,),
            ),
        },
        f"{session}/questions": {
            "get": _op(
                "getQuestions",
                "The candidate page's questions and ICE servers (join token)",
                "candidate",
                NONE,
                (200, "The questions", {"type": "object", "required": ["questions", "status"]}),
                (401, 404, 410, 503),
                parameters=(SESSION_ID, TOKEN_QUERY),
            )
        },
        f"{session}/offer": {
            "post": _op(
                "offer",
                "The candidate joins, or rejoins a live session after a drop",
                "candidate",
                NONE,
                (200, "The answer and the resume secret", _ref("Answer")),
                (401, 404, 409, 410, 429, 503),
                body="Offer",
                parameters=(SESSION_ID,),
            )
        },
        f"{session}/end": {
            "post": _op(
                "endSession",
                "End a session (HR, or the candidate with the join token)",
                "sessions",
                HR_OR_CANDIDATE,
                (200, "The ended session", _ref("Session")),
                (400, 401, 404, 409, 413),
                body="EndSession",
                body_required=False,
                parameters=(SESSION_ID, TOKEN_QUERY),
            )
        },
        f"{session}/watch": {
            "post": _op(
                "watch",
                "An observer's recvonly offer, answered with the candidate's live media",
                "observers",
                HR_WRITE,
                (200, "The answer", _ref("Answer")),
                (404, 409, 503),
                body="WatchOffer",
                parameters=(SESSION_ID,),
            )
        },
        f"{session}/summary": {
            "get": _op(
                "getSummary",
                "The candidate's own summary once it has ended (join token; never the score)",
                "candidate",
                NONE,
                (200, "The summary", {"type": "object", "required": ["status"]}),
                (401, 404, 410),
                parameters=(SESSION_ID, TOKEN_QUERY),
            )
        },
        f"{session}/report": {
            "get": _op(
                "getReport",
                "The ended session's report: final, every signal, the transcript",
                "sessions",
                HR_READ,
                (200, "The report", {"type": "object", "required": ["session", "final"]}),
                (404, 409),
                parameters=(SESSION_ID,),
            )
        },
        f"{session}/audit": {
            "get": _op(
                "getSessionAudit",
                "Who viewed or changed the session, newest first",
                "sessions",
                HR_READ,
                (200, "The audit log", _list_of("audit")),
                (404,),
                parameters=(SESSION_ID,),
            )
        },
        f"{session}/decision": {
            "post": _op(
                "decide",
                "Record a person's decision on the candidate",
                "decisions",
                HR_WRITE,
                (201, "The decision", {"type": "object", "required": ["decision", "reviewer"]}),
                (404, 409),
                body="Decision",
                parameters=(SESSION_ID,),
            ),
            "get": _op(
                "listDecisions",
                "The decisions on the candidate, oldest first",
                "decisions",
                HR_READ,
                (200, "The decisions", _list_of("decisions")),
                (404,),
                parameters=(SESSION_ID,),
            ),
        },
        f"{session}/explanation": {
            "get": _op(
                "getExplanation",
                "The main elements behind a job session's recommendation (EU AI Act Art. 86)",
                "decisions",
                HR_READ,
                (200, "The explanation", obj),
                (404, 409),
                parameters=(SESSION_ID,),
            )
        },
        f"{session}/self-identification": {
            "post": _op(
                "selfIdentify",
                "The candidate's voluntary self-identification, for the bias audit only",
                "candidate",
                NONE,
                (201, "Saved (nothing of it is echoed)", {"type": "object"}),
                (401, 404, 409, 410),
                body="SelfIdentification",
                parameters=(SESSION_ID,),
            )
        },
        **_account_paths(),
        "/api/v1/audit-log": {
            "get": _op(
                "getAuditLog",
                "The whole audit log, oldest first, for admins of the top unit",
                "audit",
                HR_READ,
                (200, "A page of rows", {"type": "object", "required": ["entries", "next_after"]}),
                (400,),
                parameters=(
                    _query("from", "From this ISO 8601 date or time (UTC unless it says)."),
                    _query("to", "Up to this date or time, exclusive (a date: that whole day)."),
                    _query(
                        "after",
                        "The next_after of the page before.",
                        {"type": "string", "pattern": "^[0-9]+$"},
                    ),
                    _query(
                        "limit",
                        f"Rows a page, 1 to {audit_log.MAX_LIMIT} (default "
                        f"{audit_log.DEFAULT_LIMIT}).",
                        {"type": "string", "pattern": "^[0-9]+$"},
                    ),
                ),
            )
        },
        f"{session}/legal-hold": {
            "put": _op(
                "setLegalHold",
                "Hold the session's data (no erasure, by retention or request) until lifted",
                "candidate data",
                HR_WRITE,
                (200, "The hold", _ref("HoldState")),
                (404,),
                body="LegalHold",
                parameters=(SESSION_ID,),
            ),
            "delete": _op(
                "liftLegalHold",
                "Lift the hold (admins); a pending erasure request is carried out at once",
                "candidate data",
                HR_WRITE,
                (200, "The hold lifted, and whether the data was erased", _ref("HoldState")),
                (404,),
                parameters=(SESSION_ID,),
            ),
        },
        f"{session}/export": {
            "get": _op(
                "exportCandidateData",
                "Everything held about the candidate, as a JSON attachment (HR in scope, or "
                "the candidate's join token, even after the link expired)",
                "candidate data",
                [*HR_READ, {}],
                (200, "The export", {"type": "object", "required": ["format", "session"]}),
                (404,),
                parameters=(SESSION_ID, TOKEN_QUERY),
            )
        },
        f"{session}/erasure-request": {
            "post": _op(
                "requestErasure",
                "The candidate asks for their data to be erased (join token in the body or "
                "?token=, even after the link expired): 200 erased, or 202 pending while a "
                "legal hold stops it",
                "candidate data",
                NONE,
                (200, "Erased", {"type": "object", "required": ["status"]}),
                (401, 404),
                accepted=(202, "Pending: a legal hold keeps the data until it is lifted"),
                body="EndSession",
                body_required=False,
                parameters=(SESSION_ID, TOKEN_QUERY),
            )
        },
        "/api/v1/webhooks/deliveries": {
            "get": _op(
                "listWebhookDeliveries",
                "The ATS webhook delivery log, newest first",
                "decisions",
                HR_READ,
                (200, "The deliveries", _list_of("deliveries")),
                (),
                parameters=(_query("session", "Only this session's deliveries."),),
            )
        },
    }


def _account_paths() -> dict[str, Schema]:
    """Logging in and out, one's own second factor and password, and (admins) users, org
    units and API tokens (api/accounts.py)."""
    none: Schema | None = None
    return {
        "/api/v1/login": {
            "post": _op(
                "login",
                "Log in: the rtserver_session cookie (Set-Cookie) and the login's CSRF token",
                "accounts",
                NONE,
                (200, "The login", _ref("LoggedIn")),
                (401, 429),
                body="Login",
                description="401 unauthorized (a wrong username or password, said alike) "
                "or totp_required (the password was right: send totp or recovery_code); "
                "429 locked_out after repeated failures, or rate_limited.",
            )
        },
        "/api/v1/logout": {
            "post": _op(
                "logout",
                "End the browser login; its cookie is cleared whatever happens",
                "accounts",
                [*BROWSER, {}],
                (204, "Logged out", none),
                (403,),
            )
        },
        "/api/v1/me": {
            "get": _op(
                "getMe",
                "Who is signed in (or which token), with the login's CSRF token",
                "accounts",
                HR_READ,
                (200, "The caller", _ref("Me")),
                (),
            )
        },
        "/api/v1/me/totp": {
            "post": _op(
                "beginTotp",
                "Start enrolling an authenticator: its secret, URI and QR code (SVG)",
                "accounts",
                BROWSER,
                (200, "The new secret, to confirm with a code", _ref("TotpEnrolment")),
                (),
            )
        },
        "/api/v1/me/totp/confirm": {
            "post": _op(
                "confirmTotp",
                "Confirm the authenticator with a code: the ten recovery codes, shown once",
                "accounts",
                BROWSER,
                (200, "The recovery codes and the new login's CSRF token", _ref("TotpConfirmed")),
                (409,),
                body="TotpCode",
            )
        },
        "/api/v1/me/password": {
            "post": _op(
                "changePassword",
                "A new password (other logins end; 403 when the current one is wrong)",
                "accounts",
                BROWSER,
                (204, "Changed", none),
                (),
                body="PasswordChange",
            )
        },
        "/api/v1/users": {
            "get": _op(
                "listUsers",
                "The users of the admin's scope",
                "accounts",
                HR_READ,
                (200, "The users", _list_of("users", _ref("User"))),
                (),
            ),
            "post": _op(
                "createUser",
                "Add a user (admins)",
                "accounts",
                HR_WRITE,
                (201, "The user", _ref("User")),
                (404, 409),
                body="CreateUser",
            ),
        },
        "/api/v1/users/{user_id}": {
            "patch": _op(
                "updateUser",
                "Change a user's role, unit, name, password, second factor rule or disable "
                "them (admins)",
                "accounts",
                HR_WRITE,
                (200, "The user", _ref("User")),
                (404, 409),
                body="UpdateUser",
                parameters=(USER_ID,),
            )
        },
        "/api/v1/users/{user_id}/reset-2fa": {
            "post": _op(
                "resetUserTotp",
                "Remove a user's second factor: their next login enrols a new one (admins)",
                "accounts",
                HR_WRITE,
                (204, "Reset", none),
                (404,),
                parameters=(USER_ID,),
            )
        },
        "/api/v1/units": {
            "get": _op(
                "listUnits",
                "The org units in the caller's scope",
                "accounts",
                HR_READ,
                (200, "The units", _list_of("units", _ref("Unit"))),
                (),
            ),
            "post": _op(
                "createUnit",
                "Add an org unit below one in scope (admins)",
                "accounts",
                HR_WRITE,
                (201, "The unit", _ref("Unit")),
                (404, 409),
                body="CreateUnit",
            ),
        },
        "/api/v1/tokens": {
            "get": _op(
                "listTokens",
                "The API tokens of the admin's scope (never their secrets)",
                "accounts",
                HR_READ,
                (200, "The tokens", _list_of("tokens", _ref("ApiToken"))),
                (),
            ),
            "post": _op(
                "createToken",
                "A new API token for an integration: its secret is in this answer only",
                "accounts",
                HR_WRITE,
                (201, "The token and its secret", _ref("ApiToken")),
                (404,),
                body="CreateToken",
            ),
        },
        "/api/v1/tokens/{token_id}": {
            "delete": _op(
                "revokeToken",
                "Revoke an API token (it stays listed, revoked)",
                "accounts",
                HR_WRITE,
                (204, "Revoked", none),
                (404,),
                parameters=(TOKEN_ID,),
            )
        },
    }


WEBSOCKETS: dict[str, Schema] = {
    "/api/v1/sessions/{session_id}/signals": {
        "summary": "A session's live signals (HR)",
        "description": (
            "A websocket. The HR credential is a bearer token (an API token or the bootstrap "
            "key) in Authorization or, as browsers cannot set headers on a websocket, in "
            "?token= (here and nowhere else); or the browser login's cookie, from this "
            "server's own origin. A missing or wrong credential, another site's origin, a "
            "session out of scope or unknown, or a client past its rate limit is refused "
            "before the upgrade with the HTTP error (401, 403, 404, 429; {error, detail}). "
            "Once open, the server sends every stored message of the session (signal, "
            "transcript, hint..., in seq order) and then each new one live, each a JSON text "
            "frame with type and v; it closes with 1000 after the final message, or 1013 "
            "when the observer fell behind (reconnect: the backfill resumes losslessly). The "
            "server never reads what the client sends."
        ),
        "parameters": [
            _query("token", "An API token or the bootstrap key (on websockets only)."),
            SESSION_ID,
        ],
        "security": HR_READ,
        "closeCodes": {"1000": "the session ended", "1013": "fell behind; reconnect"},
    }
}


def build_document() -> Schema:
    """The whole OpenAPI 3.1 document."""
    responses: Schema = {
        f"Error{status}": _error_response(status, codes)
        for status, codes in error_codes_by_status().items()
    }
    responses["ErrorOther"] = {
        "description": "Any other typed error ({error, detail}).",
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "rtserver",
            "version": API_VERSION,
            "description": (
                "The HTTP API of rtserver, a self-hosted real-time video interview server. "
                "Every error is JSON {error, detail}. HR requests carry a bearer token (the "
                "bootstrap key or an API token) or a browser session cookie, whose "
                f"state-changing requests also carry the {CSRF_HEADER} header. The "
                "candidate's requests carry the session's join token instead. The signals "
                "websocket is described under x-websockets."
            ),
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "responses": responses,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The bootstrap key (RTSERVER_API_KEY) or an API token.",
                },
                "cookieSession": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": SESSION_COOKIE,
                    "description": "A logged-in browser's session (HttpOnly, SameSite=Strict).",
                },
                "csrfToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": CSRF_HEADER,
                    "description": "A cookie session's CSRF token, on state-changing requests.",
                },
            },
        },
        "x-websockets": WEBSOCKETS,
    }


DOCUMENT: Schema = build_document()
_BODY = json.dumps(DOCUMENT, separators=(",", ":")).encode()


async def openapi_json(request: Request) -> Response:
    """The document; public, as it holds nothing that is not in the source."""
    return Response(_BODY, media_type="application/json")

"""Typed errors, each mapped to one HTTP status in one place (:data:`HTTP_STATUS`)."""

from __future__ import annotations


class RtServerError(Exception):
    """Base of every error the API reports; ``code`` is the stable machine-readable name."""

    code = "internal"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(RtServerError):
    code = "bad_request"


class BadSdp(BadRequest):
    code = "bad_sdp"


class Unauthorized(RtServerError):
    code = "unauthorized"


class NotFound(RtServerError):
    code = "not_found"


class Conflict(RtServerError):
    code = "conflict"


class PayloadTooLarge(RtServerError):
    code = "payload_too_large"


class AtCapacity(RtServerError):
    """The server holds as many live sessions as it is configured for."""

    code = "at_capacity"

    def __init__(self, detail: str, retry_after_s: int = 30) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Overloaded(AtCapacity):
    """The process that would run the session is too busy to take it without harming the
    sessions it already holds (its event loop runs late)."""

    code = "overloaded"

    def __init__(self, detail: str, retry_after_s: int = 10) -> None:
        super().__init__(detail, retry_after_s)


class WorkerLost(RtServerError):
    """The worker process that runs (or would run) a session is gone or not ready yet."""

    code = "worker_lost"


HTTP_STATUS: dict[type[RtServerError], int] = {
    BadRequest: 400,
    BadSdp: 400,
    Unauthorized: 401,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    AtCapacity: 503,
    Overloaded: 503,
    WorkerLost: 503,
    RtServerError: 500,
}


def http_status(error: RtServerError) -> int:
    """The HTTP status for an error: the entry of its nearest class in :data:`HTTP_STATUS`."""
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def error_from_code(code: str, detail: str) -> RtServerError:
    """Rebuilds a typed error from its ``code`` (as sent by a worker process)."""
    for cls in HTTP_STATUS:
        if cls.code == code:
            return cls(detail)
    return RtServerError(detail)

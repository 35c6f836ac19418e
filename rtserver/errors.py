"""Typed errors, each mapped to one HTTP status in one place (:data:`HTTP_STATUS`)."""

from __future__ import annotations


class RtServerError(Exception):
    """Base of every error the API reports; ``code`` is the stable machine-readable name."""

    code = "internal"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RetryLater(RtServerError):
    """A refusal that says when to try again: answered with ``Retry-After`` (s)."""

    default_retry_after_s = 30

    def __init__(self, detail: str, retry_after_s: int | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = self.default_retry_after_s if retry_after_s is None else retry_after_s


class BadRequest(RtServerError):
    code = "bad_request"


class InvalidJob(BadRequest):
    """A job that cannot be used; ``problems`` lists every reason (``scoring/jobs.py``)."""

    code = "invalid_job"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("the job is not valid: " + "; ".join(problems))
        self.problems = problems


class InvalidOutcomes(BadRequest):
    """Outcomes that cannot be recorded; ``problems`` lists every reason
    (``scoring/outcomes.py``). None of the batch is recorded."""

    code = "invalid_outcomes"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("the outcomes are not valid: " + "; ".join(problems[:20]))
        self.problems = problems


class BadSdp(BadRequest):
    code = "bad_sdp"


class ControlRefused(BadRequest):
    """A message on a live session's ``control`` data channel that changes nothing. It never
    reaches HTTP: it is answered on the channel and counted by ``reason``, one of a fixed
    few (the label of ``rtserver_control_messages_refused_total``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Unauthorized(RtServerError):
    code = "unauthorized"


class SecondFactorRequired(Unauthorized):
    """The password was right; the account needs a TOTP or recovery code as well."""

    code = "totp_required"


class Forbidden(RtServerError):
    """Signed in, but the role may not do this (out-of-scope objects answer 404 instead)."""

    code = "forbidden"


class CsrfFailed(Forbidden):
    """A state-changing request from a browser login without its CSRF token."""

    code = "csrf_failed"


class LockedOut(RetryLater):
    """Too many failed logins for this account: no login is tried until ``retry_after_s``."""

    code = "locked_out"
    default_retry_after_s = 60


class ResumeRequired(Unauthorized):
    """A new offer for a session that is already live without its resume secret (the one
    the first answer carried), or with a wrong one: the join link alone cannot take a live
    session over."""

    code = "resume_required"


class NotFound(RtServerError):
    code = "not_found"


class Conflict(RtServerError):
    code = "conflict"


class Expired(RtServerError):
    """The session's join link is past its ``expires_at``."""

    code = "expired"


class PayloadTooLarge(RtServerError):
    code = "payload_too_large"


class AtCapacity(RetryLater):
    """The server holds as many live sessions as it is configured for."""

    code = "at_capacity"


class Overloaded(AtCapacity):
    """The process that would run the session is too busy to take it without harming the
    sessions it already holds (its event loop runs late)."""

    code = "overloaded"
    default_retry_after_s = 10


class NoUdpPort(AtCapacity):
    """Every UDP port of this host's ``--udp-ports`` range is taken by a peer connection (a
    candidate's or an observer's): no new one until one is freed (``media/ice.py``)."""

    code = "no_udp_port"
    default_retry_after_s = 10


class RateLimited(RetryLater):
    """One client address sent more requests of one kind than its rate limit allows
    (``rtserver/api/rate_limits.py``); ``retry_after_s`` is when the next one will pass."""

    code = "rate_limited"
    default_retry_after_s = 1


class StoreUnavailable(RetryLater):
    """The store (PostgreSQL, or a SQLite file locked or failing) could not answer a read,
    or take a write within its deadline (``store/async_store.py``): nothing was done."""

    code = "store_unavailable"
    default_retry_after_s = 5


class WorkerLost(RtServerError):
    """The worker process that runs (or would run) a session is gone or not ready yet."""

    code = "worker_lost"


# -- encryption at rest (store/encryption.py) ---------------------------------------------


class KeyringError(RtServerError):
    """The master keys cannot open what the database holds. Reading never returns a wrong
    plaintext: it raises one of these instead."""

    code = "keyring"


class MasterKeyMissing(KeyringError):
    """A data key is wrapped by a master key the keyring does not hold (the wrong
    RTSERVER_MASTER_KEY, or a keyring file that is missing or from another install)."""

    code = "master_key_missing"


class DecryptionFailed(KeyringError):
    """A sealed value or a wrapped data key failed its authentication: the wrong key, or a
    value changed or moved to another row, column or session since it was written."""

    code = "decryption_failed"


HTTP_STATUS: dict[type[RtServerError], int] = {
    BadRequest: 400,
    BadSdp: 400,
    Unauthorized: 401,
    ResumeRequired: 401,
    SecondFactorRequired: 401,
    Forbidden: 403,
    CsrfFailed: 403,
    LockedOut: 429,
    NotFound: 404,
    Conflict: 409,
    Expired: 410,
    PayloadTooLarge: 413,
    RateLimited: 429,
    AtCapacity: 503,
    Overloaded: 503,
    NoUdpPort: 503,
    WorkerLost: 503,
    StoreUnavailable: 503,
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

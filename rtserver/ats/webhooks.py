"""Signed webhook deliveries, retried with backoff until a receiver takes them.

Each delivery is a POST of the event's JSON body with these headers:

- ``X-Rtserver-Event``: ``session.completed`` or ``decision.made``;
- ``X-Rtserver-Delivery`` and ``Idempotency-Key``: the event's key, the same on every
  attempt, so that a receiver can drop a repeat;
- ``X-Rtserver-Signature``: ``t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.
  The receiver computes the same HMAC over the timestamp and the raw body with the shared
  secret, compares in constant time, and refuses a timestamp older than a few minutes
  (a replayed request).

A 2xx answer delivers it. Anything else (another status, a refused connection, a timeout)
is tried again after 1, 2, 4 ... seconds, up to RETRY_MAX_S apart, MAX_ATTEMPTS times in
all; then the delivery is marked failed and stays in the log (``GET
/api/v1/webhooks/deliveries``) for a person to see.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time

import httpx

from rtserver.store.outbox import Delivery, Outbox

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 300.0
POLL_S = 0.5  # how often the outbox is looked at for due deliveries
TIMEOUT_S = 10.0  # per attempt
# A claimed delivery is this dispatcher's for this long: its attempt is over long before.
CLAIM_LEASE_S = 6 * TIMEOUT_S


def signature(secret: str, timestamp: int, body: str) -> str:
    """The ``X-Rtserver-Signature`` header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: str, now: float, tolerance_s: float = 300.0) -> bool:
    """What a receiver does: whether ``header`` signs ``body`` with ``secret``, recently."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    fresh = abs(now - timestamp) <= tolerance_s
    return fresh and hmac.compare_digest(expected, parts.get("v1", ""))


def retry_delay_s(attempts: int) -> float:
    """The wait after the ``attempts``-th failed attempt (1, 2, 4 ... RETRY_MAX_S)."""
    return float(min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** max(0, attempts - 1)))


class WebhookDispatcher:
    """Delivers the outbox's due events, one at a time, in the server process."""

    def __init__(self, outbox: Outbox, secret: str) -> None:
        self.outbox = outbox
        self.secret = secret
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        if self._task is None:
            # trust_env=False: no proxy from the environment sees the candidate's data.
            self._client = httpx.AsyncClient(timeout=TIMEOUT_S, trust_env=False)
            self._task = asyncio.create_task(self._run(), name="webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        while True:
            try:
                # Claimed, not just read: every front end of a deployment runs a dispatcher.
                due = await asyncio.to_thread(self.outbox.claim_due, time.time(), CLAIM_LEASE_S)
                for delivery in due:
                    await self.deliver(delivery)
            except asyncio.CancelledError:
                raise
            except Exception:  # the dispatcher must outlive a bad row or a locked database
                log.exception("webhook dispatch failed; trying again")
            await asyncio.sleep(POLL_S)

    async def deliver(self, delivery: Delivery) -> bool:
        """One attempt; its outcome is recorded in the outbox. True when delivered."""
        assert self._client is not None
        now = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Rtserver-Event": delivery.event,
            "X-Rtserver-Delivery": delivery.id,
            "Idempotency-Key": delivery.id,
            "X-Rtserver-Signature": signature(self.secret, now, delivery.body),
        }
        status: int | None = None
        try:
            response = await self._client.post(delivery.url, content=delivery.body, headers=headers)
            status = response.status_code
            error = "" if 200 <= status < 300 else f"HTTP {status}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        delivered = not error
        attempts = delivery.attempts + 1
        retry_at = None
        if not delivered and attempts < MAX_ATTEMPTS:
            retry_at = time.time() + retry_delay_s(attempts)
        await asyncio.to_thread(self.outbox.record, delivery.id, delivered, status, error, retry_at)
        if not delivered:
            level = logging.WARNING if retry_at is None else logging.INFO
            what = (delivery.event, delivery.url, error, attempts)
            log.log(
                level,
                "webhook %s to %s: %s (attempt %d)",
                *what,
                extra={"session": delivery.session},
            )
        return delivered

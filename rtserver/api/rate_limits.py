"""Per-client rate limits: token buckets keyed by the client's address.

Each limit (:data:`LIMITS`) allows ``rate`` requests a minute from one client, and a burst of
as many at once: a bucket holds up to ``rate`` tokens, refills at ``rate / 60`` a second, and
a request takes one. A request that finds its bucket empty takes nothing and is refused with
:class:`~rtserver.errors.RateLimited` (429, ``Retry-After`` the seconds until a token is
back). The check comes before authentication, so guessing a key or a join token is bound by
it too.

The client is the address :func:`~rtserver.api.context.client_address` gives (the socket's
peer, or what a trusted proxy forwarded: ``rtserver/transport.py``). An IPv6 client counts
by its /64, the block one subscriber (one host, even) is handed; an IPv4-mapped IPv6 address
is its IPv4 address.

Memory is bounded: each limit remembers at most ``rate_limit_clients`` clients, least
recently seen forgotten first. A client forgotten starts again with a full bucket, which is
what it would have had after a quiet minute anyway; only someone who cycles through more
addresses than that gains anything, and they already have that many addresses.

The buckets are this process's: the HTTP front, which serves every request even when the
sessions run in worker processes.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from rtserver.config import Config
from rtserver.errors import RateLimited

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limit:
    """One kind of request limited: its configuration field and what the refusal calls it."""

    field: str  # the Config field: requests a minute (0: off)
    what: str  # plural noun phrase for the refusal's detail


LIMITS: dict[str, Limit] = {
    "login": Limit("rate_login_per_min", "login attempts"),
    "sessions": Limit("rate_sessions_per_min", "sessions created"),
    "offers": Limit("rate_offers_per_min", "offers to join an interview"),
    "signals": Limit("rate_signals_per_min", "signals websocket connections"),
}


def client_key(address: str) -> str:
    """What a client is counted by: its IPv4 address, its IPv6 /64, or the address as given
    when it is no IP address (e.g. "unknown")."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class _Bucket:
    __slots__ = ("at", "refusing", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at  # when `tokens` was last brought up to date (monotonic seconds)
        self.refusing = False  # refused since it was last full (a flood is logged once)


class TokenBuckets:
    """Token buckets for one limit: ``per_min`` requests a minute per key, a burst of
    ``per_min``; at most ``max_keys`` keys held (least recently used evicted)."""

    def __init__(
        self, per_min: float, max_keys: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_min <= 0 or max_keys < 1:
            raise ValueError("per_min must be positive and max_keys at least 1")
        self.capacity = per_min  # tokens
        self.refill_per_s = per_min / 60.0
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Takes a token from ``key``'s bucket: 0.0 when there was one, else the seconds until
        there will be one (nothing taken)."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.at)
            bucket.tokens = min(self.capacity, bucket.tokens + elapsed * self.refill_per_s)
            bucket.at = now
            if bucket.tokens >= self.capacity:
                bucket.refusing = False  # it slowed down: a new flood is news again
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.refill_per_s

    def first_refusal(self, key: str) -> bool:
        """Whether ``key`` was just refused for the first time since its bucket was last full
        (marks it refusing): one log line per flood, not one per request."""
        bucket = self._buckets.get(key)
        if bucket is None or bucket.refusing:
            return False
        bucket.refusing = True
        return True


class RateLimits:
    """The server's rate limits, by name (:data:`LIMITS`), built from :class:`Config`.

    ``key_of`` names the client of a request or websocket (the API's ``client_address``).
    """

    def __init__(
        self,
        config: Config,
        key_of: Callable[[HTTPConnection], str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key_of = key_of
        self._buckets: dict[str, TokenBuckets | None] = {}
        for name, limit in LIMITS.items():
            per_min = float(getattr(config, limit.field))
            self._buckets[name] = (
                TokenBuckets(per_min, config.rate_limit_clients, clock) if per_min > 0 else None
            )

    def check(self, name: str, connection: HTTPConnection) -> None:
        """Counts one request of kind ``name`` from ``connection``'s client; raises
        :class:`RateLimited` (counting nothing) when its limit is spent. ``KeyError`` for a
        name not in :data:`LIMITS`."""
        limit, buckets = LIMITS[name], self._buckets[name]
        if buckets is None:
            return
        address = self._key_of(connection)
        key = client_key(address)
        wait_s = buckets.take(key)
        if wait_s <= 0:
            return
        retry_after_s = max(1, math.ceil(wait_s))
        per_min = f"{buckets.capacity:g}"
        if buckets.first_refusal(key):
            log.warning(
                "rate limit: %s from %s past %s a minute; refusing until it slows down",
                limit.what,
                key,
                per_min,
            )
        raise RateLimited(
            f"too many {limit.what} from {address}: at most {per_min} a minute; "
            f"retry after {retry_after_s} s",
            retry_after_s,
        )

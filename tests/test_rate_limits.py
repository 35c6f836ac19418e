"""Per-client rate limits (``rtserver/api/rate_limits.py``) on a controlled clock: the burst,
the refill and an honest Retry-After, clients kept apart (IPv6 by /64), memory bounded, a
limit of 0 off, and the refusal's typed error, status and headers. The limits on a running
server are in ``test_rate_limits_e2e.py``."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import pytest
from starlette.requests import HTTPConnection

from rtserver.api.context import client_address
from rtserver.api.http import error_response
from rtserver.api.rate_limits import LIMITS, RateLimits, TokenBuckets, client_key
from rtserver.config import Config, ConfigError, load_config
from rtserver.errors import RateLimited, error_from_code, http_status


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def connection(host: str, kind: str = "http") -> HTTPConnection:
    scope: dict[str, Any] = {"type": kind, "client": (host, 5000), "headers": [], "path": "/"}
    return HTTPConnection(scope)


def test_a_burst_of_the_rate_then_one_token_per_interval() -> None:
    clock = Clock()
    buckets = TokenBuckets(per_min=6, max_keys=10, clock=clock)
    assert [buckets.take("a") for _ in range(6)] == [0.0] * 6  # the burst
    assert buckets.take("a") == pytest.approx(10.0)  # 6 a minute: one every 10 s
    clock.now += 4.0
    assert buckets.take("a") == pytest.approx(6.0)  # what Retry-After says is what is left
    clock.now += 6.0
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(10.0)
    clock.now += 3600.0  # a quiet hour refills to the burst, never beyond it
    assert [buckets.take("a") for _ in range(7)].count(0.0) == 6


def test_refusals_take_nothing() -> None:
    clock = Clock()
    buckets = TokenBuckets(per_min=60, max_keys=10, clock=clock)
    for _ in range(60):
        buckets.take("a")
    for _ in range(1000):  # hammering while empty does not push the next token further off
        assert buckets.take("a") == pytest.approx(1.0)
    clock.now += 1.0
    assert buckets.take("a") == 0.0


def test_clients_have_their_own_buckets() -> None:
    buckets = TokenBuckets(per_min=2, max_keys=10, clock=Clock())
    assert buckets.take("a") == buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    assert buckets.take("b") == 0.0


def test_ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("192.0.2.7") != client_key("192.0.2.8")
    assert client_key("unknown") == "unknown"


def test_memory_is_bounded_and_the_least_recently_seen_is_forgotten() -> None:
    clock = Clock()
    buckets = TokenBuckets(per_min=1, max_keys=100, clock=clock)
    buckets.take("kept")
    for i in range(10_000):
        buckets.take(f"10.0.{i // 256}.{i % 256}")
        if i % 50 == 0:
            assert buckets.take("kept") > 0  # seen again: still refused, still held
    assert len(buckets) == 100
    assert buckets.take("10.0.0.0") == 0.0  # long forgotten: a full bucket again
    assert buckets.take("10.0.39.15") > 0  # the last one seen is still held


def limits(clock: Clock, **rates: float) -> RateLimits:
    config = load_config({LIMITS[name].field: rate for name, rate in rates.items()}, {})
    return RateLimits(config, client_address, clock)


def test_each_limit_counts_on_its_own_and_zero_turns_one_off() -> None:
    rate_limits = limits(Clock(), login=2, sessions=0, offers=1, signals=1)
    client = connection("192.0.2.1")
    rate_limits.check("login", client)
    rate_limits.check("login", client)
    with pytest.raises(RateLimited):
        rate_limits.check("login", client)
    for _ in range(10_000):
        rate_limits.check("sessions", client)  # off
    rate_limits.check("offers", client)  # login's spent bucket is login's alone
    rate_limits.check("signals", connection("192.0.2.1", "websocket"))
    with pytest.raises(RateLimited):
        rate_limits.check("signals", client)
    with pytest.raises(KeyError):
        rate_limits.check("no such limit", client)


def test_the_refusal_is_a_429_with_retry_after_and_says_why() -> None:
    clock = Clock()
    rate_limits = limits(clock, sessions=3)
    client = connection("192.0.2.1")
    for _ in range(3):
        rate_limits.check("sessions", client)
    clock.now += 2.5
    with pytest.raises(RateLimited) as refused:
        rate_limits.check("sessions", client)
    error = refused.value
    assert error.code == "rate_limited" and http_status(error) == 429
    assert error.retry_after_s == 18  # 20 s a token, 2.5 s of it gone: rounded up
    assert "sessions created" in error.detail and "192.0.2.1" in error.detail
    assert "3 a minute" in error.detail and "18 s" in error.detail
    response = error_response(error)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "18"
    assert json.loads(bytes(response.body)) == {"error": "rate_limited", "detail": error.detail}
    # A worker process's error comes back as the same type.
    assert isinstance(error_from_code("rate_limited", "x"), RateLimited)


def test_a_flood_is_logged_once_until_it_stops(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rate_limits = limits(clock, offers=2)
    client = connection("192.0.2.9")
    caplog.set_level(logging.WARNING, logger="rtserver.api.rate_limits")

    def flood() -> None:
        for _ in range(200):
            with contextlib.suppress(RateLimited):
                rate_limits.check("offers", client)
            clock.now += 0.5  # faster than the refill: some get through, most do not

    flood()
    assert len(caplog.records) == 1
    assert "192.0.2.9" in caplog.records[0].getMessage()
    clock.now += 120.0  # quiet until the bucket is full again: a new flood is news
    flood()
    assert len(caplog.records) == 2


def test_rates_are_configured_by_flag_environment_or_file() -> None:
    config = load_config(
        {"rate_offers_per_min": 7},
        {"RTSERVER_RATE_LOGIN_PER_MIN": "5", "RTSERVER_RATE_LIMIT_CLIENTS": "50"},
    )
    assert config.rate_offers_per_min == 7.0 and config.rate_login_per_min == 5.0
    assert config.rate_limit_clients == 50
    # The defaults hold a bench's 50 sessions created, joined and watched at once.
    defaults = Config()
    for name in ("sessions", "offers", "signals"):
        assert getattr(defaults, LIMITS[name].field) >= 50
    assert 0 < defaults.rate_login_per_min <= 30
    for bad in ({"rate_sessions_per_min": -1}, {"rate_limit_clients": 0}):
        with pytest.raises(ConfigError):
            load_config(bad, {})

"""End to end: per-client rate limits on a running server, with low limits set by flag.

Clients connect from different loopback addresses (all of 127/8 is lo on Linux). Past its
limit a client gets 429 ``rate_limited`` with ``Retry-After`` and a detail that says which
limit; a websocket upgrade gets the same as its HTTP answer. Other clients are not held up,
an untrusted client cannot escape by writing X-Forwarded-For, and behind a trusted proxy the
clients it forwards count apart. The token buckets themselves are in ``test_rate_limits.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from peer import signals_url
from server import ServerProcess
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

pytestmark = pytest.mark.e2e

SESSIONS_PER_MIN = 3  # one token every 20 s
OFFERS_PER_MIN = 2  # one every 30 s
SIGNALS_PER_MIN = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("rates") / "data",
        options=[
            "--analysis", "decode",
            "--rate-sessions", str(SESSIONS_PER_MIN),
            "--rate-offers", str(OFFERS_PER_MIN),
            "--rate-signals", str(SIGNALS_PER_MIN),
            "--trusted-proxies", "127.0.0.2",
        ],
    ).start(timeout_s=180.0)  # fmt: skip
    yield process
    process.stop()
    assert "Traceback" not in process.log(), process.log()[-4000:]


@asynccontextmanager
async def client_from(address: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=15.0) as client:
        yield client


async def create(server: ServerProcess, address: str, **headers: str) -> httpx.Response:
    async with client_from(address) as client:
        return await client.post(
            server.base_url + "/api/v1/sessions",
            json={},
            headers={**server.hr_headers, **headers},
        )


def assert_rate_limited(response: httpx.Response, what: str, per_min: int) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error"] == "rate_limited"
    assert what in body["detail"] and f"{per_min} a minute" in body["detail"]
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60 // per_min
    assert f"retry after {retry_after} s" in body["detail"]


async def test_session_creation_past_the_limit_is_429_for_that_client_only(
    server: ServerProcess,
) -> None:
    for _ in range(SESSIONS_PER_MIN):
        assert (await create(server, "127.0.0.1")).status_code == 201
    refused = await create(server, "127.0.0.1")
    assert_rate_limited(refused, "sessions created", SESSIONS_PER_MIN)
    # Retry-After is the wait for the next token: about 20 s here, not a fixed guess.
    assert int(refused.headers["retry-after"]) >= 60 // SESSIONS_PER_MIN - 5
    # Writing X-Forwarded-For from an untrusted address changes nothing.
    spoofed = await create(server, "127.0.0.1", **{"X-Forwarded-For": "192.0.2.55"})
    assert_rate_limited(spoofed, "sessions created", SESSIONS_PER_MIN)
    # Another client is not held up.
    assert (await create(server, "127.0.0.3")).status_code == 201
    # Behind the trusted proxy, each forwarded client has its own allowance.
    for _ in range(SESSIONS_PER_MIN):
        forwarded = await create(server, "127.0.0.2", **{"X-Forwarded-For": "198.51.100.1"})
        assert forwarded.status_code == 201
    through_proxy = await create(server, "127.0.0.2", **{"X-Forwarded-For": "198.51.100.1"})
    assert_rate_limited(through_proxy, "sessions created", SESSIONS_PER_MIN)
    assert "198.51.100.1" in through_proxy.json()["detail"]
    other = await create(server, "127.0.0.2", **{"X-Forwarded-For": "198.51.100.2"})
    assert other.status_code == 201
    assert 'rtserver_rejected_total{code="rate_limited"}' in server.metrics()
    assert server.healthy()


async def test_offers_are_limited_before_the_join_token_is_checked(
    server: ServerProcess,
) -> None:
    created = await create(server, "127.0.0.11")
    session_id = created.json()["id"]
    url = f"{server.base_url}/api/v1/sessions/{session_id}/offer"
    guess = {"sdp": "v=0\r\n", "type": "offer", "token": "a guess"}
    async with client_from("127.0.0.10") as client:
        for _ in range(OFFERS_PER_MIN):
            assert (await client.post(url, json=guess)).status_code == 401
        assert_rate_limited(
            await client.post(url, json=guess), "offers to join an interview", OFFERS_PER_MIN
        )


async def test_a_refused_websocket_upgrade_is_a_429_with_retry_after(
    server: ServerProcess,
) -> None:
    created = await create(server, "127.0.0.6")
    url = signals_url(server.base_url, created.json()["id"], server.api_key)
    for _ in range(SIGNALS_PER_MIN):
        async with ws_connect(url, proxy=None, local_addr=("127.0.0.7", 0)) as websocket:
            assert websocket.response is not None and websocket.response.status_code == 101
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(url, proxy=None, local_addr=("127.0.0.7", 0)):
            pass
    response = refused.value.response
    assert response.status_code == 429
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60 // SIGNALS_PER_MIN
    body = json.loads(response.body)
    assert body["error"] == "rate_limited"
    assert "signals websocket connections" in body["detail"]
    # Another observer's address still connects.
    async with ws_connect(url, proxy=None, local_addr=("127.0.0.8", 0)) as websocket:
        assert websocket.response is not None and websocket.response.status_code == 101

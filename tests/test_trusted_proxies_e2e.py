"""End to end: `--trusted-proxies` decides whose X-Forwarded-For and X-Forwarded-Proto count.

A real server trusts 127.0.0.2 and the network 127.0.0.4/31; the test's clients connect from
different loopback addresses (Linux routes all of 127/8 to lo), as a proxy or as a client
would. What the audit log records (``GET /api/v1/sessions/{id}/audit``) is the proof:

- from an untrusted peer the headers are ignored: the socket's address is recorded, no HSTS,
  links stay http. 127.0.0.1 is among the untrusted, which uvicorn on its own would trust;
- from a trusted proxy the forwarded client is recorded, ``X-Forwarded-Proto: https`` brings
  HSTS and https links, and a chain is read right to left past trusted hops, so what a client
  writes into the header itself does not count.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from server import ServerProcess

pytestmark = pytest.mark.e2e

HSTS = "max-age=63072000; includeSubDomains"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("proxies") / "data",
        options=[
            "--analysis", "decode",
            "--trusted-proxies", "127.0.0.2",
            "--trusted-proxies", "127.0.0.4/31",
        ],
    ).start(timeout_s=180.0)  # fmt: skip
    yield process
    process.stop()
    assert "Traceback" not in process.log(), process.log()[-4000:]


@asynccontextmanager
async def client_from(address: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose connections come from ``address``."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=15.0) as client:
        yield client


async def create_from(
    server: ServerProcess, address: str, headers: dict[str, str]
) -> tuple[httpx.Response, dict[str, Any]]:
    """Creates a session from ``address`` with ``headers``; the response and its body."""
    async with client_from(address) as client:
        response = await client.post(
            server.base_url + "/api/v1/sessions",
            json={},
            headers={**server.hr_headers, **headers},
        )
    assert response.status_code == 201, response.text
    return response, response.json()


async def audit_actors(server: ServerProcess, session_id: str, action: str) -> list[str]:
    async with client_from("127.0.0.1") as client:
        response = await client.get(
            f"{server.base_url}/api/v1/sessions/{session_id}/audit", headers=server.hr_headers
        )
    assert response.status_code == 200, response.text
    return [row["actor"] for row in response.json()["audit"] if row["action"] == action]


FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.0.0.9", "127.0.0.3"])
async def test_an_untrusted_peer_s_forwarded_headers_are_ignored(
    server: ServerProcess, peer: str
) -> None:
    response, body = await create_from(server, peer, FORWARDED)
    assert await audit_actors(server, body["id"], "create") == [f"bootstrap@{peer}"]
    assert "strict-transport-security" not in response.headers
    assert body["candidate_url"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize("proxy", ["127.0.0.2", "127.0.0.5"])
async def test_a_trusted_proxy_names_the_client_and_the_scheme(
    server: ServerProcess, proxy: str
) -> None:
    response, body = await create_from(server, proxy, FORWARDED)
    assert await audit_actors(server, body["id"], "create") == ["bootstrap@203.0.113.7"]
    assert response.headers["strict-transport-security"] == HSTS
    assert body["candidate_url"].startswith(f"https://127.0.0.1:{server.port}/candidate/")
    assert body["observe_url"] == f"https://127.0.0.1:{server.port}/observe/{body['id']}"


async def test_the_chain_is_read_past_trusted_hops_only(server: ServerProcess) -> None:
    # The client wrote 6.6.6.6 itself; the outer proxy appended the client's real address,
    # then the inner proxy (127.0.0.4, trusted) its own, and connected from 127.0.0.5.
    chain = {"X-Forwarded-For": "6.6.6.6, 198.51.100.4, 127.0.0.4"}
    response, body = await create_from(server, "127.0.0.5", chain)
    assert await audit_actors(server, body["id"], "create") == ["bootstrap@198.51.100.4"]
    assert "strict-transport-security" not in response.headers  # no X-Forwarded-Proto: http


async def test_the_candidate_s_address_comes_through_the_proxy_too(
    server: ServerProcess,
) -> None:
    _, body = await create_from(server, "127.0.0.1", {})
    async with client_from("127.0.0.2") as proxy:
        ended = await proxy.post(
            f"{server.base_url}/api/v1/sessions/{body['id']}/end",
            json={"token": body["join_token"]},
            headers={"X-Forwarded-For": "198.51.100.8"},
        )
    assert ended.status_code == 200, ended.text
    assert await audit_actors(server, body["id"], "end") == ["candidate@198.51.100.8"]


async def test_with_no_trusted_proxy_loopback_is_not_trusted_either(tmp_path: Path) -> None:
    # uvicorn, left to its defaults, believes these headers from 127.0.0.1.
    server = ServerProcess(tmp_path / "data", options=["--analysis", "decode"])
    server.start(timeout_s=180.0)
    try:
        response, body = await create_from(server, "127.0.0.1", FORWARDED)
        assert await audit_actors(server, body["id"], "create") == ["bootstrap@127.0.0.1"]
        assert "strict-transport-security" not in response.headers
        assert body["candidate_url"].startswith("http://127.0.0.1:")
    finally:
        server.stop()

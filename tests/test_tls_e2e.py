"""End to end: `rtserver serve --tls-cert --tls-key` serves HTTPS and WSS itself.

A real uvicorn server process with a self-signed certificate made in the test; clients trust
that certificate alone and check the host name. HTTPS answers, every response (errors and a
refused websocket upgrade too) carries HSTS, the links it builds and prints say https, the
signals websocket streams over WSS to the final, plain http on the port gets no answer, and
the handshake refuses TLS 1.1 and TLS 1.2 suites without forward secrecy.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import threading
from collections.abc import Iterator

import httpx
import pytest
from certificates import client_context, make_certificate
from peer import signals_url
from server import ServerProcess
from uvicorn.config import SSL_PROTOCOL_VERSION, create_ssl_context
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

pytestmark = pytest.mark.e2e

HSTS = "max-age=63072000; includeSubDomains"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("tls")
    process = ServerProcess(
        root / "data",
        options=["--analysis", "decode", "--demo"],
        # RSA, the commonest kind, with which a static-RSA suite could be negotiated at all.
        tls=make_certificate(root / "certs", rsa_key=True),
    ).start(timeout_s=180.0)
    yield process
    process.stop()
    assert "Traceback" not in process.log(), process.log()[-4000:]


@pytest.fixture
def tls(server: ServerProcess) -> ssl.SSLContext:
    assert server.tls is not None
    return client_context(server.tls[0])


def test_https_answers_and_every_response_carries_hsts(
    server: ServerProcess, tls: ssl.SSLContext
) -> None:
    assert server.base_url.startswith("https://")
    with httpx.Client(verify=tls, trust_env=False, timeout=10.0) as client:
        health = client.get(server.base_url + "/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.headers["strict-transport-security"] == HSTS
        refused = client.get(server.base_url + "/api/v1/sessions")  # no key: 401
        assert refused.status_code == 401
        assert refused.headers["strict-transport-security"] == HSTS
        page = client.get(server.base_url + "/observe")
        assert page.status_code == 200
        assert page.headers["strict-transport-security"] == HSTS
        assert "content-security-policy" in page.headers  # beside the other headers


def test_links_say_https(server: ServerProcess, tls: ssl.SSLContext) -> None:
    with httpx.Client(verify=tls, trust_env=False, timeout=10.0) as client:
        created = client.post(
            server.base_url + "/api/v1/sessions", json={}, headers=server.hr_headers
        )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["candidate_url"].startswith(f"{server.base_url}/candidate/{body['id']}?token=")
    assert body["observe_url"] == f"{server.base_url}/observe/{body['id']}"
    # The links `serve --demo` printed at the start, too.
    printed = re.findall(r"Demo (?:candidate|observer) link: +(\S+)", server.log())
    assert len(printed) == 2 and all(u.startswith(server.base_url + "/") for u in printed)


async def test_the_signals_websocket_streams_over_wss(
    server: ServerProcess, tls: ssl.SSLContext
) -> None:
    async with httpx.AsyncClient(verify=tls, trust_env=False, timeout=10.0) as client:
        created = await client.post(
            server.base_url + "/api/v1/sessions", json={}, headers=server.hr_headers
        )
        session_id = created.json()["id"]
        url = signals_url(server.base_url, session_id, server.api_key)
        assert url.startswith("wss://")
        async with ws_connect(url, ssl=tls, proxy=None, open_timeout=10.0) as websocket:
            assert websocket.response is not None
            assert websocket.response.headers["strict-transport-security"] == HSTS
            # Ended before anyone joined: the server publishes an empty final, which the
            # stream carries over TLS and then closes.
            ended = await client.post(
                f"{server.base_url}/api/v1/sessions/{session_id}/end", headers=server.hr_headers
            )
            assert ended.status_code == 200, ended.text
            messages = [json.loads(text) async for text in websocket]
        assert messages and messages[-1]["type"] == "final"
        assert messages[-1]["session"] == session_id


async def test_a_refused_wss_upgrade_carries_hsts(
    server: ServerProcess, tls: ssl.SSLContext
) -> None:
    url = signals_url(server.base_url, "no-such-session", "wrong-key")
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(url, ssl=tls, proxy=None, open_timeout=10.0):
            pass
    response = refused.value.response
    assert response.status_code == 401
    assert response.headers["strict-transport-security"] == HSTS


def test_plain_http_on_the_tls_port_gets_no_answer(server: ServerProcess) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5.0, trust_env=False)
    assert server.healthy()  # and it did the server no harm


def handshake(port: int, context: ssl.SSLContext) -> tuple[str | None, str | None]:
    """A bare TLS handshake with the server; its protocol version and cipher suite."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5.0) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        cipher = tls.cipher()
        return tls.version(), cipher[0] if cipher else None


def control_handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str | None:
    """The control: ``client``'s handshake with a plain TLS server on ``server``; the
    version it agreed."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        accepted: list[ssl.SSLSocket] = []

        def accept() -> None:
            conn, _ = listener.accept()
            with contextlib.suppress(ssl.SSLError, OSError):
                accepted.append(server.wrap_socket(conn, server_side=True))

        thread = threading.Thread(target=accept)
        thread.start()
        try:
            version, _ = handshake(listener.getsockname()[1], client)
        finally:
            thread.join(10.0)
            for conn in accepted:
                conn.close()
    return version


def test_tls12_with_forward_secret_aead_only(server: ServerProcess, tls: ssl.SSLContext) -> None:
    assert server.tls is not None
    cert, key = server.tls
    version, cipher = handshake(server.port, tls)
    assert version == "TLSv1.3", (version, cipher)
    tls.maximum_version = ssl.TLSVersion.TLSv1_2
    version, cipher = handshake(server.port, tls)
    assert version == "TLSv1.2" and cipher is not None
    assert cipher.startswith(("ECDHE-", "DHE-")) and ("GCM" in cipher or "CHACHA20" in cipher)

    # A client offering only CBC suites: the context uvicorn makes on its own takes it (its
    # cipher list left to Python's default); ours ends the handshake.
    cbc = client_context(cert)
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA")
    uvicorn_alone = create_ssl_context(
        cert, key, None, SSL_PROTOCOL_VERSION, ssl.CERT_NONE, None, ciphers=None
    )
    assert control_handshake(uvicorn_alone, cbc) == "TLSv1.2"
    with pytest.raises(ssl.SSLError):
        handshake(server.port, cbc)

    # TLS 1.1: a server that allows it takes this client; ours ends the handshake.
    old = client_context(cert)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    lenient = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    lenient.minimum_version = ssl.TLSVersion.TLSv1_1
    lenient.set_ciphers("DEFAULT:@SECLEVEL=0")
    lenient.load_cert_chain(cert, key)
    assert control_handshake(lenient, old) == "TLSv1.1"
    with pytest.raises(ssl.SSLError):
        handshake(server.port, old)
    assert server.healthy()

"""Security headers (``rtserver/api/security.py``) on every kind of HTTP response the server
sends: pages, static files, JSON, typed errors, unknown paths, an unexpected exception's
500 page, and the HTTP answer that refuses a websocket upgrade; HSTS on each of them when
the request came over TLS (https/wss), and never over plain http.

The pages working under this policy, with no violation reported by Chromium, is checked in
``test_browser_e2e.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Message
from starlette.websockets import WebSocket

from rtserver.api.pages import WEB_CLIENT
from rtserver.api.security import SecuredStarlette


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def assert_secured(headers: httpx.Headers | Headers) -> None:
    csp = directives(headers["content-security-policy"])
    assert csp["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval'
    assert csp["style-src"] == ["'self'"]
    assert csp["object-src"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["default-src"] == ["'self'"]
    assert not any("unsafe" in v or v == "*" for values in csp.values() for v in values)
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    permissions = dict(
        item.strip().split("=", 1) for item in headers["permissions-policy"].split(",")
    )
    assert permissions["camera"] == "(self)" and permissions["microphone"] == "(self)"
    assert permissions["geolocation"] == "()" and permissions["display-capture"] == "()"
    assert all(v in ("()", "(self)") for v in permissions.values())
    # Each header once, even where the app set its own.
    names = [name.lower() for name, _ in headers.raw]
    assert names.count(b"content-security-policy") == 1


class Boom(Exception):
    pass


async def boom(request: Request) -> Response:
    raise Boom("unexpected")


async def refuse(websocket: WebSocket) -> None:
    await websocket.send_denial_response(JSONResponse({"error": "unauthorized"}, 401))


def make_app(static_dir: Path) -> SecuredStarlette:
    (static_dir / "page.css").write_text("body {}")
    return SecuredStarlette(
        routes=[
            Route("/", lambda request: FileResponse(WEB_CLIENT / "index.html")),
            Route("/json", lambda request: JSONResponse({"ok": True})),
            Route(
                "/own-csp",
                lambda request: Response("x", headers={"Content-Security-Policy": "default-src *"}),
            ),
            Route("/boom", boom),
            WebSocketRoute("/ws", refuse),
            Mount("/static", app=StaticFiles(directory=static_dir)),
        ]
    )


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(tmp_path), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.mark.parametrize("path", ["/", "/json", "/static/page.css", "/nowhere", "/own-csp"])
async def test_every_response_carries_the_headers(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == (404 if path == "/nowhere" else 200)
    assert_secured(response.headers)


async def test_an_unexpected_exception_answer_carries_them_too(client: httpx.AsyncClient) -> None:
    response = await client.get("/boom")
    assert response.status_code == 500
    assert_secured(response.headers)


async def websocket_messages(app: SecuredStarlette, path: str, scheme: str) -> list[Message]:
    """What ``app`` sends for a websocket upgrade of ``path`` over ``scheme`` (ws or wss)."""
    sent: list[Message] = []
    incoming = [{"type": "websocket.connect"}]

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "scheme": scheme,
        "server": ("test", 80),
        "client": ("127.0.0.1", 1),
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}},
        "state": {},
    }
    await app(scope, receive, send)
    return sent


async def test_a_refused_websocket_upgrade_carries_them(tmp_path: Path) -> None:
    sent = await websocket_messages(make_app(tmp_path), "/ws", "ws")
    (start,) = [m for m in sent if m["type"] == "websocket.http.response.start"]
    assert start["status"] == 401
    assert_secured(Headers(raw=start["headers"]))
    assert "strict-transport-security" not in Headers(raw=start["headers"])


HSTS = "max-age=63072000; includeSubDomains"


@pytest.fixture
async def tls_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app as a request over TLS reaches it: the scope's scheme is https."""
    transport = httpx.ASGITransport(app=make_app(tmp_path), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="https://test") as client:
        yield client


@pytest.mark.parametrize("path", ["/", "/json", "/static/page.css", "/nowhere", "/boom"])
async def test_over_tls_every_response_carries_hsts_once(
    tls_client: httpx.AsyncClient, path: str
) -> None:
    response = await tls_client.get(path)
    assert response.headers["strict-transport-security"] == HSTS
    assert [n for n, _ in response.headers.raw].count(b"strict-transport-security") == 1
    assert_secured(response.headers)


async def test_over_plain_http_no_hsts(client: httpx.AsyncClient) -> None:
    # Browsers ignore it over http anyway; sent there, it would promise TLS nobody serves.
    for path in ("/", "/json", "/nowhere"):
        assert "strict-transport-security" not in (await client.get(path)).headers


async def accept(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.close()


async def test_over_wss_the_upgrade_s_answers_carry_hsts(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    app.router.routes.append(WebSocketRoute("/ws-ok", accept))
    refused = await websocket_messages(app, "/ws", "wss")
    (start,) = [m for m in refused if m["type"] == "websocket.http.response.start"]
    assert Headers(raw=start["headers"])["strict-transport-security"] == HSTS
    assert_secured(Headers(raw=start["headers"]))
    accepted = await websocket_messages(app, "/ws-ok", "wss")
    (answer,) = [m for m in accepted if m["type"] == "websocket.accept"]
    assert Headers(raw=answer["headers"])["strict-transport-security"] == HSTS
    plain = await websocket_messages(app, "/ws-ok", "ws")
    (answer,) = [m for m in plain if m["type"] == "websocket.accept"]
    assert "strict-transport-security" not in Headers(raw=answer.get("headers", []))


async def test_the_home_page_is_html_linking_to_the_observer(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.headers["content-type"].startswith("text/html")
    assert 'href="/observe"' in response.text
    assert "<script" not in response.text.lower()  # and so nothing inline to allow

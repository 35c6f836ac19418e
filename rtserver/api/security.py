"""Security headers on every HTTP response: the browser-side half of keeping the pages safe.

The pages are plain HTML with their scripts and styles in files under ``/static``, so the
Content-Security-Policy allows no inline script or style at all: an injected ``<script>``
or ``onclick=`` does not run. What the pages do need, and nothing more:

- ``connect-src 'self'``: fetch to the API and the signals websocket on the same origin
  (CSP Level 3 lets ``'self'`` match ``ws:``/``wss:`` on the page's own host and port);
- nothing for media: the camera previews and the relayed video are ``srcObject`` streams,
  which no fetch directive governs;
- ``frame-ancestors 'none'``: no other site may frame a page (clickjacking a consent click).

``Permissions-Policy`` lets only the page's own origin ask for the camera and microphone,
and turns off the powerful features the pages never use (only names Chromium knows: an
unknown one is an error on every page's console).

``Strict-Transport-Security`` goes on every response to a request that came over TLS: served
directly (``--tls-cert``), or through a TLS-terminating proxy that said so in
``X-Forwarded-Proto`` and is trusted (``--trusted-proxies``; ``rtserver/transport.py``). Both
set the ASGI scope's scheme to https or wss, which is all this looks at. A browser that has
seen it never tries plain http on this host again for two years, so a link or a redirect
cannot downgrade the pages (and with them the camera) to an insecure origin.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "media-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PERMISSIONS_POLICY = ", ".join(
    (
        "camera=(self)",
        "microphone=(self)",
        "display-capture=()",
        "geolocation=()",
        "payment=()",
        "usb=()",
        "serial=()",
        "hid=()",
        "midi=()",
        "accelerometer=()",
        "gyroscope=()",
        "magnetometer=()",
    )
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("permissions-policy", PERMISSIONS_POLICY),
    # For browsers that predate frame-ancestors.
    ("x-frame-options", "DENY"),
)


# Two years, subdomains included: what browsers' preload lists ask for (without "preload",
# which is the operator's choice to make for their whole domain).
STRICT_TRANSPORT_SECURITY = ("strict-transport-security", "max-age=63072000; includeSubDomains")
SECURE_SCHEMES = frozenset({"https", "wss"})


def _encode(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


_ENCODED = _encode(SECURITY_HEADERS)
_ENCODED_TLS = _encode((*SECURITY_HEADERS, STRICT_TRANSPORT_SECURITY))
_OURS = {name for name, _ in _ENCODED_TLS}


def _with_security_headers(
    headers: Iterable[tuple[bytes, bytes]], secure: bool = False
) -> list[tuple[bytes, bytes]]:
    """``headers`` with each security header set once (ours replace any the app set), HSTS
    among them when the request came over TLS (``secure``)."""
    kept = [(name, value) for name, value in headers if name.lower() not in _OURS]
    return kept + (_ENCODED_TLS if secure else _ENCODED)


class SecurityHeaders:
    """Pure ASGI middleware (no response buffering, websockets untouched) that adds
    :data:`SECURITY_HEADERS` to every HTTP response, and to the HTTP response that refuses a
    websocket upgrade; with :data:`STRICT_TRANSPORT_SECURITY` when the scheme is https or
    wss."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        secure = scope.get("scheme") in SECURE_SCHEMES

        async def send_secured(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                headers = _with_security_headers(message.get("headers", []), secure)
                message = {**message, "headers": headers}
            elif message["type"] == "websocket.accept" and secure:  # the 101 answer
                headers = [*message.get("headers", []), *_encode([STRICT_TRANSPORT_SECURITY])]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_secured)


class SecuredStarlette(Starlette):
    """Starlette with :class:`SecurityHeaders` outside its whole middleware stack.

    Middleware added the usual way sits inside Starlette's ServerErrorMiddleware, so the
    plain 500 page of an unexpected exception would go out without the headers; wrapping the
    built stack covers that response too.
    """

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())

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


_ENCODED = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in SECURITY_HEADERS]
_OURS = {name for name, _ in _ENCODED}


def _with_security_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` with each security header set once (ours replace any the app set)."""
    kept = [(name, value) for name, value in headers if name.lower() not in _OURS]
    return kept + _ENCODED


class SecurityHeaders:
    """Pure ASGI middleware (no response buffering, websockets untouched) that adds
    :data:`SECURITY_HEADERS` to every HTTP response, and to the HTTP response that refuses a
    websocket upgrade."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                message = {**message, "headers": _with_security_headers(message.get("headers", []))}
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

"""How an HR request proves who it is, and the checks that go with each way.

- **A browser login**: the ``rtserver_session`` cookie (HttpOnly, Secure, SameSite=Strict), set
  by ``POST /api/v1/login``. Every state-changing request made with it must carry the login's
  CSRF token in ``X-CSRF-Token`` (a synchronizer token: a page on another site can make the
  browser send the cookie, never read the token), and a websocket opened with it must come
  from this server's own origin.
- **An API token** (ATS integrations): ``Authorization: Bearer rtk_<id>.<secret>``, scoped to a
  unit and a role, expiring and revocable (``store/accounts.py``).
- **The bootstrap key** (``RTSERVER_API_KEY`` or the generated one): an admin at the top of the
  org tree, so that clients from before accounts keep working. Every response to a request
  made with it carries a ``Warning`` header saying it should be replaced.

Websockets may send a token as ``?token=`` (browsers cannot set headers on them); REST calls
may not (a key in a URL ends up in history and proxy logs).
"""

from __future__ import annotations

import asyncio
import hmac
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rtserver.accounts.principal import (
    ROOT_UNIT,
    VIA_BOOTSTRAP,
    VIA_COOKIE,
    VIA_TOKEN,
    Principal,
)
from rtserver.errors import CsrfFailed
from rtserver.store.accounts import TOKEN_PREFIX, AccountStore

SESSION_COOKIE = "rtserver_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BOOTSTRAP_WARNING = (
    '299 rtserver "This request used the bootstrap API key. Create user accounts'
    " (rtserver users add) and API tokens (POST /api/v1/tokens), then replace the key:"
    ' it is an admin of every unit and cannot be revoked on its own."'
)


def _bearer(headers: Headers, scope: Scope) -> str:
    """As ``api/context.py``'s ``bearer_token``, from a raw ASGI scope (for middleware)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    if scope["type"] == "websocket":
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
        return values[0] if values else ""
    return ""


async def resolve_principal(
    connection: HTTPConnection, token: str, client: str, accounts: AccountStore, bootstrap_key: str
) -> Principal | None:
    """Who ``connection`` acts as (with ``token``, its bearer token or "", from ``client``),
    or None when it carries no valid credential. A bearer token, when sent, decides alone: a
    wrong one is not rescued by a cookie."""
    if token:
        if token.startswith(TOKEN_PREFIX):
            found = await asyncio.to_thread(accounts.check_token, token)
            if found is None:
                return None
            scope = await asyncio.to_thread(accounts.scope_of, found.unit)
            return Principal(
                f"token:{found.id}", found.name, found.role, found.unit, scope, VIA_TOKEN, client
            )
        if bootstrap_key and hmac.compare_digest(token.encode(), bootstrap_key.encode()):
            scope = await asyncio.to_thread(accounts.scope_of, ROOT_UNIT)
            return Principal(
                "bootstrap", "bootstrap key", "admin", ROOT_UNIT, scope, VIA_BOOTSTRAP, client
            )
        return None
    cookie = connection.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    login = await asyncio.to_thread(accounts.login_session, cookie)
    if login is None:
        return None
    user = login.user
    scope = await asyncio.to_thread(accounts.scope_of, user.unit)
    return Principal(
        user.id,
        user.username,
        user.role,
        user.unit,
        scope,
        VIA_COOKIE,
        client,
        csrf_token=login.csrf_token,
        enrolling=login.enrolling,
    )


def check_browser_request(connection: HTTPConnection, principal: Principal) -> None:
    """For a cookie login: a state-changing request must carry the CSRF token, and a
    websocket must come from this server's origin. Raises :class:`CsrfFailed`."""
    if principal.via != VIA_COOKIE:
        return
    if connection.scope["type"] == "websocket":
        if not same_origin(connection):
            raise CsrfFailed("this websocket was opened from another site")
        return
    if connection.scope["method"] in SAFE_METHODS:
        return
    sent = connection.headers.get(CSRF_HEADER, "")
    expected = principal.csrf_token or ""
    if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfFailed("missing or wrong CSRF token: send the login's csrf_token in X-CSRF-Token")


def same_origin(connection: HTTPConnection) -> bool:
    """Whether the request's Origin (when the browser sent one) is this server's host."""
    origin = connection.headers.get("origin")
    if origin is None:
        return True  # not a browser: no cookie of a victim is at stake
    return urlsplit(origin).netloc.lower() == connection.headers.get("host", "").lower()


class BootstrapKeyWarning:
    """Pure ASGI middleware: a ``Warning`` header on every HTTP response to a request that
    carried the bootstrap key (and on the refusal of such a websocket)."""

    def __init__(self, app: ASGIApp, bootstrap_key: str) -> None:
        self.app = app
        self.key = bootstrap_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self._carries_key(scope):
            await self.app(scope, receive, send)
            return
        warning = (b"warning", BOOTSTRAP_WARNING.encode("latin-1"))

        async def send_warned(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                message = {**message, "headers": [*message.get("headers", []), warning]}
            await send(message)

        await self.app(scope, receive, send_warned)

    def _carries_key(self, scope: Scope) -> bool:
        token = _bearer(Headers(scope=scope), scope)
        return bool(self.key) and bool(token) and hmac.compare_digest(token.encode(), self.key)

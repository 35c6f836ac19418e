"""What every route handler needs: the runtime, where the live sessions run, and who is
asking (an HR principal, api/auth.py, or the client's address for the audit log)."""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection, Request

from rtserver.accounts.principal import Principal
from rtserver.accounts.roles import Permission
from rtserver.api.auth import check_browser_request, resolve_principal
from rtserver.api.rate_limits import RateLimits
from rtserver.errors import Expired, Forbidden, NotFound, Unauthorized
from rtserver.live.manager import SessionHost, SessionManager
from rtserver.live.runtime import Runtime
from rtserver.store import STATUS_ERASED, Actor, SessionRecord
from rtserver.store.accounts import AccountStore
from rtserver.store.engine import store_target


def bearer_token(connection: HTTPConnection) -> str:
    """The HR bearer token (an API token or the bootstrap key): from ``Authorization:
    Bearer``, or ``?token=`` on websockets only.

    Browsers cannot set headers on a websocket, so the query is accepted there and nowhere
    else: a key in a REST URL would end up in browser history and proxy logs.
    """
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    if connection.scope["type"] == "websocket":
        return connection.query_params.get("token", "")
    return ""


def client_address(connection: HTTPConnection) -> str:
    """The client's address: the socket's peer, or, from a trusted proxy, the address it
    forwarded (``--trusted-proxies``: uvicorn rewrites the scope, ``rtserver/transport.py``)."""
    return connection.client.host if connection.client else "unknown"


def candidate_actor(connection: HTTPConnection) -> Actor:
    """The audit actor for a request made with a session's join token."""
    return Actor("candidate", "candidate", None, client_address(connection))


class Api:
    """One server's API state, reached from a request by :func:`api_of`."""

    def __init__(self, runtime: Runtime, api_key: str, host: SessionHost | None = None) -> None:
        self.runtime = runtime
        # The store off the event loop: every read in a thread, every write on the writer
        # thread (rtserver/store/async_store.py).
        self.db = runtime.db
        # Users, units, logins and API tokens (rtserver/store/accounts.py).
        self.accounts = AccountStore(store_target(runtime.config), runtime.store.keyring)
        # Where the live sessions run: here, or in worker processes (rtserver/server/workers.py).
        self.manager: SessionHost = host if host is not None else SessionManager(runtime)
        self.bootstrap_key = api_key
        # Per-client rate limits: api.rate_limits.check("offers", request) raises 429.
        self.rate_limits = RateLimits(runtime.config, client_address)

    # -- who is asking ----------------------------------------------------------------

    async def principal(self, connection: HTTPConnection) -> Principal | None:
        """Who ``connection`` acts as (api/auth.py), resolved once per request."""
        state = connection.scope.setdefault("state", {})
        if "principal" not in state:
            state["principal"] = await resolve_principal(
                connection,
                bearer_token(connection),
                client_address(connection),
                self.accounts,
                self.bootstrap_key,
            )
        found: Principal | None = state["principal"]
        return found

    async def require(
        self, connection: HTTPConnection, permission: Permission = Permission.VIEW
    ) -> Principal:
        """The HR caller, allowed to do what ``permission`` names: 401 without a valid
        credential, 403 for a role that may not, or a browser request without its CSRF
        token."""
        principal = await self.principal(connection)
        if principal is None:
            raise Unauthorized(
                "sign in at /login, or send an API token (Authorization: Bearer <token>)"
            )
        check_browser_request(connection, principal)
        if principal.enrolling:
            raise Forbidden("set up two-factor login first: open /login")
        if not principal.may(permission):
            raise Forbidden(
                f"your role ({principal.role}) may not do this: it needs {permission.value}"
            )
        return principal

    async def scoped_session(self, principal: Principal, session_id: str) -> SessionRecord:
        """The session, when it is in ``principal``'s scope; 404 otherwise, as for a session
        that does not exist (so that scope does not reveal what exists elsewhere)."""
        record = await self.session_or_404(session_id)
        if not principal.sees(record.unit):
            raise NotFound(f"no session {session_id}")
        return record

    async def hr_or_candidate(
        self, connection: HTTPConnection, record: SessionRecord, token: str
    ) -> Actor:
        """The candidate, when a join token is sent (it decides: a candidate's browser may
        hold an HR login too), whether or not the link has expired; else a recruiter or an
        admin in the session's scope (404 outside it)."""
        if token:
            if await self.db.check_join_token(record.id, token):
                return candidate_actor(connection)
            raise Unauthorized("wrong join token")
        if await self.principal(connection) is None:
            raise Unauthorized("sign in as HR, or send the session's join token")
        principal = await self.require(connection, Permission.MANAGE)
        await self.scoped_session(principal, record.id)
        return principal.actor

    async def session_or_404(self, session_id: str) -> SessionRecord:
        record = await self.db.get_session(session_id)
        if record is None or record.status == STATUS_ERASED:
            raise NotFound(f"no session {session_id}")
        return record

    async def candidate_session(self, session_id: str, token: Any) -> SessionRecord:
        """The session a join token holder asks about: 404 unknown, 401 wrong token, 410
        once its link has expired (checked after the token, so that only its holder
        learns it)."""
        record = await self.session_or_404(session_id)
        if not isinstance(token, str) or not await self.db.check_join_token(record.id, token):
            raise Unauthorized("wrong or missing join token")
        if record.is_expired():
            raise Expired("this interview link has expired; ask for a new one")
        return record

    def base_url(self, request: Request) -> str:
        configured = self.runtime.config.public_url
        return (configured or str(request.base_url)).rstrip("/")

    # -- pages and operations ---------------------------------------------------------


def api_of(connection: HTTPConnection) -> Api:
    """The :class:`Api` of the app serving ``connection``."""
    api: Api = connection.app.state.api
    return api

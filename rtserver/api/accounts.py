"""Accounts over HTTP: logging in and out, one's own second factor, and, for admins, users,
org units and API tokens.

A login answers with the ``rtserver_session`` cookie (HttpOnly, Secure, SameSite=Strict) and
the login's CSRF token, which the pages send back in ``X-CSRF-Token`` (api/auth.py). Every
login, failed login and logout is audit-logged with the user's id (never what was typed), as
is every change to an account.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rtserver.accounts import passwords, totp
from rtserver.accounts.login import LoginAttempt, LoginRefused, log_in
from rtserver.accounts.principal import VIA_COOKIE, Principal
from rtserver.accounts.roles import ROLES, Permission
from rtserver.api.auth import SESSION_COOKIE, check_browser_request
from rtserver.api.context import Api, api_of, client_address
from rtserver.api.http import NO_STORE, read_json
from rtserver.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from rtserver.store import Actor
from rtserver.store.accounts import LOGIN_MAX_S, User

MAX_NAME = 200
MAX_TOKEN_DAYS = 366  # an API token lasts at most a year: it must be renewed, not forgotten
UNIT_ID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


# -- logging in and out ---------------------------------------------------------------


async def login(request: Request) -> Response:
    """``{"username", "password", "totp"?, "recovery_code"?}`` -> the login, with its cookie.

    401 ``totp_required`` when the password was right and a code is needed; 429
    ``locked_out`` after five failures in a row. An account that must have a second factor
    and has none gets a short login that can only enrol one (``"enrol_totp": true``).
    """
    api = api_of(request)
    # Per client address, before anything is checked: guessing across many accounts from
    # one address is slowed here, guessing one account from many addresses by its lockout.
    api.rate_limits.check("login", request)
    if not request.headers.get("content-type", "").startswith("application/json"):
        # A cross-site form can post only form encodings: this keeps logins from other sites
        # (login CSRF) out without a token, as none exists before the login.
        raise BadRequest("send the login as application/json")
    body = await read_json(request)
    attempt = LoginAttempt(
        _text(body, "username", MAX_NAME),
        _text(body, "password", passwords.MAX_LENGTH),
        _text(body, "totp", 20, required=False),
        _text(body, "recovery_code", 40, required=False),
    )
    required = api.runtime.config.totp_required == "all"
    try:
        logged_in = await asyncio.to_thread(log_in, api.accounts, attempt, required)
    except LoginRefused as refused:
        actor = Actor(
            f"user:{refused.user_id}" if refused.user_id else "unknown",
            "none",
            None,
            client_address(request),
        )
        await api.db.audit(actor, "login_failed", None, refused.reason)
        raise refused.error from None
    user = logged_in.user
    secret, login_session = await asyncio.to_thread(
        api.accounts.start_login, user.id, logged_in.enrolling
    )
    detail = "recovery_code" if logged_in.used_recovery_code else ""
    await api.db.audit(_user_actor(user, request), "login", None, detail)
    body_out: dict[str, Any] = {
        "user": user.to_wire(),
        "csrf_token": login_session.csrf_token,
        "expires_at": login_session.expires_at,
        "enrol_totp": logged_in.enrolling,
    }
    if logged_in.used_recovery_code:
        body_out["recovery_codes_left"] = await asyncio.to_thread(
            api.accounts.recovery_codes_left, user.id
        )
    response = JSONResponse(body_out, headers=NO_STORE)
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(login_session.expires_at - time.time()),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )
    return response


async def logout(request: Request) -> Response:
    """Ends the browser login (its cookie is cleared whatever happens)."""
    api = api_of(request)
    principal = await api.principal(request)
    if principal is not None and principal.via == VIA_COOKIE:
        check_browser_request(request, principal)
        await asyncio.to_thread(api.accounts.end_login, request.cookies[SESSION_COOKIE])
        await api.db.audit(principal.actor, "logout", None)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


async def me(request: Request) -> Response:
    """Who is signed in: the user (or token), role, unit, and the login's CSRF token."""
    api = api_of(request)
    principal = await api.principal(request)
    if principal is None:
        raise Unauthorized("not signed in")
    found: dict[str, Any] = {
        "id": principal.id,
        "name": principal.name,
        "role": principal.role,
        "unit": principal.unit,
        "via": principal.via,
        "csrf_token": principal.csrf_token,
        "enrol_totp": principal.enrolling,
    }
    if principal.via == VIA_COOKIE:
        user = await asyncio.to_thread(api.accounts.get_user, principal.id)
        found["user"] = user.to_wire() if user else None
    return JSONResponse(found, headers=NO_STORE)


# -- one's own second factor ----------------------------------------------------------


async def begin_totp(request: Request) -> Response:
    """Starts (or restarts) enrolling an authenticator: a new secret, as an ``otpauth://``
    URI, its QR code (SVG) and the secret to type by hand. Confirm it with a code."""
    api, principal = await _signed_in_user(request)
    secret = totp.new_secret()
    await asyncio.to_thread(api.accounts.set_pending_totp, principal.id, secret)
    uri = totp.provisioning_uri(secret, principal.name)
    await api.db.audit(principal.actor, "totp_enrol_start", None)
    return JSONResponse(
        {"otpauth_uri": uri, "secret": secret, "qr_svg": totp.qr_svg(uri)}, headers=NO_STORE
    )


async def confirm_totp(request: Request) -> Response:
    """``{"code"}`` from the new authenticator -> it becomes the account's second factor, and
    the ten recovery codes are shown, once. Every other login of the user ends; this one
    (when it was a login that had to enrol) becomes a full login."""
    api, principal = await _signed_in_user(request)
    body = await read_json(request)
    code = _text(body, "code", 20)
    _, pending, _ = await asyncio.to_thread(api.accounts.totp_state, principal.id)
    if pending is None:
        raise Conflict("start enrolling first (POST /api/v1/me/totp)")
    step = totp.matching_step(pending, code, None, time.time())
    if step is None:
        raise BadRequest("that code does not match: check the phone's clock and try again")
    codes = totp.new_recovery_codes()
    hashes = [totp.hash_recovery_code(c) for c in codes]
    await asyncio.to_thread(api.accounts.activate_totp, principal.id, step, hashes)
    await asyncio.to_thread(api.accounts.end_logins_of, principal.id)
    secret, login_session = await asyncio.to_thread(api.accounts.start_login, principal.id, False)
    await api.db.audit(principal.actor, "totp_enrolled", None)
    response = JSONResponse(
        {"recovery_codes": codes, "csrf_token": login_session.csrf_token}, headers=NO_STORE
    )
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(LOGIN_MAX_S),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )
    return response


async def change_password(request: Request) -> Response:
    """``{"current", "new"}``: a new password (12+ characters); other logins end."""
    api, principal = await _signed_in_user(request, allow_enrolling=False)
    body = await read_json(request)
    current = _text(body, "current", passwords.MAX_LENGTH)
    new = _text(body, "new", passwords.MAX_LENGTH)
    stored = await asyncio.to_thread(api.accounts.password_hash, principal.id)
    if not await asyncio.to_thread(passwords.verify_password, stored, current):
        raise Forbidden("the current password is wrong")
    new_hash = await asyncio.to_thread(_hash, new)
    await asyncio.to_thread(api.accounts.update_user, principal.id, password_hash=new_hash)
    await api.db.audit(principal.actor, "password_changed", None)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


async def _signed_in_user(request: Request, allow_enrolling: bool = True) -> tuple[Api, Principal]:
    """A user signed in through the browser (API tokens have no password or second
    factor); a login that must enrol is allowed here, as this is where it enrols."""
    api = api_of(request)
    principal = await api.principal(request)
    if principal is None or principal.via != VIA_COOKIE:
        raise Unauthorized("sign in at /login first")
    check_browser_request(request, principal)
    if principal.enrolling and not allow_enrolling:
        raise Forbidden("set up two-factor login first")
    return api, principal


# -- users (admins) -------------------------------------------------------------------


async def list_users(request: Request) -> Response:
    """The users of the admin's scope."""
    api = api_of(request)
    principal = await api.require(request, Permission.ADMINISTER)
    users = await asyncio.to_thread(api.accounts.users, principal.scope)
    await api.db.audit(principal.actor, "list_users", None, f"{len(users)} users")
    return JSONResponse({"users": [u.to_wire() for u in users]})


async def create_user(request: Request) -> Response:
    """``{"username", "password", "role", "unit"?, "name"?, "require_totp"?}``."""
    api = api_of(request)
    principal = await api.require(request, Permission.ADMINISTER)
    body = await read_json(request)
    username = _username(body.get("username"))
    role = _role(body.get("role"))
    unit = _scoped_unit(principal, body.get("unit"))
    name = _text(body, "name", MAX_NAME, required=False)
    require_totp = _flag(body, "require_totp")
    password_hash = await asyncio.to_thread(_hash, _text(body, "password", passwords.MAX_LENGTH))
    try:
        user = await asyncio.to_thread(
            api.accounts.add_user, username, name, password_hash, role, unit, require_totp
        )
    except ValueError as exc:
        raise Conflict(str(exc)) from exc
    except KeyError as exc:
        raise NotFound(f"no unit {unit!r}") from exc
    await api.db.audit(principal.actor, "create_user", None, f"user {user.id}")
    return JSONResponse(user.to_wire(), status_code=201)


async def update_user(request: Request) -> Response:
    """``{"role"?, "unit"?, "name"?, "disabled"?, "require_totp"?, "password"?}``: changing
    the role, unit or password, or disabling, ends the user's logins."""
    api = api_of(request)
    principal = await api.require(request, Permission.ADMINISTER)
    user = await _user_in_scope(api, principal, request.path_params["user_id"])
    body = await read_json(request)
    changes: dict[str, Any] = {}
    if "role" in body:
        changes["role"] = _role(body["role"])
    if "unit" in body:
        changes["unit"] = _scoped_unit(principal, body["unit"])
    if "name" in body:
        changes["name"] = _text(body, "name", MAX_NAME, required=False)
    if "disabled" in body:
        changes["disabled"] = _flag(body, "disabled")
    if "require_totp" in body:
        changes["require_totp"] = _flag(body, "require_totp")
    if "password" in body:
        password = _text(body, "password", passwords.MAX_LENGTH)
        changes["password_hash"] = await asyncio.to_thread(_hash, password)
    if not changes:
        raise BadRequest(
            "nothing to change: give role, unit, name, disabled, require_totp or password"
        )
    if user.id == principal.id and (
        changes.get("disabled") or changes.get("role", "admin") != "admin"
    ):
        raise Conflict("an admin cannot disable or demote themselves")
    updated = await asyncio.to_thread(lambda: api.accounts.update_user(user.id, **changes))
    fields = ",".join(sorted(k if k != "password_hash" else "password" for k in changes))
    await api.db.audit(principal.actor, "update_user", None, f"user {user.id}: {fields}")
    return JSONResponse(updated.to_wire())


async def reset_user_totp(request: Request) -> Response:
    """Removes a user's second factor (a lost phone): their next login enrols a new one."""
    api = api_of(request)
    principal = await api.require(request, Permission.ADMINISTER)
    user = await _user_in_scope(api, principal, request.path_params["user_id"])
    await asyncio.to_thread(api.accounts.reset_totp, user.id)
    await api.db.audit(principal.actor, "reset_totp", None, f"user {user.id}")
    return Response(status_code=204)


async def _user_in_scope(api: Api, principal: Principal, user_id: str) -> User:
    user = await asyncio.to_thread(api.accounts.get_user, user_id)
    if user is None or not principal.sees(user.unit):
        raise NotFound(f"no user {user_id}")
    return user


# -- org units (admins) -----------------------------------------------------------------


async def list_units(request: Request) -> Response:
    """The org units in the caller's scope (any signed-in role: the pages show them)."""
    api = api_of(request)
    principal = await api.require(request)
    units = await asyncio.to_thread(api.accounts.units)
    return JSONResponse({"units": [u.to_wire() for u in units if principal.sees(u.id)]})


async def create_unit(request: Request) -> Response:
    """``{"id", "name", "parent"?}``: a unit below ``parent`` (default: the admin's own)."""
    api = api_of(request)
    principal = await api.require(request, Permission.ADMINISTER)
    body = await read_json(request)
    unit_id = body.get("id")
    if not isinstance(unit_id, str) or not 1 <= len(unit_id) <= 64 or set(unit_id) - UNIT_ID_CHARS:
        raise BadRequest("id must be 1-64 characters of a-z, 0-9, - and _")
    name = _text(body, "name", MAX_NAME)
    parent = _scoped_unit(principal, body.get("parent"))
    try:
        unit = await asyncio.to_thread(api.accounts.add_unit, unit_id, name, parent)
    except ValueError as exc:
        raise Conflict(str(exc)) from exc
    await api.db.audit(principal.actor, "create_unit", None, f"unit {unit.id}")
    return JSONResponse(unit.to_wire(), status_code=201)


# -- API tokens (admins) ----------------------------------------------------------------


async def list_tokens(request: Request) -> Response:
    api = api_of(request)
    principal = await api.require(request, Permission.ADMINISTER)
    tokens = await asyncio.to_thread(api.accounts.tokens)
    await api.db.audit(principal.actor, "list_tokens", None)
    return JSONResponse({"tokens": [t.to_wire() for t in tokens if principal.sees(t.unit)]})


async def create_token(request: Request) -> Response:
    """``{"name", "role", "unit"?, "expires_in_days"?}`` -> the token, shown this once."""
    api = api_of(request)
    principal = await api.require(request, Permission.ADMINISTER)
    body = await read_json(request)
    name = _text(body, "name", MAX_NAME)
    role = _role(body.get("role"))
    unit = _scoped_unit(principal, body.get("unit"))
    days = body.get("expires_in_days", 90)
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_TOKEN_DAYS:
        raise BadRequest(f"expires_in_days must be a whole number from 1 to {MAX_TOKEN_DAYS}")
    secret, token = await asyncio.to_thread(
        api.accounts.add_token, name, role, unit, time.time() + days * 86400.0, principal.id
    )
    await api.db.audit(principal.actor, "create_token", None, f"token {token.id}")
    return JSONResponse({**token.to_wire(), "token": secret}, status_code=201, headers=NO_STORE)


async def revoke_token(request: Request) -> Response:
    api = api_of(request)
    principal = await api.require(request, Permission.ADMINISTER)
    token_id = request.path_params["token_id"]
    existing = [t for t in await asyncio.to_thread(api.accounts.tokens) if t.id == token_id]
    if not existing or not principal.sees(existing[0].unit):
        raise NotFound(f"no token {token_id}")
    await asyncio.to_thread(api.accounts.revoke_token, token_id)
    await api.db.audit(principal.actor, "revoke_token", None, f"token {token_id}")
    return Response(status_code=204)


# -- checks -------------------------------------------------------------------------------


def _user_actor(user: User, request: Request) -> Actor:
    return Actor(f"user:{user.id}", user.role, user.unit, client_address(request))


def _hash(password: str) -> str:
    try:
        return passwords.hash_password(password)
    except passwords.WeakPassword as exc:
        raise BadRequest(str(exc)) from exc


def _text(body: dict[str, Any], key: str, limit: int, required: bool = True) -> str:
    value = body.get(key, None if required else "")
    if not isinstance(value, str) or len(value) > limit or (required and not value):
        need = "a non-empty text" if required else "a text"
        raise BadRequest(f"{key} must be {need} of at most {limit} characters")
    return value


def _flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{key} must be true or false")
    return value


def _username(raw: Any) -> str:
    if not isinstance(raw, str) or not 1 <= len(raw) <= 64 or not raw.isprintable() or " " in raw:
        raise BadRequest("username must be 1-64 printable characters without spaces")
    return raw


def _role(raw: Any) -> str:
    if raw not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}")
    return str(raw)


def _scoped_unit(principal: Principal, raw: Any) -> str:
    """A unit in the caller's scope (404 otherwise, as for none), or the caller's own."""
    if raw is None:
        return principal.unit
    if not isinstance(raw, str) or not principal.sees(raw):
        raise NotFound(f"no unit {raw!r} in your scope")
    return raw

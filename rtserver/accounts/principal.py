"""Who a request acts as: a user signed in through the browser, an API token, or the
bootstrap key, with their role and the org units in their scope."""

from __future__ import annotations

from dataclasses import dataclass

from rtserver.accounts.roles import Permission, allows
from rtserver.store.records import ROOT_UNIT, Actor

__all__ = ["ROOT_UNIT", "VIA_BOOTSTRAP", "VIA_COOKIE", "VIA_TOKEN", "Principal"]

VIA_COOKIE = "cookie"  # a browser's login session
VIA_TOKEN = "token"  # an API token (ATS integrations)
VIA_BOOTSTRAP = "bootstrap"  # RTSERVER_API_KEY / the generated key: to be replaced


@dataclass(frozen=True)
class Principal:
    """An authenticated HR caller."""

    id: str  # the user's id, "token:<id>", or "bootstrap"
    name: str  # for people to read: a username, a token's name
    role: str  # accounts/roles.py
    unit: str  # the org unit they act in
    scope: frozenset[str]  # ``unit`` and every unit below it
    via: str  # VIA_COOKIE, VIA_TOKEN or VIA_BOOTSTRAP
    client: str  # the client's address
    csrf_token: str | None = None  # a cookie login's CSRF token (api/auth.py)
    enrolling: bool = False  # a password-only login that must enrol its second factor first

    def may(self, permission: Permission) -> bool:
        return allows(self.role, permission)

    def sees(self, unit: str | None) -> bool:
        """Whether an object of ``unit`` is in scope (None: made before units, at the root;
        any other text, "" included, only when it is one of the scope's units)."""
        return (ROOT_UNIT if unit is None else unit) in self.scope

    @property
    def actor(self) -> Actor:
        """What the audit log records of this caller."""
        user = {VIA_BOOTSTRAP: "bootstrap", VIA_COOKIE: f"user:{self.id}"}.get(self.via, self.id)
        return Actor(user, self.role, self.unit, self.client)

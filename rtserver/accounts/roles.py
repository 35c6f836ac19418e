"""Roles and what each may do.

Three roles, each able to do everything the one below it can:

- ``viewer``: watches live interviews and reads reports, transcripts and audits in scope;
- ``recruiter``: also manages jobs, sessions and decisions in scope;
- ``admin``: also manages users, org units, API tokens and settings.

Scope (which jobs and sessions) is the user's org unit and every unit below it
(``accounts/principal.py``); the role says what they may do there.
"""

from __future__ import annotations

from enum import Enum

ROLES = ("viewer", "recruiter", "admin")  # weakest first


class Permission(Enum):
    VIEW = "viewer"  # read and watch
    MANAGE = "recruiter"  # change jobs, sessions and decisions
    ADMINISTER = "admin"  # users, units, tokens, settings, the whole audit log


def is_role(value: object) -> bool:
    return isinstance(value, str) and value in ROLES


def allows(role: str, permission: Permission) -> bool:
    """Whether ``role`` may do what ``permission`` names (a stronger role may do it too)."""
    if role not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(permission.value)

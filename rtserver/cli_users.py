"""``rtserver users add|list|disable|enable|reset-2fa`` and ``rtserver units add|list``: HR
accounts and org units, on the server's store, from the command line.

The first admin is made here (``rtserver users add alice --role admin``); from then on admins
can manage accounts in the browser or over the API too. A new user's password is generated
and printed once unless one is given on standard input (``--password-stdin``), so it never
appears in the shell's history or the process list. Every change is audit-logged as ``cli``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rtserver.accounts import passwords
from rtserver.accounts.roles import ROLES
from rtserver.config import Config, ConfigError, load_config
from rtserver.store import CLI_ACTOR, ROOT_UNIT, Store
from rtserver.store.accounts import AccountStore, User
from rtserver.store.encryption import keyring_for
from rtserver.store.engine import store_target


class CommandFailed(Exception):
    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def add_parsers(commands: Any) -> None:
    users = commands.add_parser("users", help="HR user accounts")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    add = users_commands.add_parser("add", help="a new user (the password is printed once)")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=list(ROLES))
    add.add_argument("--unit", default=ROOT_UNIT, help=f"org unit id (default: {ROOT_UNIT})")
    add.add_argument("--name", default="", help="the person's name, for people to read")
    add.add_argument(
        "--totp", action="store_true", help="require a second factor (admins always need one)"
    )
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    listing = users_commands.add_parser("list", help="every user")
    listing.add_argument("--json", action="store_true")
    for name, text in (
        ("disable", "stop a user signing in (ends their logins)"),
        ("enable", "let a disabled user sign in again"),
        ("reset-2fa", "remove a user's second factor (a lost phone): they enrol a new one"),
    ):
        command = users_commands.add_parser(name, help=text)
        command.add_argument("username")
    units = commands.add_parser("units", help="org units (headquarters, regions, stores)")
    units_commands = units.add_subparsers(dest="units_command", required=True)
    unit_add = units_commands.add_parser("add", help="a new unit below another")
    unit_add.add_argument("id", help="a-z, 0-9, - and _")
    unit_add.add_argument("--name", required=True)
    unit_add.add_argument("--parent", default=ROOT_UNIT)
    units_commands.add_parser("list", help="the org tree")
    for parser in (*users_commands.choices.values(), *units_commands.choices.values()):
        parser.add_argument("--config", type=Path, help="TOML configuration file")
        parser.add_argument("--data-dir", dest="data_dir")
        parser.add_argument(
            "--store",
            metavar="URL",
            help="postgresql://… URL of a shared store (default: SQLite in the data directory)",
        )


def run(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
        accounts = AccountStore(store_target(config), keyring_for(config))
        store = Store(store_target(config), keyring_for(config))
        try:
            if args.command == "units":
                return _units(args, accounts, store)
            return _users(args, accounts, store)
        finally:
            accounts.close()
            store.close()
    except CommandFailed as exc:
        print(f"rtserver: {exc}", file=sys.stderr)
        return exc.status


def _config(args: argparse.Namespace) -> Config:
    try:
        return load_config(
            {"data_dir": args.data_dir, "store": args.store}, os.environ, args.config
        )
    except ConfigError as exc:
        raise CommandFailed(str(exc)) from exc


def _users(args: argparse.Namespace, accounts: AccountStore, store: Store) -> int:
    command = args.users_command
    if command == "add":
        return _add_user(args, accounts, store)
    if command == "list":
        users = accounts.users()
        if args.json:
            print(json.dumps([u.to_wire() for u in users], indent=2))
        else:
            for listed in users:
                print(_user_line(listed))
        return 0
    user = accounts.find_user(args.username)
    if user is None:
        raise CommandFailed(f"no user {args.username!r}", 1)
    if command == "disable":
        accounts.update_user(user.id, disabled=True)
        store.audit(CLI_ACTOR, "update_user", None, f"user {user.id}: disabled")
        print(f"{user.username} is disabled; their logins have ended")
    elif command == "enable":
        accounts.update_user(user.id, disabled=False)
        store.audit(CLI_ACTOR, "update_user", None, f"user {user.id}: enabled")
        print(f"{user.username} may sign in again")
    else:  # reset-2fa
        accounts.reset_totp(user.id)
        store.audit(CLI_ACTOR, "reset_totp", None, f"user {user.id}")
        print(f"{user.username}'s second factor is removed; they enrol a new one at next login")
    return 0


def _add_user(args: argparse.Namespace, accounts: AccountStore, store: Store) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
        generated = False
    else:
        password = secrets.token_urlsafe(15)  # 20 characters, ~120 bits
        generated = True
    try:
        password_hash = passwords.hash_password(password)
    except passwords.WeakPassword as exc:
        raise CommandFailed(str(exc)) from exc
    try:
        user = accounts.add_user(
            args.username, args.name, password_hash, args.role, args.unit, args.totp
        )
    except KeyError as exc:
        raise CommandFailed(f"no unit {args.unit!r} (rtserver units add)", 1) from exc
    except ValueError as exc:
        raise CommandFailed(str(exc), 1) from exc
    store.audit(CLI_ACTOR, "create_user", None, f"user {user.id}")
    print(_user_line(user))
    if generated:
        print(f"password (shown once): {password}")
    if user.role == "admin" or user.require_totp:
        print("they set up two-factor login (an authenticator app) at their first login")
    return 0


def _units(args: argparse.Namespace, accounts: AccountStore, store: Store) -> int:
    if args.units_command == "list":
        units = accounts.units()
        children: dict[str | None, list[Any]] = {}
        for unit in units:
            children.setdefault(unit.parent, []).append(unit)

        def show(parent: str | None, depth: int) -> None:
            for unit in children.get(parent, []):
                print(f"{'  ' * depth}{unit.id}  {unit.name}")
                show(unit.id, depth + 1)

        show(None, 0)
        return 0
    if not args.id or set(args.id) - set("abcdefghijklmnopqrstuvwxyz0123456789-_"):
        raise CommandFailed("a unit id is a-z, 0-9, - and _")
    try:
        unit = accounts.add_unit(args.id, args.name, args.parent)
    except KeyError as exc:
        raise CommandFailed(f"no unit {args.parent!r}", 1) from exc
    except ValueError as exc:
        raise CommandFailed(str(exc), 1) from exc
    store.audit(CLI_ACTOR, "create_unit", None, f"unit {unit.id}")
    print(f"{unit.id}  {unit.name}  (below {unit.parent})")
    return 0


def _user_line(user: User) -> str:
    state = "disabled" if user.disabled else "active"
    must = user.require_totp or user.role == "admin"
    factor = "2fa" if user.totp_enrolled else ("2fa to enrol" if must else "no 2fa")
    if user.locked_until and user.locked_until > time.time():
        state += ", locked"
    last = (
        datetime.fromtimestamp(user.last_login_at, UTC).strftime("%Y-%m-%d %H:%M")
        if user.last_login_at
        else "never"
    )
    return (
        f"{user.username}  {user.role}  unit={user.unit}  {state}  {factor}  last login {last}"
        f"  id={user.id}"
    )

"""``rtserver retention sweep [--dry-run]``: erases, once, the sessions whose retention has
run out (``store/retention.py``), as the server's own sweeper does every
``retention_sweep_s``. For servers run with ``--retention-sweep 0``, e.g. from cron, and to
see what is due before a change of ``retention_days``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from rtserver.config import ConfigError, load_config


def add_parsers(commands: Any) -> None:
    """The ``retention`` command's parser, on ``rtserver``'s subcommands."""
    retention = commands.add_parser("retention", help="erase candidates' data due for erasure")
    retention_commands = retention.add_subparsers(dest="retention_command", required=True)
    sweep = retention_commands.add_parser(
        "sweep", help="erase every session whose retention has run out (audit-logged)"
    )
    sweep.add_argument("--dry-run", action="store_true", help="list them, erase nothing")
    sweep.add_argument("--config", type=Path, help="TOML configuration file")
    sweep.add_argument("--data-dir", dest="data_dir")
    sweep.add_argument(
        "--store",
        metavar="URL",
        help="postgresql://… URL of a shared store (default: SQLite in the data directory)",
    )
    sweep.add_argument(
        "--retention-days",
        dest="retention_days",
        type=int,
        help="the server's retention in days (default: as configured, else 180)",
    )


def run(args: argparse.Namespace) -> int:
    from rtserver.store import Store
    from rtserver.store.encryption import keyring_for
    from rtserver.store.engine import describe, exists, store_target
    from rtserver.store.outbox import Outbox
    from rtserver.store.retention import iso, sweep

    try:
        config = load_config(
            {"data_dir": args.data_dir, "store": args.store, "retention_days": args.retention_days},
            os.environ,
            args.config,
        )
    except ConfigError as exc:
        print(f"rtserver: {exc}", file=sys.stderr)
        return 2
    target = store_target(config)
    if not exists(target):
        print(f"rtserver: no store at {describe(target)}", file=sys.stderr)
        return 1
    keyring = keyring_for(config)
    store, outbox = Store(target, keyring), Outbox(target, keyring)
    try:
        found = sweep(store, outbox, time.time(), config.retention_days, dry_run=args.dry_run)
    finally:
        outbox.close()
        store.close()
    verb = "due" if args.dry_run else "erased"
    for item in found.due:
        if args.dry_run or item.session in found.erased:
            print(f"{verb} {item.session}: {item.days} days from {iso(item.since)}")
    for session_id in found.requested:
        if args.dry_run or session_id in found.erased:
            print(f"{verb} {session_id}: the candidate's erasure request")
    count = len(found.due) + len(found.requested) if args.dry_run else len(found.erased)
    noun = "session" if count == 1 else "sessions"
    print(f"{count} {noun} {verb} (retention {config.retention_days} days by default)")
    return 0

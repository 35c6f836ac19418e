"""The master-key commands (``store/encryption.py``): ``rtserver keys rotate`` makes a new
master key current and re-wraps every data key under it while servers keep running, then
retires the old key; ``rtserver keys status`` says which master keys wrap how many data
keys. Both print JSON; neither prints a key."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rtserver.config import Config, ConfigError, load_config
from rtserver.errors import KeyringError
from rtserver.store import CLI_ACTOR, Store
from rtserver.store.encryption import ROTATE_BATCH, keyring_for
from rtserver.store.engine import describe, exists, store_target


def add_parsers(commands: Any) -> None:
    """The ``keys`` command's parsers, on ``rtserver``'s subcommands."""
    keys = commands.add_parser("keys", help="the master keys that encrypt the data at rest")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    rotate = keys_commands.add_parser(
        "rotate",
        help="make a new master key current, re-wrap every data key under it, retire the old"
        " (servers may keep running)",
    )
    rotate.add_argument(
        "--batch", type=int, default=ROTATE_BATCH, help="data keys re-wrapped per transaction"
    )
    status = keys_commands.add_parser("status", help="master keys and the data keys each wraps")
    for parser in (rotate, status):
        parser.add_argument("--config", type=Path, help="TOML configuration file")
        parser.add_argument("--data-dir", dest="data_dir")
        parser.add_argument(
            "--store",
            metavar="URL",
            help="postgresql://… URL of a shared store (default: SQLite in the data directory)",
        )
        parser.add_argument("--master-key-file", dest="master_key_file", help="the keyring file")


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(
            {
                "data_dir": args.data_dir,
                "store": args.store,
                "master_key_file": args.master_key_file,
            },
            os.environ,
            args.config,
        )
    except ConfigError as exc:
        print(f"rtserver: {exc}", file=sys.stderr)
        return 2
    target = store_target(config)
    if not exists(target):  # never make an empty database to report on
        print(f"rtserver: no database at {describe(target)}", file=sys.stderr)
        return 1
    if args.keys_command == "rotate" and args.batch < 1:
        print("rtserver: --batch must be at least 1", file=sys.stderr)
        return 2
    try:
        out = rotate(config, args.batch) if args.keys_command == "rotate" else status(config)
    except KeyringError as exc:
        print(f"rtserver: {exc.detail}", file=sys.stderr)
        return 1
    print(json.dumps(out, sort_keys=True))
    return 0


def rotate(config: Config, batch: int) -> dict[str, Any]:
    """Rotates the configured keyring over the data directory's database."""
    store = Store(store_target(config), keyring_for(config))
    try:
        done = store.rotate_master_key(batch)
        detail = f"master key {done.current}: {done.rewrapped} data keys re-wrapped"
        if done.retired:
            detail += f", retired {', '.join(done.retired)}"
        store.audit(CLI_ACTOR, "rotate_master_key", None, detail)
    finally:
        store.close()
    out = done.to_wire()
    if done.left:
        out["note"] = "no data key uses the others: drop them from RTSERVER_MASTER_KEY"
    return out


def status(config: Config) -> dict[str, Any]:
    keyring = keyring_for(config)
    store = Store(store_target(config), keyring)
    try:
        usage = store.data_keys_by_master_key()
    finally:
        store.close()
    return {
        "source": keyring.source,
        "current": keyring.current_id(),
        "keys": keyring.ids(),
        "data_keys": usage,
    }

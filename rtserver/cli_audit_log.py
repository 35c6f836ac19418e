"""The audit log's commands: ``rtserver audit-log verify`` (checks the hash chain: exit 0
with a summary when intact, 1 naming the first bad row when not) and ``rtserver audit-log
export`` (the rows of a period as JSON lines or CSV, hashes included). What the chain does
and does not detect is in ``rtserver/store/audit_log.py``."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from rtserver.config import ConfigError, load_config
from rtserver.store import CLI_ACTOR, Store
from rtserver.store.audit_log import COLUMNS, parse_bound
from rtserver.store.encryption import keyring_for
from rtserver.store.engine import describe, exists, store_target

EXPORT_PAGE = 5000  # rows read per query while exporting


def add_parsers(commands: Any) -> None:
    """``audit-log verify`` and ``audit-log export``, on ``rtserver``'s subcommands."""
    audit_log = commands.add_parser("audit-log", help="verify or export the audit log")
    audit_log_commands = audit_log.add_subparsers(dest="audit_log_command", required=True)
    verify = audit_log_commands.add_parser(
        "verify",
        help="check the hash chain; exit 1 naming the first edited, deleted or inserted row",
    )
    verify.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="ID:HASH",
        help="a head printed by an earlier verify and kept elsewhere: it must still be there"
        " (detects a rewritten or truncated history; repeatable)",
    )
    _store_options(verify)
    export = audit_log_commands.add_parser(
        "export", help="write the audit rows of a period (all by default), oldest first"
    )
    export.add_argument(
        "--from", dest="since", metavar="WHEN", help="from this date or time (ISO 8601, UTC)"
    )
    export.add_argument(
        "--to",
        dest="until",
        metavar="WHEN",
        help="until this time, exclusive (ISO 8601, UTC; a bare date includes that day)",
    )
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--output", type=Path, metavar="FILE", help="default: standard output")
    _store_options(export)


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--data-dir", dest="data_dir")
    parser.add_argument(
        "--store",
        metavar="URL",
        help="postgresql://… URL of a shared store (default: SQLite in the data directory)",
    )


class _Failed(Exception):
    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def run(args: argparse.Namespace) -> int:
    try:
        if args.audit_log_command == "verify":
            return verify(args)
        return export(args)
    except _Failed as exc:
        print(f"rtserver: {exc}", file=sys.stderr)
        return exc.status


def _open_store(args: argparse.Namespace) -> Store:
    try:
        config = load_config(
            {"data_dir": args.data_dir, "store": args.store}, os.environ, args.config
        )
    except ConfigError as exc:
        raise _Failed(str(exc)) from exc
    target = store_target(config)
    if not exists(target):  # never make an empty database to verify
        raise _Failed(f"no database at {describe(target)}")
    return Store(target, keyring_for(config))


def verify(args: argparse.Namespace) -> int:
    expect = [_expected(text) for text in args.expect]
    store = _open_store(args)
    try:
        report = store.verify_audit_log(expect)
    finally:
        store.close()
    print(report.summary(), file=sys.stdout if report.intact else sys.stderr)
    return 0 if report.intact else 1


def _expected(text: str) -> tuple[int, str]:
    row_id, sep, digest = text.partition(":")
    digest = digest.strip().lower()
    if not sep or not row_id.isdigit() or len(digest) != 64:
        raise _Failed(f"--expect wants ID:HASH (a row id and a 64-digit SHA-256), got {text!r}")
    return int(row_id), digest


def export(args: argparse.Namespace) -> int:
    try:
        since = parse_bound(args.since) if args.since else None
        until = parse_bound(args.until, end=True) if args.until else None
    except ValueError as exc:
        raise _Failed(f"--from/--to want an ISO 8601 date or time: {exc}") from exc
    store = _open_store(args)
    try:
        # Logged before anything is written out, as every view is.
        bounds = ("-" if b is None else f"{b:.0f}" for b in (since, until))
        detail = "format={} from={} to={}".format(args.format, *bounds)
        store.audit(CLI_ACTOR, "export_audit_log", None, detail)
        rows = _rows(store, since, until)
        if args.output is None:
            count = _write(rows, args.format, sys.stdout)
        else:
            with args.output.open("w", newline="", encoding="utf-8") as out:
                count = _write(rows, args.format, out)
    finally:
        store.close()
    print(f"exported {count} audit rows", file=sys.stderr)
    return 0


def _rows(store: Store, since: float | None, until: float | None) -> Iterator[dict[str, Any]]:
    """Every row of the period, oldest first, a page at a time (a long log never sits in
    memory whole)."""
    after = 0
    while True:
        page = store.audit_rows(since, until, after, EXPORT_PAGE)
        yield from page
        if len(page) < EXPORT_PAGE:
            return
        after = page[-1]["id"]


def _write(rows: Iterator[dict[str, Any]], kind: str, out: TextIO) -> int:
    count = 0
    if kind == "csv":
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            count += 1
        return count
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        count += 1
    return count

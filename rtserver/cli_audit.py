"""The hiring-outcome commands: ``rtserver outcomes import`` (what became of past
candidates), ``rtserver calibrate`` (a job's weights fitted to them) and ``rtserver audit``
(the bias audit: NYC Local Law 144 impact ratios and the four-fifths rule).

Each reads the server's store (``--job ID``) or a CSV file (``--csv FILE``), and every read
of the store is audit-logged. A calibration changes a job only with ``--apply --by NAME``,
as a new job version that records who applied it and its validity figures."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from rtserver.config import Config, ConfigError, load_config
from rtserver.scoring.jobs import Job
from rtserver.store import CLI_ACTOR, Actor, JobRecord, Store
from rtserver.store.encryption import keyring_for
from rtserver.store.engine import describe, store_target


def add_parsers(commands: Any) -> None:
    """The three commands' parsers, on ``rtserver``'s subcommands."""
    outcomes = commands.add_parser("outcomes", help="past candidates' outcomes in the store")
    outcomes_commands = outcomes.add_subparsers(dest="outcomes_command", required=True)
    importing = outcomes_commands.add_parser(
        "import", help="link hires and performance ratings (CSV) to a job's scored sessions"
    )
    importing.add_argument(
        "file", type=Path, help="CSV: session or candidate, hired, performance, rated_at"
    )
    importing.add_argument("--job", required=True, metavar="ID", help="the job's id")
    _store_options(importing)

    calibrate = commands.add_parser(
        "calibrate", help="fit a job's competency weights to past hires' performance"
    )
    calibrate.add_argument("--job", metavar="ID", help="the job (its sessions and outcomes)")
    calibrate.add_argument(
        "--csv",
        type=Path,
        metavar="FILE",
        help="instead of the store: candidate, one column per competency (0-100), performance"
        " (and sex, race for --fair)",
    )
    calibrate.add_argument(
        "--prior",
        choices=["current", "equal"],
        default="current",
        help="what the weights are pulled toward (default: the job's current weights)",
    )
    calibrate.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    calibrate.add_argument("--seed", type=int, default=0, help="folds' and bootstrap's seed")
    calibrate.add_argument(
        "--fair",
        action="store_true",
        help="the most valid weights that keep every group's impact ratio at 0.8 or more",
    )
    calibrate.add_argument("--json", action="store_true", help="print JSON")
    calibrate.add_argument(
        "--apply", action="store_true", help="save the weights as the job's next version"
    )
    calibrate.add_argument("--by", metavar="NAME", help="who applies it (with --apply)")
    _store_options(calibrate)

    audit = commands.add_parser(
        "audit", help="bias audit: impact ratios per sex, race and both (NYC LL144)"
    )
    audit.add_argument("--job", metavar="ID", help="the job's decided sessions in the store")
    audit.add_argument(
        "--from", dest="since", type=_date, metavar="YYYY-MM-DD", help="sessions ended from"
    )
    audit.add_argument(
        "--to", dest="until", type=_date, metavar="YYYY-MM-DD", help="sessions ended until"
    )
    audit.add_argument(
        "--csv",
        type=Path,
        metavar="FILE",
        help="instead of the store: candidate, score, selected (1/0), sex, race",
    )
    audit.add_argument("--json", action="store_true", help="print JSON")
    audit.add_argument("--html", type=Path, metavar="FILE", help="also write a printable report")
    audit.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    _store_options(audit)


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--data-dir", dest="data_dir")
    parser.add_argument(
        "--store",
        metavar="URL",
        help="postgresql://… URL of a shared store (default: SQLite in the data directory)",
    )


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


class CommandFailed(Exception):
    """Ends a command with ``status`` after printing the message to stderr."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def run(args: argparse.Namespace) -> int:
    command = {"outcomes": import_outcomes, "calibrate": calibrate, "audit": audit}[args.command]
    try:
        return command(args)
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


def _job(store: Store, job_id: str, where: str) -> tuple[JobRecord, Job]:
    from rtserver.scoring.jobs import parse_job

    record = store.get_job(job_id)
    if record is None:
        raise CommandFailed(f"no job {job_id} in {where}", 1)
    return record, parse_job(record.body)


def _problems(title: str, problems: list[str]) -> CommandFailed:
    return CommandFailed("\n".join([title, *(f"  - {p}" for p in problems)]))


# -- outcomes ---------------------------------------------------------------------------


def import_outcomes(args: argparse.Namespace) -> int:
    from rtserver.scoring.outcomes import OutcomesInvalid, link_outcomes, read_outcomes_csv

    config = _config(args)
    try:
        entries = read_outcomes_csv(args.file)
    except OutcomesInvalid as exc:
        raise _problems(f"{args.file} is not a valid outcomes file:", exc.problems) from exc
    store = Store(store_target(config), keyring_for(config))
    try:
        record, _ = _job(store, args.job, describe(store_target(config)))
        try:
            outcomes = link_outcomes(entries, store.scored_sessions(record.id))
        except OutcomesInvalid as exc:
            raise _problems(f"{args.file}: nothing was recorded:", exc.problems) from exc
        store.save_outcomes(record.id, outcomes, CLI_ACTOR.label)
        detail = f"job {record.id}: {len(outcomes)} outcomes"
        store.audit(CLI_ACTOR, "record_outcomes", None, detail, f"job:{record.id}")
    finally:
        store.close()
    print(json.dumps({"job": record.id, "recorded": len(outcomes)}))
    return 0


# -- calibrate --------------------------------------------------------------------------


def calibrate(args: argparse.Namespace) -> int:
    from rtserver.scoring.calibration import CalibrationInvalid

    if not args.job and not args.csv:
        raise CommandFailed("calibrate needs --job ID (the store) or --csv FILE")
    if args.apply and (not args.job or not args.by):
        raise CommandFailed("--apply needs --job ID (the job to change) and --by NAME")
    config = _config(args)
    store = Store(store_target(config), keyring_for(config)) if args.job else None
    try:
        record, job = (
            _job(store, args.job, describe(store_target(config))) if store else (None, None)
        )
        data, notes = _calibration_input(args, store, record, job)
        prior, prior_kind = _prior(data.competencies, job, args.prior)
        try:
            result = _fit(data, prior, prior_kind, args)
        except CalibrationInvalid as exc:
            raise CommandFailed(str(exc)) from exc
        wire = {**result, "notes": notes}
        if store is not None and record is not None and job is not None:
            actor = Actor(f"cli:{args.by}", "admin", None, "local") if args.by else CLI_ACTOR
            detail = f"job {record.id} n={result['n']}"
            store.audit(actor, "calibrate", None, detail, f"job:{record.id}")
            if args.apply:
                wire["applied"] = _apply(store, record, job, result, args.by)
    finally:
        if store is not None:
            store.close()
    print(json.dumps(wire, sort_keys=True) if args.json else format_calibration(wire))
    return 0


def _calibration_input(
    args: argparse.Namespace, store: Store | None, record: JobRecord | None, job: Job | None
) -> tuple[Any, list[str]]:
    from rtserver.scoring.calibration import CalibrationInvalid, read_calibration_csv
    from rtserver.scoring.samples import calibration_sample

    ids = [c.id for c in job.competencies] if job else None
    if args.csv:
        try:
            return read_calibration_csv(args.csv, ids), []
        except CalibrationInvalid as exc:
            raise CommandFailed(f"{args.csv}: {exc}") from exc
    assert store is not None and record is not None and job is not None
    sessions = store.scored_sessions(record.id)
    # Self-identification serves the fairness constraint and the accuracy per group (EU AI
    # Act Art. 13); the weights themselves are fitted without it.
    demographics = store.self_identification_for_audit([s.id for s in sessions])
    sample = calibration_sample(job, sessions, store.outcomes(record.id), demographics)
    notes = []
    if sample.without_performance:
        notes.append(f"{sample.without_performance} outcomes have no performance rating")
    if sample.unscored:
        notes.append(f"{sample.unscored} sessions lack a score on a current competency")
    return sample.data, notes


def _prior(ids: tuple[str, ...], job: Job | None, kind: str) -> tuple[dict[str, float], str]:
    """The weights calibration pulls toward: the job's current ones, or equal weights (also
    when no job gives current ones)."""
    if kind == "current" and job is not None:
        return {c.id: c.weight for c in job.competencies if c.id in ids}, "current"
    return {cid: 1.0 / len(ids) for cid in ids}, "equal"


def _fit(data: Any, prior: dict[str, float], kind: str, args: argparse.Namespace) -> dict[str, Any]:
    from rtserver.scoring.calibration import calibrate as fit
    from rtserver.scoring.calibration import calibrate_fair

    options = {"folds": args.folds, "seed": args.seed, "prior_kind": kind}
    if args.fair:
        return calibrate_fair(data, prior, **options).to_wire()
    return fit(data, prior, **options).to_wire()


def _apply(
    store: Store, record: JobRecord, job: Job, result: dict[str, Any], by: str
) -> dict[str, Any]:
    """Saves the job with the calibrated weights as its next version, recording who
    applied it and the figures it was applied on."""
    from rtserver.scoring.jobs import parse_job

    weights: dict[str, float] = result["weights"]
    body = job.to_wire()
    for competency in body["competencies"]:
        competency["weight"] = weights[competency["id"]]
    parse_job(body)  # the weights still make a valid job (they sum to 1)
    saved = store.apply_calibration(record.id, body, record.version, result, f"cli:{by}")
    store.audit(
        Actor(f"cli:{by}", "admin", None, "local"),
        "apply_calibration",
        None,
        f"job {record.id} version {record.version} -> {saved.version}",
        f"job:{record.id}",
    )
    return {"job": saved.id, "from_version": record.version, "version": saved.version, "by": by}


def format_calibration(result: dict[str, Any]) -> str:
    validity = result["validity"]
    fairness = result.get("fairness")
    prior = result.get("prior_weights", {})
    unconstrained = fairness["unconstrained_weights"] if fairness else None
    header = "competency            prior  calibrated" + ("        fair" if fairness else "")
    lines = [f"n = {result['n']} outcomes", "", header]
    for cid, weight in result["weights"].items():
        columns = [prior.get(cid, float("nan")), *([unconstrained[cid]] if unconstrained else [])]
        lines.append(
            f"{cid:<20} {columns[0]:>6.3f}  "
            + "".join(f"{value:>10.3f}  " for value in columns[1:])
            + f"{weight:>10.3f}"
        )
    lines.append("")
    # With --fair, "calibrated" holds the fair weights' figures and "unconstrained" the plain
    # calibration's: the table's column names.
    names = {"calibrated": "fair", "unconstrained": "calibrated"} if fairness else {}
    for name, figures in validity.items():
        low, high = figures["ci"]
        lines.append(
            f"validity ({names.get(name, name)}): r = {figures['r']:.3f}"
            f"  95% CI [{low:.3f}, {high:.3f}]"
            " (Pearson r with performance, held-out folds)"
        )
    by_group = result.get("validity_by_group") or []
    if by_group:
        lines += ["", "validity per group (r)                    n   prior  calibrated"]
        lines += [
            f"  {(g['dimension'] + ': ' + g['group'])[:38]:<38} {g['n']:>5}  "
            f"{_figure(g['prior_r'])}  {_figure(g['calibrated_r'])}"
            for g in by_group
        ]
    if fairness:
        lines += ["", "impact ratios (lowest per dimension)    before  after"]
        for dim, before in fairness["ratios_before"].items():
            after = fairness["ratios_after"][dim]
            lines.append(f"  {dim:<38} {before:>6.3f} {after:>6.3f}")
        lines.append(f"validity lost: {fairness['validity_lost']:.3f}")
        if not fairness["feasible"]:
            lines.append("no weighting keeps every ratio at 0.8 on this data: shown is the closest")
    lines += [f"note: {note}" for note in result.get("notes", [])]
    applied = result.get("applied")
    if applied:
        lines.append(
            f"applied by {applied['by']}: job {applied['job']} version "
            f"{applied['from_version']} -> {applied['version']}"
        )
    else:
        lines.append("not applied: --apply --by NAME saves these weights as a new job version")
    return "\n".join(lines)


# -- audit ------------------------------------------------------------------------------


def audit(args: argparse.Namespace) -> int:
    from rtserver.scoring.audit import AuditInvalid, read_audit_csv, run_audit
    from rtserver.scoring.audit_report import audit_html

    if bool(args.job) == bool(args.csv):
        raise CommandFailed("audit needs one of --job ID (the store) or --csv FILE")
    effects = None
    extra: dict[str, Any] = {}
    title = f"Bias audit of {args.csv.name}" if args.csv else ""
    if args.csv:
        try:
            rows = read_audit_csv(args.csv)
        except AuditInvalid as exc:
            raise CommandFailed(f"{args.csv}: {exc}") from exc
    else:
        rows, effects, extra, title = _audit_from_store(args)
    if not rows:
        raise CommandFailed("no decided, scored sessions to audit in that period", 1)
    try:
        result = {**run_audit(rows, seed=args.seed), **extra}
    except AuditInvalid as exc:
        raise CommandFailed(str(exc)) from exc
    if effects is not None:
        result["competencies"] = effects
    if args.html:
        args.html.write_text(audit_html(result, title, effects), encoding="utf-8")
    print(json.dumps(result, sort_keys=True) if args.json else format_audit(result))
    return 0


def _audit_from_store(args: argparse.Namespace) -> tuple[list[Any], Any, dict[str, Any], str]:
    from rtserver.scoring.samples import audit_sample, job_audit_extras, job_competency_effects

    config = _config(args)
    store = Store(store_target(config), keyring_for(config))
    try:
        record, job = _job(store, args.job, describe(store_target(config)))
        sessions = store.scored_sessions(record.id)
        demographics = store.self_identification_for_audit([s.id for s in sessions])
        store.audit(CLI_ACTOR, "bias_audit", None, f"job {record.id}", f"job:{record.id}")
    finally:
        store.close()
    sample = audit_sample(job, sessions, demographics, args.since, args.until)
    effects = job_competency_effects(job, sample)
    extra = job_audit_extras(record, job, sample, args.since, args.until)
    return sample.rows, effects, extra, f"Bias audit: {job.title}"


def format_audit(result: dict[str, Any]) -> str:
    lines = [
        f"n = {result['n']}, median score = {result['median_score']:.1f}, "
        f"unknown: {', '.join(f'{k} {v}' for k, v in result['unknown'].items())}",
    ]
    dimension = None
    for g in result["groups"]:
        if g["dimension"] != dimension:
            dimension = g["dimension"]
            lines += [
                "",
                f"{dimension:<40}    n  sel.rate  impact  scoring  s.impact  p",
            ]
        flags = ("  < 4/5" if g["below_four_fifths"] else "") + (
            "  < 2 %" if g["under_2pct"] else ""
        )
        lines.append(
            f"{g['group'][:40]:<40} {g['n']:>5}  {g['selection_rate']:>8.3f}  "
            f"{_figure(g['impact_ratio'])}  {g['scoring_rate']:>7.3f}  "
            f"{_figure(g['scoring_impact_ratio'])}  {g['p_value']:.3g}{flags}"
        )
    return "\n".join(lines)


def _figure(value: float | None) -> str:
    return "     -" if value is None else f"{value:>6.3f}"

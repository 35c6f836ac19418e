"""The job commands: ``rtserver score`` (text answers against a job's rubric, offline) and
``rtserver jobs import`` (a job file into the server's store, as the API would save it)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from rtserver.config import ConfigError, load_config
from rtserver.logs import setup_logging


def score_command(args: argparse.Namespace) -> int:
    from rtserver.inference.sentence_encoder import SentenceEncoder, SentenceEncoderError
    from rtserver.models.fetch import MODELS, ModelFetchError, ensure_models
    from rtserver.scoring.job_fit import job_fit
    from rtserver.scoring.jobs import JobInvalid, load_job_file
    from rtserver.scoring.offline import AnswersInvalid, format_job_fit, load_answers

    try:
        config = load_config({"models_dir": args.models_dir}, os.environ, args.config)
    except ConfigError as exc:
        print(f"rtserver: {exc}", file=sys.stderr)
        return 2
    setup_logging("warning")
    try:
        job = load_job_file(args.job)
    except JobInvalid as exc:
        print(f"rtserver: {args.job} is not a valid job:", file=sys.stderr)
        print("\n".join(f"  - {problem}" for problem in exc.problems), file=sys.stderr)
        return 2
    try:
        answers = load_answers(args.answers, job)  # checked before any model is loaded
    except AnswersInvalid as exc:
        print(f"rtserver: {exc}", file=sys.stderr)
        return 2
    try:
        ensure_models(config.models_path, ["sentence_encoder"])
        encoder = SentenceEncoder(config.models_path / MODELS["sentence_encoder"].file)
        fit = job_fit(job, answers, encoder)
    except (ModelFetchError, SentenceEncoderError) as exc:
        print(f"rtserver: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(fit.to_wire(), sort_keys=True, separators=(",", ":")))
    else:
        print(format_job_fit(job, fit))
    return 0


def import_job_command(args: argparse.Namespace) -> int:
    """Saves the job file as a new job (or, with ``--update ID``, the next version of one)
    in the data directory's store, audit-logged, and prints its id and version."""
    from rtserver.scoring.jobs import JobInvalid, load_job_file
    from rtserver.store import CLI_ACTOR, Store
    from rtserver.store.encryption import keyring_for
    from rtserver.store.engine import describe, store_target

    try:
        config = load_config(
            {"data_dir": args.data_dir, "store": args.store}, os.environ, args.config
        )
    except ConfigError as exc:
        print(f"rtserver: {exc}", file=sys.stderr)
        return 2
    try:
        job = load_job_file(args.file)
    except JobInvalid as exc:
        print(f"rtserver: {args.file} is not a valid job:", file=sys.stderr)
        print("\n".join(f"  - {problem}" for problem in exc.problems), file=sys.stderr)
        return 2
    if job.webhooks and not config.webhook_secret:
        print("rtserver: the job's webhooks need the server's webhook secret", file=sys.stderr)
        return 2
    store = Store(store_target(config), keyring_for(config))
    try:
        if args.update and store.get_job(args.update) is None:
            print(
                f"rtserver: no job {args.update} in {describe(store_target(config))}",
                file=sys.stderr,
            )
            return 1
        record = store.save_job(job.to_wire(), CLI_ACTOR.label, args.update)
        action = "update_job" if args.update else "create_job"
        detail = f"job {record.id} version {record.version}"
        store.audit(CLI_ACTOR, action, None, detail, f"job:{record.id}")
    finally:
        store.close()
    print(json.dumps({"id": record.id, "version": record.version, "title": job.title}))
    return 0

"""A job's hiring history written into a real store: ended sessions with the job-fit finals
the server writes, the decisions people made, and the candidates' self-identification.

Running hundreds of real interviews would take hours; the finals here have the shape
``scoring/job_report.py`` gives a session with a job (``job``, ``score``, ``competencies``
with each one's ``score``), which is all calibration and the audit read of them. The tests
seed stores with it, and ``python -m bench.hiring_history --data-dir DIR`` writes a
synthetic population's history (``bench/population.py``) into a data directory, with an
outcomes CSV, to try ``rtserver outcomes import``, ``calibrate`` and ``audit`` on. It is
synthetic: an audit of it is no audit.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.population import DEFAULT_GAPS, DEFAULT_WEIGHTS, make_population
from rtserver.messages import StoredMessage
from rtserver.scoring.jobs import parse_job
from rtserver.store import JobRecord, Question, Store

JOBS = Path(__file__).resolve().parents[1] / "tests" / "jobs"
THRESHOLD = 62.0  # the synthetic job's: about a third of its candidates reach it


@dataclass(frozen=True)
class PastCandidate:
    name: str
    competencies: Mapping[str, float]  # competency id -> 0-100
    decision: str | None  # "advance", "reject", "hold", or None (undecided)
    sex: str | None = None
    race: str | None = None
    answered_form: bool = True


def job_body(stem: str = "backend_engineer") -> dict[str, Any]:
    body: dict[str, Any] = json.loads((JOBS / f"{stem}.json").read_text())
    return body


def job_fit_final(record: JobRecord, competencies: Mapping[str, float]) -> dict[str, Any]:
    """A final as a session with this job ends with (the fields the audit reads, and a few
    beside them)."""
    weights = {c["id"]: c["weight"] for c in record.body["competencies"]}
    score = round(sum(weights[cid] * s for cid, s in competencies.items()), 1)
    threshold = record.body["threshold"]
    return {
        "type": "final",
        "score": score,
        "job": {"id": record.id, "version": record.version, "title": record.body["title"]},
        "recommendation": "advance" if score >= threshold else "review",
        "threshold": threshold,
        "competencies": {
            cid: {"name": cid, "score": s, "weight": weights[cid], "answered": s > 0}
            for cid, s in competencies.items()
        },
    }


def seed_history(
    store: Store, record: JobRecord, candidates: Sequence[PastCandidate]
) -> dict[str, str]:
    """Writes each candidate's ended, scored session; returns their session ids by name."""
    ids: dict[str, str] = {}
    questions = [Question(q["text"], q["seconds"]) for q in record.body["questions"]]
    for candidate in candidates:
        session, _ = store.create_session(
            candidate.name, record.id, questions, job_version=record.version
        )
        store.mark_live(session.id, "bench")
        final = job_fit_final(record, candidate.competencies)
        store.append_message(StoredMessage(session.id, 0, "final", final))
        store.mark_ended(session.id, "completed")
        if candidate.decision is not None:
            store.add_decision(
                session.id, candidate.decision, "", "Dana", final["recommendation"], "hr@test"
            )
        if candidate.answered_form:
            store.save_self_identification(session.id, candidate.sex, candidate.race)
        ids[candidate.name] = session.id
    return ids


def synthetic_job(ids: Sequence[str]) -> dict[str, Any]:
    """A valid job over competencies ``ids``, equally weighted, one question each."""
    weight = round(1.0 / len(ids), 6)
    competencies = [
        {
            "id": cid,
            "name": cid.replace("_", " ").capitalize(),
            "weight": weight if i else 1.0 - weight * (len(ids) - 1),
            "anchors": {"1": f"No example of {cid}.", "5": f"A clear, measured example of {cid}."},
        }
        for i, cid in enumerate(ids)
    ]
    questions = [
        {"text": f"Tell us about a time you showed {cid.replace('_', ' ')}.", "competencies": [cid]}
        for cid in ids
    ]
    return {
        "title": "Synthetic role",
        "threshold": THRESHOLD,
        "competencies": competencies,
        "questions": questions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a synthetic hiring history in a data directory")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--n", type=int, default=600, help="past candidates (default 600)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data, truth = make_population(args.n, DEFAULT_WEIGHTS, gaps=DEFAULT_GAPS, seed=args.seed)
    rng = np.random.default_rng(args.seed + 1)
    store = Store(args.data_dir / "rtserver.sqlite3")
    record = store.save_job(parse_job(synthetic_job(data.competencies)).to_wire(), "bench")
    weights = np.array([c["weight"] for c in record.body["competencies"]])
    people = []
    for i, name in enumerate(data.candidates):
        scores = dict(zip(data.competencies, map(float, data.scores[i]), strict=True))
        # A person decides: mostly along the score, not always.
        advanced = float(data.scores[i] @ weights) + rng.normal(0, 5) >= THRESHOLD
        people.append(
            PastCandidate(
                name, scores, "advance" if advanced else "reject", data.sex[i], data.race[i]
            )
        )
    seed_history(store, record, people)
    store.close()
    outcomes = args.data_dir / "outcomes.csv"
    with outcomes.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["candidate", "hired", "performance", "rated_at"])
        for person, performance in zip(people, data.performance, strict=True):
            hired = person.decision == "advance"
            # Only those hired have a performance rating, as in any company's records.
            out.writerow([person.name, int(hired), f"{performance:.2f}" if hired else "", ""])
    print(f"job {record.id}: {len(people)} past candidates in {args.data_dir}")
    print(f"outcomes: {outcomes} (performance of the hired only)")
    print(f"planted weights: {', '.join(f'{k} {v:g}' for k, v in truth['weights'].items())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

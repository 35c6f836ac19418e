"""A job's hiring history written into a real store: ended sessions with the job-fit finals
the server writes, the decisions people made, and the candidates' self-identification.

Running hundreds of real interviews would take hours; the finals here have the shape
``scoring/job_report.py`` gives a session with a job (``job``, ``score``, ``competencies``
with each one's ``score``), which is all calibration and the audit read of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtserver.messages import StoredMessage
from rtserver.store import JobRecord, Question, Store

JOBS = Path(__file__).parent / "jobs"


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
        store.mark_live(session.id)
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

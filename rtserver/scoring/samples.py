"""The samples calibration and the bias audit read from a job's scored sessions.

The store hands over each ended session of the job with its final report and the latest
decision (``ScoredSession``), the outcomes HR recorded, and, for the audit alone, the
candidates' voluntary self-identification. Here they become the rows ``calibration.py`` and
``audit.py`` take. Only sessions scored against the job's competencies count: a final
without a job-fit (transcription off, or scored before the job had that competency) is left
out and counted, never guessed at.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtserver.scoring.audit import AuditRow, competency_effects
from rtserver.scoring.calibration import CalibrationData
from rtserver.scoring.jobs import Job
from rtserver.store.records import JobRecord, Outcome, ScoredSession

Demographics = Mapping[str, tuple[str | None, str | None]]  # session id -> (sex, race)


@dataclass(frozen=True)
class AuditSample:
    rows: list[AuditRow]
    competency_scores: np.ndarray  # rows x the job's competencies (0-100); NaN where unrated
    undecided: int  # scored sessions with no decision yet: left out
    unscored: int  # ended sessions without a job-fit score: left out


def competency_scores(final: Mapping[str, object], ids: Sequence[str]) -> list[float] | None:
    """The final's score (0-100) of each competency in ``ids``; None when it lacks one."""
    rated = final.get("competencies")
    if not isinstance(rated, Mapping):
        return None
    scores = []
    for cid in ids:
        entry = rated.get(cid)
        if not isinstance(entry, Mapping) or not isinstance(entry.get("score"), int | float):
            return None
        scores.append(float(entry["score"]))
    return scores


def job_fit_score(final: Mapping[str, object]) -> float | None:
    """The final's job-fit score, when it was scored against a job."""
    score = final.get("score")
    if not final.get("job") or not isinstance(score, int | float):
        return None
    return float(score)


def within(session: ScoredSession, since: dt.date | None, until: dt.date | None) -> bool:
    """Whether the session ended on a day from ``since`` to ``until`` (UTC, both included)."""
    if session.ended_at is None:
        return since is None and until is None
    day = dt.datetime.fromtimestamp(session.ended_at, dt.UTC).date()
    return (since is None or day >= since) and (until is None or day <= until)


def audit_sample(
    job: Job,
    sessions: Sequence[ScoredSession],
    demographics: Demographics,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> AuditSample:
    """The decided, scored sessions that ended from ``since`` to ``until``: score, whether
    the person deciding advanced the candidate, and their self-identification."""
    ids = [c.id for c in job.competencies]
    rows: list[AuditRow] = []
    matrix: list[list[float]] = []
    undecided = unscored = 0
    for session in sessions:
        if not within(session, since, until):
            continue
        score = job_fit_score(session.final)
        if score is None:
            unscored += 1
            continue
        if session.decision is None:
            undecided += 1
            continue
        sex, race = demographics.get(session.id, (None, None))
        rows.append(AuditRow(session.id, score, session.decision == "advance", sex, race))
        matrix.append(competency_scores(session.final, ids) or [float("nan")] * len(ids))
    scores = np.array(matrix, dtype=np.float64).reshape(len(matrix), len(ids))
    return AuditSample(rows, scores, undecided, unscored)


def job_competency_effects(job: Job, sample: AuditSample) -> list[dict[str, Any]] | None:
    """Each competency's effect on the scoring impact ratios (``audit.competency_effects``)
    with the job's weights; None when some audited session lacks a score on one of them."""
    if not sample.rows or np.isnan(sample.competency_scores).any():
        return None
    return competency_effects(
        sample.competency_scores,
        [c.weight for c in job.competencies],
        [c.id for c in job.competencies],
        [r.sex for r in sample.rows],
        [r.race for r in sample.rows],
    )


def job_audit_extras(
    record: JobRecord,
    job: Job,
    sample: AuditSample,
    since: dt.date | None,
    until: dt.date | None,
) -> dict[str, Any]:
    """What an audit of a job's sessions says beside ``run_audit``'s figures: the job, the
    period, and the sessions left out."""
    return {
        "job": {"id": record.id, "version": record.version, "title": job.title},
        "from": since.isoformat() if since else None,
        "to": until.isoformat() if until else None,
        "undecided": sample.undecided,
        "unscored": sample.unscored,
    }


@dataclass(frozen=True)
class CalibrationSample:
    data: CalibrationData
    without_performance: int  # scored sessions whose outcome has no performance rating
    unscored: int  # sessions with an outcome but no score on every current competency


def calibration_sample(
    job: Job,
    sessions: Sequence[ScoredSession],
    outcomes: Mapping[str, Outcome],
    demographics: Demographics | None = None,
) -> CalibrationSample:
    """The scored sessions with a performance rating: their competency scores (on the job's
    current competencies) and that rating. ``demographics`` only for a fairness-constrained
    calibration."""
    ids = tuple(c.id for c in job.competencies)
    names: list[str] = []
    matrix: list[list[float]] = []
    performance: list[float] = []
    sexes: list[str | None] = []
    races: list[str | None] = []
    without = unscored = 0
    for session in sessions:
        outcome = outcomes.get(session.id)
        if outcome is None:
            continue
        if outcome.performance is None:
            without += 1
            continue
        scores = competency_scores(session.final, ids)
        if scores is None:
            unscored += 1
            continue
        sex, race = (demographics or {}).get(session.id, (None, None))
        names.append(session.id)
        matrix.append(scores)
        performance.append(outcome.performance)
        sexes.append(sex)
        races.append(race)
    data = CalibrationData(
        candidates=tuple(names),
        competencies=ids,
        scores=np.array(matrix, dtype=np.float64).reshape(len(matrix), len(ids)),
        performance=np.array(performance, dtype=np.float64),
        sex=tuple(sexes),
        race=tuple(races),
    )
    return CalibrationSample(data, without, unscored)

"""The job-fit score: a job's competencies, each rated from the answers that target it.

Each answer is rated on the competencies its question targets (``competencies.py``). A
competency's score (0-100) is the mean of its ratings over every question that targets it;
a question left unanswered counts 0 there, so a competency never answered scores 0 and is
named in ``not_answered``. The job-fit score is the sum of weight x competency score.

When the job gives delivery a share (``delivery_weight``, at most 0.2), that share of the
score is the delivery score (how the candidate came across: the per-second rubric) and the
rest is what they said; by default delivery is shown and carries no weight.

``recommendation`` is "advance" at or above the job's threshold, else "review": the
candidate is invited to the human interview, or a person looks again. Nothing here rejects
anyone; a person decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rtserver.scoring.competencies import Evidence, Rating, Spoken, TextEncoder, rate_answer
from rtserver.scoring.jobs import Job

ADVANCE = "advance"
REVIEW = "review"
EVIDENCE_PER_COMPETENCY = 3


@dataclass(frozen=True)
class CompetencyScore:
    id: str
    name: str
    weight: float
    score: float  # 0-100, one decimal
    answered: bool
    evidence: tuple[Evidence, ...]

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "score": self.score,
            "weight": self.weight,
            "answered": self.answered,
            "evidence": [e.text for e in self.evidence],
            "evidence_times": [e.to_wire() for e in self.evidence],
        }


@dataclass(frozen=True)
class AnswerRating:
    question: int
    ratings: Mapping[str, Rating]

    def to_wire(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "competencies": {cid: r.to_wire() for cid, r in self.ratings.items()},
        }


@dataclass(frozen=True)
class JobFit:
    score: float  # 0-100, one decimal
    content_score: float  # what was said alone (0-100)
    delivery_score: float | None  # how it came across (0-100), when given
    delivery_weight: float
    threshold: float
    recommendation: str  # "advance" or "review"
    competencies: tuple[CompetencyScore, ...]
    answers: tuple[AnswerRating, ...]
    not_answered: tuple[str, ...]  # competency ids with no answer at all

    def to_wire(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "recommendation": self.recommendation,
            "threshold": self.threshold,
            "content_score": self.content_score,
            "delivery_score": self.delivery_score,
            "delivery_weight": self.delivery_weight,
            "competencies": {c.id: c.to_wire() for c in self.competencies},
            "not_answered": list(self.not_answered),
            "answers": [a.to_wire() for a in self.answers],
        }


def job_fit(
    job: Job,
    answers: Mapping[int, Sequence[Spoken]],
    encoder: TextEncoder,
    delivery_score: float | None = None,
) -> JobFit:
    """The job-fit of ``answers`` (question index -> what was said to it) for ``job``.
    ``delivery_score`` (0-100) counts only when the job gives delivery a weight."""
    rated = tuple(
        AnswerRating(q, rate_answer(job, q, answers.get(q, ()), encoder))
        for q in range(len(job.questions))
    )
    scores = tuple(_competency_score(job, cid, rated) for cid in (c.id for c in job.competencies))
    content = round(sum(c.weight * c.score for c in scores), 1)
    weight = 0.0
    total = content
    if delivery_score is not None and job.delivery_weight > 0:
        weight = job.delivery_weight
        total = (1.0 - weight) * content + weight * delivery_score
    total = round(total, 1)
    return JobFit(
        score=total,
        content_score=content,
        delivery_score=None if delivery_score is None else round(delivery_score, 1),
        delivery_weight=weight,
        threshold=job.threshold,
        recommendation=ADVANCE if total >= job.threshold else REVIEW,
        competencies=scores,
        answers=rated,
        not_answered=tuple(c.id for c in scores if not c.answered),
    )


def _competency_score(job: Job, cid: str, rated: Sequence[AnswerRating]) -> CompetencyScore:
    competency = job.competency(cid)
    ratings = [a.ratings[cid] for a in rated if cid in a.ratings]
    answered = [r for r in ratings if r.answered]
    score = round(sum(r.score for r in ratings) / len(ratings), 1) if ratings else 0.0
    best = sorted(answered, key=lambda r: -r.score)
    evidence = tuple(e for r in best for e in r.evidence)[:EVIDENCE_PER_COMPETENCY]
    return CompetencyScore(cid, competency.name, competency.weight, score, bool(answered), evidence)

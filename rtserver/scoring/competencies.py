"""Rating one answer against the competencies its question targets, on a 1-5 scale.

A structured interview rates each answer on behaviourally anchored rating scales: a level
from 1 to 5, each described by an anchor. This rates the way a rater reads, from the
answer's words alone (never from how the candidate looked or sounded):

1. **Is it an answer to this question?** The meaning (sentence embeddings,
   all-MiniLM-L6-v2) of its most on-topic sentence against the question's. An answer about
   something else is rated 1 whatever its length (under RELEVANCE_FLOOR), and one between
   the floor and RELEVANCE_FULL is held down in proportion. An answer as a whole much
   closer to another of the job's questions than to this one (WRONG_QUESTION_MARGIN)
   answers that one: at most WRONG_QUESTION_MAX_LEVEL, however good it is there.
2. **What does it show?** The cues of ``answer_features.py``: structure (situation, task,
   action, result), specificity (figures, names, first-person actions), an outcome stated,
   the job's skills put to use, and how much of it is substance rather than lists and stock
   phrases. These give the level; each has its weight in CUE_WEIGHTS.
3. **Which anchor is it like?** The answer's closeness to each anchor of the competency
   moves the level by at most ANCHOR_PULL of a level toward the closest anchors, so the
   job's own descriptions count without a keyword-echo of them being enough.

The level is continuous (1.0-5.0) and is shown rounded; the score is the level mapped onto
0-100 ((level - 1) x 25). Evidence is the answer's sentences that drove the rating, quoted
verbatim with their times. Constants were set on the tuning half of
``tests/answer_set.json`` and checked on the held-out half: Spearman 0.841 and 0.824
between the graded level and the score (``tests/test_job_fit_validation.py``). The whole
answer's closeness to the question was tried first as relevance and dropped: it falls as
an answer grows (strong answers 0.25-0.56, off-topic ones up to 0.43), where the best
sentence's does not (Spearman 0.745 against 0.841 on the tuning half).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from rtserver.scoring.answer_features import AnswerCues, SentenceCues, answer_cues
from rtserver.scoring.jobs import Competency, Job

# Cosine similarity (MiniLM) of an answer's most on-topic sentence to its question under
# which it is about something else (rated 1), and over which it no longer limits the level.
RELEVANCE_FLOOR = 0.20
RELEVANCE_FULL = 0.40
# An answer this much closer to another of the job's questions answers that one instead.
WRONG_QUESTION_MARGIN = 0.12
WRONG_QUESTION_MAX_LEVEL = 1.4
# How much each cue (0-1) adds to the level above 1: they sum to 4, the whole scale.
CUE_WEIGHTS = {
    "structure": 1.2,
    "specificity": 1.2,
    "outcome": 0.8,
    "skills": 0.3,
    "substance": 0.5,
}
BUZZ_PENALTY = 1.0  # levels taken off an answer made of stock phrases (buzz 1)
SKILLS_FULL = 2  # the job's skills put to use for the whole "skills" cue
ANCHOR_PULL = 0.5  # at most this many levels toward the anchors the answer is closest to
ANCHOR_TEMPERATURE = 0.05  # softmax temperature over the anchors' similarities
EVIDENCE_SENTENCES = 3
DECIMALS = 4  # similarities are rounded so that the same input gives the same bytes


class TextEncoder(Protocol):
    """Sentence embeddings: unit vectors, one row per text, the same for the same text."""

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True)
class Spoken:
    """A stretch of an answer: an utterance of a live transcript (media times, s), or a
    whole text answer (no times)."""

    text: str
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class Evidence:
    """A sentence of the answer, verbatim, and when it was said (None: a text answer)."""

    text: str
    start: float | None
    end: float | None

    def to_wire(self) -> dict[str, object]:
        return {"text": self.text, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class Rating:
    """One competency's rating of one answer."""

    competency: str
    answered: bool  # False: nothing was said (level 0, score 0)
    level: float  # 1.0-5.0 (0 when not answered)
    score: int  # 0-100
    evidence: tuple[Evidence, ...]
    reasons: tuple[str, ...]  # plain language: what raised or held back the level

    def to_wire(self) -> dict[str, object]:
        return {
            "score": self.score,
            "level": round(self.level) if self.answered else 0,
            "answered": self.answered,
            "evidence": [e.text for e in self.evidence],
            "evidence_times": [e.to_wire() for e in self.evidence],
            "reasons": list(self.reasons),
        }


def score_of(level: float) -> int:
    """A 1-5 level on 0-100."""
    return round((min(max(level, 1.0), 5.0) - 1.0) * 25.0)


def rate_answer(
    job: Job, question: int, spoken: Sequence[Spoken], encoder: TextEncoder
) -> dict[str, Rating]:
    """The ratings of the answer ``spoken`` to ``job``'s question ``question``, one per
    competency the question targets."""
    targets = [job.competency(cid) for cid in job.questions[question].competencies]
    text = " ".join(part.text.strip() for part in spoken if part.text.strip())
    skills = [skill for c in targets for skill in c.skills]
    cues = answer_cues(text, skills)
    if cues.words == 0:
        return {c.id: _not_answered(c) for c in targets}
    questions = [q.text for q in job.questions]
    vectors = encoder.encode([text, *questions])
    answer, question_vectors = vectors[0], vectors[1:]
    similarity = _rounded(question_vectors @ answer)
    # Relevance: the closeness of the answer's most on-topic sentence to the question. An
    # answer is more than its topic sentence, so the whole answer is less close to the
    # question the longer it runs; its best sentence is not.
    sentences = encoder.encode([s.text for s in cues.sentences])
    relevance = float(_rounded(sentences @ question_vectors[question]).max())
    others = [float(s) for i, s in enumerate(similarity) if i != question]
    closer_elsewhere = max(others, default=-1.0) - float(similarity[question])
    return {
        c.id: _rate(c, cues, spoken, answer, relevance, closer_elsewhere, encoder) for c in targets
    }


def _rate(
    competency: Competency,
    cues: AnswerCues,
    spoken: Sequence[Spoken],
    answer: npt.NDArray[np.float32],
    relevance: float,
    closer_elsewhere: float,
    encoder: TextEncoder,
) -> Rating:
    reasons: list[str] = []
    skills = min(1.0, len(set(cues.skills) & set(competency.skills)) / SKILLS_FULL)
    shown = {
        "structure": cues.structure,
        "specificity": cues.specificity,
        "outcome": cues.outcome,
        "skills": skills if competency.skills else cues.specificity,
        "substance": cues.substance,
    }
    level = 1.0 + sum(CUE_WEIGHTS[k] * v for k, v in shown.items())
    level -= BUZZ_PENALTY * cues.buzz
    reasons += _cue_reasons(cues, competency, skills)

    anchor_level = _anchor_level(competency, answer, encoder)
    if anchor_level is not None:
        level += max(-ANCHOR_PULL, min(ANCHOR_PULL, anchor_level - level))

    # Relevance limits the level: an answer about something else says nothing of this.
    gate = (relevance - RELEVANCE_FLOOR) / (RELEVANCE_FULL - RELEVANCE_FLOOR)
    gate = min(1.0, max(0.0, gate))
    if gate < 1.0:
        reasons.append(
            "does not address the question" if gate == 0.0 else "only partly addresses the question"
        )
    level = 1.0 + (level - 1.0) * gate
    if closer_elsewhere > WRONG_QUESTION_MARGIN and level > WRONG_QUESTION_MAX_LEVEL:
        level = WRONG_QUESTION_MAX_LEVEL
        reasons.append("answers another of the job's questions rather than this one")
    level = round(min(5.0, max(1.0, level)), 2)
    evidence = _evidence(cues, spoken, competency)
    return Rating(competency.id, True, level, score_of(level), evidence, tuple(reasons))


def _cue_reasons(cues: AnswerCues, competency: Competency, skills: float) -> list[str]:
    reasons = []
    parts = {
        "situation": any(s.situation for s in cues.sentences),
        "task": any(s.task for s in cues.sentences),
        "action": any(s.action for s in cues.sentences),
        "result": any(s.result for s in cues.sentences),
    }
    present = [k for k, v in parts.items() if v]
    missing = [k for k, v in parts.items() if not v]
    if present:
        reasons.append("describes the " + ", ".join(present))
    if missing:
        reasons.append("does not say the " + ", ".join(missing))
    if cues.outcome >= 1.0:
        reasons.append("states an outcome with a figure or a change")
    if cues.specificity < 0.34:
        reasons.append("few specifics: figures, names or concrete actions")
    if competency.skills and cues.skills:
        reasons.append("uses " + ", ".join(cues.skills))
    if cues.listed_skills and not skills:
        reasons.append("names " + ", ".join(cues.listed_skills) + " without saying what was done")
    if cues.buzz >= 0.5:
        reasons.append("mostly stock phrases")
    return reasons


def _anchor_level(
    competency: Competency, answer: npt.NDArray[np.float32], encoder: TextEncoder
) -> float | None:
    """The level the answer's meaning is closest to: the anchors' levels weighted by a
    softmax of the answer's similarity to each. None with fewer than two anchors."""
    levels = sorted(competency.anchors)
    if len(levels) < 2:
        return None
    anchors = encoder.encode([competency.anchors[level] for level in levels])
    similarity = _rounded(anchors @ answer)
    weights = np.exp((similarity - similarity.max()) / ANCHOR_TEMPERATURE)
    return float(np.dot(weights, levels) / weights.sum())


def _evidence(
    cues: AnswerCues, spoken: Sequence[Spoken], competency: Competency
) -> tuple[Evidence, ...]:
    """The sentences that drove the rating: those with the most cues, in the answer's
    order, verbatim, with the time of the utterance that holds each."""
    ranked = sorted(
        range(len(cues.sentences)),
        key=lambda i: (-_weight(cues.sentences[i], competency), i),
    )
    chosen: list[int] = []
    for i in ranked:  # the strongest first, each sentence once (a repeated one is one)
        text = cues.sentences[i].text
        if _weight(cues.sentences[i], competency) > 0 and all(
            cues.sentences[j].text != text for j in chosen
        ):
            chosen.append(i)
        if len(chosen) == EVIDENCE_SENTENCES:
            break
    chosen.sort()
    return tuple(_timed(cues.sentences[i].text, spoken) for i in chosen)


def _weight(sentence: SentenceCues, competency: Competency) -> float:
    if not sentence.has_verb:
        return 0.0
    return (
        sentence.situation
        + sentence.task
        + 2 * sentence.action
        + 2 * sentence.result
        + min(sentence.numbers, 2)
        + min(len(set(sentence.skills) & set(competency.skills)), 2)
        - sentence.buzzwords
    )


def _timed(sentence: str, spoken: Sequence[Spoken]) -> Evidence:
    for part in spoken:
        if sentence in part.text:
            return Evidence(sentence, part.start, part.end)
    # A sentence across two utterances: from the first that holds its start.
    head = sentence.split()[0] if sentence.split() else ""
    for part in spoken:
        if head and head in part.text:
            return Evidence(sentence, part.start, part.end)
    return Evidence(sentence, None, None)


def _not_answered(competency: Competency) -> Rating:
    return Rating(competency.id, False, 0.0, 0, (), ("not answered",))


def _rounded(values: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    rounded: npt.NDArray[np.float64] = np.asarray(values, dtype=np.float64).round(DECIMALS)
    return rounded

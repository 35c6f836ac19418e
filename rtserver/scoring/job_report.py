"""The final report of a session that has a job: its job-fit, with delivery for information.

Without a job the final scores delivery (``rubric.py``: how the candidate came across).
With one, the final's ``score`` is the job-fit score (``job_fit.py``: what the candidate
said, rated against the job's competencies) and ``dimensions`` holds the competencies.
Delivery stays in the report under ``delivery``, and counts in the score only when the job
gives it a weight (at most 20 %); its face-derived dimensions (presence, expression) count
only when the job says so too (``face_signals``). HireVue dropped its visual analysis in
2021: a face's look says nothing reliable of a candidate's fitness for a job, and its
errors fall unevenly across groups.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from rtserver.messages import Dimension, FinalMessage, TranscriptMessage
from rtserver.scoring.competencies import Spoken, TextEncoder
from rtserver.scoring.job_fit import JobFit, job_fit
from rtserver.scoring.jobs import Job

# Delivery dimensions measured from the face: they enter a job-fit only with face_signals.
FACE_DIMENSIONS = ("presence", "expression")
NO_TRANSCRIPT_NOTE = (
    "Transcription is off on this server, so what the candidate said was not heard: the "
    "job's competencies could not be rated and count as not answered."
)
INCOMPLETE_NOTE = (
    "Some of the candidate's speech could not be transcribed in time (see "
    "transcript_missing): the competencies were rated on what was."
)


def answers_by_question(transcripts: Sequence[TranscriptMessage]) -> dict[int, list[Spoken]]:
    """What was said to each question, utterance by utterance, with media times (what was
    said before the first question was asked answers none)."""
    answers: dict[int, list[Spoken]] = {}
    for message in transcripts:
        if message.question is not None and message.text.strip():
            answers.setdefault(message.question, []).append(
                Spoken(message.text, message.start, message.end)
            )
    return answers


def delivery_score(dimensions: Mapping[str, Dimension], face_signals: bool) -> float | None:
    """The delivery score from the rubric's dimensions, without the face-derived ones unless
    ``face_signals``; the weights left are scaled to sum to 1. None with no dimension."""
    kept = {
        name: d for name, d in dimensions.items() if face_signals or name not in FACE_DIMENSIONS
    }
    total = sum(d.weight for d in kept.values())
    if total <= 0:
        return None
    return sum(d.score * d.weight for d in kept.values()) / total


def with_job_fit(
    final: FinalMessage,
    job_ref: Mapping[str, Any],
    job: Job,
    transcripts: Sequence[TranscriptMessage],
    encoder: TextEncoder,
) -> FinalMessage:
    """``final`` (scored on delivery) turned into the job's report. ``job_ref`` is
    ``{"id", "version", "title"}``."""
    delivery = delivery_score(final.dimensions, job.face_signals) if job.delivery_weight else None
    fit = job_fit(job, answers_by_question(transcripts), encoder, delivery)
    notes = list(final.notes)
    if final.transcription == "off":
        notes.append(NO_TRANSCRIPT_NOTE)
    elif not final.transcript_complete:
        notes.append(INCOMPLETE_NOTE)
    return dataclasses.replace(
        final,
        score=fit.score,
        dimensions={c.id: _dimension(c.score, c.weight, c.evidence) for c in fit.competencies},
        notes=tuple(notes),
        job=dict(job_ref),
        recommendation=fit.recommendation,
        threshold=fit.threshold,
        competencies={c.id: c.to_wire() for c in fit.competencies},
        answers=tuple(_answer(job, a) for a in fit.to_wire()["answers"]),
        not_answered=fit.not_answered,
        delivery=_delivery(final, fit),
    )


def _dimension(score: float, weight: float, evidence: Sequence[Any]) -> Dimension:
    quoted = " ".join(f"\u201c{e.text}\u201d" for e in evidence)
    return Dimension(score=score, weight=weight, evidence=quoted or "not answered")


def _answer(job: Job, answer: dict[str, Any]) -> dict[str, Any]:
    """A question's ratings, with the question's text."""
    return {"text": job.questions[answer["question"]].text, **answer}


def _delivery(final: FinalMessage, fit: JobFit) -> dict[str, Any]:
    return {
        "score": final.score,
        "weight": fit.delivery_weight,
        "dimensions": {name: dataclasses.asdict(d) for name, d in final.dimensions.items()},
    }

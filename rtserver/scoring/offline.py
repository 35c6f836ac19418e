"""``rtserver score --job JOB ANSWERS.json``: a job's rubric applied to text answers, offline.

HR checks a job's rubric on answers they write, and a session can be scored again. The
answers file is ``{"answers": [{"question": 0, "text": "..."}]}`` (question indexes into
the job's questions; two answers to one question are one answer, in order). The result is
:meth:`JobFit.to_wire`: the job-fit score, the recommendation, each competency's score and
evidence, and each question's ratings; a competency with no answer is named in
``not_answered``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rtserver.scoring.competencies import Spoken
from rtserver.scoring.job_fit import JobFit
from rtserver.scoring.jobs import Job

MAX_ANSWER_CHARS = 20_000  # about 20 minutes of speech


class AnswersInvalid(ValueError):
    """The answers file cannot be read or is not in the format above."""


def load_answers(path: Path, job: Job) -> dict[int, list[Spoken]]:
    """The answers in ``path`` by question index. AnswersInvalid names what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AnswersInvalid(f"cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise AnswersInvalid(f"{path.name} is not valid JSON: {exc}") from exc
    return parse_answers(data, job)


def parse_answers(data: Any, job: Job) -> dict[int, list[Spoken]]:
    if not isinstance(data, Mapping) or not isinstance(data.get("answers"), list):
        raise AnswersInvalid('answers must be {"answers": [{"question": 0, "text": "..."}]}')
    answers: dict[int, list[Spoken]] = {}
    for i, item in enumerate(data["answers"]):
        if not isinstance(item, Mapping):
            raise AnswersInvalid(f"answers[{i}] must be an object")
        question, text = item.get("question"), item.get("text")
        if not isinstance(question, int) or not 0 <= question < len(job.questions):
            raise AnswersInvalid(
                f"answers[{i}].question must be a question index from 0 to {len(job.questions) - 1}"
            )
        if not isinstance(text, str) or len(text) > MAX_ANSWER_CHARS:
            raise AnswersInvalid(f"answers[{i}].text must be a text of at most 20000 characters")
        answers.setdefault(question, []).append(Spoken(text))
    return answers


def format_job_fit(job: Job, fit: JobFit) -> str:
    """A plain-text view of ``fit``: the score, each competency with its evidence."""
    lines = [
        f"{job.title}: job-fit {fit.score:.1f} / 100 (threshold {fit.threshold:g}): "
        f"{fit.recommendation}",
        "",
    ]
    for c in fit.competencies:
        state = "" if c.answered else "  (not answered)"
        lines.append(f"{c.name:<30} {c.score:5.1f}  weight {c.weight:.0%}{state}")
        lines += [f'    "{e.text}"' for e in c.evidence]
    return "\n".join(lines)

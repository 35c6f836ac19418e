"""The job-fit validation set: jobs with rated competencies, and hand-written answers to them.

Issue 15's scorer rates a candidate's spoken answers (speech-to-text transcripts) against a
job's competencies on behaviourally anchored rating scales (BARS, levels 1-5). This set is
what it is checked against: every answer was written by hand, as one person speaking, with
the level a trained human rater would give it.

Jobs (``tests/jobs/<stem>.json``) are in the product's job file format:

- ``title`` (str) and ``threshold`` (int, 0-100: the job-fit score a candidate must reach).
- ``competencies``: 3-5 of them, each with ``id`` (unique in the job), ``name``,
  ``weight`` (0-1; the weights of a job sum to 1), ``description``, ``anchors`` (a behaviour
  for some of the levels "1" to "5", always "1", "3" and "5") and, optionally, ``skills``
  (names a candidate may mention: tools, methods).
- ``questions``: 4-6 of them, each with ``text``, ``seconds`` (the time allowed to answer,
  s) and ``competencies`` (the ids of the 1-2 competencies it rates). Every competency is
  rated by at least one question.

Answers (``tests/answer_set.json``, ``{"version": 1, "answers": [...]}``) each have:

- ``id``: ``<job prefix>-q<question>-<kind>-<n>``, unique.
- ``job``: the job file's stem; ``question``: the index of the question the text is given
  as an answer to; ``answers_question``: the question the text really answers (the same,
  except for kind ``wrong_question``).
- ``text``: what the candidate said, as speech-to-text would write it ("" for silence).
- ``level``: the BARS level (1-5) for that question's competencies, 0 for silence.
- ``kind``: how the answer was written (``KINDS``, with the levels each allows in
  ``LEVELS``): ``strong`` (situation, action and result with specifics), ``adequate``
  (relevant, thinner), ``weak`` (relevant but generic, no action or result), ``off_topic``
  (about something else), ``keyword_stuffed`` (a list of buzzwords and skill names),
  ``long_vague`` (long, fluent platitudes), ``short_complete`` (2-4 sentences with
  situation, action and a concrete result), ``wrong_question`` (a strong answer to another
  question of the same job) and ``silence``.
- ``split``: ``tuning`` (anyone may tune the scorer on it) or ``held-out`` (for checking
  only, so a figure on it says how the scorer does on answers nobody tuned for). Each job
  and each kind is split about evenly.
- ``notes``: why the answer has its level.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

HERE = Path(__file__).parent
JOBS_DIR = HERE / "jobs"
ANSWERS_PATH = HERE / "answer_set.json"
VERSION = 1

Split = Literal["tuning", "held-out"]
SPLITS: tuple[Split, ...] = ("tuning", "held-out")
Kind = Literal[
    "strong",
    "adequate",
    "weak",
    "off_topic",
    "keyword_stuffed",
    "long_vague",
    "short_complete",
    "wrong_question",
    "silence",
]
# The levels a human rater may give each kind of answer.
LEVELS: dict[Kind, frozenset[int]] = {
    "strong": frozenset({4, 5}),
    "adequate": frozenset({3}),
    "weak": frozenset({1, 2}),
    "off_topic": frozenset({1}),
    "keyword_stuffed": frozenset({1}),
    "long_vague": frozenset({1, 2}),
    "short_complete": frozenset({3, 4}),
    "wrong_question": frozenset({1}),
    "silence": frozenset({0}),
}
KINDS: tuple[Kind, ...] = tuple(LEVELS)


@dataclass(frozen=True)
class Answer:
    """One transcript given as the answer to one question of one job, with its rated level."""

    id: str
    job: str  # the job file's stem
    question: int  # index of the question it is given as an answer to
    text: str  # "" for silence
    level: int  # BARS level 1-5 for the question's competencies; 0 for silence
    kind: Kind
    split: Split
    answers_question: int  # the question the text really answers
    notes: str


def load_jobs() -> dict[str, dict[str, Any]]:
    """Every job file under ``tests/jobs/``, by stem, as parsed JSON (unchecked)."""
    return {
        path.stem: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(JOBS_DIR.glob("*.json"))
    }


def load_answers(split: str | None = None) -> list[Answer]:
    """The answers in file order: all of them, or those of one split ("tuning", "held-out")."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; the splits are {', '.join(SPLITS)}")
    data = json.loads(ANSWERS_PATH.read_text(encoding="utf-8"))
    if data.get("version") != VERSION:
        raise ValueError(f"{ANSWERS_PATH.name} is version {data.get('version')}, not {VERSION}")
    answers = [Answer(**record) for record in data["answers"]]
    return [a for a in answers if split is None or a.split == split]

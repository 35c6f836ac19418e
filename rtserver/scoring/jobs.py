"""A job's competency model: what a candidate's answers are rated against.

A job names its competencies (each with a weight, a description, behaviourally anchored
rating levels 1-5 and, optionally, the skills it looks for), its questions (each naming the
competencies it targets) and the job-fit threshold above which a candidate is recommended
for the human interview. The file format (``.json``, or ``.toml`` with the same keys) is
the API's body for ``POST /api/v1/jobs``::

    {"title": "Backend software engineer", "threshold": 70,
     "competencies": [
       {"id": "problem_solving", "name": "Problem solving", "weight": 0.4,
        "description": "...", "anchors": {"1": "...", "3": "...", "5": "..."},
        "skills": ["Python", "PostgreSQL"]}],
     "questions": [{"text": "...", "seconds": 120, "competencies": ["problem_solving"]}],
     "delivery_weight": 0.0, "face_signals": false}

``webhooks`` (optional) lists this job's own ATS receivers, beside the server's.
``retention_days`` (optional, 1 to 3650) is how long a candidate's data is kept after the
decision on them; absent (or null), the server's ``retention_days`` applies
(``store/retention.py`` has the whole rule).
``delivery_weight`` (0 to 0.2, default 0) is the share of the score that how the candidate
came across (presence, speaking share, loudness, continuity, fluency) may take; the rest
is what they said. ``face_signals`` (default false) must be true for face-derived signals
(presence, expression) to enter that share at all.

:func:`parse_job` checks everything and raises :class:`JobInvalid` listing every problem
at once, so that an HR user fixes a job in one round.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEVELS = (1, 2, 3, 4, 5)  # a behaviourally anchored rating scale's levels
MAX_COMPETENCIES = 20
MAX_QUESTIONS = 50  # as many as an ad-hoc session may have (api/sessions.py)
MAX_TEXT = 2000  # characters of a question, description or anchor
MAX_SKILLS = 50
MAX_DELIVERY_WEIGHT = 0.2
MAX_RETENTION_DAYS = 3650  # ten years: longer is keeping data forever in all but name
WEIGHT_TOLERANCE = 1e-6  # weights must sum to 1 within this
ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class JobInvalid(ValueError):
    """A job that cannot be used; ``problems`` lists every reason, one sentence each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Competency:
    id: str
    name: str
    weight: float  # share of the job-fit score, 0-1; a job's weights sum to 1
    description: str
    anchors: Mapping[int, str]  # level (1-5) -> what an answer at that level shows
    skills: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "weight": self.weight,
            "description": self.description,
            "anchors": {str(level): text for level, text in sorted(self.anchors.items())},
            "skills": list(self.skills),
        }


@dataclass(frozen=True)
class JobQuestion:
    text: str
    seconds: int
    competencies: tuple[str, ...]  # ids of the competencies an answer to it is rated on

    def to_wire(self) -> dict[str, Any]:
        return {"text": self.text, "seconds": self.seconds, "competencies": list(self.competencies)}


@dataclass(frozen=True)
class Job:
    title: str
    threshold: float  # job-fit score (0-100) at or above which the candidate is recommended
    competencies: tuple[Competency, ...]
    questions: tuple[JobQuestion, ...]
    delivery_weight: float = 0.0  # share of the score for delivery (0-0.2)
    face_signals: bool = False  # whether face-derived signals may enter that share
    webhooks: tuple[str, ...] = ()  # this job's own ATS receivers (ats/webhooks.py)
    # Days a candidate's data is kept after the decision; None: the server's default.
    retention_days: int | None = None

    def competency(self, competency_id: str) -> Competency:
        return next(c for c in self.competencies if c.id == competency_id)

    def to_wire(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "threshold": self.threshold,
            "competencies": [c.to_wire() for c in self.competencies],
            "questions": [q.to_wire() for q in self.questions],
            "delivery_weight": self.delivery_weight,
            "face_signals": self.face_signals,
            "webhooks": list(self.webhooks),
            "retention_days": self.retention_days,
        }


def load_job_file(path: Path) -> Job:
    """The job in ``path`` (``.json`` or ``.toml``). JobInvalid when it is not a valid job,
    or not JSON or TOML at all."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise JobInvalid([f"cannot read {path}: {exc.strerror or exc}"]) from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise JobInvalid([f"{path.name} is not valid {path.suffix[1:].upper()}: {exc}"]) from exc
    return parse_job(data)


def parse_job(data: Any) -> Job:
    """The job that ``data`` (the file format above, parsed) describes. JobInvalid lists
    every problem found."""
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise JobInvalid(["a job must be an object"])
    title = _text(data.get("title"), "title", problems, required=True)
    threshold = _number(data.get("threshold", 70), "threshold", 0.0, 100.0, problems)
    delivery = _number(
        data.get("delivery_weight", 0.0), "delivery_weight", 0.0, MAX_DELIVERY_WEIGHT, problems
    )
    face = data.get("face_signals", False)
    if not isinstance(face, bool):
        problems.append("face_signals must be true or false")
        face = False
    webhooks = _webhooks(data.get("webhooks", []), problems)
    retention_days = _retention_days(data.get("retention_days"), problems)
    competencies = _competencies(data.get("competencies"), problems)
    known = {c.id for c in competencies}
    questions = _questions(data.get("questions"), known, problems)
    targeted = {cid for q in questions for cid in q.competencies}
    for c in competencies:
        if c.id not in targeted:
            problems.append(f"competency {c.id!r} is targeted by no question")
    unknown = sorted(set(data) - _JOB_KEYS)
    if unknown:
        problems.append(f"unknown job fields: {', '.join(unknown)}")
    if problems:
        raise JobInvalid(problems)
    return Job(
        title,
        threshold,
        tuple(competencies),
        tuple(questions),
        delivery,
        face,
        webhooks,
        retention_days,
    )


_JOB_KEYS = {
    "title",
    "threshold",
    "competencies",
    "questions",
    "delivery_weight",
    "face_signals",
    "webhooks",
    "retention_days",
}
MAX_WEBHOOKS = 5
_COMPETENCY_KEYS = {"id", "name", "weight", "description", "anchors", "skills"}
_QUESTION_KEYS = {"text", "seconds", "competencies"}


def _competencies(raw: Any, problems: list[str]) -> list[Competency]:
    if not isinstance(raw, list) or not raw:
        problems.append("competencies must be a non-empty list")
        return []
    if len(raw) > MAX_COMPETENCIES:
        problems.append(f"a job has at most {MAX_COMPETENCIES} competencies")
    out: list[Competency] = []
    for i, item in enumerate(raw[:MAX_COMPETENCIES]):
        where = f"competencies[{i}]"
        if not isinstance(item, Mapping):
            problems.append(f"{where} must be an object")
            continue
        cid = item.get("id")
        if not isinstance(cid, str) or not ID_PATTERN.match(cid):
            problems.append(f"{where}.id must be lower-case letters, digits and _ ({cid!r})")
            cid = f"#{i}"
        elif any(c.id == cid for c in out):
            problems.append(f"competency id {cid!r} appears twice")
        where = f"competency {cid!r}"
        name = _text(item.get("name", cid), f"{where} name", problems, required=True)
        weight = _number(item.get("weight"), f"{where} weight", 0.0, 1.0, problems)
        description = _text(item.get("description", ""), f"{where} description", problems)
        anchors = _anchors(item.get("anchors"), where, problems)
        skills = _skills(item.get("skills", []), where, problems)
        unknown = sorted(set(item) - _COMPETENCY_KEYS)
        if unknown:
            problems.append(f"{where} has unknown fields: {', '.join(unknown)}")
        out.append(Competency(cid, name, weight, description, anchors, skills))
    total = sum(c.weight for c in out)
    if out and not math.isclose(total, 1.0, abs_tol=WEIGHT_TOLERANCE):
        problems.append(f"competency weights must sum to 1 (100 %), not {total:.6g}")
    return out


def _anchors(raw: Any, where: str, problems: list[str]) -> dict[int, str]:
    if not isinstance(raw, Mapping) or not raw:
        problems.append(f"{where} anchors must map levels 1-5 to descriptions")
        return {}
    anchors: dict[int, str] = {}
    for key, text in raw.items():
        level = _level(key)
        if level not in LEVELS:
            problems.append(f"{where} anchor level {key!r} is not one of 1-5")
            continue
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{where} anchor {level} must be a non-empty text")
            continue
        anchors[level] = text.strip()[:MAX_TEXT]
    if anchors and len(anchors) < 2:
        problems.append(f"{where} needs anchors for at least two levels")
    return anchors


def _level(key: Any) -> int | None:
    """A rating level as an anchor's key gives it ("3", or 3 from TOML); None when it is not
    written in decimal digits alone. int() refuses some characters str.isdigit() takes
    ("²"), and more than 4300 digits."""
    if isinstance(key, bool) or not isinstance(key, str | int) or not str(key).isdecimal():
        return None
    try:
        return int(key)
    except ValueError:
        return None


def _skills(raw: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_SKILLS:
        problems.append(f"{where} skills must be a list of at most {MAX_SKILLS} names")
        return ()
    skills = []
    for skill in raw:
        if not isinstance(skill, str) or not skill.strip():
            problems.append(f"{where} skills must be non-empty texts")
            continue
        skills.append(skill.strip()[:100])
    return tuple(skills)


def _questions(raw: Any, known: set[str], problems: list[str]) -> list[JobQuestion]:
    if not isinstance(raw, list) or not raw:
        problems.append("questions must be a non-empty list")
        return []
    if len(raw) > MAX_QUESTIONS:
        problems.append(f"a job has at most {MAX_QUESTIONS} questions")
    out: list[JobQuestion] = []
    for i, item in enumerate(raw[:MAX_QUESTIONS]):
        where = f"question {i}"
        if not isinstance(item, Mapping):
            problems.append(f"{where} must be an object")
            continue
        text = _text(item.get("text"), f"{where} text", problems, required=True)
        seconds = item.get("seconds", 120)
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 1 <= seconds <= 3600:
            problems.append(f"{where} seconds must be an integer from 1 to 3600")
            seconds = 120
        targets = item.get("competencies")
        if not isinstance(targets, list) or not targets:
            problems.append(f"{where} must name the competencies it targets")
            targets = []
        ids: list[str] = []
        for cid in targets:
            if not isinstance(cid, str) or cid not in known:
                problems.append(f"{where} targets an unknown competency {cid!r}")
            elif cid not in ids:
                ids.append(cid)
        unknown = sorted(set(item) - _QUESTION_KEYS)
        if unknown:
            problems.append(f"{where} has unknown fields: {', '.join(unknown)}")
        out.append(JobQuestion(text, seconds, tuple(ids)))
    return out


def _webhooks(raw: Any, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_WEBHOOKS:
        problems.append(f"webhooks must be a list of at most {MAX_WEBHOOKS} URLs")
        return ()
    urls = []
    for url in raw:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            problems.append(f"webhook {url!r} must be an http:// or https:// URL")
            continue
        urls.append(url[:2000])
    return tuple(urls)


def _retention_days(raw: Any, problems: list[str]) -> int | None:
    if raw is None:
        return None
    whole = isinstance(raw, int) and not isinstance(raw, bool)
    if not whole or not 1 <= raw <= MAX_RETENTION_DAYS:
        problems.append(
            f"retention_days must be a whole number of days from 1 to {MAX_RETENTION_DAYS}"
        )
        return None
    return int(raw)


def _text(raw: Any, what: str, problems: list[str], required: bool = False) -> str:
    if raw is None and not required:
        return ""
    if not isinstance(raw, str) or (required and not raw.strip()):
        problems.append(f"{what} must be a {'non-empty ' if required else ''}text")
        return ""
    return raw.strip()[:MAX_TEXT]


def _number(raw: Any, what: str, low: float, high: float, problems: list[str]) -> float:
    # Compared before any float conversion: an integer past float's range (JSON has no
    # limit) would raise OverflowError there.
    ok = isinstance(raw, int | float) and not isinstance(raw, bool) and low <= raw <= high
    if not ok:
        problems.append(f"{what} must be a number from {low:g} to {high:g}")
        return low
    return float(raw)

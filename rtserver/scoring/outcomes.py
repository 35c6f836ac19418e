"""Past candidates' outcomes: whether they were hired and how they later performed, linked
to the sessions they were scored in. Calibration (``calibration.py``) learns from them.

An outcome names its session by id (``session``) or by the candidate label the session was
created with (``candidate``); a candidate interviewed more than once for the job is linked
to their latest scored session. ``hired`` is true/false (or 1/0, yes/no) or empty when
unknown; ``performance`` is the company's own rating on any numeric scale, or empty when
not rated; ``rated_at`` is the ISO 8601 date of that rating. A batch is taken whole or not
at all: every problem is listed at once, so HR fixes a file in one round.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtserver.store.records import Outcome, ScoredSession

MAX_OUTCOMES = 100_000
OUTCOME_FIELDS = ("session", "candidate", "hired", "performance", "rated_at")
_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"0", "false", "no", "n"}
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 2, 60, 60, 40


class OutcomesInvalid(ValueError):
    """Outcomes that cannot be recorded; ``problems`` lists every reason, one sentence each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class OutcomeEntry:
    """One outcome as given, before it is linked to a session."""

    where: str  # "line 3" or "outcomes[2]", for messages
    session: str | None
    candidate: str | None
    hired: bool | None
    performance: float | None
    rated_at: str | None


def parse_outcomes(items: Any, where: str = "outcomes") -> list[OutcomeEntry]:
    """The outcomes a JSON body's ``outcomes`` list gives; OutcomesInvalid lists every
    problem."""
    if not isinstance(items, list) or not items:
        raise OutcomesInvalid([f"{where} must be a non-empty list"])
    return _checked((f"{where}[{i}]", item) for i, item in enumerate(items))


def read_outcomes_csv(path: Path) -> list[OutcomeEntry]:
    """The outcomes in a CSV file with a header naming ``session`` or ``candidate``, and
    ``hired``, ``performance``, ``rated_at`` (those three may be absent or empty)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            if "session" not in header and "candidate" not in header:
                raise OutcomesInvalid([f"{path.name} needs a session or a candidate column"])
            rows = [(f"line {reader.line_num}", row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise OutcomesInvalid([f"cannot read {path}: {exc}"]) from exc
    if not rows:
        raise OutcomesInvalid([f"{path.name} has no outcomes"])
    return _checked(rows)


def _checked(rows: Iterable[tuple[str, Any]]) -> list[OutcomeEntry]:
    problems: list[str] = []
    entries: list[OutcomeEntry] = []
    for where, item in rows:
        if len(entries) >= MAX_OUTCOMES:
            problems.append(f"at most {MAX_OUTCOMES} outcomes at once")
            break
        entry = _entry(where, item, problems)
        if entry is not None:
            entries.append(entry)
    if problems:
        raise OutcomesInvalid(problems)
    return entries


def _entry(where: str, item: Any, problems: list[str]) -> OutcomeEntry | None:
    if not isinstance(item, Mapping):
        problems.append(f"{where} must be an object")
        return None
    before = len(problems)
    session = _label(item.get("session"), where, "session", problems)
    candidate = _label(item.get("candidate"), where, "candidate", problems)
    if session is None and candidate is None:
        problems.append(f"{where} must name a session or a candidate")
    hired = _hired(item.get("hired"), where, problems)
    performance = _performance(item.get("performance"), where, problems)
    rated_at = _date(item.get("rated_at"), where, problems)
    if hired is None and performance is None:
        problems.append(f"{where} gives neither hired nor performance: nothing to record")
    if len(problems) > before:
        return None
    return OutcomeEntry(where, session, candidate, hired, performance, rated_at)


def _shown(raw: Any) -> str:
    """A value as a problem quotes it: cut short, and never recursing deeper than a few
    levels (a JSON body may nest hundreds deep, past what repr() can recurse)."""
    return _SHOWN.repr(raw)


def _blank(raw: Any) -> bool:
    return raw is None or (isinstance(raw, str) and not raw.strip())


def _label(raw: Any, where: str, name: str, problems: list[str]) -> str | None:
    if _blank(raw):
        return None
    if not isinstance(raw, str) or len(raw) > 200:
        problems.append(f"{where} {name} must be a text of at most 200 characters")
        return None
    return raw.strip()


def _hired(raw: Any, where: str, problems: list[str]) -> bool | None:
    if _blank(raw):
        return None
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower() if isinstance(raw, str | int | float) else ""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    problems.append(f"{where} hired must be true or false (or 1/0, yes/no), not {_shown(raw)}")
    return None


def _performance(raw: Any, where: str, problems: list[str]) -> float | None:
    if _blank(raw):
        return None
    try:
        value = float(raw) if not isinstance(raw, bool) else math.nan
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past float's range
        value = math.nan
    if not math.isfinite(value):
        problems.append(f"{where} performance must be a number, not {_shown(raw)}")
        return None
    return value


def _date(raw: Any, where: str, problems: list[str]) -> str | None:
    if _blank(raw):
        return None
    try:
        if not isinstance(raw, str | int | float):
            raise ValueError("not a date")
        return dt.date.fromisoformat(str(raw).strip()[:10]).isoformat()
    except ValueError:
        problems.append(f"{where} rated_at must be an ISO date (YYYY-MM-DD), not {_shown(raw)}")
        return None


def link_outcomes(
    entries: Sequence[OutcomeEntry], sessions: Sequence[ScoredSession]
) -> list[Outcome]:
    """Each entry linked to its scored session of the job (``sessions``, oldest first);
    OutcomesInvalid lists every entry that names none, or names one session twice."""
    by_id = {s.id: s for s in sessions}
    latest_by_candidate = {s.candidate: s for s in sessions if s.candidate}  # oldest first
    problems: list[str] = []
    linked: dict[str, Outcome] = {}
    for entry in entries:
        if entry.session is not None:
            session = by_id.get(entry.session)
            named = f"session {entry.session!r}"
        else:
            session = latest_by_candidate.get(entry.candidate or "")
            named = f"candidate {entry.candidate!r}"
        if session is None:
            problems.append(f"{entry.where}: {named} has no scored session of this job")
            continue
        if session.id in linked:
            problems.append(f"{entry.where}: session {session.id} is given an outcome twice")
            continue
        linked[session.id] = Outcome(session.id, entry.hired, entry.performance, entry.rated_at)
    if problems:
        raise OutcomesInvalid(problems)
    return list(linked.values())

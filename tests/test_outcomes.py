"""Outcomes of past candidates: checked whole (every problem listed), linked to the job's
scored sessions by session id or candidate label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtserver.scoring.outcomes import (
    OutcomesInvalid,
    link_outcomes,
    parse_outcomes,
    read_outcomes_csv,
)
from rtserver.store import ScoredSession


def scored(session_id: str, candidate: str | None, ended_at: float) -> ScoredSession:
    return ScoredSession(session_id, candidate, 1, ended_at, {"score": 50.0, "job": {}}, None)


def test_outcomes_are_parsed_from_json_and_csv_alike(tmp_path: Path) -> None:
    items = [
        {"session": "s1", "hired": True, "performance": 4.5, "rated_at": "2026-06-30"},
        {"candidate": "Ada", "hired": "no", "performance": "", "rated_at": None},
    ]
    parsed = parse_outcomes(items)
    csv_file = tmp_path / "outcomes.csv"
    csv_file.write_text(
        "\ufeffsession,candidate,hired,performance,rated_at\ns1,,1,4.5,2026-06-30\n,Ada,0,,\n",
        encoding="utf-8",
    )
    from_csv = read_outcomes_csv(csv_file)
    assert [(e.session, e.candidate, e.hired, e.performance, e.rated_at) for e in parsed] == [
        ("s1", None, True, 4.5, "2026-06-30"),
        (None, "Ada", False, None, None),
    ]
    assert [(e.session, e.candidate, e.hired, e.performance) for e in from_csv] == [
        (e.session, e.candidate, e.hired, e.performance) for e in parsed
    ]
    assert [e.where for e in from_csv] == ["line 2", "line 3"]


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    items = [
        {"hired": True},
        {"session": "s2", "hired": "maybe"},
        {"session": "s3", "performance": "great"},
        {"session": "s4", "performance": 3, "rated_at": "30/06/2026"},
        {"session": "s5"},
        "not an object",
    ]
    with pytest.raises(OutcomesInvalid) as caught:
        parse_outcomes(items)
    problems = caught.value.problems
    assert any("outcomes[0] must name a session or a candidate" in p for p in problems)
    assert any("outcomes[1] hired must be true or false" in p for p in problems)
    assert any("outcomes[2] performance must be a number" in p for p in problems)
    assert any("outcomes[3] rated_at must be an ISO date" in p for p in problems)
    assert any("outcomes[4] gives neither hired nor performance" in p for p in problems)
    assert any("outcomes[5] must be an object" in p for p in problems)
    with pytest.raises(OutcomesInvalid, match="non-empty list"):
        parse_outcomes([])
    no_key = tmp_path / "bad.csv"
    no_key.write_text("name,hired\nAda,1\n")
    with pytest.raises(OutcomesInvalid, match="session or a candidate column"):
        read_outcomes_csv(no_key)


def test_outcomes_link_to_the_latest_session_of_a_candidate_and_refuse_strangers() -> None:
    sessions = [scored("a1", "Ada", 100.0), scored("b1", "Bo", 150.0), scored("a2", "Ada", 200.0)]
    linked = link_outcomes(
        parse_outcomes([{"candidate": "Ada", "performance": 4}, {"session": "b1", "hired": False}]),
        sessions,
    )
    assert [(o.session, o.performance, o.hired) for o in linked] == [
        ("a2", 4.0, None),
        ("b1", None, False),
    ]
    with pytest.raises(OutcomesInvalid) as caught:
        link_outcomes(
            parse_outcomes(
                [
                    {"candidate": "Nobody", "performance": 1},
                    {"session": "zz", "performance": 1},
                    {"session": "a2", "performance": 2},
                    {"candidate": "Ada", "performance": 3},
                ]
            ),
            sessions,
        )
    problems = caught.value.problems
    assert len(problems) == 3, problems
    assert "candidate 'Nobody' has no scored session" in problems[0]
    assert "session 'zz' has no scored session" in problems[1]
    assert "session a2 is given an outcome twice" in problems[2]


# -- arbitrary input (hypothesis) ----------------------------------------------------------


def deeply_nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from([10**400, "1e400", "nan", " yes ", "2026-02-30", "2026-06-30T10:00"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
field_values = json_values | st.integers(1, 995).map(deeply_nested)
entries = st.fixed_dictionaries(
    {},
    optional={
        name: field_values for name in ("session", "candidate", "hired", "performance", "rated_at")
    },
)


@settings(max_examples=400, deadline=None)
@given(items=st.lists(entries | json_values, max_size=5) | json_values)
def test_any_body_is_outcomes_or_refused_with_its_problems(items: Any) -> None:
    try:
        parsed = parse_outcomes(items)
    except OutcomesInvalid as invalid:
        assert invalid.problems and all(isinstance(p, str) for p in invalid.problems)
        assert all(len(p) < 400 for p in invalid.problems)  # values are quoted cut short
        return
    assert parsed and all(e.session or e.candidate for e in parsed)


def test_huge_and_deep_values_are_problems_not_crashes() -> None:
    """Found by the property above: an integer past float's range made float() raise
    OverflowError, and a value nested hundreds deep made repr() raise RecursionError (each
    a 500 from POST /api/v1/jobs/{id}/outcomes)."""
    for entry in (
        {"session": "a", "performance": 10**400},
        {"session": "a", "hired": deeply_nested(995)},
        {"session": "a", "hired": True, "rated_at": deeply_nested(995)},
    ):
        with pytest.raises(OutcomesInvalid):
            parse_outcomes([entry])

"""scoring/jobs.py: a job's competency model, parsed and checked, every problem listed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtserver.scoring.jobs import JobInvalid, load_job_file, parse_job


def job(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "title": "Backend software engineer",
        "threshold": 70,
        "competencies": [
            {
                "id": "problem_solving",
                "name": "Problem solving",
                "weight": 0.6,
                "description": "Finds the cause of a problem and fixes it.",
                "anchors": {"1": "Guesses.", "3": "Tries a fix and checks it.", "5": "Measures."},
                "skills": ["Python", "PostgreSQL"],
            },
            {
                "id": "teamwork",
                "name": "Teamwork",
                "weight": 0.4,
                "description": "Works with others toward a shared goal.",
                "anchors": {"1": "Works alone.", "5": "Brings others along."},
            },
        ],
        "questions": [
            {
                "text": "Tell us about a hard bug.",
                "seconds": 120,
                "competencies": ["problem_solving"],
            },
            {"text": "Tell us about a disagreement.", "competencies": ["teamwork"]},
        ],
    }
    data.update(changes)
    return data


def test_a_valid_job_round_trips() -> None:
    parsed = parse_job(job())
    assert parsed.title == "Backend software engineer" and parsed.threshold == 70.0
    assert [c.id for c in parsed.competencies] == ["problem_solving", "teamwork"]
    assert parsed.competency("problem_solving").anchors == {
        1: "Guesses.",
        3: "Tries a fix and checks it.",
        5: "Measures.",
    }
    assert parsed.questions[1].seconds == 120  # the default
    assert parsed.delivery_weight == 0.0 and parsed.face_signals is False
    assert parse_job(parsed.to_wire()) == parsed


def test_every_problem_is_listed_at_once() -> None:
    bad = job(threshold=120, delivery_weight=0.5)
    bad["competencies"][0]["weight"] = 0.7  # sums to 1.1
    bad["competencies"][1]["anchors"] = {"7": "Too high."}
    bad["questions"][1]["competencies"] = ["leadership"]
    with pytest.raises(JobInvalid) as caught:
        parse_job(bad)
    problems = caught.value.problems
    expected = [
        "threshold must be a number from 0 to 100",
        "delivery_weight must be a number from 0 to 0.2",
        "anchor level '7' is not one of 1-5",
        "weights must sum to 1",
        "unknown competency 'leadership'",
        "competency 'teamwork' is targeted by no question",
    ]
    for fragment in expected:
        assert any(fragment in p for p in problems), (fragment, problems)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"questions": []}, "questions must be a non-empty list"),
        ({"competencies": []}, "competencies must be a non-empty list"),
        ({"title": ""}, "title must be a non-empty text"),
        ({"face_signals": "yes"}, "face_signals must be true or false"),
        ({"colour": "blue"}, "unknown job fields: colour"),
    ],
)
def test_each_kind_of_problem_is_named(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(JobInvalid) as caught:
        parse_job(job(**changes))
    assert any(fragment in p for p in caught.value.problems), caught.value.problems


def test_a_repeated_competency_id_and_a_bad_id_are_refused() -> None:
    data = job()
    data["competencies"][1]["id"] = "problem_solving"
    with pytest.raises(JobInvalid, match="appears twice"):
        parse_job(data)
    data = job()
    data["competencies"][1]["id"] = "Team Work"
    with pytest.raises(JobInvalid, match="lower-case"):
        parse_job(data)


def test_job_files_in_json_and_toml(tmp_path: Path) -> None:
    as_json = tmp_path / "job.json"
    as_json.write_text(json.dumps(job()))
    as_toml = tmp_path / "job.toml"
    as_toml.write_text(
        'title = "Support agent"\nthreshold = 60\n'
        '[[competencies]]\nid = "empathy"\nname = "Empathy"\nweight = 1.0\n'
        'anchors = { "1" = "Dismisses.", "5" = "Acknowledges and acts." }\n'
        '[[questions]]\ntext = "An angry customer?"\ncompetencies = ["empathy"]\n'
    )
    assert load_job_file(as_json).title == "Backend software engineer"
    assert load_job_file(as_toml).competencies[0].anchors[5] == "Acknowledges and acts."
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(JobInvalid, match="not valid JSON"):
        load_job_file(broken)
    with pytest.raises(JobInvalid, match="cannot read"):
        load_job_file(tmp_path / "missing.json")


def test_a_jobs_retention_days_are_optional_and_bounded() -> None:
    assert parse_job(job()).retention_days is None  # the server's default applies
    assert parse_job(job()).to_wire()["retention_days"] is None
    kept = parse_job(job(retention_days=30))
    assert kept.retention_days == 30 and parse_job(kept.to_wire()) == kept
    assert parse_job(job(retention_days=None)).retention_days is None
    assert parse_job(job(retention_days=3650)).retention_days == 3650
    for bad in (0, 3651, -5, 30.5, "30", True):
        with pytest.raises(JobInvalid) as caught:
            parse_job(job(retention_days=bad))
        assert caught.value.problems == [
            "retention_days must be a whole number of days from 1 to 3650"
        ], bad


def test_a_toml_job_sets_its_retention(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text(
        'title = "Clerk"\nretention_days = 90\n'
        '[[competencies]]\nid = "care"\nweight = 1.0\nanchors = {1 = "No.", 5 = "Yes."}\n'
        '[[questions]]\ntext = "Why?"\ncompetencies = ["care"]\n'
    )
    assert load_job_file(path).retention_days == 90


# -- arbitrary input (hypothesis) ----------------------------------------------------------

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    # What broke the parser before: integers past float's range, and digit characters
    # str.isdigit() takes and int() does not ("²"), or too many of them for int().
    | st.sampled_from([10**400, -(10**400), "²", "1²", "٣", "1" * 5000, "01", " 1"])
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def deeply_nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def altered_job(draw: st.DrawFn) -> Any:
    """A valid job with some of its values, at any depth, replaced by arbitrary JSON (or
    nested hundreds deep, as a body may be), or keys added."""
    body: Any = job()
    for _ in range(draw(st.integers(1, 4))):
        node, path = body, []
        while isinstance(node, dict | list) and node and draw(st.booleans()):
            key = draw(
                st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node)))
            )
            path.append((node, key))
            node = node[key]
        value = draw(json_values | st.integers(1, 990).map(deeply_nested))
        if path:
            parent, key = path[-1]
            parent[key] = value
        else:
            body[draw(st.sampled_from(["title", "threshold", "extra", "anchors"]))] = value
    return body


@settings(max_examples=400, deadline=None)
@given(body=altered_job() | json_values)
def test_any_body_is_a_job_or_refused_with_its_problems(body: Any) -> None:
    try:
        parsed = parse_job(body)
    except JobInvalid as invalid:
        assert invalid.problems and all(isinstance(p, str) for p in invalid.problems)
        return
    assert parsed.title and parsed.competencies and parsed.questions


def test_odd_numbers_and_digits_are_problems_not_crashes() -> None:
    """Found by the property above (each was a 500 from POST /api/v1/jobs)."""
    body = job()
    for threshold in (10**400, -(10**400)):
        with pytest.raises(JobInvalid, match="threshold must be a number"):
            parse_job({**body, "threshold": threshold})
    for level in ("²", "1" * 5000):
        competency = {**body["competencies"][0], "anchors": {level: "x", "5": "y"}}
        changed = {**body, "competencies": [competency, *body["competencies"][1:]]}
        with pytest.raises(JobInvalid, match="is not one of 1-5"):
            parse_job(changed)

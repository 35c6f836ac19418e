"""The job-fit validation set keeps its shape: valid job files, and answers of every kind and
level, split evenly, each written afresh rather than from the rubric or another answer."""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import pytest
from answer_set import KINDS, LEVELS, SPLITS, Answer, Kind, load_answers, load_jobs

JOB_KEYS = {"title", "threshold", "competencies", "questions"}
COMPETENCY_KEYS = {"id", "name", "weight", "description", "anchors"}
QUESTION_KEYS = {"text", "seconds", "competencies"}
MIN_PER_KIND: dict[Kind, int] = {
    "strong": 12,
    "adequate": 8,
    "weak": 8,
    "off_topic": 6,
    "keyword_stuffed": 6,
    "long_vague": 6,
    "short_complete": 6,
    "wrong_question": 6,
    "silence": 3,
}
# Word runs this long shared by two texts mean one was written from the other.
ANCHOR_NGRAM = 5
ANSWER_NGRAM = 7


@pytest.fixture(scope="module")
def jobs() -> dict[str, dict[str, Any]]:
    return load_jobs()


@pytest.fixture(scope="module")
def answers() -> list[Answer]:
    return load_answers()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def question_competencies(job: dict[str, Any], index: int) -> set[str]:
    return set(job["questions"][index]["competencies"])


def test_jobs_are_in_the_product_format(jobs: dict[str, dict[str, Any]]) -> None:
    assert len(jobs) >= 3
    assert len({job["title"] for job in jobs.values()}) == len(jobs)
    for stem, job in jobs.items():
        assert set(job) == JOB_KEYS, stem
        assert isinstance(job["title"], str) and job["title"], stem
        assert isinstance(job["threshold"], int) and 0 <= job["threshold"] <= 100, stem
        assert 3 <= len(job["competencies"]) <= 5, stem
        assert 4 <= len(job["questions"]) <= 6, stem
        for competency in job["competencies"]:
            assert COMPETENCY_KEYS <= set(competency) <= COMPETENCY_KEYS | {"skills"}, stem
            assert re.fullmatch(r"[a-z][a-z_]*", competency["id"]), stem
            assert competency["name"] and competency["description"], competency["id"]
            assert 0 < competency["weight"] < 1, competency["id"]
            skills = competency.get("skills", [])
            assert all(isinstance(s, str) and s for s in skills), competency["id"]
            assert len(set(skills)) == len(skills), competency["id"]
        for question in job["questions"]:
            assert set(question) == QUESTION_KEYS, stem
            assert question["text"].strip() and 30 <= question["seconds"] <= 600, stem


def test_weights_sum_to_one(jobs: dict[str, dict[str, Any]]) -> None:
    for stem, job in jobs.items():
        total = math.fsum(c["weight"] for c in job["competencies"])
        assert abs(total - 1.0) < 1e-9, f"{stem}: weights sum to {total}"


def test_anchors_give_levels_one_three_and_five(jobs: dict[str, dict[str, Any]]) -> None:
    for stem, job in jobs.items():
        for competency in job["competencies"]:
            anchors = competency["anchors"]
            assert {"1", "3", "5"} <= set(anchors) <= {"1", "2", "3", "4", "5"}, stem
            assert all(isinstance(a, str) and a.strip() for a in anchors.values()), stem
            assert len(set(anchors.values())) == len(anchors), competency["id"]


def test_questions_rate_existing_competencies_and_every_one_is_rated(
    jobs: dict[str, dict[str, Any]],
) -> None:
    for stem, job in jobs.items():
        ids = [c["id"] for c in job["competencies"]]
        assert len(set(ids)) == len(ids), stem
        rated: set[str] = set()
        for question in job["questions"]:
            named = question["competencies"]
            assert 1 <= len(named) <= 2 and len(set(named)) == len(named), question["text"]
            assert set(named) <= set(ids), question["text"]
            rated |= set(named)
        assert rated == set(ids), f"{stem}: no question rates {set(ids) - rated}"


def test_answers_refer_to_real_jobs_and_questions(
    jobs: dict[str, dict[str, Any]], answers: list[Answer]
) -> None:
    for a in answers:
        assert a.job in jobs, a.id
        count = len(jobs[a.job]["questions"])
        assert 0 <= a.question < count and 0 <= a.answers_question < count, a.id
    for stem, job in jobs.items():
        given = Counter(a.question for a in answers if a.job == stem)
        for index in range(len(job["questions"])):
            assert given[index] >= 3, f"{stem}: question {index} has {given[index]} answers"


def test_counts(jobs: dict[str, dict[str, Any]], answers: list[Answer]) -> None:
    assert len(answers) >= 90
    per_job = Counter(a.job for a in answers)
    assert all(per_job[stem] >= 25 for stem in jobs), per_job
    per_kind = Counter(a.kind for a in answers)
    assert set(per_kind) == set(KINDS)
    for kind, least in MIN_PER_KIND.items():
        assert per_kind[kind] >= least, f"{per_kind[kind]} {kind} answers, want {least}"
    for stem in jobs:
        kinds = {a.kind for a in answers if a.job == stem}
        assert kinds == set(KINDS), f"{stem} has no {set(KINDS) - kinds} answers"


def test_levels_fit_their_kinds(answers: list[Answer]) -> None:
    for a in answers:
        assert 0 <= a.level <= 5, a.id
        assert a.level in LEVELS[a.kind], f"{a.id}: level {a.level} for a {a.kind} answer"
    levels = Counter(a.level for a in answers)
    assert all(levels[level] >= 3 for level in range(6)), levels


def test_wrong_question_answers_another_question_with_other_competencies(
    jobs: dict[str, dict[str, Any]], answers: list[Answer]
) -> None:
    for a in answers:
        if a.kind != "wrong_question":
            assert a.answers_question == a.question, a.id
            continue
        assert a.answers_question != a.question, a.id
        job = jobs[a.job]
        # Level 1 only holds where the text shows nothing of what the question rates.
        shared = question_competencies(job, a.question) & question_competencies(
            job, a.answers_question
        )
        assert not shared, f"{a.id}: both questions rate {shared}"


def test_ids_and_texts_are_unique(answers: list[Answer]) -> None:
    ids = [a.id for a in answers]
    assert len(set(ids)) == len(ids)
    spoken = [a.text for a in answers if a.text]
    assert len(set(spoken)) == len(spoken)
    prefixes: dict[str, str] = {}
    for a in answers:
        match = re.fullmatch(r"([a-z]+)-q(\d+)-([a-z_]+)-(\d+)", a.id)
        assert match, a.id
        prefix, question, kind, _ = match.groups()
        assert (int(question), kind) == (a.question, a.kind), a.id
        assert prefixes.setdefault(a.job, prefix) == prefix, a.id
    assert len(set(prefixes.values())) == len(prefixes)


def test_texts_read_as_transcripts(answers: list[Answer]) -> None:
    for a in answers:
        assert (a.text == "") == (a.kind == "silence"), a.id
        assert a.notes.strip(), a.id
        assert a.text == a.text.strip() and "\n" not in a.text, a.id
        assert not re.search(r"(^|\s)[-*\u2022]\s", a.text), f"{a.id} has a bullet list"
        if a.kind == "short_complete":
            sentences = [s for s in re.split(r"[.!?]+(?:\s|$)", a.text) if s.strip()]
            assert 2 <= len(sentences) <= 4, f"{a.id} has {len(sentences)} sentences"
        if a.kind == "long_vague":
            assert len(words(a.text)) >= 90, a.id


def test_answers_are_not_written_from_the_anchors(
    jobs: dict[str, dict[str, Any]], answers: list[Answer]
) -> None:
    anchor_runs: set[tuple[str, ...]] = set()
    for job in jobs.values():
        for competency in job["competencies"]:
            for anchor in competency["anchors"].values():
                anchor_runs |= ngrams(anchor, ANCHOR_NGRAM)
    for a in answers:
        copied = ngrams(a.text, ANCHOR_NGRAM) & anchor_runs
        assert not copied, f"{a.id} repeats an anchor: {' '.join(sorted(copied)[0])}"


def test_answers_are_not_written_from_each_other(answers: list[Answer]) -> None:
    first: dict[tuple[str, ...], str] = {}
    for a in answers:
        for run in ngrams(a.text, ANSWER_NGRAM):
            other = first.setdefault(run, a.id)
            assert other == a.id, f"{a.id} and {other} share '{' '.join(run)}'"


def test_every_job_and_kind_is_split_about_evenly(
    jobs: dict[str, dict[str, Any]], answers: list[Answer]
) -> None:
    for group, members in [
        *((stem, [a for a in answers if a.job == stem]) for stem in jobs),
        *((kind, [a for a in answers if a.kind == kind]) for kind in KINDS),
    ]:
        splits = Counter(a.split for a in members)
        assert set(splits) == set(SPLITS), f"{group}: {dict(splits)}"
        assert abs(splits["tuning"] - splits["held-out"]) <= 2, f"{group}: {dict(splits)}"


def test_load_answers_filters_by_split(answers: list[Answer]) -> None:
    tuning, held_out = load_answers("tuning"), load_answers("held-out")
    assert tuning and held_out
    assert {a.split for a in tuning} == {"tuning"} and {a.split for a in held_out} == {"held-out"}
    assert len(tuning) + len(held_out) == len(answers)
    with pytest.raises(ValueError, match="unknown split"):
        load_answers("test")

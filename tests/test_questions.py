"""The question timeline of a live session: bounded by the session's question count."""

import contextlib

import pytest

from rtserver.errors import ControlRefused
from rtserver.live.questions import QuestionTimeline


def refusal(timeline: QuestionTimeline, index: int, at_s: float) -> str:
    with pytest.raises(ControlRefused) as refused:
        timeline.begin(index, at_s)
    assert refused.value.code == "bad_request" and refused.value.detail
    return refused.value.reason


def test_questions_go_forward_within_the_session() -> None:
    timeline = QuestionTimeline(3)
    assert timeline.current is None and timeline.at(0) is None
    assert timeline.begin(0, 0.4)
    for _ in range(1000):
        assert not timeline.begin(0, 5.0)  # a repeat (after a reconnect) changes nothing
    assert refusal(timeline, 3, 2.0) == "unknown_question"
    assert timeline.begin(2, 6.2)  # skipping ahead is still forward
    assert refusal(timeline, 1, 7.0) == "backwards"
    for index in range(100):
        for attempt in (index % 2, 99):  # earlier questions, and one past the last
            with pytest.raises(ControlRefused):
                timeline.begin(attempt, 8.0)
        assert not timeline.begin(2, 8.0)
    assert len(timeline) == 2 and timeline.current == 2
    assert [timeline.at(t) for t in range(9)] == [None, 0, 0, 0, 0, 0, 0, 2, 2]


def test_a_session_without_questions_has_the_open_prompt() -> None:
    """The candidate page shows one open prompt (index 0) when HR set no questions."""
    timeline = QuestionTimeline(0)
    assert timeline.begin(0, 0.0)
    assert refusal(timeline, 1, 1.0) == "unknown_question"
    assert len(timeline) == 1


def test_the_timeline_never_outgrows_the_question_count() -> None:
    timeline = QuestionTimeline(5)
    for step in range(10_000):
        with contextlib.suppress(ControlRefused):
            timeline.begin(step % 7, step / 100)
    assert len(timeline) <= 5

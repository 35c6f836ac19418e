"""scoring/feedback.py: per-question suggestions and the explanation, without a score."""

from __future__ import annotations

import json
from typing import Any

from rtserver.scoring.feedback import MAX_TIPS, content_feedback, explanation


def rating(answered: bool, *reasons: str) -> dict[str, Any]:
    return {"answered": answered, "score": 60, "level": 3, "reasons": list(reasons)}


def final(recommendation: str, delivery_weight: float = 0.0) -> dict[str, Any]:
    return {
        "session": "s1",
        "job": {"id": "j", "version": 2, "title": "Store manager"},
        "recommendation": recommendation,
        "competencies": {
            "leadership": {"name": "Leadership", "weight": 0.6, "score": 80.0, "answered": True},
            "planning": {"name": "Planning", "weight": 0.4, "score": 0.0, "answered": False},
        },
        "answers": [
            {
                "question": 0,
                "text": "Tell us about a hard week.",
                "competencies": {
                    "leadership": rating(
                        True,
                        "describes the situation, action",
                        "does not say the task, result",
                        "few specifics: figures, names or concrete actions",
                    )
                },
            },
            {"question": 1, "text": "Plan a rota.", "competencies": {"planning": rating(False)}},
        ],
        "delivery": {"score": 70.0, "weight": delivery_weight, "dimensions": {}},
    }


def test_each_question_gets_its_missing_parts_as_suggestions() -> None:
    tips = content_feedback(final("review"))
    assert [t["question"] for t in tips] == [0, 1]
    assert tips[0]["feedback"] == [
        "You described what you did; say what the result was.",
        "Add specifics: figures, the tools you used, what changed.",
    ]
    assert len(tips[0]["feedback"]) <= MAX_TIPS
    assert tips[1]["feedback"] == ["This question was not answered."]
    assert content_feedback({"score": 50}) == []  # no job: nothing to say about content


def test_the_explanation_says_what_counted_in_words_and_that_a_person_decides() -> None:
    review = explanation(final("review"))
    assert "not a rejection" in review["text"] and "A person makes every decision" in review["text"]
    assert "did not count" in review["text"]  # delivery carries no weight here
    assert [(p["competency"], p["assessment"]) for p in review["points"]] == [
        ("leadership", "strong"),
        ("planning", "not answered, so it counted as nothing"),
    ]
    advance = explanation(final("advance", delivery_weight=0.1))
    assert "recommended for the next interview" in advance["text"]
    assert "counted for 10 %" in advance["text"]
    assert "80" not in json.dumps(review)  # words, never the score

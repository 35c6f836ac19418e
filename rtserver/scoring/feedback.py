"""What a candidate is told about their answers, and why they were recommended as they were.

Both are made from a job session's final (``job_report.py``) and show no score:

- :func:`content_feedback`: per question, at most two plain suggestions drawn from what
  the rating found missing ("you described what you did; say what the result was");
- :func:`explanation`: the plain-language explanation of the main elements behind the
  recommendation that the EU AI Act (Art. 86) lets a candidate ask for: what was rated,
  how each competency came out (in words, not figures), what did not count, and that a
  person decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_TIPS = 2
# What a rating's reason says is missing, and the suggestion it makes; in priority order.
TIPS = (
    ("does not address the question", "Answer the question that was asked, with an example."),
    (
        "answers another of the job's questions",
        "This answer fits another question better: answer the one that was asked.",
    ),
    ("only partly addresses the question", "Keep your example close to the question asked."),
    ("mostly stock phrases", "Replace general statements with an example of what you did."),
    ("result", "You described what you did; say what the result was."),
    ("action", "Say what you did yourself, step by step."),
    ("situation", "Start with the situation: where and when it was, and what was at stake."),
    ("few specifics", "Add specifics: figures, the tools you used, what changed."),
)
NOT_ANSWERED_TIP = "This question was not answered."
# Competency score bands (0-100) and the words that say them.
BANDS = ((75.0, "strong"), (50.0, "good"), (25.0, "limited"), (0.0, "weak"))


def content_feedback(final: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per question of a job session: ``{"question", "text", "feedback": [...]}``; []
    without a job."""
    out = []
    for answer in final.get("answers") or ():
        ratings = list(answer["competencies"].values())
        if ratings and not any(r["answered"] for r in ratings):
            tips = [NOT_ANSWERED_TIP]
        else:
            reasons = [reason for r in ratings for reason in r["reasons"]]
            tips = _tips(reasons)
        out.append({"question": answer["question"], "text": answer["text"], "feedback": tips})
    return out


def _tips(reasons: list[str]) -> list[str]:
    tips: list[str] = []
    missing = [r for r in reasons if r.startswith(("does not say", "does not address"))]
    for key, tip in TIPS:
        if key in ("result", "action", "situation"):
            hit = any(r.startswith("does not say") and key in r for r in missing)
        else:
            hit = any(key in r for r in reasons)
        if hit and tip not in tips:
            tips.append(tip)
        if len(tips) == MAX_TIPS:
            break
    return tips


def band(score: float) -> str:
    return next(word for floor, word in BANDS if score >= floor)


def explanation(final: Mapping[str, Any]) -> dict[str, Any]:
    """The explanation for the candidate of a job session's recommendation."""
    job = final.get("job") or {}
    recommendation = final.get("recommendation")
    lines = [
        f"This interview was for the role of {job.get('title', 'the job')}. Your answers were "
        "transcribed and each was rated against the competencies the employer set for the "
        "role, from what you said: whether it answered the question, and whether it described "
        "a situation, what you did, and the result, with specifics.",
    ]
    points = []
    for cid, competency in (final.get("competencies") or {}).items():
        weight = round(100 * float(competency["weight"]))
        if not competency["answered"]:
            state = "not answered, so it counted as nothing"
        else:
            state = f"{band(float(competency['score']))}"
        points.append(
            {
                "competency": cid,
                "name": competency["name"],
                "weight_percent": weight,
                "assessment": state,
            }
        )
        lines.append(f"{competency['name']} ({weight} % of the assessment): {state}.")
    if recommendation == "advance":
        lines.append(
            "Taken together, your answers met the level the employer set, so you were "
            "recommended for the next interview."
        )
    else:
        lines.append(
            "Taken together, your answers did not reach the level the employer set, so your "
            "interview was passed to a person to review. This is not a rejection."
        )
    delivery = final.get("delivery") or {}
    if delivery.get("weight"):
        lines.append(
            f"How you came across (speaking time, loudness, pace) counted for "
            f"{round(100 * float(delivery['weight']))} % of the assessment."
        )
    else:
        lines.append("How you looked or sounded did not count in this recommendation.")
    lines.append("A person makes every decision; the system only recommends.")
    return {
        "session": final.get("session"),
        "recommendation": recommendation,
        "points": points,
        "text": "\n".join(lines),
    }

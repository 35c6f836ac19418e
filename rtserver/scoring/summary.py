"""The candidate's summary: a few plain strengths and things to work on, from the final.

Made from the final message's dimensions (their scores choose, their evidence gives the
direction: too quiet or too loud, too fast or too slow), never showing a score, a weight or
any figure: a candidate sees advice, HR sees the report. Expression is left out: feedback
on inferred emotion is not something a candidate can fairly act on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rtserver.scoring.rubric import LOUDNESS_BAND, SPEAKING_BAND

STRONG = 75.0  # a dimension scoring at least this (0-100) is a strength
MAX_ITEMS = 3

STRENGTHS = {
    "presence": "You stayed clearly in view of the camera.",
    "speaking": "You gave full answers, with a good balance of talking and pausing.",
    "audibility": "Your voice came through clearly and at a comfortable level.",
    "continuity": "Your camera and microphone stayed connected throughout.",
    "fluency": "You spoke at an easy pace that was comfortable to follow.",
}
IMPROVEMENTS = {
    "presence": "Keep your face in view: sit facing the camera, with your face well lit "
    "and inside the frame.",
    "speaking_less": "Say a little more in each answer: an example or two helps.",
    "speaking_more": "Leave short pauses between your points, so each one can land.",
    "audibility_quiet": "Speak up a little, or move closer to your microphone.",
    "audibility_loud": "Your microphone sounded loud: move back a little or lower its level.",
    "audibility": "Make sure your microphone picks you up clearly before you start.",
    "continuity": "Check your connection before the interview: your camera or microphone "
    "dropped out at times.",
    "fluency_fast": "Slow down a little: a calmer pace makes your answers easier to follow.",
    "fluency_slow": "Keep a steady flow: noting a few key points beforehand means fewer "
    "long pauses.",
    "fluency": "Keep a steady flow, with fewer long pauses and some variety in your voice.",
}
FALLBACK_STRENGTH = "You completed the interview: thank you for taking part."
FALLBACK_IMPROVEMENT = (
    "Keep your answers structured: a short example for each point makes them memorable."
)
# Below this speech rate (syllables/s) a weak fluency reads as slow, above FAST as fast.
SLOW_RATE_SPS = 3.0
FAST_RATE_SPS = 5.5


@dataclass(frozen=True)
class CandidateSummary:
    strengths: tuple[str, ...]
    improvements: tuple[str, ...]


def _number(pattern: str, text: str) -> float | None:
    """The first number ``pattern`` captures in an evidence text, or None."""
    found = re.search(pattern, text)
    return float(found.group(1)) if found else None


def _improvement(name: str, evidence: str) -> str | None:
    """What to work on for a weak dimension, in the direction its evidence shows."""
    if name == "speaking":
        share = _number(r"\((\d+(?:\.\d+)?)%\)", evidence)
        if share is not None and share / 100.0 > SPEAKING_BAND[1]:
            return IMPROVEMENTS["speaking_more"]
        return IMPROVEMENTS["speaking_less"]
    if name == "audibility":
        level = _number(r"level (-?\d+(?:\.\d+)?) dBFS", evidence)
        if level is None:
            return IMPROVEMENTS["audibility"]
        return IMPROVEMENTS["audibility_loud" if level > LOUDNESS_BAND[1] else "audibility_quiet"]
    if name == "fluency":
        rate = _number(r"speech rate (\d+(?:\.\d+)?) syll/s", evidence)
        if rate is not None and rate > FAST_RATE_SPS:
            return IMPROVEMENTS["fluency_fast"]
        if rate is not None and rate < SLOW_RATE_SPS:
            return IMPROVEMENTS["fluency_slow"]
        return IMPROVEMENTS["fluency"]
    return IMPROVEMENTS.get(name)


def summarise(final: Mapping[str, Any]) -> CandidateSummary:
    """1-3 strengths and 1-3 things to work on from a final message's wire form.

    Strengths are the best dimensions scoring at least STRONG, best first; things to work
    on are the weakest of the rest, weakest first. Either list falls back to one general
    sentence when no dimension qualifies.
    """
    dimensions: dict[str, Any] = final.get("dimensions") or {}
    ranked = sorted(
        ((name, float(d["score"]), str(d.get("evidence", ""))) for name, d in dimensions.items()),
        key=lambda item: item[1],
    )
    known = [item for item in ranked if item[0] in STRENGTHS]
    strengths = [STRENGTHS[name] for name, score, _ in reversed(known) if score >= STRONG]
    improvements = [
        tip
        for name, score, evidence in known
        if score < STRONG and (tip := _improvement(name, evidence)) is not None
    ]
    return CandidateSummary(
        strengths=tuple(strengths[:MAX_ITEMS]) or (FALLBACK_STRENGTH,),
        improvements=tuple(improvements[:MAX_ITEMS]) or (FALLBACK_IMPROVEMENT,),
    )

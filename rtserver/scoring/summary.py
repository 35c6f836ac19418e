"""The candidate's summary: a few plain strengths and things to work on, from the final.

Made from the final message's dimensions (their scores choose, their evidence gives the
direction: too quiet or too loud, too fast or too slow, long pauses), never showing a score,
a weight or any figure: a candidate sees advice, HR sees the report. Expression is left out:
feedback on inferred emotion is not something a candidate can fairly act on.

Two rules keep the summary honest:

- Each sentence names the topics it speaks about (:class:`Advice`), and each sentence
  claims only what its own dimension measured. A tip that touches a topic a strength (or an
  earlier tip) already speaks about is left out, so the two lists never contradict each
  other ("a good balance of talking and pausing" beside "fewer long pauses").
- The face tip is given only when the face was truly absent for a long time: most of the
  analysed seconds had no face in any frame (the presence evidence counts them). A weak
  presence score without that may be the detector missing a face, and the candidate is not
  told to fix what may not be wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rtserver.scoring.fluency import MONOTONE_ST
from rtserver.scoring.rubric import LOUDNESS_BAND, SPEAKING_BAND

STRONG = 75.0  # a dimension scoring at least this (0-100) is a strength
MAX_ITEMS = 3
# Share (0-1) of the analysed seconds with no face in any frame from which the face counts
# as truly absent, and the candidate is asked to stay in view.
ABSENT_SHARE = 0.5
# Share (0-1) of the time heard spent in pauses above which a weak fluency reads as long
# pauses (the fluency score starts to take points off at 20 % of its window).
PAUSE_SHARE = 0.2
# Below this speech rate (syllables/s) a weak fluency reads as slow, above FAST as fast.
SLOW_RATE_SPS = 3.0
FAST_RATE_SPS = 5.5

# Topics a sentence may speak about.
VIEW = "view"  # the face in the camera's view
AMOUNT = "amount"  # how much of the time was speech
PAUSES = "pauses"
PACE = "pace"
LOUDNESS = "loudness"
VOICE = "voice"  # variety of tone
CONNECTION = "connection"


@dataclass(frozen=True)
class Advice:
    """One sentence for the candidate and the topics it speaks about."""

    text: str
    topics: frozenset[str]


def _advice(text: str, *topics: str) -> Advice:
    return Advice(text, frozenset(topics))


STRENGTHS = {
    "presence": _advice("You stayed clearly in view of the camera.", VIEW),
    "speaking": _advice("You gave full answers, of a good length.", AMOUNT),
    "audibility": _advice("Your voice came through clearly and at a comfortable level.", LOUDNESS),
    "continuity": _advice("Your camera and microphone stayed connected throughout.", CONNECTION),
    "fluency": _advice("You spoke at an easy pace that was comfortable to follow.", PACE),
}
IMPROVEMENTS = {
    "presence_absent": _advice(
        "For much of the interview the camera could not see your face. Next time, it helps "
        "to sit facing the camera, in good light, with your face inside the frame.",
        VIEW,
    ),
    "speaking_less": _advice("Say a little more in each answer: an example or two helps.", AMOUNT),
    "speaking_more": _advice(
        "Leave short pauses between your points, so each one can land.", AMOUNT, PAUSES
    ),
    "audibility_quiet": _advice("Speak up a little, or move closer to your microphone.", LOUDNESS),
    "audibility_loud": _advice(
        "Your microphone sounded loud: move back a little or lower its level.", LOUDNESS
    ),
    "audibility": _advice(
        "Make sure your microphone picks you up clearly before you start.", LOUDNESS
    ),
    "continuity": _advice(
        "Check your connection before the interview: your camera or microphone dropped out "
        "at times.",
        CONNECTION,
    ),
    "fluency_fast": _advice(
        "Slow down a little: a calmer pace makes your answers easier to follow.", PACE
    ),
    "fluency_slow": _advice(
        "Keep your answers moving at a steady pace: noting a few key points beforehand helps.",
        PACE,
    ),
    "fluency_pauses": _advice(
        "Try to keep long pauses short: noting a few key points beforehand keeps your answer "
        "flowing.",
        PAUSES,
    ),
    "fluency_monotone": _advice(
        "Let your voice vary a little in tone, so that your main points stand out.", VOICE
    ),
    "fluency": _advice(
        "Keep a steady flow from one point to the next: a short plan before each answer helps.",
        PACE,
        PAUSES,
    ),
}
FALLBACK_STRENGTH = "You completed the interview: thank you for taking part."
FALLBACK_IMPROVEMENT = (
    "Keep your answers structured: a short example for each point makes them memorable."
)


@dataclass(frozen=True)
class CandidateSummary:
    strengths: tuple[str, ...]
    improvements: tuple[str, ...]


def _number(pattern: str, text: str) -> float | None:
    """The first number ``pattern`` captures in an evidence text, or None."""
    found = re.search(pattern, text)
    return float(found.group(1)) if found else None


_NUMBER = r"(-?\d+(?:\.\d+)?)"


def _face_absent(evidence: str) -> bool:
    """Whether the presence evidence shows a long absence of the face (see ABSENT_SHARE);
    False for evidence without the count (a final stored before it was added)."""
    found = re.search(r"no face in any frame in (\d+) of those (\d+) s", evidence)
    if not found:
        return False
    absent, analysed = int(found.group(1)), int(found.group(2))
    return analysed > 0 and absent / analysed > ABSENT_SHARE


def _fluency_improvement(evidence: str) -> Advice:
    rate = _number(rf"speech rate {_NUMBER} syll/s", evidence)
    heard_s = _number(rf"in {_NUMBER} s heard", evidence)
    pause_s = _number(rf"pauses \({_NUMBER} s", evidence)
    long_pauses = bool(heard_s and pause_s is not None and pause_s / heard_s > PAUSE_SHARE)
    if rate is not None and rate > FAST_RATE_SPS:
        return IMPROVEMENTS["fluency_fast"]
    if long_pauses:
        return IMPROVEMENTS["fluency_pauses"]
    if rate is not None and rate < SLOW_RATE_SPS:
        return IMPROVEMENTS["fluency_slow"]
    spread = _number(rf"median pitch spread {_NUMBER} semitones", evidence)
    if spread is not None and spread < MONOTONE_ST:
        return IMPROVEMENTS["fluency_monotone"]
    return IMPROVEMENTS["fluency"]


def _improvement(name: str, evidence: str) -> Advice | None:
    """What to work on for a weak dimension, in the direction its evidence shows; None when
    the evidence does not show something the candidate can act on."""
    if name == "presence":
        return IMPROVEMENTS["presence_absent"] if _face_absent(evidence) else None
    if name == "speaking":
        share = _number(rf"speaking share {_NUMBER}%", evidence)
        if share is not None and share / 100.0 > SPEAKING_BAND[1]:
            return IMPROVEMENTS["speaking_more"]
        return IMPROVEMENTS["speaking_less"]
    if name == "audibility":
        level = _number(rf"level {_NUMBER} dBFS", evidence)
        if level is None:
            return IMPROVEMENTS["audibility"]
        return IMPROVEMENTS["audibility_loud" if level > LOUDNESS_BAND[1] else "audibility_quiet"]
    if name == "fluency":
        return _fluency_improvement(evidence)
    return IMPROVEMENTS.get(name)


def summarise(final: Mapping[str, Any]) -> CandidateSummary:
    """1-3 strengths and 1-3 things to work on from a final message's wire form.

    Strengths are the best dimensions scoring at least STRONG, best first; things to work
    on are the weakest of the rest, weakest first, leaving out any that speaks about a topic
    already covered (see the module docstring). Either list falls back to one general
    sentence when nothing qualifies.
    """
    dimensions: dict[str, Any] = final.get("dimensions") or {}
    ranked = sorted(
        ((name, float(d["score"]), str(d.get("evidence", ""))) for name, d in dimensions.items()),
        key=lambda item: item[1],
    )
    known = [item for item in ranked if item[0] in STRENGTHS]
    strengths = [STRENGTHS[name] for name, score, _ in reversed(known) if score >= STRONG]
    strengths = strengths[:MAX_ITEMS]
    covered = set().union(*(advice.topics for advice in strengths))
    improvements: list[Advice] = []
    for name, score, evidence in known:
        if score >= STRONG or len(improvements) == MAX_ITEMS:
            continue
        advice = _improvement(name, evidence)
        if advice is None or advice.topics & covered:
            continue
        improvements.append(advice)
        covered |= advice.topics
    return CandidateSummary(
        strengths=tuple(a.text for a in strengths) or (FALLBACK_STRENGTH,),
        improvements=tuple(a.text for a in improvements) or (FALLBACK_IMPROVEMENT,),
    )

"""The final score: a weighted rubric over a session's per-second signals.

Each dimension maps one measured quantity to 0-100 through a plain piecewise-linear rule,
and carries the figures it used as evidence, so HR can see why a score is what it is.

Two dimensions join when their signals exist: fluency (from each second's ``fluency``)
and expression (from ``emotion``, only when emotion inference is on). The base dimensions'
weights are scaled down to make room for them, so weights always sum to 1; a dimension
left out is named in the report's ``notes`` with the reason.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rtserver.messages import Dimension, FinalMessage, SignalMessage

# Share of each dimension in the final score without expression; they sum to 1.
WEIGHTS = {
    "presence": 0.30,
    "speaking": 0.35,
    "audibility": 0.20,
    "continuity": 0.15,
}
# Shares of the optional dimensions when scored; the base ones are scaled to make room.
EXPRESSION_WEIGHT = 0.10
FLUENCY_WEIGHT = 0.20
# Valence (-1..1) at or above which a second's expression reads as neutral or positive.
CALM_VALENCE = -0.1

EMOTION_OFF_NOTE = (
    "Emotion inference is off on this server, so facial expression was neither measured "
    "nor scored (the EU AI Act, Art. 5(1)(f), prohibits emotion inference in recruitment)."
)
NO_EXPRESSION_NOTE = "No face was measured for expression, so it is not part of the score."
NO_FLUENCY_NOTE = "No speech was measured for fluency, so it is not part of the score."

# Speaking share of an answer that reads as engaged but not rushed (fraction of time).
SPEAKING_BAND = (0.35, 0.75)
# Speech loudness a listener hears comfortably (dBFS of the captured signal).
LOUDNESS_BAND = (-32.0, -12.0)
# A second whose loudness speaks for the voice: at least this share of it is speech (0-1).
MOSTLY_SPEECH = 0.3


@dataclass(frozen=True)
class Interview:
    """What the rubric needs to know about a finished session."""

    session: str
    signals: Sequence[SignalMessage]
    end_reason: str
    emotion_on: bool = True  # whether emotion inference ran for this session
    questions: Sequence[str] = ()  # the session's question texts, by index


def _clamp(value: float, low: float = 0.0, high: float = 100.0) -> float:
    return max(low, min(high, value))


def _band_score(
    value: float, band: tuple[float, float], slope_low: float, slope_high: float
) -> float:
    """100 inside ``band``; falls by ``slope`` points per unit outside it."""
    low, high = band
    if value < low:
        return _clamp(100.0 - (low - value) * slope_low)
    if value > high:
        return _clamp(100.0 - (value - high) * slope_high)
    return 100.0


def presence(signals: Sequence[SignalMessage]) -> Dimension:
    """How much of the analysed video showed a face. The evidence also counts the analysed
    seconds in which no frame had a face at all: a long absence, not a detector missing a
    face now and then (the candidate's summary relies on that count)."""
    analysed = [s for s in signals if s.video.fps > 0]
    if not analysed:
        return Dimension(0.0, WEIGHTS["presence"], "No video was analysed.")
    face = statistics.fmean(s.video.face for s in analysed)
    absent = sum(1 for s in analysed if s.video.face == 0.0)
    score = _clamp((face - 0.2) / 0.7 * 100.0)
    return Dimension(
        round(score, 1),
        WEIGHTS["presence"],
        f"Face visible in {face:.0%} of analysed frames over {len(analysed)} s of video; "
        f"no face in any frame in {absent} of those {len(analysed)} s.",
    )


def speech_time(signals: Sequence[SignalMessage]) -> tuple[float, float]:
    """``(speech_s, heard_s)``: seconds of speech and seconds of audio heard.

    The one definition of speech time that every figure HR sees uses (the speaking and
    fluency evidence, the per-question breakdown): each second's speech fraction weighted by
    the audio it held (10 ms hops), summed. The speaking share is ``speech_s / heard_s``.
    """
    heard_s = sum(s.audio.hops for s in signals) / 100.0
    speech_s = sum(s.audio.speech * s.audio.hops for s in signals) / 100.0
    return speech_s, heard_s


def speaking(signals: Sequence[SignalMessage]) -> Dimension:
    speech_s, heard_s = speech_time(signals)
    if heard_s <= 0:
        return Dimension(0.0, WEIGHTS["speaking"], "No audio was received.")
    share = speech_s / heard_s
    # Full marks inside the band, falling to 0 at silence and to 60 at non-stop talk.
    score = _band_score(share, SPEAKING_BAND, 100.0 / SPEAKING_BAND[0], 160.0)
    return Dimension(
        round(score, 1),
        WEIGHTS["speaking"],
        f"Speech time {speech_s:.0f} s of {heard_s:.0f} s heard (speaking share {share:.0%}); "
        f"a share of {SPEAKING_BAND[0]:.0%}-{SPEAKING_BAND[1]:.0%} scores full marks.",
    )


def audibility(signals: Sequence[SignalMessage]) -> Dimension:
    spoken = [
        s.audio.loudness_dbfs
        for s in signals
        if s.audio.speech >= MOSTLY_SPEECH and s.audio.loudness_dbfs is not None
    ]
    if not spoken:
        return Dimension(0.0, WEIGHTS["audibility"], "No second had enough speech to judge.")
    level = statistics.median(spoken)
    score = _band_score(level, LOUDNESS_BAND, slope_low=5.0, slope_high=10.0)
    return Dimension(
        round(score, 1),
        WEIGHTS["audibility"],
        # No count of these seconds here: beside the speaking evidence's speech time it
        # would read as a second, different amount of speech.
        f"Median speech level {level:.1f} dBFS, over the seconds that were at least "
        f"{MOSTLY_SPEECH:.0%} speech; {LOUDNESS_BAND[0]:.0f} to {LOUDNESS_BAND[1]:.0f} dBFS "
        "scores full marks.",
    )


def continuity(signals: Sequence[SignalMessage]) -> Dimension:
    if not signals:
        return Dimension(0.0, WEIGHTS["continuity"], "No media was received.")
    whole = sum(1 for s in signals if s.video.frames > 0 and s.audio.hops > 0)
    share = whole / len(signals)
    return Dimension(
        round(share * 100.0, 1),
        WEIGHTS["continuity"],
        f"Both camera and microphone delivered media in {whole} of {len(signals)} s.",
    )


def expression(signals: Sequence[SignalMessage]) -> Dimension | None:
    """Share of measured seconds whose expression reads neutral or positive; None when no
    second measured it."""
    read = [s.emotion for s in signals if s.emotion]
    if not read:
        return None
    valences = [float(e["valence"]) for e in read]
    calm = sum(1 for v in valences if v >= CALM_VALENCE) / len(valences)
    dominant = statistics.mode(str(e["dominant"]) for e in read)
    return Dimension(
        round(calm * 100.0, 1),
        EXPRESSION_WEIGHT,
        f"Expression read as neutral or positive in {calm:.0%} of {len(read)} measured "
        f"seconds (mean valence {statistics.fmean(valences):+.2f}; most often {dominant}).",
    )


def fluency(signals: Sequence[SignalMessage]) -> Dimension | None:
    """The mean per-second fluency score over seconds with speech in their window, with the
    whole interview's rates and pauses as evidence; None when no second had speech."""
    measured = [s.fluency for s in signals if s.fluency]
    spoken = [f for f in measured if f["speech_ratio"] > 0]
    if not spoken:
        return None
    speech_s, heard_s = speech_time(signals)
    syllables = sum(int(f["syllables"]) for f in measured)
    pauses = sum(int(f["pause_count"]) for f in measured)
    pause_s = sum(float(f["pause_s"]) for f in measured)
    score = statistics.fmean(float(f["score"]) for f in spoken)
    articulation = syllables / speech_s if speech_s else 0.0
    pause_share = pause_s / heard_s if heard_s else 0.0
    spreads = [float(f["pitch_var_st"]) for f in spoken if f.get("pitch_var_st") is not None]
    pitch = f"; median pitch spread {statistics.median(spreads):.1f} semitones" if spreads else ""
    return Dimension(
        round(score, 1),
        FLUENCY_WEIGHT,
        f"{syllables} syllables in {heard_s:.0f} s heard: speech rate "
        f"{syllables / heard_s if heard_s else 0:.1f} syll/s; articulation {articulation:.1f} "
        f"syll/s over {speech_s:.0f} s of speech time; {pauses} pauses ({pause_s:.1f} s, "
        f"{pause_share:.0%} of the time heard){pitch}. 3-5.5 syll/s scores best; long or "
        "frequent pauses and a monotone pitch lower the score.",
    )


def _question_entry(index: int, text: str | None, seconds: list[SignalMessage]) -> dict[str, Any]:
    speech_s, heard_s = speech_time(seconds)
    measured = [s.fluency for s in seconds if s.fluency]
    syllables = sum(int(f["syllables"]) for f in measured) if measured else None
    analysed = [s for s in seconds if s.video.fps > 0]
    emotions = [str(s.emotion["dominant"]) for s in seconds if s.emotion]
    return {
        "index": index,
        "text": text,
        "start_s": float(seconds[0].t),
        "end_s": float(seconds[-1].t + 1),
        "seconds": len(seconds),
        "speech_ratio": round(speech_s / heard_s, 3) if heard_s else None,
        "speech_s": round(speech_s, 1) if heard_s else None,
        "rate_sps": (round(syllables / heard_s, 2) if syllables is not None and heard_s else None),
        "syllables": syllables,
        "pause_count": sum(int(f["pause_count"]) for f in measured) if measured else None,
        "face": round(statistics.fmean(s.video.face for s in analysed), 3) if analysed else None,
        "dominant_emotion": statistics.mode(emotions) if emotions else None,
    }


def question_breakdown(
    signals: Sequence[SignalMessage], texts: Sequence[str] = ()
) -> tuple[dict[str, Any], ...]:
    """One entry per question answered, by index, from the seconds that carry it.

    ``start_s`` and ``end_s`` bound the question's seconds on the session timeline (s);
    ``seconds`` counts them (a question revisited counts every second spent on it).
    ``speech_s`` is the question's speech time and ``speech_ratio`` its speaking share, as
    :func:`speech_time` defines them. Rates are syllables per second of audio heard;
    ``face`` is the mean share (0-1) of analysed frames with a face; a figure nothing
    measured is None.
    """
    by_index: dict[int, list[SignalMessage]] = {}
    for signal in signals:
        if signal.question is not None:
            by_index.setdefault(signal.question, []).append(signal)
    return tuple(
        _question_entry(index, texts[index] if index < len(texts) else None, seconds)
        for index, seconds in sorted(by_index.items())
    )


def _rescaled(dimension: Dimension, factor: float) -> Dimension:
    return Dimension(dimension.score, round(dimension.weight * factor, 6), dimension.evidence)


def score_interview(interview: Interview) -> FinalMessage:
    """The final message for a finished interview."""
    signals = interview.signals
    dimensions = {
        "presence": presence(signals),
        "speaking": speaking(signals),
        "audibility": audibility(signals),
        "continuity": continuity(signals),
    }
    notes: list[str] = []
    optional: dict[str, Dimension] = {}
    spoken = fluency(signals)
    if spoken is None:
        notes.append(NO_FLUENCY_NOTE)
    else:
        optional["fluency"] = spoken
    expressed = expression(signals) if interview.emotion_on else None
    if not interview.emotion_on:
        notes.append(EMOTION_OFF_NOTE)
    elif expressed is None:
        notes.append(NO_EXPRESSION_NOTE)
    else:
        optional["expression"] = expressed
    scale = 1.0 - sum(d.weight for d in optional.values())
    dimensions = {name: _rescaled(d, scale) for name, d in dimensions.items()} | optional
    total = sum(d.score * d.weight for d in dimensions.values())
    return FinalMessage(
        session=interview.session,
        score=round(total, 1),
        dimensions=dimensions,
        duration_s=float(len(signals)),
        end_reason=interview.end_reason,
        signals=len(signals),
        emotion_analysis="on" if interview.emotion_on else "off",
        notes=tuple(notes),
        questions=question_breakdown(signals, interview.questions),
    )

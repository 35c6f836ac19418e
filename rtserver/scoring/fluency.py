"""Fluency: each second's ``fluency`` field, from the per-hop speech, syllable and pause
decisions of ``perception/fluency_stream.py``.

:class:`FluencyWindow` summarises each second over the last ``WINDOW_S`` seconds of the
session, with the fluency literature's measures:

  ``syllables``        nuclei confirmed in this second (each at most 300 ms after its peak);
  ``rate_sps``         speech rate: syllables per second of the window (pauses included);
  ``articulation_sps`` syllables per second of speech in the window (pauses excluded);
  ``pause_count``      pauses that began in this second; ``pause_s`` pause time in it;
  ``speech_ratio``     phonation-time ratio: speech time over the window's time;
  ``pitch_var_st``     standard deviation of voiced pitch over the window, in semitones;
  ``score``            0-100, see :func:`fluency_score`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtserver.kernels.audio import HOP, RATE

HOP_S = HOP / RATE
MIN_PAUSE_S = 0.25  # the fluency literature's usual floor: shorter silences are not pauses
MIN_PAUSE_HOPS = round(MIN_PAUSE_S / HOP_S)
WINDOW_S = 5  # seconds the rates, ratio and pitch spread are measured over

# The score: a normal speech rate scores best (3-5.5 syllables/s, as interview speech runs),
# falling to 0 at 1 and at 8 syllables/s; long or frequent pauses and a monotone pitch
# take points off.
RATE_BAND_SPS = (3.0, 5.5)
RATE_ZERO_SPS = (1.0, 8.0)
PAUSE_SHARE_FREE = 0.20  # pauses up to this share of the window cost nothing
PAUSE_SHARE_COST = 100.0  # points per unit of pause share above that, ...
PAUSE_MAX_COST = 40.0  # ... at most this many
LONG_PAUSE_S = 2.0  # a pause longer than this in the window costs LONG_PAUSE_COST
LONG_PAUSE_COST = 10.0
MONOTONE_ST = 2.0  # a pitch spread under this (semitones) is monotone, ...
MONOTONE_COST_PER_ST = 10.0  # ... costing this many points per semitone short of it
MIN_SPEECH_S = 0.5  # a window with less speech than this scores 0: too little to judge


@dataclass(frozen=True)
class FluencySecond:
    """One second's fluency counts, as the aggregator collected them."""

    hops: int
    speech_hops: int
    syllables: int
    pause_hops: int
    pause_starts: int
    longest_pause_s: float  # the longest pause overlapping this second, whole length (s)
    pitches_hz: tuple[float, ...]  # voiced pitch of its speech hops


def semitone_spread(pitches_hz: list[float]) -> float | None:
    """Standard deviation of ``pitches_hz`` in semitones; None with fewer than 10 values."""
    if len(pitches_hz) < 10:
        return None
    semitones = 12.0 * np.log2(np.asarray(pitches_hz) / np.median(pitches_hz))
    return float(np.std(semitones))


def fluency_score(
    rate_sps: float,
    speech_s: float,
    pause_share: float,
    longest_pause_s: float,
    spread: float | None,
) -> float:
    """0-100: the rate's band score, less the pause and monotone costs (module constants)."""
    if speech_s < MIN_SPEECH_S:
        return 0.0
    low, high = RATE_BAND_SPS
    zero_low, zero_high = RATE_ZERO_SPS
    if rate_sps < low:
        rate = 100.0 * max(0.0, (rate_sps - zero_low) / (low - zero_low))
    elif rate_sps > high:
        rate = 100.0 * max(0.0, (zero_high - rate_sps) / (zero_high - high))
    else:
        rate = 100.0
    pause_cost = min(PAUSE_MAX_COST, PAUSE_SHARE_COST * max(0.0, pause_share - PAUSE_SHARE_FREE))
    if longest_pause_s > LONG_PAUSE_S:
        pause_cost += LONG_PAUSE_COST
    monotone_cost = 0.0
    if spread is not None and spread < MONOTONE_ST:
        monotone_cost = MONOTONE_COST_PER_ST * (MONOTONE_ST - spread)
    return max(0.0, min(100.0, rate - pause_cost - monotone_cost))


class FluencyWindow:
    """The per-second ``fluency`` field, over the last WINDOW_S seconds."""

    def __init__(self) -> None:
        self._seconds: deque[FluencySecond] = deque(maxlen=WINDOW_S)

    def summarise(self, second: FluencySecond) -> dict[str, Any] | None:
        """This second's wire form; None for a second with no audio at all."""
        self._seconds.append(second)
        if second.hops == 0:
            return None
        window = list(self._seconds)
        time_s = sum(s.hops for s in window) * HOP_S
        speech_s = sum(s.speech_hops for s in window) * HOP_S
        syllables = sum(s.syllables for s in window)
        pause_s = sum(s.pause_hops for s in window) * HOP_S
        pitches = [p for s in window for p in s.pitches_hz]
        rate = syllables / time_s if time_s else 0.0
        spread = semitone_spread(pitches)
        score = fluency_score(
            rate,
            speech_s,
            pause_s / time_s if time_s else 0.0,
            max(s.longest_pause_s for s in window),
            spread,
        )
        return {
            "syllables": second.syllables,
            "rate_sps": round(rate, 2),
            "articulation_sps": round(syllables / speech_s, 2) if speech_s else 0.0,
            "pause_count": second.pause_starts,
            "pause_s": round(second.pause_hops * HOP_S, 2),
            "speech_ratio": round(speech_s / time_s, 3) if time_s else 0.0,
            "pitch_var_st": None if spread is None else round(spread, 2),
            "score": round(score, 1),
        }

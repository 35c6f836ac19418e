"""The per-hop speech decision: Silero VAD for *whether*, the hop levels for *where*.

Silero VAD (``scoring.vad``) is a strong detector: on our tuning clips it never fired on
white, pink or brown noise or on 50/60 Hz hum at any level, and it keeps its confidence
through speech buried in noise down to 5 dB SNR. Its boundaries are coarse, though: it
answers per 32 ms chunk, switches on 20-170 ms after an onset and holds on for up to 150 ms
after an offset. The hop levels (10 ms) place the boundaries exactly where speech stands
out of the background. So the gate, per hop:

1. Silero says speech (hysteresis on its probability, read VAD_DELAY_HOPS later to make up
   for its lag) *and* the hop is audible over the noise floor: a core hop.
2. Hops that stand out of the background's fluctuation and touch a core hop join it: this
   finds onsets that Silero reports late and the quiet ends of words.
3. A stretch between core hops is speech when it is short (a stop closure, a gap between
   words: up to GAP_HOPS), or when Silero stays confident through it (speech buried in
   noise); otherwise it is a pause.
4. At a pause, the speech extends past its last (before its first) audible hop by a share
   of the time that Silero still (already) says speech: in noise, the quiet ends of words
   are under the noise floor, and Silero hears them where the level cannot. Where speech
   stands far above the floor, nothing of it is hidden and the levels alone decide.

The decision of hop k uses the hops up to k + LOOKAHEAD_HOPS only, so results are final
LOOKAHEAD_HOPS hops (270 ms) late, and any split of a stream gives the same decisions.
The per-hop work is in Numba kernels; ``SpeechGate`` keeps the recent hops and the state.
``HopFeatures.voicing`` is not used: requiring or crediting voicing changed no result on
the tuning set (in noise, YIN's voicing fails on most speech hops first).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from rtserver.kernels.audio import HopFeatures

# -- timing -----------------------------------------------------------------------------------
# Decisions wait this many hops (270 ms) for later hops: VAD_DELAY_HOPS, then the longest gap
# bridged (GAP_HOPS) and the hop that ends it. Well inside the one-second publishing step.
LOOKAHEAD_HOPS = 27
# Hop k reads the VAD probability that hop k + 6 got: that chunk ended up to 31 ms before the
# end of hop k + 6, so it is centred on hop k's surroundings, and Silero's own response lags
# about 30 ms on top. Measured best over 4-8 on the tuning set (boundary bias nearest 0).
VAD_DELAY_HOPS = 6
# How far back (hops) a decision looks for the speech before a gap; more than GAP_HOPS.
BACK_HOPS = 25
# The hops whose later features the decision of hop k may read (hops k+1 .. k + this).
_AHEAD_HOPS = LOOKAHEAD_HOPS - VAD_DELAY_HOPS

# -- Silero hysteresis ------------------------------------------------------------------------
# Silero's own streaming defaults (VADIterator, get_speech_timestamps): speech starts at a
# probability of 0.5 and ends below 0.5 - 0.15.
VAD_ON = 0.5
VAD_OFF = 0.35

# -- noise floor (dBFS) -----------------------------------------------------------------------
# The floor follows the level of the hops that Silero calls non-speech (probability under
# FLOOR_UPDATE_BELOW), smoothed over about 10 hops (FLOOR_SMOOTHING per hop), and never rises
# faster than FLOOR_RISE_DB_PER_HOP (10 dB/s): Silero reports onsets up to 170 ms late, and
# those hops must not lift the floor into the speech. A hop FLOOR_DROP_DB under the floor
# resets it at once (the background got quieter: a fan stopped). Streams start with the floor
# at their first hop's level.
FLOOR_UPDATE_BELOW = 0.3
FLOOR_SMOOTHING = 0.1
FLOOR_RISE_DB_PER_HOP = 0.1
FLOOR_DROP_DB = 6.0
# Digital silence has no useful floor: below -70 dBFS nothing is tracked, so a hop needs at
# least -67 dBFS to be a core hop (the quiet ends of words of speech at -33 dBFS reach -65).
FLOOR_MIN_DBFS = -70.0

# -- levels that count (dB over the floor) ----------------------------------------------------
# A hop Silero calls speech must stand this far over the floor to be a core hop: the hop levels
# of white or pink noise stay within about 1.5 dB of their mean, so 3 dB rejects Silero's
# hold-on over noise after an offset, yet keeps most of speech that is 5 dB over the noise.
CORE_ABOVE_FLOOR_DB = 3.0
# A hop Silero has not (yet) flagged joins an adjacent core hop when it stands out of the
# background's own hop-to-hop fluctuation: EXTEND_SPREADS times the mean absolute deviation of
# the non-speech hops from the floor (smoothed over about 50 hops), and at least
# CORE_ABOVE_FLOOR_DB. Brown noise spreads about 2.5 dB, so its hops need 7-8 dB and never drag
# an offset on; over white noise or silence 3 dB suffice, so the quiet ends of clean speech
# (30 dB under its level) are found, and onsets that Silero reports late. The spread is learnt
# from hops that are not loud by the current margin, so that speech Silero has not flagged yet
# does not inflate it. It starts at 2 dB (a 6 dB margin, a fairly rough background) until the
# stream has shown its own (about 0.5 s).
EXTEND_SPREADS = 3.0
SPREAD_SMOOTHING = 0.02
SPREAD_INITIAL_DB = 2.0

# -- gaps -------------------------------------------------------------------------------------
# Up to 200 ms between speech hops is a stop closure or a gap between words: speech. A pause
# of 250 ms or more is never bridged this way (its quiet stretch has 24+ whole hops).
GAP_HOPS = 20
# A longer quiet stretch is still speech when Silero's mean probability over it is at least
# this: at 5-10 dB SNR whole syllables sink under the noise while Silero stays near 0.9; over
# a real pause its mean falls under 0.5 once its hold-on (50-150 ms) is over.
BURIED_MEAN_PROB = 0.6
# At a pause, the speech extends past its last (before its first) audible hop by a share of the
# hops that Silero still (already) calls speech. In noise the weak ends of words are under the
# floor, and Silero overshoots them: half of its overhang measured best (boundary bias nearest
# 0 at 5-20 dB SNR). Where the speech stands 35 dB or more over the floor, whatever is under
# the floor is more than 35 dB under the speech, past where words end, so the levels alone
# place the boundary; the share falls linearly from 25 to 35 dB. The speech level is the mean
# dB of the core hops, smoothed over about 20 of them.
OVERHANG_SHARE = 0.5
OVERHANG_FULL_BELOW_DB = 25.0
OVERHANG_NONE_ABOVE_DB = 35.0
SPEECH_LEVEL_SMOOTHING = 0.05

assert _AHEAD_HOPS > GAP_HOPS, "a bridged gap's far end must be within the lookahead"
assert BACK_HOPS > GAP_HOPS, "a bridged gap's near end must be within the look-back"


@njit(nogil=True, cache=True)
def _classify(
    level: np.ndarray,
    vad_prob: np.ndarray,
    silero: np.ndarray,
    core: np.ndarray,
    loud: np.ndarray,
    share: np.ndarray,
    floor_state: np.ndarray,
    int_state: np.ndarray,
    start: int,
    stop: int,
) -> None:
    """Per-hop flags of hops start..stop-1, causal: Silero's hysteresis, core, loud, and the
    share of Silero's overhang that a boundary at the hop takes.

    ``vad_prob[j]`` is the probability hop j reads (already delayed). floor_state = [floor
    dBFS, spread dB, speech level dBFS], int_state = [Silero state 0/1, started 0/1, speech
    level known 0/1]; both are updated.
    """
    speaking = int_state[0]
    started = int_state[1]
    heard = int_state[2]
    floor_db = floor_state[0]
    spread_db = floor_state[1]
    speech_db = floor_state[2]
    for j in range(start, stop):
        db = level[j]
        if started == 0:
            floor_db = max(db, FLOOR_MIN_DBFS)
            spread_db = SPREAD_INITIAL_DB
            started = 1
        prob = vad_prob[j]
        if prob >= VAD_ON:
            speaking = 1
        elif prob < VAD_OFF:
            speaking = 0
        silero[j] = speaking == 1
        core[j] = speaking == 1 and db >= floor_db + CORE_ABOVE_FLOOR_DB
        loud[j] = db >= floor_db + max(CORE_ABOVE_FLOOR_DB, EXTEND_SPREADS * spread_db)
        if core[j]:
            speech_db = db if heard == 0 else speech_db + SPEECH_LEVEL_SMOOTHING * (db - speech_db)
            heard = 1
        snr_db = speech_db - floor_db if heard == 1 else 0.0
        ramp = (OVERHANG_NONE_ABOVE_DB - snr_db) / (OVERHANG_NONE_ABOVE_DB - OVERHANG_FULL_BELOW_DB)
        share[j] = OVERHANG_SHARE * min(max(ramp, 0.0), 1.0)
        # Levels under the floor's minimum count as on it: silence does not fluctuate.
        background = max(db, FLOOR_MIN_DBFS)
        if background < floor_db - FLOOR_DROP_DB:
            floor_db = background
        elif prob < FLOOR_UPDATE_BELOW or background < floor_db:
            step = min(FLOOR_SMOOTHING * (background - floor_db), FLOOR_RISE_DB_PER_HOP)
            floor_db += step
            if not loud[j]:
                spread_db += SPREAD_SMOOTHING * (abs(background - floor_db) - spread_db)
    int_state[0] = speaking
    int_state[1] = started
    int_state[2] = heard
    floor_state[0] = floor_db
    floor_state[1] = spread_db
    floor_state[2] = speech_db


@njit(nogil=True, cache=True)
def _decide(
    vad_prob: np.ndarray,
    silero: np.ndarray,
    core: np.ndarray,
    loud: np.ndarray,
    share: np.ndarray,
    k0: int,
    k1: int,
    last: int,
    out: np.ndarray,
) -> None:
    """Decisions of hops k0..k1-1 into out[0 .. k1-k0), from the flags of hops up to ``last``.

    Hop k reads hops max(0, k - BACK_HOPS) .. min(last, k + _AHEAD_HOPS) only, so its decision
    does not depend on how far the flags reach beyond that.
    """
    anchored = np.zeros(BACK_HOPS + _AHEAD_HOPS + 1, np.bool_)
    for k in range(k0, k1):
        lo = max(0, k - BACK_HOPS)
        n = min(last, k + _AHEAD_HOPS) - lo + 1
        # Core hops, grown through adjacent loud hops both ways.
        for j in range(n):
            anchored[j] = core[lo + j]
        for j in range(1, n):
            if not anchored[j] and loud[lo + j] and anchored[j - 1]:
                anchored[j] = True
        for j in range(n - 2, -1, -1):
            if not anchored[j] and loud[lo + j] and anchored[j + 1]:
                anchored[j] = True
        i = k - lo
        if anchored[i]:
            out[k - k0] = True
            continue
        before = -1  # the last anchored hop before k, in the window
        for j in range(i - 1, -1, -1):
            if anchored[j]:
                before = j
                break
        after = -1  # the first anchored hop after k, in the window
        for j in range(i + 1, n):
            if anchored[j]:
                after = j
                break
        speech = False
        if before >= 0:
            # The quiet stretch from `before`, as far as it is known.
            end = after if after >= 0 else n
            if after >= 0 and after - before - 1 <= GAP_HOPS:
                speech = True
            else:
                total = 0.0
                for j in range(before + 1, end):
                    total += vad_prob[lo + j]
                if total >= BURIED_MEAN_PROB * (end - before - 1):
                    speech = True
                else:
                    overhang = end - before - 1  # Silero's hold-on after the last audible hop
                    for j in range(before + 1, end):
                        if not silero[lo + j]:
                            overhang = j - before - 1
                            break
                    speech = i - before <= int(share[lo + before] * overhang + 0.5)
        if not speech and after >= 0:
            first = after  # Silero's onset, if it came before the first audible hop
            while first > 0 and silero[lo + first - 1] and not anchored[first - 1]:
                first -= 1
            speech = after - i <= int(share[lo + after] * (after - first) + 0.5)
        out[k - k0] = speech


@njit(nogil=True, cache=True)
def _advance(
    floats: np.ndarray,
    flags: np.ndarray,
    floor_state: np.ndarray,
    int_state: np.ndarray,
    fed: int,
    classify_from: int,
    classify_to: int,
    decide_from: int,
    decide_to: int,
    out: np.ndarray,
) -> None:
    """One step of a stream: flags of hops classify_from..classify_to-1, then decisions of
    hops decide_from..decide_to-1 into ``out``. Indices are rows of the buffers: ``floats``
    = [level, fed probability, delayed probability, overhang share], ``flags`` = [silero,
    core, loud], of which the first ``fed`` hops are filled. A hop missing the probability
    VAD_DELAY_HOPS later (at the end of a stream) reads the last one fed.
    """
    prob = floats[1]
    delayed = floats[2]
    for j in range(classify_from, classify_to):
        delayed[j] = prob[min(j + VAD_DELAY_HOPS, fed - 1)]
    _classify(
        floats[0],
        delayed,
        flags[0],
        flags[1],
        flags[2],
        floats[3],
        floor_state,
        int_state,
        classify_from,
        classify_to,
    )
    _decide(
        delayed,
        flags[0],
        flags[1],
        flags[2],
        floats[3],
        decide_from,
        decide_to,
        classify_to - 1,
        out,
    )


class SpeechGate:
    """Streaming speech decisions, one per 10 ms hop, LOOKAHEAD_HOPS hops late.

    Feed each hop's features and VAD probability (``VadStream.process`` output for the same
    hops) in order; every call returns the decisions that became final, hop 0 first. Over a
    stream, ``process`` returns hops fed minus LOOKAHEAD_HOPS decisions in all (fewer at the
    start), and ``flush`` the rest at its end. Any split gives the same decisions.
    """

    def __init__(self, capacity: int = 1024) -> None:
        # The recent hops, from absolute hop `self._base` on, in buffers that grow as needed:
        # floats = [rms_dbfs, fed VAD probability, delayed probability, overhang share],
        # flags = [Silero says speech, core, loud]; the first `self._count` rows are filled.
        self._floats = np.zeros((4, capacity), np.float64)
        self._flags = np.zeros((3, capacity), np.bool_)
        self._base = 0
        self._count = 0
        # [floor dBFS, spread dB, speech level dBFS]; [Silero state, started, level known]
        self._floor = np.zeros(3, np.float64)
        self._state = np.zeros(3, np.int64)
        self.hops_in = 0  # hops fed so far
        self.hops_out = 0  # decisions returned so far
        self._classified = 0  # hops whose flags are computed
        self._flushed = False

    def process(self, features: HopFeatures, vad_probs: np.ndarray) -> npt.NDArray[np.bool_]:
        """Decisions (True = speech) of the hops that became final, in hop order."""
        if self._flushed:
            raise RuntimeError("SpeechGate.process after flush(): the stream has ended")
        n = len(features)
        probs = np.asarray(vad_probs).reshape(-1)
        if probs.shape[0] != n:
            raise ValueError(f"{n} hops of features but {probs.shape[0]} VAD probs")
        self._reserve(n)
        self._floats[0, self._count : self._count + n] = features.rms_dbfs
        self._floats[1, self._count : self._count + n] = probs
        self._count += n
        self.hops_in += n
        # A hop's flags need the probability of the hop VAD_DELAY_HOPS later.
        return self._advance(self.hops_in - VAD_DELAY_HOPS, self.hops_in - LOOKAHEAD_HOPS)

    def flush(self) -> npt.NDArray[np.bool_]:
        """The decisions of the last hops, at the end of the stream (nothing can follow).

        Their missing later VAD probabilities are taken as the last one fed.
        """
        self._flushed = True
        return self._advance(self.hops_in, self.hops_in)

    def _reserve(self, n: int) -> None:
        """Room for ``n`` more hops: drops the hops no future step reads, grows if need be."""
        if self._count + n <= self._floats.shape[1]:
            return
        drop = max(0, min(self.hops_out - BACK_HOPS, self._classified) - self._base)
        kept = self._count - drop
        size = max(self._floats.shape[1], 2 * (kept + n))
        floats = np.zeros((4, size), np.float64)
        flags = np.zeros((3, size), np.bool_)
        floats[:, :kept] = self._floats[:, drop : self._count]
        flags[:, :kept] = self._flags[:, drop : self._count]
        self._floats, self._flags = floats, flags
        self._base += drop
        self._count = kept

    def _advance(self, classify_to: int, decide_to: int) -> npt.NDArray[np.bool_]:
        """Flags up to hop ``classify_to`` and decisions up to ``decide_to`` (absolute,
        exclusive); returns the new decisions."""
        classify_to = max(classify_to, self._classified)
        decide_to = max(decide_to, self.hops_out)
        out = np.zeros(decide_to - self.hops_out, np.bool_)
        base = self._base
        _advance(
            self._floats,
            self._flags,
            self._floor,
            self._state,
            self._count,
            self._classified - base,
            classify_to - base,
            self.hops_out - base,
            decide_to - base,
            out,
        )
        self._classified = classify_to
        self.hops_out = decide_to
        return out


def warm_up() -> None:
    """Compiles the gate's kernels (or loads them from Numba's cache); call at server start."""
    gate = SpeechGate()
    hops = LOOKAHEAD_HOPS + 2
    features = HopFeatures.empty(hops)
    gate.process(features, np.zeros(hops, np.float32))
    gate.flush()

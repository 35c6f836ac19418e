"""Slow, plain NumPy/Python reference of ``syllables.SyllableDetector``; the tests compare them.

Non-streaming: it sees the whole signal at once and computes every quantity from its
definition (the loudness threshold from the window of speech hops itself, each candidate's
dip from the hops up to the next candidate), instead of keeping running state.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from rtserver.perception.syllables import (
    HIST_BIN_DB,
    HIST_BINS,
    HIST_LOW_DB,
    LOUDNESS_QUANTILE_PERCENT,
    LOUDNESS_WINDOW_HOPS,
    MAX_PENDING_HOPS,
    MIN_DIP_DB,
    MIN_RISE_DB,
    SPEECH_LAG_HOPS,
    THRESHOLD_BELOW_DB,
    VOICED_FIRST_LAG,
    VOICED_LAST_LAG,
    VOICING_MIN,
)

SILENCE_DB = HIST_LOW_DB  # the contour before a stream starts and after it ends


def loudness_threshold_ref(intensity_db: npt.ArrayLike, speech: npt.ArrayLike) -> np.ndarray:
    """Per hop: the peak threshold in dB (+inf before the first speech hop).

    The 0.99 quantile (a rank, in HIST_BIN_DB bins) of the intensity of the last
    LOUDNESS_WINDOW_HOPS speech hops up to and including this one, less THRESHOLD_BELOW_DB.
    """
    x = np.asarray(intensity_db, np.float64)
    is_speech = np.asarray(speech, np.bool_)
    position = np.clip((x - HIST_LOW_DB) / HIST_BIN_DB, 0.0, HIST_BINS - 1.0)
    bins = np.floor(position).astype(np.int64)
    out = np.full(x.shape[0], np.inf)
    speech_hops = np.flatnonzero(is_speech)
    for k in range(x.shape[0]):
        recent = speech_hops[speech_hops <= k][-LOUDNESS_WINDOW_HOPS:]
        if recent.size == 0:
            continue
        counts = np.bincount(bins[recent], minlength=HIST_BINS)
        # The smallest bin whose cumulative count reaches rank ceil(q * n).
        rank = (LOUDNESS_QUANTILE_PERCENT * recent.size + 99) // 100
        b = int(np.searchsorted(np.cumsum(counts), rank))
        out[k] = HIST_LOW_DB + (b + 0.5) * HIST_BIN_DB - THRESHOLD_BELOW_DB
    return out


def syllable_nuclei_ref(
    intensity_db: npt.ArrayLike,
    pitch_hz: npt.ArrayLike,
    voicing: npt.ArrayLike,
    speech: npt.ArrayLike,
    final: bool = True,
) -> np.ndarray:
    """Nucleus flags of a whole stream, as ``SyllableDetector`` gives them over all its calls.

    With ``final`` the stream is taken as ended (the detector's ``flush``): one hop of
    silence follows it, and a candidate still undecided after that is decided as at
    MAX_PENDING_HOPS. Without it, only the hops the detector has made final are returned.
    """
    # The detector reads float32 (what HopAnalyzer gives) and computes in float64; NaN and
    # -inf are silence, +inf is 0 dB.
    x = np.asarray(intensity_db, np.float32).astype(np.float64)
    x = np.nan_to_num(x, nan=SILENCE_DB, posinf=0.0, neginf=SILENCE_DB)
    pitch = np.asarray(pitch_hz, np.float32)
    voiced_hop = (pitch > 0.0) | (np.asarray(voicing, np.float32) >= VOICING_MIN)
    is_speech = np.asarray(speech, np.bool_)
    n = x.shape[0]
    if final:
        # The stream ends in silence: one more hop, quiet, unvoiced and not speech.
        x = np.append(x, SILENCE_DB)
        voiced_hop = np.append(voiced_hop, False)
        is_speech = np.append(is_speech, False)
    threshold = loudness_threshold_ref(x, is_speech)
    total = x.shape[0]

    # 1. Peaks: local maxima (rising into, not rising out of) above the threshold. The last
    # hop has no successor, so it cannot be one.
    before = np.concatenate([[SILENCE_DB], x[:-1]])
    peaks = [k for k in range(total - 1) if x[k] > before[k] and x[k] >= x[k + 1]]
    peaks = [k for k in peaks if x[k] > threshold[k]]

    # 2. Candidates: peaks at least MIN_RISE_DB over the lowest point since the previous
    # candidate (or the silence before the stream).
    candidates: list[int] = []
    for k in peaks:
        if candidates:
            valley = float(x[candidates[-1] + 1 : k].min())  # never empty: peaks are apart
        else:
            valley = min(SILENCE_DB, float(x[:k].min())) if k else SILENCE_DB
        if x[k] - valley >= MIN_RISE_DB:
            candidates.append(k)

    # 3. Each candidate is decided by the first of: a dip of MIN_DIP_DB below it (accept),
    # the next candidate (reject; it is known one hop after its peak), MAX_PENDING_HOPS
    # (accept), or the end of the data (accept when final, undecided otherwise).
    flags = np.zeros(total, np.bool_)
    undecided = total
    for i, k in enumerate(candidates):
        following = candidates[i + 1] if i + 1 < len(candidates) else None
        dips = np.flatnonzero(x[k] - x[k + 1 :] >= MIN_DIP_DB)
        dip_at = k + 1 + int(dips[0]) if dips.size else None
        if dip_at is not None and (following is None or dip_at < following):
            decided_at = dip_at
            accept = True
        elif following is not None:
            decided_at = following + 1
            accept = False
        else:
            decided_at = None
            accept = True
        if decided_at is None or decided_at - k > MAX_PENDING_HOPS:
            decided_at = k + MAX_PENDING_HOPS
            accept = True
        if decided_at >= total and not final:
            undecided = k
            break
        # 4. A kept nucleus is voiced around the contour's centre and inside speech.
        lo, hi = k - VOICED_FIRST_LAG, k - VOICED_LAST_LAG
        voiced = bool(voiced_hop[max(0, lo) : max(0, hi + 1)].any())
        in_speech = k - SPEECH_LAG_HOPS >= 0 and bool(is_speech[k - SPEECH_LAG_HOPS])
        flags[k] = accept and voiced and in_speech
    if final:
        return flags[:n]
    # Without the end, the last hop is undecided too (it may still be a peak).
    return flags[: min(undecided, max(0, n - 1))]

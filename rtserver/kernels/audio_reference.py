"""Slow, plain NumPy references for the ``audio`` kernels; the tests compare the two.

Non-streaming: each function sees the whole signal at once, and computes every quantity
directly from its definition (no polyphase branches, no block sums, no ring buffers).
"""

from __future__ import annotations

import numpy as np

from rtserver.kernels.audio import (
    ENVELOPE_HOPS,
    ENVELOPE_WEIGHTS,
    FLOOR_MIN_DBFS,
    FLOOR_RISE_DB_PER_HOP,
    HANGOVER_HOPS,
    HOP,
    RATE,
    SILENCE_DBFS,
    SPEECH_ABOVE_FLOOR_DB,
    SPEECH_MIN_DBFS,
    TAPS,
    VOICING_MIN,
    WINDOW,
    HopFeatures,
    yin_lags,
)


def resample_ref(x48: np.ndarray) -> np.ndarray:
    """48 kHz float mono → 16 kHz float32: full convolution with TAPS, every 3rd sample.

    Output m is the filter output at input sample 3m, as in ``Resampler48kTo16k``.
    """
    x = np.asarray(x48, dtype=np.float64)
    filtered = np.convolve(x, TAPS)[: x.shape[0]]
    return filtered[::3].astype(np.float32)


def yin_ref(
    window: np.ndarray,
    rate: int = RATE,
    fmin: float = 60.0,
    fmax: float = 500.0,
    threshold: float = 0.15,
) -> tuple[float, float]:
    """YIN (pitch in Hz or 0.0 when unvoiced, voicing 0-1) of the end of ``window``.

    The last len(window) - (tau_max + 1) samples are integrated; the samples before them are
    the lookback the lags reach into (tau_max = ceil(rate / fmin)):
    d(tau) = sum over integrated j of (x[j] - x[j - tau])^2.
    """
    x = np.asarray(window, dtype=np.float64)
    tau_min, tau_max = yin_lags(fmin, fmax, rate)
    lag = tau_max + 1
    if x.shape[0] <= lag:
        raise ValueError(f"window needs more than {lag} samples, got {x.shape[0]}")
    current = x[lag:]
    taus = np.arange(lag + 1)
    diff = np.array([np.sum((current - x[lag - tau : x.shape[0] - tau]) ** 2) for tau in taus])

    cumulative = np.cumsum(diff[1:])
    cmnd = np.ones(lag + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cmnd[1:] = np.where(cumulative > 0.0, diff[1:] * taus[1:] / cumulative, 1.0)
    voicing = float(np.clip(1.0 - cmnd[tau_min : tau_max + 1].min(), 0.0, 1.0))

    below = np.flatnonzero(cmnd[tau_min : tau_max + 1] < threshold)
    if below.size == 0:
        return 0.0, voicing
    pick = tau_min + int(below[0])
    while pick + 1 <= tau_max and cmnd[pick + 1] < cmnd[pick]:
        pick += 1
    a, b, c = cmnd[pick - 1], cmnd[pick], cmnd[pick + 1]
    denom = a - 2.0 * b + c
    shift = float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5)) if denom > 0.0 else 0.0
    return rate / (pick + shift), voicing


def hop_features_ref(
    x16: np.ndarray, fmin: float = 60.0, fmax: float = 500.0, yin_threshold: float = 0.15
) -> HopFeatures:
    """Reference of ``HopAnalyzer``: features of every whole hop of a 16 kHz signal."""
    x = np.asarray(x16, dtype=np.float64)
    _, tau_max = yin_lags(fmin, fmax)
    lookback = WINDOW + tau_max + 1
    padded = np.concatenate([np.zeros(lookback), x])  # the stream is zeros before its start
    n_hops = x.shape[0] // HOP
    out = HopFeatures.empty(n_hops)
    floor_db = 0.0
    since_voiced = HANGOVER_HOPS + 1
    for k in range(n_hops):
        end = lookback + (k + 1) * HOP  # index in `padded` just past the hop
        hop = padded[end - HOP : end]
        mean_square = np.mean(hop**2)
        if mean_square <= 10 ** (SILENCE_DBFS / 10):
            rms_db = SILENCE_DBFS
        else:
            rms_db = 10 * np.log10(mean_square)
        signs = padded[end - HOP - 1 : end] >= 0.0
        zcr = np.count_nonzero(signs[1:] != signs[:-1]) / HOP
        pitch, voicing = yin_ref(padded[end - lookback : end], RATE, fmin, fmax, yin_threshold)

        # Speech detector, as documented in ``audio``.
        if k == 0:
            floor_db = max(rms_db, FLOOR_MIN_DBFS)
        energetic = rms_db >= SPEECH_MIN_DBFS and rms_db >= floor_db + SPEECH_ABOVE_FLOOR_DB
        if energetic and pitch > 0.0 and voicing >= VOICING_MIN:
            since_voiced = 0
        elif since_voiced <= HANGOVER_HOPS:
            since_voiced += 1
        speech = energetic and since_voiced <= HANGOVER_HOPS
        if rms_db < floor_db:
            floor_db = max(rms_db, FLOOR_MIN_DBFS)
        else:
            floor_db = min(rms_db, floor_db + FLOOR_RISE_DB_PER_HOP)

        out.rms_dbfs[k] = rms_db
        out.zcr[k] = zcr
        out.pitch_hz[k] = pitch
        out.voicing[k] = voicing
        out.speech[k] = speech
    out.intensity_db[:] = intensity_envelope_ref(out.rms_dbfs)
    return out


def intensity_envelope_ref(rms_dbfs: np.ndarray) -> np.ndarray:
    """Reference of the intensity contour: the weighted mean square of the last six hops.

    The stream is silent before its first hop; levels are taken from the hop dBFS values.
    """
    past = np.full(ENVELOPE_HOPS - 1, 10 ** (SILENCE_DBFS / 10))
    mean_square = np.concatenate([past, 10.0 ** (np.asarray(rms_dbfs, np.float64) / 10.0)])
    contour = np.array(
        [np.dot(ENVELOPE_WEIGHTS, mean_square[k : k + ENVELOPE_HOPS]) for k in range(len(rms_dbfs))]
    )
    with np.errstate(divide="ignore"):
        return np.maximum(SILENCE_DBFS, 10 * np.log10(contour)).astype(np.float32)

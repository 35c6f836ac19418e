"""Per-audio-hop kernels: 48 kHz → 16 kHz resampling, then features of every 10 ms hop.

The hot loops are Numba functions (nopython, nogil, cached on disk); the classes around them
keep all streaming state in NumPy arrays, so a stream may be fed in chunks of any size and
gives the same result as one call on the whole signal. ``warm_up()`` compiles (or loads the
cached compilation of) every kernel, and belongs to server start.

``audio_reference`` holds the slow NumPy references the tests compare against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

INPUT_RATE = 48000  # Hz, what WebRTC (Opus) decodes to
RATE = 16000  # Hz, the analysis rate: speech pitch and energy need nothing above 8 kHz
HOP = 160  # samples at RATE: 10 ms
DECIMATION = INPUT_RATE // RATE

# -- anti-aliasing filter ---------------------------------------------------------------------
# Kaiser-windowed sinc, designed once at import. Everything above RATE / 2 = 8 kHz aliases into
# the analysis band, so the stopband starts at 8 kHz with >= 70 dB attenuation (measured 71.5);
# the passband is flat (< 0.01 dB) to 6 kHz, well past what pitch and level measurement use.
# 144 taps = 48 per polyphase branch; of the lengths tried (multiples of 24), 120 taps could
# not reach 65 dB with the transition band kept inside 6.4-8 kHz.
FILTER_TAPS = 144
FILTER_CUTOFF_HZ = 7200.0  # -6 dB point, halfway through the 6.4-8 kHz transition band
FILTER_KAISER_BETA = 7.0


def design_lowpass(
    taps: int = FILTER_TAPS,
    cutoff_hz: float = FILTER_CUTOFF_HZ,
    beta: float = FILTER_KAISER_BETA,
    rate: int = INPUT_RATE,
) -> np.ndarray:
    """Kaiser-windowed-sinc low-pass FIR taps (float64), normalised to unit gain at 0 Hz."""
    n = np.arange(taps) - (taps - 1) / 2.0
    fc = cutoff_hz / rate  # cycles per sample
    h = 2.0 * fc * np.sinc(2.0 * fc * n) * np.kaiser(taps, beta)
    result: np.ndarray = h / h.sum()
    return result


TAPS = design_lowpass()
# Polyphase branches: _POLY_TAPS[p, q] = TAPS[3q + p]; branch p only ever meets input samples
# whose index is -p modulo 3 relative to an output instant.
_POLY_TAPS = np.ascontiguousarray(TAPS.reshape(-1, DECIMATION).T)
_TILE = 1024  # outputs per tile of the filter loop: 8 KiB accumulator, stays in L1

# -- YIN pitch --------------------------------------------------------------------------------
WINDOW = 400  # samples: the 25 ms integration window, ending at each hop's end
# The difference function of a window is summed from blocks of BLOCK samples, each computed
# once when its samples arrive; a hop adds HOP // BLOCK blocks, a window sums WINDOW // BLOCK.
BLOCK = math.gcd(HOP, WINDOW)
BLOCKS_PER_HOP = HOP // BLOCK
WINDOW_BLOCKS = WINDOW // BLOCK
assert BLOCK % 4 == 0, "the difference-function loop takes samples four at a time"

# -- levels and speech detection --------------------------------------------------------------
SILENCE_DBFS = -100.0  # floor of rms_dbfs: digital silence has no finite level
_SILENCE_MEAN_SQUARE = 10.0 ** (SILENCE_DBFS / 10.0)
# The noise floor follows a quieter hop at once (a pause between words shows the background)
# but rises only 3 dB/s, so a few seconds of continuous talking cannot lift it to speech level,
# while a steady noise source that starts mid-session (a fan, a hum) is absorbed within seconds:
# a hum 30 dB over the old floor stops counting as speech after about 10 s.
FLOOR_RISE_DB_PER_S = 3.0
FLOOR_RISE_DB_PER_HOP = FLOOR_RISE_DB_PER_S * HOP / RATE
# Speech sits 10+ dB over the room background; a hop must clear that margin ...
SPEECH_ABOVE_FLOOR_DB = 10.0
# ... and an absolute minimum, so a quiet room's small fluctuations are never speech (normal
# speech at a headset or laptop mic is -40 to -15 dBFS).
SPEECH_MIN_DBFS = -55.0
# Below this the floor cannot change a decision (SPEECH_MIN_DBFS decides), so it is not
# tracked lower: after digital silence (-100) a steady noise is then caught up with in
# seconds rather than in half a minute.
FLOOR_MIN_DBFS = SPEECH_MIN_DBFS - SPEECH_ABOVE_FLOOR_DB
# Energy alone passes noise bursts (typing, a door); speech also needs voicing: a pitch found
# with a confident periodicity (1 - CMND minimum).
VOICING_MIN = 0.75
# Unvoiced consonants (s, t, f) are not periodic; they count as speech within 200 ms after
# the last voiced hop. Only after: looking ahead would delay every result by as much.
HANGOVER_HOPS = 20


def yin_lags(fmin: float, fmax: float, rate: int = RATE) -> tuple[int, int]:
    """The lag range (tau_min, tau_max) in samples that YIN searches for fmin..fmax Hz."""
    if not 0.0 < fmin < fmax:
        raise ValueError(f"need 0 < fmin < fmax, got fmin={fmin}, fmax={fmax}")
    tau_min = int(rate // fmax)
    tau_max = math.ceil(rate / fmin)
    if tau_min < 2:
        # Parabolic interpolation reads the lag below the pick, and lag 0 is meaningless.
        raise ValueError(f"fmax={fmax} Hz is too high for {rate} Hz")
    return tau_min, tau_max


@dataclass
class HopFeatures:
    """Features of consecutive 10 ms hops, one array entry per hop."""

    rms_dbfs: npt.NDArray[np.float32]  # level over the hop, dBFS (full-scale square = 0), >= -100
    zcr: npt.NDArray[np.float32]  # zero crossings per sample over the hop, 0-1
    pitch_hz: npt.NDArray[np.float32]  # YIN fundamental in Hz, 0.0 when unvoiced
    voicing: npt.NDArray[np.float32]  # periodicity confidence 0-1 (1 - CMND minimum)
    speech: npt.NDArray[np.bool_]  # the speech detector's decision

    def __len__(self) -> int:
        return int(self.rms_dbfs.shape[0])

    @classmethod
    def empty(cls, n: int = 0) -> HopFeatures:
        """Zero-filled features for ``n`` hops, ready for a kernel to write into."""
        return cls(
            rms_dbfs=np.zeros(n, np.float32),
            zcr=np.zeros(n, np.float32),
            pitch_hz=np.zeros(n, np.float32),
            voicing=np.zeros(n, np.float32),
            speech=np.zeros(n, np.bool_),
        )

    @classmethod
    def concat(cls, parts: Sequence[HopFeatures]) -> HopFeatures:
        """Consecutive parts of one stream joined into one."""
        if not parts:
            return cls.empty()
        return cls(
            rms_dbfs=np.concatenate([p.rms_dbfs for p in parts]),
            zcr=np.concatenate([p.zcr for p in parts]),
            pitch_hz=np.concatenate([p.pitch_hz for p in parts]),
            voicing=np.concatenate([p.voicing for p in parts]),
            speech=np.concatenate([p.speech for p in parts]),
        )


# -- kernels ----------------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _decimate(
    x: np.ndarray, history: np.ndarray, poly: np.ndarray, phase: np.ndarray
) -> np.ndarray:
    """Low-pass and keep every 3rd sample of a chunk: y[m] = sum_k TAPS[k] * x[3m - k].

    ``history`` holds the stream's last len(TAPS) - 1 inputs and ``phase[0]`` the number of
    inputs so far modulo 3; both are updated. Only the kept outputs are computed, per
    polyphase branch, with contiguous inner loops. Each output sums its products in the same
    order whatever the chunking, so chunked and whole-signal results are bit-identical.
    """
    n = x.shape[0]
    n_phase, q_len = poly.shape
    keep = history.shape[0]
    offset = (n_phase - phase[0]) % n_phase  # index in x of the first output instant
    m = (n - offset + n_phase - 1) // n_phase if n > offset else 0
    ext = np.empty(keep + n)
    ext[:keep] = history
    ext[keep:] = x
    out = np.empty(m, np.float32)
    acc = np.empty(_TILE)
    branch = np.empty(_TILE + q_len - 1)
    # Outputs in tiles, so the accumulator stays in L1 cache however long the chunk.
    for tile in range(0, m, _TILE):
        count = min(_TILE, m - tile)
        span = count + q_len - 1
        acc[:count] = 0.0
        for p in range(n_phase):
            # branch[s] = this branch's input for output (tile + s - q_len + 1), contiguous.
            base = offset + n_phase * tile + keep - p - n_phase * (q_len - 1)
            for s in range(span):
                branch[s] = ext[base + n_phase * s]
            for q in range(q_len):
                c = poly[p, q]
                src = branch[q_len - 1 - q : q_len - 1 - q + count]
                for t in range(count):
                    acc[t] += c * src[t]
        for t in range(count):
            out[tile + t] = acc[t]
    history[:] = ext[n:]
    phase[0] = (phase[0] + n) % n_phase
    return out


@njit(nogil=True, cache=True)
def _yin_pick(
    diff: np.ndarray, cmnd: np.ndarray, tau_min: int, tau_max: int, threshold: float
) -> tuple[float, float]:
    """(pitch in Hz or 0.0, voicing 0-1) from the difference function d(0..tau_max+1)."""
    # Cumulative mean normalised difference: d'(tau) = d(tau) * tau / sum_{1..tau} d.
    cmnd[0] = 1.0
    running = 0.0
    for tau in range(1, diff.shape[0]):
        running += diff[tau]
        cmnd[tau] = diff[tau] * tau / running if running > 0.0 else 1.0
    lowest = np.inf
    for tau in range(tau_min, tau_max + 1):
        lowest = min(lowest, cmnd[tau])
    voicing = min(max(1.0 - lowest, 0.0), 1.0)
    # Absolute threshold: the first dip below it, followed down to its local minimum. Taking
    # the first rather than the global minimum avoids octave-low errors.
    pick = -1
    tau = tau_min
    while tau <= tau_max:
        if cmnd[tau] < threshold:
            while tau + 1 <= tau_max and cmnd[tau + 1] < cmnd[tau]:
                tau += 1
            pick = tau
            break
        tau += 1
    if pick < 0:
        return 0.0, voicing
    # Parabolic interpolation through the pick and its neighbours, for sub-sample accuracy
    # (a 440 Hz period is only 36 samples at 16 kHz).
    a = cmnd[pick - 1]
    b = cmnd[pick]
    c = cmnd[pick + 1]
    denom = a - 2.0 * b + c
    shift = 0.0
    if denom > 0.0:
        shift = min(max(0.5 * (a - c) / denom, -0.5), 0.5)
    return RATE / (pick + shift), voicing


@njit(nogil=True, cache=True)
def _analyze(
    x: np.ndarray,
    buf: np.ndarray,
    ring: np.ndarray,
    istate: np.ndarray,
    fstate: np.ndarray,
    tau_min: int,
    tau_max: int,
    threshold: float,
    rms_out: np.ndarray,
    zcr_out: np.ndarray,
    pitch_out: np.ndarray,
    voicing_out: np.ndarray,
    speech_out: np.ndarray,
) -> int:
    """Features of every hop that ``x`` completes, written to the *_out arrays; returns count.

    buf[:lag] holds the lag = tau_max + 1 samples before the current hop, buf[lag:] the hop
    filling up. ring[k] is the difference function of one BLOCK of samples, the last
    WINDOW_BLOCKS blocks together make the window. istate = [hop fill, blocks done, hops since
    the last voiced hop, started]; fstate = [noise floor dBFS].
    """
    lag = tau_max + 1
    n_lag = lag + 1
    fill = istate[0]
    blocks = istate[1]
    since_voiced = istate[2]
    started = istate[3]
    floor_db = fstate[0]
    last = lag + HOP - 1
    rev = np.empty(last + 1)
    diff = np.empty(n_lag)
    cmnd = np.empty(n_lag)
    hops = 0
    for i in range(x.shape[0]):
        buf[lag + fill] = x[i]
        fill += 1
        if fill < HOP:
            continue
        fill = 0

        # Difference function of the new blocks: row[tau] = sum_j (x_j - x_{j-tau})^2. The
        # inner loop over tau is independent per element and vectorises.
        # rev[last - j + tau] = buf[j - tau]: the lagged samples read forwards.
        for k in range(last + 1):
            rev[k] = buf[last - k]
        for b in range(BLOCKS_PER_HOP):
            row = ring[blocks % WINDOW_BLOCKS]
            row[:] = 0.0
            # Four samples per pass over the lags: a quarter of the loads and stores of row.
            for j in range(lag + b * BLOCK, lag + (b + 1) * BLOCK, 4):
                x0 = buf[j]
                x1 = buf[j + 1]
                x2 = buf[j + 2]
                x3 = buf[j + 3]
                r0 = rev[last - j : last - j + n_lag]
                r1 = rev[last - j - 1 : last - j - 1 + n_lag]
                r2 = rev[last - j - 2 : last - j - 2 + n_lag]
                r3 = rev[last - j - 3 : last - j - 3 + n_lag]
                for tau in range(n_lag):
                    d0 = x0 - r0[tau]
                    d1 = x1 - r1[tau]
                    d2 = x2 - r2[tau]
                    d3 = x3 - r3[tau]
                    row[tau] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
            blocks += 1
        diff[:] = 0.0
        for k in range(WINDOW_BLOCKS):
            for tau in range(n_lag):
                diff[tau] += ring[k, tau]
        pitch, voicing = _yin_pick(diff, cmnd, tau_min, tau_max, threshold)

        # Level and zero crossings over the hop; the first crossing test uses the sample
        # before the hop, so every hop tests HOP sample pairs.
        mean_square = 0.0
        crossings = 0
        was_positive = buf[lag - 1] >= 0.0
        for j in range(lag, lag + HOP):
            v = buf[j]
            mean_square += v * v
            positive = v >= 0.0
            if positive != was_positive:
                crossings += 1
            was_positive = positive
        mean_square /= HOP
        if mean_square <= _SILENCE_MEAN_SQUARE:
            rms_db = SILENCE_DBFS
        else:
            rms_db = 10.0 * math.log10(mean_square)

        # Speech: energetic against the noise floor, and voiced now or shortly before.
        if started == 0:
            floor_db = max(rms_db, FLOOR_MIN_DBFS)  # streams start on their background
            started = 1
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

        rms_out[hops] = rms_db
        zcr_out[hops] = crossings / HOP
        pitch_out[hops] = pitch
        voicing_out[hops] = voicing
        speech_out[hops] = speech
        hops += 1
        # Slide the history: the last `lag` samples become the next hop's lookback.
        for j in range(lag):
            buf[j] = buf[j + HOP]
    istate[0] = fill
    istate[1] = blocks
    istate[2] = since_voiced
    istate[3] = started
    fstate[0] = floor_db
    return hops


# -- streaming wrappers -----------------------------------------------------------------------


def to_mono(samples: np.ndarray) -> np.ndarray:
    """int16 or float samples, (n,) or (n, channels), as float64 mono in -1..1 (int16 / 32768)."""
    arr = np.asarray(samples)
    if arr.dtype == np.int16:
        scale = 1.0 / 32768.0
    elif np.issubdtype(arr.dtype, np.floating):
        scale = 1.0
    else:
        raise TypeError(f"audio samples must be int16 or float, got {arr.dtype}")
    if arr.ndim == 1:
        mono = arr.astype(np.float64)
    elif arr.ndim == 2 and arr.shape[1] > 0:
        # Channel by channel: mean(axis=1) over 2 channels costs 6x more per 20 ms frame.
        mono = arr[:, 0].astype(np.float64)
        for channel in range(1, arr.shape[1]):
            mono += arr[:, channel]
        scale /= arr.shape[1]
    else:
        raise ValueError(f"audio samples must be (n,) or (n, channels), got {arr.shape}")
    if scale != 1.0:
        mono *= scale
    return mono


class Resampler48kTo16k:
    """Streaming anti-aliased 3:1 decimator, 48 kHz in, 16 kHz float32 mono out.

    Causal: output m is the filtered signal at input sample 3m (group delay 71.5 input
    samples, 1.5 ms). Any split of a stream into chunks gives the same output as one call.
    """

    def __init__(self) -> None:
        self._history = np.zeros(TAPS.shape[0] - 1)
        self._phase = np.zeros(1, np.int64)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample a chunk: int16 or float, (n,) or (n, channels) at 48 kHz → float32 16 kHz."""
        mono = to_mono(samples)
        if mono.shape[0] == 0:
            return np.empty(0, np.float32)
        out: np.ndarray = _decimate(mono, self._history, _POLY_TAPS, self._phase)
        return out


class HopAnalyzer:
    """Streaming per-hop features of 16 kHz audio: level, ZCR, YIN pitch, speech.

    Hop k covers samples [160k, 160k + 160). Pitch is measured over the WINDOW (25 ms)
    ending at the hop's end, with the stream taken as zeros before its start. Leftover
    samples wait for the next call, and any split of a stream gives the same results.
    """

    def __init__(
        self, fmin: float = 60.0, fmax: float = 500.0, yin_threshold: float = 0.15
    ) -> None:
        if not 0.0 < yin_threshold < 1.0:
            raise ValueError(f"yin_threshold must be in (0, 1), got {yin_threshold}")
        self.fmin = fmin
        self.fmax = fmax
        self.yin_threshold = yin_threshold
        self._tau_min, self._tau_max = yin_lags(fmin, fmax)
        lag = self._tau_max + 1
        self._buf = np.zeros(lag + HOP)
        self._ring = np.zeros((WINDOW_BLOCKS, lag + 1))
        self._istate = np.array([0, 0, HANGOVER_HOPS + 1, 0], np.int64)
        self._fstate = np.zeros(1)

    def process(self, x: np.ndarray) -> HopFeatures:
        """Features of the hops completed by ``x`` (float samples at 16 kHz, any length)."""
        samples = np.ascontiguousarray(x, dtype=np.float64)
        if samples.ndim != 1:
            raise ValueError(f"expected mono (n,) samples, got {samples.shape}")
        features = HopFeatures.empty((int(self._istate[0]) + samples.shape[0]) // HOP)
        _analyze(
            samples,
            self._buf,
            self._ring,
            self._istate,
            self._fstate,
            self._tau_min,
            self._tau_max,
            self.yin_threshold,
            features.rms_dbfs,
            features.zcr,
            features.pitch_hz,
            features.voicing,
            features.speech,
        )
        return features


def warm_up() -> None:
    """Compiles every kernel, or loads it from Numba's disk cache; call once at server start.

    Uses the production argument types, so the first session reuses these compilations.
    """
    Resampler48kTo16k().process(np.zeros(3 * HOP, np.float32))
    HopAnalyzer().process(np.zeros(2 * HOP, np.float32))

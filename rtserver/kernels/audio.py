"""Per-audio-hop kernels: 48 kHz → 16 kHz resampling, then features of every 10 ms hop.

The hot loops are Numba functions (nopython, nogil, cached on disk); the classes around them
keep all streaming state in NumPy arrays, so a stream may be fed in chunks of any size and
gives the same result as one call on the whole signal. ``warm_up()`` compiles (or loads the
cached compilation of) every kernel, and belongs to server start.

``audio_reference`` holds the slow NumPy references the tests compare against.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

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
assert _POLY_TAPS.shape[1] % 8 == 0, "_decimate takes the taps of a branch eight at a time"
_TILE = 1024  # outputs per tile of the filter loop: 8 KiB accumulator, stays in L1

# -- YIN pitch --------------------------------------------------------------------------------
WINDOW = 400  # samples: the 25 ms integration window, ending at each hop's end
# The difference function of a window is summed from blocks of BLOCK samples, each computed
# once when its samples arrive; a hop adds HOP // BLOCK blocks, a window sums WINDOW // BLOCK.
BLOCK = math.gcd(HOP, WINDOW)
BLOCKS_PER_HOP = HOP // BLOCK
WINDOW_BLOCKS = WINDOW // BLOCK
# The difference function is the kernel's hot loop: one subtract and one multiply-add per
# (sample, lag) pair, 43k pairs a hop. It runs on the samples rounded to float32, so that a
# 256-bit vector holds LANES lags; every term is a square, so float32 loses only ~1e-7 of
# the sum, never cancels. The history is kept in LANES copies, copy s shifted by s samples,
# so that every vector load of that loop starts on a vector boundary; the copies share one
# constant stride, HISTORY, so that the loop addresses all of them from one pointer.
LANES = 8
# Samples per copy: room for the default longest lag (271) and three hops. Small, so that the
# copies (25 KiB) stay in L1 cache while they are written; it caps fmin at about 26 Hz.
HISTORY = 784
assert HISTORY % (2 * LANES) == 0, "copies must start on a 512-bit boundary (see WIDE)"
assert BLOCK % LANES == 0 and HOP % LANES == 0, "blocks must start on a vector boundary"
assert WINDOW_BLOCKS == 5, "_analyze sums the window's block rows in one unrolled loop"

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
    # Smoothed intensity contour (dB re full scale), for syllable-nucleus detection.
    intensity_db: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    # Filled by the fluency stage (scoring/fluency.py), which also replaces `speech` with
    # its own decision: a syllable nucleus peaks in this hop; this hop is part of a pause.
    syllable: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, np.bool_))
    pause: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, np.bool_))

    def __post_init__(self) -> None:
        n = len(self)
        if self.syllable.shape[0] != n:
            self.syllable = np.zeros(n, np.bool_)
        if self.pause.shape[0] != n:
            self.pause = np.zeros(n, np.bool_)

    def __len__(self) -> int:
        return int(self.rms_dbfs.shape[0])

    def slice(self, start: int, stop: int) -> HopFeatures:
        """Hops [start, stop) as views of these arrays."""
        return HopFeatures(*(getattr(self, name)[start:stop] for name in _HOP_FIELDS))

    @classmethod
    def empty(cls, n: int = 0) -> HopFeatures:
        """Zero-filled features for ``n`` hops, ready for a kernel to write into."""
        return cls(
            rms_dbfs=np.zeros(n, np.float32),
            zcr=np.zeros(n, np.float32),
            pitch_hz=np.zeros(n, np.float32),
            voicing=np.zeros(n, np.float32),
            speech=np.zeros(n, np.bool_),
            intensity_db=np.zeros(n, np.float32),
            syllable=np.zeros(n, np.bool_),
            pause=np.zeros(n, np.bool_),
        )

    @classmethod
    def concat(cls, parts: Sequence[HopFeatures]) -> HopFeatures:
        """Consecutive parts of one stream joined into one."""
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in _HOP_FIELDS))


# Field names in declaration order, looked up once: slice and concat run per audio block.
_HOP_FIELDS = tuple(f.name for f in dataclasses.fields(HopFeatures))


# -- kernels ----------------------------------------------------------------------------------

# The intensity envelope of de Jong & Wempe's syllable-nucleus method is Praat's intensity
# contour for a 50 Hz pitch floor: a Gaussian-like window of about 64 ms, every 10 ms. Here it
# is the binomial (discrete Gaussian, sigma ~11 ms) weighted mean of the last six hops' mean
# squares, so it streams from the hop levels alone, with no pass over past samples. The
# contour at hop k is centred 30 ms before that hop's end (20 ms before it starts).
ENVELOPE_WEIGHTS = np.array([1.0, 5.0, 10.0, 10.0, 5.0, 1.0]) / 32.0
ENVELOPE_HOPS = ENVELOPE_WEIGHTS.shape[0]


@njit(nogil=True, cache=True)
def _intensity_envelope(rms_dbfs: np.ndarray, past: np.ndarray, out: np.ndarray) -> None:
    """out[k] = dB of the ENVELOPE_WEIGHTS-weighted mean square of hops k-5 .. k.

    ``past`` holds the mean squares of the five hops before this call (silence at the start
    of a stream) and is updated, so any split of the stream gives the same contour.
    """
    n_past = ENVELOPE_HOPS - 1
    for k in range(rms_dbfs.shape[0]):
        mean_square = 10.0 ** (rms_dbfs[k] / 10.0)
        total = ENVELOPE_WEIGHTS[n_past] * mean_square
        for i in range(n_past):
            total += ENVELOPE_WEIGHTS[i] * past[i]
        for i in range(n_past - 1):
            past[i] = past[i + 1]
        past[n_past - 1] = mean_square
        out[k] = max(SILENCE_DBFS, 10.0 * math.log10(total)) if total > 0.0 else SILENCE_DBFS


@njit(nogil=True, cache=True, fastmath={"contract"})
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
            # Eight taps per pass over the tile: an eighth of the accumulator's loads and
            # stores, and the products fuse into multiply-adds.
            for q in range(0, q_len, 8):
                top = q_len - 1 - q
                c0 = poly[p, q]
                c1 = poly[p, q + 1]
                c2 = poly[p, q + 2]
                c3 = poly[p, q + 3]
                c4 = poly[p, q + 4]
                c5 = poly[p, q + 5]
                c6 = poly[p, q + 6]
                c7 = poly[p, q + 7]
                s0 = branch[top : top + count]
                s1 = branch[top - 1 : top - 1 + count]
                s2 = branch[top - 2 : top - 2 + count]
                s3 = branch[top - 3 : top - 3 + count]
                s4 = branch[top - 4 : top - 4 + count]
                s5 = branch[top - 5 : top - 5 + count]
                s6 = branch[top - 6 : top - 6 + count]
                s7 = branch[top - 7 : top - 7 + count]
                for t in range(count):
                    a = acc[t]
                    a += c0 * s0[t]
                    a += c1 * s1[t]
                    a += c2 * s2[t]
                    a += c3 * s3[t]
                    a += c4 * s4[t]
                    a += c5 * s5[t]
                    a += c6 * s6[t]
                    a += c7 * s7[t]
                    acc[t] = a
        for t in range(count):
            out[tile + t] = acc[t]
    history[:] = ext[n:]
    phase[0] = (phase[0] + n) % n_phase
    return out


@njit(nogil=True, cache=True, error_model="numpy")
def _yin_pick(
    window: np.ndarray,
    scratch: np.ndarray,
    tau_min: int,
    tau_max: int,
    threshold: float,
) -> tuple[float, float]:
    """(pitch in Hz or 0.0, voicing 0-1) from a difference function stored lags first.

    window[keep - tau] = d(tau) for tau = 0 .. keep, keep = len(window) - 1 > tau_max + 1.
    ``scratch`` is float64 work space as long as ``window``, for the cumulative mean
    normalised difference in the same order.
    """
    keep = window.shape[0] - 1
    low = keep - tau_max - 1  # lag tau_max + 1, the longest one read
    high = keep - tau_min + 1  # lag tau_min - 1, the shortest one read
    cmnd = scratch  # cmnd[keep - tau] = d'(tau), after holding sum_{1..tau} d
    # Cumulative sums from lag 1, four lags a step: the four partial sums of a step are
    # independent, so only one add a step waits for the previous step (a plain running sum
    # would wait on every add). The sums differ from sequential ones by rounding only.
    # The loop runs up the lags, down the arrays: lags[k] = d(n_sums - k), sums[k] its sum.
    n_sums = keep - low
    lags = window[low:keep]
    sums = cmnd[low:keep]
    carry = 0.0
    k = n_sums - 1
    while k >= 3:
        d0 = np.float64(lags[k])
        d1 = np.float64(lags[k - 1])
        d2 = np.float64(lags[k - 2])
        d3 = np.float64(lags[k - 3])
        s01 = d0 + d1
        s0123 = s01 + (d2 + d3)
        sums[k] = carry + d0
        sums[k - 1] = carry + s01
        sums[k - 2] = carry + (s01 + d2)
        carry += s0123
        sums[k - 3] = carry
        k -= 4
    while k >= 0:
        carry += lags[k]
        sums[k] = carry
        k -= 1
    # Cumulative mean normalised difference: d'(tau) = d(tau) * tau / sum_{1..tau} d, with
    # no dependence between lags, so the divisions run as vectors.
    span = high + 1 - low
    d_span = window[low : high + 1]
    c_span = cmnd[low : high + 1]
    tau_low = keep - low
    for k in range(span):
        running = c_span[k]
        value = d_span[k] * (tau_low - k) / running
        c_span[k] = value if running > 0.0 else 1.0
    # Minimum over lags tau_min .. tau_max, in four independent chains, and the dip: the
    # first lag from the shortest whose value is below the absolute threshold, the last one
    # here, as the lags run down. Taking the first dip rather than the global minimum avoids
    # octave-low errors.
    inner = c_span[1 : span - 1]
    n_inner = inner.shape[0]
    m0 = m1 = m2 = m3 = np.inf
    dip = -1
    k = 0
    while k + 3 < n_inner:
        v0 = inner[k]
        v1 = inner[k + 1]
        v2 = inner[k + 2]
        v3 = inner[k + 3]
        m0 = min(m0, v0)
        m1 = min(m1, v1)
        m2 = min(m2, v2)
        m3 = min(m3, v3)
        if min(min(v0, v1), min(v2, v3)) < threshold:
            if v3 < threshold:  # the last of the four below it
                dip = k + 3
            elif v2 < threshold:
                dip = k + 2
            elif v1 < threshold:
                dip = k + 1
            else:
                dip = k
        k += 4
    while k < n_inner:
        v0 = inner[k]
        m0 = min(m0, v0)
        if v0 < threshold:
            dip = k
        k += 1
    lowest = min(min(m0, m1), min(m2, m3))
    voicing = min(max(1.0 - lowest, 0.0), 1.0)
    pick = low + 1 + dip if dip >= 0 else -1
    # The dip followed down to its local minimum.
    if pick >= 0:
        while pick - 1 > low and cmnd[pick - 1] < cmnd[pick]:
            pick -= 1
    if pick < 0:
        return 0.0, voicing
    # Parabolic interpolation through the pick and its neighbours, for sub-sample accuracy
    # (a 440 Hz period is only 36 samples at 16 kHz).
    a = cmnd[pick + 1]
    b = cmnd[pick]
    c = cmnd[pick - 1]
    denom = a - 2.0 * b + c
    shift = 0.0
    if denom > 0.0:
        shift = min(max(0.5 * (a - c) / denom, -0.5), 0.5)
    return RATE / (keep - pick + shift), voicing


WIDE = 2 * LANES  # lags per vector of the difference loop where the CPU has 512-bit ones


def _sq_diff_lags(width: int):  # type: ignore[no-untyped-def]
    """An intrinsic: row[u : u + width] += sum over s < LANES of (x_s - lagged_s)^2, with
    lagged_s = seg[u + s * HISTORY : u + s * HISTORY + width], as explicit ``width``-lane
    vectors, summed in the order of s with the products fused into the adds (contract).

    Numba's auto-vectoriser stops at 256-bit vectors on CPUs that have 512-bit ones (LLVM's
    tuning prefers 256); explicit vectors are not narrowed there, and elsewhere are split.
    """

    @intrinsic
    def sq_diff(typingctx, row, seg, u, x0, x1, x2, x3, x4, x5, x6, x7):  # type: ignore[no-untyped-def]
        wanted = (types.float32, 1, "C")  # vectors are loaded straight from the data
        for array in (row, seg):
            if not isinstance(array, types.Array):
                return None
            if (array.dtype, array.ndim, array.layout) != wanted:
                return None
        sig = types.void(row, seg, u, x0, x1, x2, x3, x4, x5, x6, x7)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            vec = ir.VectorType(ir.FloatType(), width)
            row_data = context.make_array(signature.args[0])(context, builder, args[0]).data
            seg_data = context.make_array(signature.args[1])(context, builder, args[1]).data
            at = args[2]

            def pointer(data, index):  # type: ignore[no-untyped-def]
                return builder.bitcast(builder.gep(data, [index]), vec.as_pointer())

            undefined = ir.Constant(vec, ir.Undefined)
            lane0 = ir.Constant(ir.IntType(32), 0)
            broadcast = ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width)
            acc = builder.load(pointer(row_data, at), align=4)
            for s in range(LANES):
                one = builder.insert_element(undefined, args[3 + s], lane0)
                x = builder.shuffle_vector(one, undefined, broadcast)
                offset = builder.add(at, ir.Constant(at.type, s * HISTORY))
                d = builder.fsub(x, builder.load(pointer(seg_data, offset), align=4))
                square = builder.fmul(d, d, flags=["contract"])
                acc = builder.fadd(acc, square, flags=["contract"])
            builder.store(acc, pointer(row_data, at), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return sq_diff


_sq_diff_wide = _sq_diff_lags(WIDE)
_sq_diff_narrow = _sq_diff_lags(LANES)


@njit(nogil=True, cache=True, fastmath={"contract"})
def _block_diff(h8: np.ndarray, first: int, row: np.ndarray) -> None:
    """row[u] = sum over the BLOCK samples j from ``first`` of (x_j - x_{j-tau})^2, float32.

    tau = len(row) - 1 - u: the row runs from the longest lag down to lag 0, so that the
    lagged samples are read forwards. ``first`` + 1 and len(row) are multiples of LANES, so
    every vector load below starts on a vector boundary of the copy it reads: a 512-bit one
    for the WIDE vectors, a 256-bit one for the LANES vectors before and after them.
    """
    n_lags = row.shape[0]
    row[:] = 0.0
    for j0 in range(first, first + BLOCK, LANES):
        # Read from `start`, copy k of the history holds x_{j0 + k - tau} at index u.
        start = j0 - (n_lags - 1)
        seg = h8[start : start + (LANES - 1) * HISTORY + n_lags]
        x0 = h8[j0]
        x1 = h8[j0 + 1]
        x2 = h8[j0 + 2]
        x3 = h8[j0 + 3]
        x4 = h8[j0 + 4]
        x5 = h8[j0 + 5]
        x6 = h8[j0 + 6]
        x7 = h8[j0 + 7]
        # Lags in whole 512-bit vectors where the lagged loads start on a 64-byte boundary
        # (h8 and its copies do), the rest in 256-bit ones.
        lead = -start % WIDE
        end = lead + (n_lags - lead) // WIDE * WIDE
        for u in range(0, lead, LANES):
            _sq_diff_narrow(row, seg, u, x0, x1, x2, x3, x4, x5, x6, x7)
        for u in range(lead, end, WIDE):
            _sq_diff_wide(row, seg, u, x0, x1, x2, x3, x4, x5, x6, x7)
        for u in range(end, n_lags, LANES):
            _sq_diff_narrow(row, seg, u, x0, x1, x2, x3, x4, x5, x6, x7)


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _sum_of_squares(x: np.ndarray) -> float:
    """sum(x**2), summed in whatever order vectorises."""
    total = 0.0
    for t in range(x.shape[0]):
        total += x[t] * x[t]
    return total


@njit(nogil=True, cache=True)
def _analyze(
    x: np.ndarray,
    hist: np.ndarray,
    h8: np.ndarray,
    ring: np.ndarray,
    work: np.ndarray,
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

    The stream's recent samples sit at the start of ``hist`` (float64) and of ``h8`` (LANES
    float32 copies, copy s at s * HISTORY holding hist[i + s] at index i); the current hop
    fills hist[start : start + HOP], preceded by keep = len(ring[0]) - 1 samples of lookback
    (start is 7 modulo LANES, so blocks start on vector boundaries). ring[k] for k <
    WINDOW_BLOCKS is the float32 difference function of one BLOCK of samples, lags from long
    to short: ring[k][keep - tau] = d(tau); the last WINDOW_BLOCKS blocks together make the
    window, summed into ring[WINDOW_BLOCKS]. ``work`` is float64 scratch as long as a row.
    istate = [hop fill, hop start, blocks done, hops since the last voiced hop, started];
    fstate = [noise floor dBFS].
    """
    n_lags = ring.shape[1]
    keep = n_lags - 1  # lookback: the longest lag computed
    fill = istate[0]
    start = istate[1]
    blocks = istate[2]
    since_voiced = istate[3]
    started = istate[4]
    floor_db = fstate[0]
    hops = 0
    i = 0
    while i < x.shape[0]:
        take = min(HOP - fill, x.shape[0] - i)
        dst = hist[start + fill : start + fill + take]
        dst8 = h8[start + fill : start + fill + take]  # copy 0, rounded once here
        src = x[i : i + take]
        for k in range(take):
            dst[k] = src[k]
            dst8[k] = src[k]
        fill += take
        i += take
        if fill < HOP:
            break
        fill = 0
        # The hop joins the other float32 copies that the difference loop reads.
        hop = hist[start : start + HOP]
        hop8 = h8[start : start + HOP]
        for s in range(1, LANES):
            copy = h8[s * HISTORY + start - s : s * HISTORY + start - s + HOP]
            for t in range(HOP):
                copy[t] = hop8[t]

        # Difference function of the window: its new blocks, then the sum of its blocks.
        for b in range(BLOCKS_PER_HOP):
            _block_diff(h8, start + b * BLOCK, ring[blocks % WINDOW_BLOCKS])
            blocks += 1
        window = ring[WINDOW_BLOCKS]
        r0 = ring[0]
        r1 = ring[1]
        r2 = ring[2]
        r3 = ring[3]
        r4 = ring[4]
        for u in range(n_lags):
            window[u] = ((r0[u] + r1[u]) + (r2[u] + r3[u])) + r4[u]
        pitch, voicing = _yin_pick(window, work, tau_min, tau_max, threshold)

        # Level and zero crossings over the hop; the first crossing test uses the sample
        # before the hop, so every hop tests HOP sample pairs.
        mean_square = _sum_of_squares(hop)
        crossings = 0
        before = hist[start - 1 : start - 1 + HOP]
        for t in range(HOP):
            crossings += (hop[t] >= 0.0) != (before[t] >= 0.0)
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

        start += HOP
        if start + HOP > HISTORY:
            # Out of room: the lookback moves to the front of the history and its copies.
            lookback = hist[start - keep : start]
            for t in range(keep):
                hist[t] = lookback[t]
            for s in range(LANES):
                # Copy s holds hist[i + s] at index i: its own lookback moves, float32 as it is.
                base = s * HISTORY
                copy = h8[base : base + keep - s]
                shifted = h8[base + start - keep : base + start - s]
                for t in range(keep - s):
                    copy[t] = shifted[t]
            start = keep
    istate[0] = fill
    istate[1] = start
    istate[2] = blocks
    istate[3] = since_voiced
    istate[4] = started
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


def _aligned_zeros(n: int, dtype: type, align: int = 64) -> np.ndarray:
    """A zeroed 1-D array of ``n`` items whose data starts on an ``align``-byte boundary."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.zeros(n * itemsize + align, np.uint8)
    skip = -raw.ctypes.data % align
    out: np.ndarray = raw[skip : skip + n * itemsize].view(dtype)
    return out


class HopAnalyzer:
    """Streaming per-hop features of 16 kHz audio: level, ZCR, YIN pitch, speech.

    Hop k covers samples [160k, 160k + 160). Pitch is measured over the WINDOW (25 ms)
    ending at the hop's end, with the stream taken as zeros before its start. Leftover
    samples wait for the next call, and any split of a stream gives the same results.
    The YIN difference function is computed from the samples rounded to float32 (see LANES).
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
        # Lags 0 .. tau_max + 1, in whole vectors; the longest is the lookback kept.
        n_lags = -(-(self._tau_max + 2) // LANES) * LANES
        if n_lags - 1 + HOP > HISTORY:
            longest = (HISTORY - HOP + 1) // LANES * LANES - 2
            raise ValueError(
                f"fmin={fmin} Hz is too low: lags up to {longest} samples "
                f"({RATE / longest:.1f} Hz) are kept"
            )
        self._hist = np.zeros(HISTORY)
        self._h8 = _aligned_zeros(LANES * HISTORY, np.float32)
        # The blocks' difference functions, and one more row for their sum (the window's).
        self._ring = _aligned_zeros((WINDOW_BLOCKS + 1) * n_lags, np.float32).reshape(
            WINDOW_BLOCKS + 1, n_lags
        )
        self._work = np.zeros(n_lags)
        # The first hop starts after a lookback of zeros (the stream's silent past).
        self._istate = np.array([0, n_lags - 1, 0, HANGOVER_HOPS + 1, 0], np.int64)
        self._fstate = np.zeros(1)
        self._envelope_past = np.full(ENVELOPE_HOPS - 1, _SILENCE_MEAN_SQUARE)

    def process(self, x: np.ndarray) -> HopFeatures:
        """Features of the hops completed by ``x`` (float samples at 16 kHz, any length)."""
        samples = np.asarray(x)
        # float32 (what the resampler gives) is read in place; anything else as float64.
        if samples.dtype != np.float32 or not samples.flags.c_contiguous:
            samples = np.ascontiguousarray(samples, dtype=np.float64)
        if samples.ndim != 1:
            raise ValueError(f"expected mono (n,) samples, got {samples.shape}")
        features = HopFeatures.empty((int(self._istate[0]) + samples.shape[0]) // HOP)
        _analyze(
            samples,
            self._hist,
            self._h8,
            self._ring,
            self._work,
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
        _intensity_envelope(features.rms_dbfs, self._envelope_past, features.intensity_db)
        return features


def warm_up() -> None:
    """Compiles every kernel, or loads it from Numba's disk cache; call once at server start.

    Uses the production argument types, so the first session reuses these compilations.
    """
    Resampler48kTo16k().process(np.zeros(3 * HOP, np.float32))
    HopAnalyzer().process(np.zeros(2 * HOP, np.float32))

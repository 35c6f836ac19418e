"""Our per-frame and per-hop kernels against the peers a user would otherwise reach for.

    python -m bench.kernels [--json out.json] [--quick]

Every comparison runs ours and the peer in this one process, on the same arrays: each is
called once to warm up (Numba and OpenCV caches), then the contenders are timed in turns,
interleaved (ours, peer, peer, ours, ...) so that a noisy neighbour slows both alike, and
the median of the repeats is reported. Times are CPU seconds of this process
(``time.process_time``) with OpenCV and BLAS held to one thread, so every number is a cost
on one core, and ratios are peer time / our time ("x faster").

* frame: ``crop_resize_normalize`` vs OpenCV (square + margin, integer crop, edge
  replication by ``cv2.copyMakeBorder``, ``cv2.resize`` INTER_AREA to 64x64, float32,
  (x/255 - 0.5) * 2, per box) and vs plain NumPy (the same exact-area resampling as ours,
  as two weight matrices: ``wy @ crop @ wx.T``), on a strided 640x480 Y plane.
* resampler: ``Resampler48kTo16k`` vs ``scipy.signal.resample_poly(x, 1, 3)``: speed, and
  accuracy on tones below 6 kHz. Ours is causal (output m is the filter output at input
  3m, delayed by the FIR's group delay of (taps - 1) / 2 = 71.5 input samples) and
  resample_poly is zero-phase, so resample_poly is given the same tones generated 71.5
  samples late (exact for a sum of tones, no interpolation involved).
* pitch: ``HopAnalyzer`` (YIN) vs ``librosa.yin`` with the same hop (160) and a frame of
  668 samples = our 400-sample integration window + 268 samples of lag (tau_max + 1), fed
  508 leading zeros with center=False, so that its frame k reads exactly the samples our
  hop k reads (the 668 ending at 160(k + 1)); fmin 60, fmax 500, trough threshold 0.15 as
  ours. Our time includes level, zero crossings and speech detection, which librosa does
  not compute. Gross pitch error (> 20 % off) is measured on espeak-ng speech against
  ``librosa.pyin`` (1024-sample frames, Viterbi-smoothed, centred on the middle of those
  668 samples) as the reference.
* audio path: resampler + hop analyzer fed 48 kHz stereo int16 speech as WebRTC delivers
  it (20 ms chunks) and in 100 ms batches: seconds of audio per CPU second of this thread.

librosa is a bench-only dependency; without it the librosa rows and targets are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import scipy
from scipy.io import wavfile
from scipy.signal import resample_poly

from rtserver.kernels import audio
from rtserver.kernels.audio import (
    HOP,
    INPUT_RATE,
    RATE,
    WINDOW,
    HopAnalyzer,
    Resampler48kTo16k,
    yin_lags,
)
from rtserver.kernels.frame import crop_resize_normalize

# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """How long to measure: the full run, or a smoke test."""

    repeats: int  # timed repeats per contender; the median is reported
    min_batch_s: float  # a timed repeat calls its contender enough times to last this long
    audio_s: float  # seconds of audio in the resampler, pitch and audio-path rows
    path_repeats: int  # whole-stream repeats of the audio path


FULL = BenchConfig(repeats=15, min_batch_s=0.02, audio_s=10.0, path_repeats=9)
QUICK = BenchConfig(repeats=3, min_batch_s=0.002, audio_s=2.0, path_repeats=3)

PLANE_H, PLANE_W, PLANE_STRIDE = 480, 640, 704  # Y plane, rows padded as by a decoder
CROP = 64  # emotion model input, pixels
MARGIN = 10.0  # pixels around each face box, as the live path uses
FACE_COUNTS = (1, 4, 16)
FACE_SIZES = (80.0, 200.0)  # detector box sides at 640x480, pixels
CHUNK_20MS = INPUT_RATE // 50  # what WebRTC (Opus) delivers per frame
CHUNK_100MS = INPUT_RATE // 10
FMIN, FMAX, YIN_THRESHOLD = 60.0, 500.0, 0.15  # HopAnalyzer's defaults
GROSS_ERROR = 0.2  # a pitch more than 20 % off the reference is a gross error
SPEECH = (
    ("en-us", "Thank you for having me. I have worked on real time systems for six years."),
    ("en-us+f3", "Most of that time went into audio and video pipelines that had to stay fast."),
)
TONES_HZ = (97.0, 220.0, 440.0, 1000.0, 2345.0, 3700.0, 5100.0, 5900.0)  # passband test


# -- results ----------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table. Times are CPU seconds per call; ratio is peer / ours."""

    section: str
    case: str
    ours: float
    peer: float | None
    unit: str  # "s/call", "dB", "%", "x real time"
    ratio: float | None = None
    note: str = ""


@dataclass
class Target:
    """A goal for one number: value >= target (at_least) or value <= target."""

    name: str
    value: float
    target: float
    at_least: bool = True
    unit: str = "x"

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.at_least else self.value <= self.target

    def margin(self) -> str:
        """How far past (+) or short of (-) the target, relative for ratios."""
        if self.unit == "x":
            return f"{self.value / self.target - 1.0:+.0%}"
        gap = self.value - self.target if self.at_least else self.target - self.value
        return f"{gap:+.2f} {self.unit}"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "target": self.target, "met": self.met}


@dataclass
class Report:
    results: list[Row]
    targets: list[Target]
    skipped: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "results": [asdict(row) for row in self.results],
            "targets": [target.as_json() for target in self.targets],
        }


# -- timing -----------------------------------------------------------------------------------


def time_interleaved(calls: dict[str, Callable[[], object]], cfg: BenchConfig) -> dict[str, float]:
    """Median CPU seconds per call of each function, timed in turns after a warm-up call."""
    batch: dict[str, int] = {}
    for name, fn in calls.items():
        fn()
        started = time.perf_counter()
        fn()
        once = time.perf_counter() - started
        batch[name] = max(1, math.ceil(cfg.min_batch_s / max(once, 1e-7)))
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(cfg.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            fn, n = calls[name], batch[name]
            started = time.process_time()
            for _ in range(n):
                fn()
            samples[name].append((time.process_time() - started) / n)
    return {name: statistics.median(values) for name, values in samples.items()}


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """OpenCV and (when threadpoolctl is there) BLAS on one thread, restored afterwards."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            yield
        else:
            with threadpool_limits(limits=1):
                yield
    finally:
        cv2.setNumThreads(threads)


def optional_librosa() -> ModuleType | None:
    """librosa, or None (with a message) when it is not installed."""
    try:
        return importlib.import_module("librosa")
    except ImportError:
        print(
            "librosa is not installed (.venv/bin/pip install librosa): "
            "skipping the librosa.yin rows and the YIN targets",
            file=sys.stderr,
        )
        return None


# -- frame ------------------------------------------------------------------------------------


def luma_plane(rng: np.random.Generator) -> np.ndarray:
    """A 640x480 uint8 Y plane with padded rows (stride 704): smooth shading, blobs, noise."""
    yy, xx = np.mgrid[0:PLANE_H, 0:PLANE_STRIDE].astype(np.float64)
    image = 60.0 + 80.0 * xx / PLANE_STRIDE + 40.0 * yy / PLANE_H
    for _ in range(12):
        cx, cy = rng.uniform(0, PLANE_W), rng.uniform(0, PLANE_H)
        radius, gain = rng.uniform(20, 90), rng.uniform(-60, 60)
        image += gain * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2))
    image += rng.normal(0.0, 4.0, image.shape)
    padded = np.clip(image, 0, 255).astype(np.uint8)
    plane: np.ndarray = padded[:, :PLANE_W]
    assert plane.strides[0] == PLANE_STRIDE
    return plane


def face_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 4) float32 (x, y, w, h) boxes of 80-200 px; some cross the plane's edges."""
    h = rng.uniform(*FACE_SIZES, n)
    w = h * rng.uniform(0.8, 1.0, n)
    x = rng.uniform(-0.2 * w, PLANE_W - 0.8 * w)
    y = rng.uniform(-0.2 * h, PLANE_H - 0.8 * h)
    return np.column_stack([x, y, w, h]).astype(np.float32)


def opencv_crops(plane: np.ndarray, boxes: np.ndarray, out: np.ndarray) -> None:
    """The OpenCV chain a user would write: square + margin, integer crop, replicate edges."""
    height, width = plane.shape
    for i, (x, y, w, h) in enumerate(boxes.tolist()):
        side = max(w, h) + 2.0 * MARGIN
        x0 = round(x + w / 2.0 - side / 2.0)
        y0 = round(y + h / 2.0 - side / 2.0)
        x1 = x0 + max(1, round(side))
        y1 = y0 + max(1, round(side))
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        crop = plane[cy0:cy1, cx0:cx1]  # boxes always overlap the plane here
        if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
            crop = cv2.copyMakeBorder(
                crop, cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1, cv2.BORDER_REPLICATE
            )
        small = cv2.resize(crop, (CROP, CROP), interpolation=cv2.INTER_AREA)
        out[i] = (small.astype(np.float32) / 255.0 - 0.5) * 2.0


def area_weights(
    start: float, length: float, n_out: int, n_in: int
) -> tuple[np.ndarray, np.ndarray]:
    """(n_out, k) float32 exact-overlap weights of [start, start+length), and the k source
    indices they read, clipped to the axis (that is edge replication). Shrinking only."""
    scale = length / n_out
    if scale < 1.0:
        raise ValueError("the NumPy implementation only shrinks")
    a = start + scale * np.arange(n_out)
    b = start + scale * np.arange(1, n_out + 1)
    cells = np.arange(math.floor(a[0]), math.ceil(b[-1]), dtype=np.float64)
    overlap = np.minimum(b[:, None], cells + 1.0) - np.maximum(a[:, None], cells)
    np.clip(overlap, 0.0, None, out=overlap)
    overlap /= overlap.sum(axis=1, keepdims=True)
    return overlap.astype(np.float32), np.clip(cells.astype(np.intp), 0, n_in - 1)


def numpy_crops(plane: np.ndarray, boxes: np.ndarray, out: np.ndarray) -> None:
    """Plain NumPy: the same squared box and exact-area resampling as ours, per box."""
    height, width = plane.shape
    for i, (x, y, w, h) in enumerate(boxes.tolist()):
        side = max(w, h) + 2.0 * MARGIN
        x0 = x + w / 2.0 - side / 2.0
        y0 = y + h / 2.0 - side / 2.0
        wy, rows = area_weights(y0, side, CROP, height)
        wx, cols = area_weights(x0, side, CROP, width)
        crop = plane[rows[:, None], cols].astype(np.float32)
        out[i] = (wy @ crop @ wx.T) * np.float32(2.0 / 255.0) - np.float32(1.0)


def bench_frame(cfg: BenchConfig, rng: np.random.Generator) -> tuple[list[Row], dict[int, float]]:
    """The frame rows, and ours vs OpenCV (x faster) by number of faces."""
    plane = luma_plane(rng)
    rows: list[Row] = []
    vs_opencv: dict[int, float] = {}
    for n in FACE_COUNTS:
        boxes = face_boxes(rng, n)
        outs = {name: np.empty((n, CROP, CROP), np.float32) for name in ("ours", "cv", "np")}
        times = time_interleaved(
            {
                "ours": partial(crop_resize_normalize, plane, boxes, outs["ours"], MARGIN),
                "cv": partial(opencv_crops, plane, boxes, outs["cv"]),
                "np": partial(numpy_crops, plane, boxes, outs["np"]),
            },
            cfg,
        )
        vs_opencv[n] = times["cv"] / times["ours"]
        vs_cv = float(np.abs(outs["ours"] - outs["cv"]).mean())
        vs_np = float(np.abs(outs["ours"] - outs["np"]).max())
        for peer, label, note in (
            ("cv", "OpenCV", f"mean |ours - OpenCV| {vs_cv:.4f} (integer crop, uint8 resize)"),
            ("np", "NumPy", f"max |ours - NumPy| {vs_np:.1e}"),
        ):
            rows.append(
                Row(
                    "frame",
                    f"{n} face{'s' if n > 1 else ''} vs {label}",
                    times["ours"],
                    times[peer],
                    "s/call",
                    times[peer] / times["ours"],
                    note,
                )
            )
    return rows, vs_opencv


# -- resampler --------------------------------------------------------------------------------


def tones(n: int, delay: float, phases: np.ndarray) -> np.ndarray:
    """Sum of TONES_HZ at 48 kHz, as float32, sampled ``delay`` samples late."""
    t = (np.arange(n) - delay) / INPUT_RATE
    total = np.zeros(n)
    for freq, phase in zip(TONES_HZ, phases, strict=True):
        total += 0.08 * np.sin(2.0 * np.pi * freq * t + phase)
    return total.astype(np.float32)


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    error = np.asarray(test, np.float64) - reference
    return float(10.0 * np.log10(np.sum(np.square(reference)) / np.sum(np.square(error))))


def bench_resampler(cfg: BenchConfig, rng: np.random.Generator) -> tuple[Row, Row, Row]:
    """Speed vs resample_poly, SNR against it, and SNR of both against the exact tones."""
    n = int(cfg.audio_s * INPUT_RATE)
    phases = rng.uniform(0.0, 2.0 * np.pi, len(TONES_HZ))
    x = tones(n, 0.0, phases)
    times = time_interleaved(
        {
            "ours": lambda: Resampler48kTo16k().process(x),
            "scipy": lambda: resample_poly(x, 1, 3),
        },
        cfg,
    )
    # Accuracy: resample_poly of the same tones delayed by our group delay.
    delay = (audio.TAPS.shape[0] - 1) / 2.0
    ours = Resampler48kTo16k().process(x)
    theirs = resample_poly(tones(n, delay, phases), 1, 3)
    ideal = tones(n, delay, phases)[::3].astype(np.float64)
    edge = 100  # output samples at either end: filter start-up and resample_poly's padding
    keep = slice(edge, min(ours.shape[0], theirs.shape[0]) - edge)
    return (
        Row(
            "resampler",
            f"{cfg.audio_s:g} s mono float32, speed",
            times["ours"],
            times["scipy"],
            "s/call",
            times["scipy"] / times["ours"],
            "resample_poly(x, 1, 3)",
        ),
        Row(
            "resampler",
            "SNR vs resample_poly (tones < 6 kHz)",
            snr_db(theirs[keep], ours[keep]),
            None,
            "dB",
            note="resample_poly fed the tones 71.5 samples late",
        ),
        Row(
            "resampler",
            "SNR vs the exact tones",
            snr_db(ideal[keep], ours[keep]),
            snr_db(ideal[keep], theirs[keep]),
            "dB",
            note="peer column: resample_poly",
        ),
    )


# -- pitch ------------------------------------------------------------------------------------


def espeak_speech(seconds: float) -> np.ndarray | None:
    """espeak-ng speech (two voices) at 16 kHz float32, repeated to ``seconds``, or None."""
    if shutil.which("espeak-ng") is None:
        return None
    parts: list[np.ndarray] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (voice, text) in enumerate(SPEECH):
            path = Path(tmp) / f"speech{k}.wav"
            subprocess.run(
                ["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True
            )
            rate, samples = wavfile.read(path)
            g = math.gcd(RATE, rate)
            parts.append(resample_poly(samples / 32768.0, RATE // g, rate // g))
            parts.append(np.zeros(RATE // 5))
    speech = np.concatenate(parts)
    return np.resize(speech, int(seconds * RATE)).astype(np.float32)


def gross_error_pct(pitch: np.ndarray, reference: np.ndarray, frames: np.ndarray) -> float:
    """Percentage of ``frames`` whose pitch is more than 20 % off the reference (0 Hz counts)."""
    if not frames.any():
        return math.nan
    off = np.abs(pitch[frames] - reference[frames]) > GROSS_ERROR * reference[frames]
    return float(100.0 * off.mean())


def bench_pitch(
    cfg: BenchConfig, librosa: ModuleType, speech: np.ndarray
) -> tuple[list[Row], list[Target]]:
    """Speed and gross pitch error of ours and librosa.yin on 16 kHz ``speech``."""
    _, tau_max = yin_lags(FMIN, FMAX)
    frame = WINDOW + tau_max + 1  # the samples our hop k reads: window + longest lag
    padded = np.concatenate([np.zeros(frame - HOP, np.float32), speech])

    def theirs() -> np.ndarray:
        pitch: np.ndarray = librosa.yin(
            padded,
            fmin=FMIN,
            fmax=FMAX,
            sr=RATE,
            frame_length=frame,
            hop_length=HOP,
            center=False,
            trough_threshold=YIN_THRESHOLD,
        )
        return pitch

    times = time_interleaved(
        {"ours": lambda: HopAnalyzer().process(speech), "librosa": theirs}, cfg
    )
    ours = HopAnalyzer().process(speech).pitch_hz.astype(np.float64)
    peer = theirs()
    # Reference: pYIN, its frame k centred on the middle of the samples our hop k reads,
    # (k + 1) * HOP - frame // 2; with center=True its frame k is centred on k * HOP of its
    # input, so the input starts frame // 2 - HOP samples early.
    f0, voiced, _ = librosa.pyin(
        np.concatenate([np.zeros(frame // 2 - HOP, np.float32), speech]),
        fmin=FMIN,
        fmax=FMAX,
        sr=RATE,
        frame_length=1024,
        hop_length=HOP,
    )
    n = min(ours.shape[0], peer.shape[0], f0.shape[0])
    ours, peer, f0 = ours[:n], peer[:n], np.nan_to_num(f0[:n])
    ref_voiced = voiced[:n] & (f0 > 0)
    both = ref_voiced & (ours > 0)
    strict_ours = gross_error_pct(ours, f0, ref_voiced)
    strict_peer = gross_error_pct(peer, f0, ref_voiced)
    common_ours = gross_error_pct(ours, f0, both)
    common_peer = gross_error_pct(peer, f0, both)
    section = "pitch"
    rows = [
        Row(
            section,
            f"{cfg.audio_s:g} s espeak-ng speech, speed",
            times["ours"],
            times["librosa"],
            "s/call",
            times["librosa"] / times["ours"],
            f"librosa.yin frame {frame}, hop {HOP}; ours incl. level/ZCR/speech",
        ),
        Row(
            section,
            "gross pitch error, reference-voiced",
            strict_ours,
            strict_peer,
            "%",
            note=f"{int(ref_voiced.sum())} frames; ours unvoiced counts as an error",
        ),
        Row(
            section,
            "gross pitch error, voiced in both",
            common_ours,
            common_peer,
            "%",
            note=f"{int(both.sum())} frames voiced by pyin and by ours",
        ),
        Row(
            section,
            "reference-voiced frames given a pitch",
            float(100.0 * both.sum() / max(1, ref_voiced.sum())),
            100.0,
            "%",
            note="librosa.yin always gives one",
        ),
    ]
    # Gross pitch error is defined on frames both call voiced; librosa.yin calls every frame
    # voiced, so the frames voiced by the reference and by ours are the ones both judge.
    # Counting ours' unvoiced frames as errors instead measures voicing decisions, not pitch:
    # that stricter comparison is a second target.
    targets = [
        Target("pitch: ours vs librosa.yin, speed", times["librosa"] / times["ours"], 10.0),
        Target(
            "pitch: gross pitch error (voiced in both), ours <= librosa.yin's",
            common_ours,
            common_peer,
            at_least=False,
            unit="%",
        ),
        Target(
            "pitch: gross pitch error (ours unvoiced = error), ours <= librosa.yin's",
            strict_ours,
            strict_peer,
            at_least=False,
            unit="%",
        ),
    ]
    return rows, targets


# -- the whole audio path ---------------------------------------------------------------------


def stereo_int16(speech16: np.ndarray) -> np.ndarray:
    """16 kHz mono speech as 48 kHz stereo int16, the two channels a little different."""
    x48 = resample_poly(speech16.astype(np.float64), INPUT_RATE // RATE, 1)
    peak = float(np.abs(x48).max()) or 1.0
    left = x48 / peak * 0.7
    stereo = np.column_stack([left, 0.8 * left])
    return np.round(stereo * 32767.0).astype(np.int16)


def audio_path_rate(pcm: np.ndarray, chunk: int) -> float:
    """Seconds of audio per CPU second (this thread) through resampler + hop analyzer."""
    chunks = [pcm[i : i + chunk] for i in range(0, pcm.shape[0], chunk)]
    resampler = Resampler48kTo16k()
    hops = HopAnalyzer()
    started = time.thread_time()
    for part in chunks:
        hops.process(resampler.process(part))
    spent = time.thread_time() - started
    return float(pcm.shape[0] / INPUT_RATE / spent)


def bench_audio_path(cfg: BenchConfig, speech: np.ndarray) -> list[Row]:
    """Throughput of the whole per-hop audio path on ``speech`` (16 kHz) as WebRTC PCM."""
    pcm = stereo_int16(speech)
    audio_path_rate(pcm, CHUNK_20MS)  # warm-up
    rates: dict[int, list[float]] = {CHUNK_20MS: [], CHUNK_100MS: []}
    for r in range(cfg.path_repeats):
        for chunk in (CHUNK_20MS, CHUNK_100MS) if r % 2 == 0 else (CHUNK_100MS, CHUNK_20MS):
            rates[chunk].append(audio_path_rate(pcm, chunk))
    return [
        Row(
            "audio path",
            f"{label}, 48 kHz stereo int16",
            statistics.median(rates[chunk]),
            None,
            "x real time",
            note="resampler + hop analyzer, one thread",
        )
        for chunk, label in ((CHUNK_20MS, "20 ms chunks"), (CHUNK_100MS, "100 ms batches"))
    ]


# -- the run ----------------------------------------------------------------------------------


def run(cfg: BenchConfig, librosa: ModuleType | None, seed: int = 0) -> Report:
    """Every comparison, and the targets they are judged by (librosa: see optional_librosa)."""
    rng = np.random.default_rng(seed)
    audio.warm_up()
    results: list[Row] = []
    targets: list[Target] = []
    skipped: list[str] = []
    speech = espeak_speech(cfg.audio_s)
    if speech is None:
        skipped.append("pitch rows: espeak-ng is not installed")
        # The audio path still runs, on a voiced-like tone in noise.
        t = np.arange(int(cfg.audio_s * RATE)) / RATE
        voiced = 0.2 * np.sin(2 * np.pi * 150.0 * t) + 0.01 * rng.standard_normal(t.shape[0])
        speech = voiced.astype(np.float32)
    with single_threaded():
        frame_rows, vs_opencv = bench_frame(cfg, rng)
        results += frame_rows
        targets.append(Target("frame: ours vs OpenCV chain, 4 faces, speed", vs_opencv[4], 1.5))

        speed, snr, vs_ideal = bench_resampler(cfg, rng)
        results += [speed, snr, vs_ideal]
        assert speed.ratio is not None
        targets.append(Target("resampler: ours vs resample_poly, speed", speed.ratio, 1.0))
        targets.append(
            Target("resampler: SNR vs resample_poly in the passband", snr.ours, 60.0, unit="dB")
        )

        if librosa is None:
            skipped.append("pitch rows and YIN targets: librosa is not installed")
        elif not skipped:
            pitch_rows, pitch_targets = bench_pitch(cfg, librosa, speech)
            results += pitch_rows
            targets += pitch_targets

        path_rows = bench_audio_path(cfg, speech)
        results += path_rows
        targets.append(
            Target("audio path: 20 ms chunks, one core (x real time)", path_rows[0].ours, 500.0)
        )
    return Report(results, targets, skipped)


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s/call":
        return f"{value * 1e3:.2f} ms" if value >= 1e-3 else f"{value * 1e6:.1f} us"
    if unit == "x real time":
        return f"{value:.0f}x rt"
    if unit == "dB":
        return f"{value:.1f} dB"
    return f"{value:.1f} {unit}"


def print_report(
    report: Report,
    cell: Callable[[float | None, str], str] = format_value,
    widths: tuple[int, int, int] = (11, 38, 11),
) -> None:
    """Prints the rows, the targets and what was skipped; ``cell`` formats a value with its
    unit, ``widths`` are those of the section, case and value columns."""
    section_w, case_w, value_w = widths
    header = (
        f"{'section':<{section_w}} {'case':<{case_w}} {'ours':>{value_w}} "
        f"{'peer':>{value_w}} {'ratio':>7}  note"
    )
    print(header)
    print("-" * len(header))
    for row in report.results:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        print(
            f"{row.section:<{section_w}} {row.case:<{case_w}} "
            f"{cell(row.ours, row.unit):>{value_w}} {cell(row.peer, row.unit):>{value_w}} "
            f"{ratio:>7}  {row.note}"
        )
    print()
    print("targets")
    for target in report.targets:
        sign = ">=" if target.at_least else "<="
        value = f"{target.value:.2f}{target.unit if target.unit == 'x' else ' ' + target.unit}"
        print(
            f"  {'MET   ' if target.met else 'MISSED'} {target.name}: {value} "
            f"(target {sign} {target.target:.2f}, margin {target.margin()})"
        )
    for what in report.skipped:
        print(f"  SKIPPED {what}" if not what.startswith("skipped") else f"  {what}")


def versions(librosa: ModuleType | None) -> str:
    found = librosa.__version__ if librosa is not None else "missing"
    return (
        f"numpy {np.__version__}, opencv {cv2.__version__}, scipy {scipy.__version__}, "
        f"librosa {found}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the results and targets here")
    parser.add_argument("--quick", action="store_true", help="fewer repeats: a smoke test")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    librosa = optional_librosa()
    report = run(cfg, librosa)
    print(versions(librosa))
    print_report(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report.as_json(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

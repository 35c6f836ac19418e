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

Each utterance (under 30 s: the cutter's limit is 15 s) is decoded in one greedy pass over
a short encoder window, not by faster-whisper's ``transcribe``, which pads every window to
30 s and seeks through it by the timestamps Whisper writes. Measured with ``bench.asr``'s
live path on its tuning split (12 clean clips and the long one, 24 noisy, 4 of noise
alone; 2-core x86, one thread; WER clean / noisy, decoding CPU s per s of audio):

- faster-whisper's ``transcribe`` (30 s windows): 17.6 / 68.3 %, ~0.15 s/s; a 3 s
  utterance costs as much as 30 s of speech would (the encoder is ~85 % of it);
- one pass, the utterance and 1 s of silence: 13.4 / 44.8 %, 0.043 s/s (3.5x less). With
  0.5 s of silence 12.4 / 40.9 %, with 3 s 14.2 / 37.6 %: within the set's noise; 1 s
  kept. The same short window through faster-whisper's seeking loop made it worse (15.0 /
  80.3 %): Whisper's timestamps in a short window are off, and it seeks back and
  transcribes the same words again;
- without timestamp tokens (``<|notimestamps|>``): 74 / 228 %, loops in nearly every
  clip: kept with timestamps, which are dropped (words are timed by the alignment);
- no 4-gram twice (``no_repeat_ngram_size=4``): noisy 42.4 % against 44.8, the same clean;
  3 gave the same figures but would also blot out a candidate's "I think I think I think";
- the words that faster-whisper's alignment splits off ("40" ",000") joined again: clean
  12.9 % (the normaliser read "40 ,000" as two numbers);
- tried and left out: the utterance's previous text in the prompt (14.5 / 43.3 %), beam 5
  (12.9 / 41.2 %, 15 % more time), float32 (16.3 / 39.8 %, 45 % more time);
- a short window sometimes says the utterance twice ("No matter. No matter.", "We moved
  the service to Kubernetes last year. We moved the Service to Kuber"), loses its place in
  time, or writes "Thank you." into silence. Such a pass (_doubtful) is decoded again with
  10 s of silence after the clip, then on the full 30 s window (WINDOW_PADS_S): 12.4 /
  34.2 % with the full window alone as the retry (13 % of the passes retried), and 11.9 /
  34.1 % with the 10 s step between, decode p95 0.48 s against 0.92 s (0.055 CPU s per s).

tiny.en is the limit on noisy speech: the same decoder on each whole clip, not cut, gave
white 10 dB 43 % and white 5 dB 55 %. The figures of every row are in ``bench/asr.py``'s
report.

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
# A short window's pass with a no-speech probability over this is decoded again on the full
# window: see _doubtful.
DOUBT_NO_SPEECH = NO_SPEECH_THRESHOLD / 2
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


# The encoder hears the utterance and this much silence after it, not a 30 s window: see
# the module's docstring for what it cost and saved.
WINDOW_PADS_S = (1.0, 10.0, -1.0)  # -1: the full 30 s window
# No 4 words in a row twice in one utterance: Whisper's repetition loops ("The hardest part
# was moving the data. The hardest part was ...") end there; see the module's docstring.
NO_REPEAT_NGRAM = 4
# A bound on the tokens of one utterance, from its length: 8 a second is over twice the rate
# of fast speech (~3.5 words a second); a loop that escapes NO_REPEAT_NGRAM stops here.
TOKENS_PER_S = 8
FRAMES_PER_S = 100  # Whisper's mel frames: a 10 ms hop
TIME_PRECISION_S = 0.02  # a timestamp token's step
MAX_WORDS_PER_S = 6.0  # faster than an auctioneer
FULL_WINDOW_FRAMES = 3000  # the 30 s window Whisper was trained on
MAX_INITIAL_TIMESTAMP_S = 1.0  # faster-whisper's default
PROMPT_TOKENS = 223  # Whisper's limit on a prompt: max_length // 2 - 1
# Punctuation that faster-whisper (as OpenAI's whisper) joins to the word after or before it.
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"


def _window_frames(content_frames: int, pad_s: float) -> int:
    """Frames the encoder hears: the clip and ``pad_s`` of silence after it, an even number
    (the encoder halves it), at most the full 30 s window (pad_s < 0: the full window)."""
    if pad_s < 0:
        return FULL_WINDOW_FRAMES
    frames = content_frames + round(pad_s * FRAMES_PER_S)
    return min(FULL_WINDOW_FRAMES, frames + frames % 2)


def _whole_words(alignment: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The aligned words with each piece that does not start with a space (",000" after
    "40", "'s" after "it") joined to the word before it, as it was written: its end and
    the lower of the two probabilities."""
    whole: list[dict[str, Any]] = []
    for word in alignment:
        if whole and word["word"] and not word["word"][0].isspace():
            last = whole[-1]
            last["word"] += word["word"]
            last["end"] = word["end"]
            last["probability"] = min(last["probability"], word["probability"])
        else:
            whole.append(dict(word))
    return whole


@dataclass(frozen=True)
class _Decoded:
    """One greedy pass over one window."""

    text_tokens: list[int]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    off_clock: bool  # its timestamps cannot be right: see _off_clock
    repeats: bool  # something said twice: see _repeats


def _off_clock(timed: list[tuple[float, float, int]], window_s: float) -> bool:
    """Whether Whisper's timestamps in a pass say it lost its place: a stretch timed past
    the end of the window, or more words than anyone says in the time it gives them."""
    return any(
        end > window_s + TIME_PRECISION_S or words > MAX_WORDS_PER_S * (end - start) + 2
        for start, end, words in timed
    )


def _repeats(text: str) -> bool:
    """Whether ``text`` says something twice (case and punctuation aside): three words in a
    row that come again anywhere, or two or more that come again at once ("No matter. No
    matter."). In a short window Whisper sometimes starts over once it has said the
    utterance ("I would like to learn more about the role. I would like learn more about"),
    and NO_REPEAT_NGRAM only makes it vary the words. A candidate who repeats themself is
    heard again with more silence after the clip, and kept."""
    words = ["".join(ch for ch in word if ch.isalnum()) for word in text.lower().split()]
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    if len(set(trigrams)) < len(trigrams):
        return True
    return any(
        words[i : i + n] == words[i + n : i + 2 * n]
        for n in range(2, len(words) // 2 + 1)
        for i in range(len(words) - 2 * n + 1)
    )


def _silence(decoded: _Decoded) -> bool:
    """faster-whisper's (and OpenAI's) no-speech rule: the window is silence."""
    return decoded.no_speech_prob > NO_SPEECH_THRESHOLD and decoded.avg_logprob < LOG_PROB_THRESHOLD


def _doubtful(decoded: _Decoded) -> bool:
    """A short window's pass that may be wrong: a repetition (_repeats, or text that
    compresses over COMPRESSION_RATIO_THRESHOLD), timestamps that say Whisper lost its
    place (_off_clock), or a no-speech probability over DOUBT_NO_SPEECH. Whisper's
    no-speech rule is less sure in a short window: on 1 s of digital silence it wrote
    "Thank you." with a mean log-probability of -0.94 (the rule wants under -1.0), where
    the 30 s window gave -1.11 and "."; on 0.2 s after a prompt its no-speech probability
    was 0.47, not over 0.6."""
    return (
        decoded.off_clock
        or decoded.repeats
        or decoded.compression_ratio > COMPRESSION_RATIO_THRESHOLD
        or decoded.no_speech_prob > DOUBT_NO_SPEECH
    )


class WhisperRecognizer:
    """A CTranslate2 Whisper model decoding one utterance in one pass; see
    :func:`load_recognizer`.

    faster-whisper's ``transcribe`` pads every window to 30 s and then seeks through it by
    the timestamps Whisper writes. Our utterances are under 30 s, so this decodes each in a
    single greedy pass over an encoder window of the clip and the first of WINDOW_PADS_S of
    silence (CTranslate2's encoder takes fewer than 3000 frames; a doubtful pass is tried
    with the next), keeps every text token of that pass, and times the words by
    faster-whisper's cross-attention alignment. The parts are faster-whisper's (features,
    tokenizer, prompt, suppressed tokens, alignment, punctuation); only the window and the
    single pass are ours."""

    def __init__(
        self, model_dir: Path, device: str, compute_type: str, threads: int = 1, workers: int = 1
    ) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

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
        multilingual = self._model.model.is_multilingual
        self._tokenizer = Tokenizer(
            self._model.hf_tokenizer,
            multilingual,
            task="transcribe" if multilingual else None,
            language=LANGUAGE if multilingual else None,
        )
        self._suppressed = list(get_suppressed_tokens(self._tokenizer, [-1]) or ())
        self.name = f"faster-whisper {model_dir.name} {device} {compute_type}"

    def _prompt(self, prompt: str | None) -> list[int]:
        previous = self._tokenizer.encode(" " + prompt.strip()) if prompt and prompt.strip() else []
        return list(self._model.get_prompt(self._tokenizer, previous[-PROMPT_TOKENS:]))

    def _decode(self, encoded: Any, prompt: list[int], duration_s: float) -> _Decoded:
        from faster_whisper.transcribe import get_compression_ratio

        # A bound on the tokens, from the clip's length: a repetition loop stops there.
        new_tokens = int(TOKENS_PER_S * duration_s) + 16
        result = self._model.model.generate(
            encoded,
            [prompt],
            beam_size=BEAM_SIZE,
            max_length=min(self._model.max_length, len(prompt) + new_tokens),
            no_repeat_ngram_size=NO_REPEAT_NGRAM,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppressed,
            max_initial_timestamp_index=round(MAX_INITIAL_TIMESTAMP_S / 0.02),
        )[0]
        tokens = result.sequences_ids[0]
        text_tokens = [t for t in tokens if t < self._tokenizer.eot]
        text = self._tokenizer.decode(text_tokens).strip()
        window_s = encoded.shape[1] * 2 / FRAMES_PER_S
        return _Decoded(
            text_tokens=text_tokens,
            # faster-whisper's: the sum of log-probabilities over the tokens and the end.
            avg_logprob=result.scores[0] * len(tokens) / (len(tokens) + 1),
            no_speech_prob=result.no_speech_prob,
            compression_ratio=get_compression_ratio(text) if text else 0.0,
            off_clock=_off_clock(self._timed_segments(tokens), window_s),
            repeats=_repeats(text),
        )

    def _timed_segments(self, tokens: list[int]) -> list[tuple[float, float, int]]:
        """``(start, end, words)`` of each stretch of text between two timestamp tokens."""
        begin = self._tokenizer.timestamp_begin
        timed: list[tuple[float, float, int]] = []
        start: float | None = None
        text: list[int] = []
        for token in tokens:
            if token < self._tokenizer.eot:
                text.append(token)
                continue
            if token < begin:
                continue
            t = (token - begin) * TIME_PRECISION_S
            if start is not None and text:
                timed.append((start, t, len(self._tokenizer.decode(text).split())))
            start, text = t, []
        return timed

    def _encode(self, features: npt.NDArray[np.float32], frames: int) -> Any:
        window = np.zeros((1, features.shape[0], frames), np.float32)
        used = min(frames, features.shape[-1])
        window[0, :, :used] = features[:, :used]
        return self._model.encode(window)

    def transcribe(
        self, audio: npt.NDArray[np.floating], prompt: str | None = None
    ) -> list[AsrSegment]:
        samples = np.ascontiguousarray(audio, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"audio must be mono (one axis), got shape {samples.shape}")
        if samples.size == 0:
            return []
        duration_s = samples.size / SAMPLE_RATE
        features = self._model.feature_extractor(samples)
        content_frames = min(FULL_WINDOW_FRAMES, features.shape[-1] - 1)
        tokens = self._prompt(prompt)
        for pad_s in WINDOW_PADS_S:
            # Each pass that may be wrong (_doubtful) is tried again with more silence after
            # the clip, up to the full window Whisper was trained on.
            frames = _window_frames(content_frames, pad_s)
            encoded = self._encode(features, frames)
            decoded = self._decode(encoded, tokens, duration_s)
            if frames == FULL_WINDOW_FRAMES or not _doubtful(decoded):
                break
        if _silence(decoded):
            return []
        return self._segments(decoded, encoded, content_frames, duration_s)

    def _segments(
        self, decoded: _Decoded, encoded: Any, content_frames: int, duration_s: float
    ) -> list[AsrSegment]:
        from faster_whisper.transcribe import merge_punctuations

        if not decoded.text_tokens:
            return []
        alignment = self._model.find_alignment(
            self._tokenizer, [decoded.text_tokens], encoded, content_frames
        )[0]
        merge_punctuations(alignment, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)

        def clamp(t: float) -> float:
            return min(max(float(t), 0.0), duration_s)

        words: list[AsrWord] = []
        for word in _whole_words(alignment):
            if _is_word(word["word"]):
                start = clamp(word["start"])
                words.append(
                    AsrWord(
                        w=word["word"].strip(),
                        start=start,
                        end=max(start, clamp(word["end"])),
                        p=min(max(float(word["probability"]), 0.0), 1.0),
                    )
                )
        if not words:
            return []
        text = " ".join(word.w for word in words)
        return [AsrSegment(words[0].start, words[-1].end, text, tuple(words))]

    def transcribe_batch(
        self, clips: Sequence[tuple[npt.NDArray[np.floating], str | None]]
    ) -> list[list[AsrSegment]]:
        # One clip after another. One CTranslate2 batch (the windows padded to the longest,
        # one generate call) was measured on one 2-core x86 machine, one thread, on 2-6 s
        # utterances: 2 clips 0.257 s against 0.278 looped, 4 clips 0.510 against 0.487,
        # 8 clips 0.951 against 1.189. It pays 20 % at 8 at most, and only when every
        # clip's prompt has the same number of tokens (CTranslate2 wants the start of the
        # transcript at one position in the batch), where ours carry their own questions.
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

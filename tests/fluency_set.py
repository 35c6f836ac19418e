"""The fluency evaluation set: real espeak-ng speech assembled into clips with exact truth.

Each clip is one speaker (an espeak-ng voice at one speaking rate) saying a few sentences
separated by pauses of known length, with silence before and after; some clips have white or
pink noise mixed in at a known SNR, and some are noise or mains hum alone. Because we put the
clips together ourselves, the truth is exact: where speech is (to the sample), the pauses
between it, the speech fraction of every second, and the number of syllables, counted from
espeak-ng's own phoneme output for the same voice and rate.

The tests and ``bench/fluency.py`` share this module (the bench puts tests/ on sys.path).
Everything is seeded, and the clips are cached under a directory the caller passes in.

Conventions: times in seconds, audio float32 mono at 16 kHz (``RATE``), levels in dBFS
(RMS of the samples, full scale = 1.0), SNR in dB of speech power over noise power, both
measured over the speech portions.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.io import wavfile
from scipy.signal import resample_poly

from rtserver.kernels.audio import HopAnalyzer, HopFeatures, Resampler48kTo16k

RATE = 16000  # Hz, the analysis rate of rtserver.kernels.audio
LIVE_RATE = 48000  # Hz, what the live path receives
ESPEAK_RATE = 22050  # Hz, espeak-ng's native output rate
HOP_S = 0.01  # s, one analysis hop (160 samples at RATE)

# Bump when anything below changes the generated audio or truth, so caches are rebuilt.
SET_VERSION = 1

# Gaps in speech at least this long are pauses (the fluency definition); shorter ones (stop
# closures, espeak's comma breaks at fast rates) belong to the speech around them.
MIN_PAUSE_S = 0.25
# espeak-ng ends every utterance with a decaying tail and digital zeros; a sample is voice
# when it is within this many dB of the utterance's peak. Its tails fall from about -40 dB
# re peak to -75 dB within 50 ms, so the exact value moves a segment edge by a few ms only.
VOICE_BELOW_PEAK_DB = 40.0

Condition = Literal["clean", "white", "pink", "noise", "hum"]


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice (language + variant) and the sex its variant imitates."""

    name: str
    sex: Literal["male", "female"]


# US and British English, a male and a female variant each (`espeak-ng --voices=en`; the
# variants are the files in espeak-ng-data/voices/!v).
VOICES = (
    Voice("en-us+m3", "male"),
    Voice("en-us+f3", "female"),
    Voice("en+m1", "male"),
    Voice("en+f2", "female"),
)
# espeak-ng -s: words per minute, from slow and careful to fast conversational speech.
RATES_WPM = (100, 130, 160, 190, 220)

# Our own sentences: interview-like, short to long, from one-syllable words to long Latinate
# ones, open syllables and heavy consonant clusters. Plain words only, no digits or
# abbreviations, so that espeak-ng's reading is unambiguous; no commas, whose breaks last
# about 0.25 s at slow rates and would put pauses right at MIN_PAUSE_S.
SENTENCES = (
    "I think so.",
    "Thank you for having me today.",
    "I am Anna from the hospital software team.",
    "The first thing I do in the morning is read the overnight alerts.",
    "We moved the whole platform to a new database in just three weeks.",
    "Honestly communication was the hardest part of that project.",
    "My colleagues would describe me as a curious person.",
    "She asked me why the system crashed on the busiest night of the year.",
    "Our team spent months on the documentation of the new interface.",
    "It was a small mistake with surprisingly expensive consequences.",
    "The strongest lesson was to test the strangest inputs first.",
    "Could you tell me more about the responsibilities of this position?",
    "I have a bachelor's degree in mathematics from a small university.",
    "When the deadline moved we simply cut the least valuable features.",
    "Yes.",
    "Interoperability and reliability were our organisation's priorities.",
    "He fixed the problem quietly before going home.",
    "Every Friday afternoon we reviewed what went wrong during the week.",
    "The ugly prototype answered the important question quickly.",
    "In five years I hope to be leading a team of my own.",
    "Three tired lawyers argued about the contract until midnight.",
    "Our customers mostly care about the speed of the interface.",
    "Why did you leave your previous employer?",
    "The analysis showed a seasonal pattern in the regional sales data.",
    "I enjoy hiking in the mountains with my friends.",
    "Big crisp black trucks stopped at the bridge.",
    "Unfortunately the vendor's library was poorly documented.",
    "We celebrated the launch with a quiet dinner by the river.",
    "Actually I had never used that particular framework before.",
    "The simplest explanation is usually the right one.",
    "Please tell me what else would be useful.",
    "A beautiful idea is worth nothing to people without the right tools.",
)


# -- espeak-ng ---------------------------------------------------------------------------------


def espeak_available() -> bool:
    """Whether the espeak-ng binary is on PATH."""
    return shutil.which("espeak-ng") is not None


def espeak(text: str, voice: str, wpm: int) -> tuple[npt.NDArray[np.float64], str]:
    """espeak-ng's speech for ``text`` (float64 at ESPEAK_RATE, -1..1) and its IPA phonemes.

    One call gives both, so the phonemes are those of exactly this synthesis. Phonemes are
    separated by "_", words by spaces (``--ipa --sep=_``). ``-g 0`` keeps word gaps off, so
    the only silences inside an utterance are espeak's own punctuation breaks.
    """
    fd, name = tempfile.mkstemp(suffix=".wav")
    os.close(fd)
    try:
        command = ["espeak-ng", "-v", voice, "-s", str(wpm), "-g", "0", "--ipa", "--sep=_"]
        done = subprocess.run(
            [*command, "-w", name, text],
            capture_output=True,
            text=True,
            check=True,
        )
        rate, samples = wavfile.read(name)
    finally:
        os.unlink(name)
    if rate != ESPEAK_RATE:
        raise RuntimeError(f"espeak-ng wrote {rate} Hz, expected {ESPEAK_RATE}")
    return samples.astype(np.float64) / 32768.0, done.stdout


@functools.lru_cache(maxsize=256)
def _espeak_once(text: str, voice: str, wpm: int) -> tuple[npt.NDArray[np.float64], str]:
    """``espeak`` memoised: a noisy clip reuses the synthesis of its clean twin."""
    wave, ipa = espeak(text, voice, wpm)
    wave.flags.writeable = False
    return wave, ipa


# IPA letters of vowels (and the r-coloured ones). A phoneme is a syllable nucleus when it
# holds one of these, or carries the syllabic mark (espeak's "n-" is n̩; its "@L" is "əl").
_IPA_VOWELS = frozenset("aæɐɑɒəɚɛɜɝeɪiɨᵻɔoɵøœʊuʉʌyɤɯ")
_SYLLABIC_MARKS = frozenset("\u0329\u030d")


def count_syllables(ipa: str) -> int:
    """Syllable nuclei in espeak-ng ``--ipa --sep=_`` output: one per vowel phoneme.

    espeak-ng writes a diphthong or triphthong as one phoneme ("aɪ", "aɪə"), so it counts
    once; syllabic consonants ("n̩", "əl") count; stress and length marks are ignored.
    """
    count = 0
    for word in ipa.split():
        for phoneme in word.split("_"):
            if any(c in _IPA_VOWELS or c in _SYLLABIC_MARKS for c in phoneme):
                count += 1
    return count


def voice_spans(
    x: npt.NDArray[np.float64],
    rate: int,
    below_peak_db: float = VOICE_BELOW_PEAK_DB,
    min_gap_s: float = MIN_PAUSE_S,
) -> list[tuple[int, int]]:
    """[start, end) sample spans where ``x`` has voice, gaps shorter than min_gap_s merged.

    A sample is voice when |x| is within ``below_peak_db`` dB of the peak; the first and
    last such samples bound the speech, and any run without voice of ``min_gap_s`` or more
    splits it.
    """
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return []
    loud = np.flatnonzero(np.abs(x) >= peak * 10.0 ** (-below_peak_db / 20.0))
    breaks = np.flatnonzero(np.diff(loud) >= round(min_gap_s * rate))
    starts = np.concatenate([[loud[0]], loud[breaks + 1]])
    ends = np.concatenate([loud[breaks] + 1, [loud[-1] + 1]])
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


# -- noise -------------------------------------------------------------------------------------


def coloured_noise(kind: str, n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """``n`` samples of unit-RMS Gaussian noise: "white", "pink" (1/f) or "brown" (1/f^2)."""
    if kind not in ("white", "pink", "brown"):
        raise ValueError(f"unknown noise colour {kind!r}")
    white = rng.standard_normal(n)
    if kind == "white":
        shaped = white
    else:
        spectrum = np.fft.rfft(white)
        f = np.fft.rfftfreq(n)
        f[0] = f[1]  # no infinite DC gain; the mean is removed below anyway
        spectrum /= np.sqrt(f) if kind == "pink" else f
        shaped = np.fft.irfft(spectrum, n)
    shaped = shaped - shaped.mean()
    result: npt.NDArray[np.float64] = shaped / np.sqrt(np.mean(shaped**2))
    return result


def hum(mains_hz: float, n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """``n`` samples of unit-RMS mains hum: the fundamental and harmonics 2-5, random phases.

    Amplitudes fall as 1, 0.5, 0.35, 0.2, 0.15: a transformer's buzz, rich enough that
    harmonics land in the 60-500 Hz pitch range even when 50 Hz itself is below it.
    """
    t = np.arange(n) / RATE
    amplitudes = (1.0, 0.5, 0.35, 0.2, 0.15)
    wave = sum(
        a * np.sin(2 * np.pi * mains_hz * (h + 1) * t + rng.uniform(0, 2 * np.pi))
        for h, a in enumerate(amplitudes)
    )
    out: npt.NDArray[np.float64] = np.asarray(wave) / np.sqrt(np.mean(np.asarray(wave) ** 2))
    return out


def _noise(kind: str, n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """``n`` samples of unit-RMS noise of a ClipSpec's kind: white, pink, brown, hum50/60."""
    if kind in ("white", "pink", "brown"):
        return coloured_noise(kind, n, rng)
    if kind in ("hum50", "hum60"):
        return hum(float(kind[3:]), n, rng)
    raise ValueError(f"unknown noise {kind!r}")


# -- clip specifications -----------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSpec:
    """How to build one clip; everything random about it was drawn into these fields."""

    name: str
    condition: Condition
    voice: str = ""  # espeak-ng voice, "" for clips without speech
    sex: str = ""
    wpm: int = 0
    sentences: tuple[str, ...] = ()
    # Silence before each sentence (the first is the leading silence, the others pauses) and
    # after the last; the last is stretched so that the clip lasts a whole number of seconds.
    gaps_s: tuple[float, ...] = ()
    speech_dbfs: float = -23.0  # RMS level over the speech portions
    noise: str = ""  # "white", "pink", "brown", "hum50", "hum60", "" for none
    snr_db: float | None = None  # speech over noise, speech clips only
    noise_dbfs: float | None = None  # noise level of clips without speech
    duration_s: float = 0.0  # clips without speech only
    seed: int = 0

    def key(self) -> str:
        """A short hash of the spec and SET_VERSION, naming its cache files."""
        blob = json.dumps({"v": SET_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# espeak-ng's pace: about 6.8 characters of text per second per word-per-second of rate
# (measured over this set: 6.2-7.5), close enough to plan clip lengths before synthesis.
_CHARS_PER_WORD = 6.8
LONGEST_CLIP_S = 15.0


def _speaking_s(sentence: str, wpm: int) -> float:
    """Estimated seconds espeak-ng takes to say ``sentence`` at ``wpm``."""
    return len(sentence) / (_CHARS_PER_WORD * wpm / 60.0)


def _draw_sentences(rng: np.random.Generator, wpm: int) -> tuple[str, ...]:
    """Two or three sentences, about 4.5-8.5 s of speech at ``wpm`` in all."""
    target_s = rng.uniform(4.5, 8.5)
    chosen: list[str] = []
    spoken_s = 0.0
    for index in rng.permutation(len(SENTENCES)):
        sentence = SENTENCES[int(index)]
        if spoken_s + _speaking_s(sentence, wpm) > 1.2 * target_s:
            continue
        chosen.append(sentence)
        spoken_s += _speaking_s(sentence, wpm)
        if (spoken_s >= 0.8 * target_s and len(chosen) >= 2) or len(chosen) == 3:
            break
    return tuple(chosen)


def _draw_gaps(rng: np.random.Generator, sentences: Sequence[str], wpm: int) -> tuple[float, ...]:
    """Leading silence 0.2-1 s, pauses 0.3-2.5 s, trailing 0.3-1 s, rounded to ms.

    Pauses are drawn shorter where long ones would take the clip past LONGEST_CLIP_S.
    """
    lead = float(rng.uniform(0.2, 1.0))
    trail = float(rng.uniform(0.3, 1.0))
    spoken_s = sum(_speaking_s(s, wpm) for s in sentences)
    # One second of margin: the trailing silence is stretched to a whole second.
    room = LONGEST_CLIP_S - 1.0 - lead - trail - spoken_s
    longest = min(2.5, max(0.3, room / max(1, len(sentences) - 1)))
    pauses = [float(rng.uniform(0.3, longest)) for _ in sentences[1:]]
    return tuple(round(g, 3) for g in (lead, *pauses, trail))


def clip_specs() -> list[ClipSpec]:
    """The whole set, 37 clips, always the same (seeded).

    20 clean clips (every voice at every rate), 12 noisy twins of clean clips (white and
    pink noise at 20, 10 and 5 dB SNR, two clips each), 3 noise-only clips (white, pink,
    brown) and 2 hum-only clips (50 and 60 Hz).
    """
    rng = np.random.default_rng(20250611)
    clean: list[ClipSpec] = []
    for i in range(len(VOICES) * len(RATES_WPM)):
        voice = VOICES[i % len(VOICES)]
        wpm = RATES_WPM[i // len(VOICES)]
        sentences = _draw_sentences(rng, wpm)
        gaps = _draw_gaps(rng, sentences, wpm)
        clean.append(
            ClipSpec(
                name=f"clean-{voice.name}-{wpm}",
                condition="clean",
                voice=voice.name,
                sex=voice.sex,
                wpm=wpm,
                sentences=sentences,
                gaps_s=gaps,
                speech_dbfs=round(float(rng.uniform(-32.0, -20.0)), 1),
                seed=int(rng.integers(1 << 31)),
            )
        )
    noisy: list[ClipSpec] = []
    # Twins of clean clips spread over voices and rates: clean index 7j + 3 mod 20 meets
    # every voice and every rate.
    conditions = [(kind, snr) for kind in ("white", "pink") for snr in (20.0, 10.0, 5.0)]
    for j in range(12):
        base = clean[(7 * j + 3) % len(clean)]
        kind, snr = conditions[j // 2]
        noisy.append(
            ClipSpec(
                **{
                    **asdict(base),
                    "name": f"{kind}{int(snr)}-{base.voice}-{base.wpm}",
                    "condition": kind,
                    "noise": kind,
                    "snr_db": snr,
                    "seed": int(rng.integers(1 << 31)),
                }
            )
        )
    silent: list[ClipSpec] = []
    for kind in ("white", "pink", "brown"):
        silent.append(
            ClipSpec(
                name=f"noise-{kind}",
                condition="noise",
                noise=kind,
                noise_dbfs=round(float(rng.uniform(-45.0, -30.0)), 1),
                duration_s=6.0,
                seed=int(rng.integers(1 << 31)),
            )
        )
    for mains in (50, 60):
        silent.append(
            ClipSpec(
                name=f"hum-{mains}",
                condition="hum",
                noise=f"hum{mains}",
                noise_dbfs=round(float(rng.uniform(-40.0, -28.0)), 1),
                duration_s=6.0,
                seed=int(rng.integers(1 << 31)),
            )
        )
    return clean + noisy + silent


QUICK_NAMES = (
    "clean-en-us+m3-100",
    "clean-en+m1-130",
    "clean-en-us+f3-190",
    "clean-en+f2-220",
    "white10-en-us+m3-130",
    "pink5-en-us+f3-190",
    "noise-pink",
    "hum-50",
)
"""The quick subset: both sexes, slow to fast, one noisy clip per noise type, no speech."""


# -- clips -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """One generated clip and its exact truth."""

    spec: ClipSpec
    audio: npt.NDArray[np.float32]  # RATE Hz mono, -1..1
    segments: tuple[tuple[float, float], ...]  # speech spans (start_s, end_s), sorted
    syllables: int  # vowel nuclei espeak-ng said
    syllables_per_sentence: tuple[int, ...]
    phonemes: tuple[str, ...]  # espeak-ng's IPA of each sentence, as counted

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def duration_s(self) -> float:
        return self.audio.shape[0] / RATE

    @property
    def speech_span_s(self) -> float:
        """Seconds from the start of the first speech to the end of the last (0 without)."""
        return self.segments[-1][1] - self.segments[0][0] if self.segments else 0.0

    @property
    def speech_rate(self) -> float:
        """Syllables per second of speech span (0 without speech)."""
        span = self.speech_span_s
        return self.syllables / span if span > 0 else 0.0

    @property
    def pauses(self) -> tuple[tuple[float, float], ...]:
        """Silent spans (start_s, end_s) between speech, all >= MIN_PAUSE_S by construction."""
        return tuple((a[1], b[0]) for a, b in zip(self.segments, self.segments[1:], strict=False))

    def speech_hops(self, n_hops: int | None = None) -> npt.NDArray[np.bool_]:
        """Per 10 ms hop (hop k = [k, k+1) * HOP_S): whether its centre lies in speech."""
        n = int(self.audio.shape[0] // round(HOP_S * RATE)) if n_hops is None else n_hops
        centres = (np.arange(n) + 0.5) * HOP_S
        mask = np.zeros(n, np.bool_)
        for start, end in self.segments:
            mask |= (centres >= start) & (centres < end)
        return mask

    def speech_fraction_per_second(self) -> npt.NDArray[np.float64]:
        """Fraction (0-1) of each whole second [s, s+1) covered by speech."""
        seconds = int(self.duration_s)
        out = np.zeros(seconds)
        for s in range(seconds):
            out[s] = sum(max(0.0, min(s + 1.0, b) - max(float(s), a)) for a, b in self.segments)
        return out

    def audio_48k(self) -> npt.NDArray[np.float32]:
        """The clip at LIVE_RATE for the live path (band-limited 3x interpolation)."""
        out: npt.NDArray[np.float32] = resample_poly(self.audio, 3, 1).astype(np.float32)
        return out


def _build(spec: ClipSpec) -> tuple[npt.NDArray[np.float32], dict[str, object]]:
    """Synthesise and assemble one clip: its 16 kHz audio and its truth as JSON-able data."""
    rng = np.random.default_rng(spec.seed)
    if spec.noise_dbfs is not None:
        audio = _noise(spec.noise, round(spec.duration_s * RATE), rng)
        audio *= 10.0 ** (spec.noise_dbfs / 20.0)
        truth: dict[str, object] = {"segments": [], "syllables": 0, "per_sentence": []}
        return audio.astype(np.float32), truth

    with ThreadPoolExecutor(max_workers=4) as pool:
        spoken = list(pool.map(lambda s: _espeak_once(s, spec.voice, spec.wpm), spec.sentences))
    pieces: list[npt.NDArray[np.float64]] = []
    segments: list[tuple[int, int]] = []
    cursor = 0
    for (wave22, _), gap in zip(spoken, spec.gaps_s, strict=False):
        spans = voice_spans(wave22, ESPEAK_RATE)
        if not spans:
            raise RuntimeError(f"espeak-ng said nothing audible in {spec.name}")
        # Exactly 320/441 of the rate; the polyphase filter is zero-phase, so sample times
        # map by that ratio. Trim espeak's own silence so the sentence starts with its voice.
        first, last = spans[0][0], spans[-1][1]
        wave16 = resample_poly(wave22[first:last], 320, 441)
        cursor += round(gap * RATE)
        pieces.append(np.zeros(round(gap * RATE)))
        for a, b in spans:
            start = cursor + round((a - first) * RATE / ESPEAK_RATE)
            segments.append((start, cursor + round((b - first) * RATE / ESPEAK_RATE)))
        pieces.append(wave16)
        cursor += wave16.shape[0]
    # Trailing silence, stretched to a whole number of seconds.
    total = int(np.ceil((cursor + round(spec.gaps_s[-1] * RATE)) / RATE)) * RATE
    pieces.append(np.zeros(total - cursor))
    speech = np.concatenate(pieces)

    in_speech = np.zeros(total, np.bool_)
    for a, b in segments:
        in_speech[a:b] = True
    speech_power = float(np.mean(speech[in_speech] ** 2))
    speech *= 10.0 ** (spec.speech_dbfs / 20.0) / np.sqrt(speech_power)
    audio = speech
    if spec.snr_db is not None:
        noise = _noise(spec.noise, total, rng)
        # Scaled over the speech portions, where the SNR is defined: pink noise's slow
        # swings would otherwise move it by half a dB.
        noise /= np.sqrt(np.mean(noise[in_speech] ** 2))
        audio = speech + noise * 10.0 ** ((spec.speech_dbfs - spec.snr_db) / 20.0)
    per_sentence = [count_syllables(ipa) for _, ipa in spoken]
    truth = {
        "segments": [(a / RATE, b / RATE) for a, b in segments],
        "syllables": sum(per_sentence),
        "per_sentence": per_sentence,
        "phonemes": [ipa.strip() for _, ipa in spoken],
    }
    return audio.astype(np.float32), truth


def _load_or_build(spec: ClipSpec, cache_dir: Path) -> Clip:
    """The clip of ``spec``, from ``cache_dir`` when it was built before."""
    stem = cache_dir / f"{spec.name}-{spec.key()}"
    audio_path, truth_path = stem.with_suffix(".npy"), stem.with_suffix(".json")
    if audio_path.is_file() and truth_path.is_file():
        audio = np.load(audio_path)
        truth = json.loads(truth_path.read_text())
    else:
        audio, truth = _build(spec)
        # Written under temporary names and renamed, so a crash never leaves a clip that
        # looks cached but is cut short.
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".npy")
        with os.fdopen(fd, "wb") as f:
            np.save(f, audio)
        os.replace(tmp, audio_path)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(truth, f, indent=1)
        os.replace(tmp, truth_path)
    return Clip(
        spec=spec,
        audio=audio,
        segments=tuple((float(a), float(b)) for a, b in truth["segments"]),
        syllables=int(truth["syllables"]),
        syllables_per_sentence=tuple(int(n) for n in truth["per_sentence"]),
        phonemes=tuple(str(p) for p in truth.get("phonemes", ())),
    )


def load_set(cache_dir: Path, quick: bool = False) -> list[Clip]:
    """The evaluation set (or its QUICK_NAMES subset), built once and cached in cache_dir."""
    specs = clip_specs()
    if quick:
        specs = [s for s in specs if s.name in QUICK_NAMES]
    cache_dir.mkdir(parents=True, exist_ok=True)
    # espeak-ng runs in subprocesses, so threads overlap it with the NumPy work.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(lambda s: _load_or_build(s, cache_dir), specs))


# -- features ----------------------------------------------------------------------------------


def hop_features(clip: Clip, live: bool = False) -> HopFeatures:
    """The clip's per-hop features from the real analysis path.

    ``live``: the 48 kHz version through Resampler48kTo16k, as the server receives it;
    otherwise the 16 kHz audio straight into HopAnalyzer.
    """
    if live:
        return HopAnalyzer().process(Resampler48kTo16k().process(clip.audio_48k()))
    return HopAnalyzer().process(clip.audio)


def hangover(mask: npt.ArrayLike, hops: int = 20) -> npt.NDArray[np.bool_]:
    """A per-hop speech mask held on for ``hops`` hops after each speech hop (20 = 200 ms)."""
    held = np.asarray(mask, np.bool_).copy()
    source = held.copy()
    for shift in range(1, hops + 1):
        held[shift:] |= source[:-shift]
    return held


# -- accuracy ----------------------------------------------------------------------------------


def mape(estimates: Sequence[float], truths: Sequence[float]) -> float:
    """Mean absolute percentage error (%) over the pairs whose truth is non-zero."""
    pairs = [(e, t) for e, t in zip(estimates, truths, strict=True) if t != 0]
    if not pairs:
        return 0.0
    return 100.0 * float(np.mean([abs(e - t) / abs(t) for e, t in pairs]))


def mae(estimates: Sequence[float], truths: Sequence[float]) -> float:
    """Mean absolute error, in the units of the inputs."""
    if len(truths) == 0:
        return 0.0
    return float(np.mean(np.abs(np.subtract(estimates, truths, dtype=np.float64))))


def span_of_hops(mask: npt.ArrayLike) -> float:
    """Seconds from the first speech hop's start to the last one's end (0 without speech)."""
    hops = np.flatnonzero(np.asarray(mask, np.bool_))
    return float((hops[-1] + 1 - hops[0]) * HOP_S) if hops.size else 0.0


def pauses_of_hops(mask: npt.ArrayLike, min_pause_s: float = MIN_PAUSE_S) -> int:
    """Pauses in a per-hop speech mask: non-speech runs >= min_pause_s between speech."""
    hops = np.flatnonzero(np.asarray(mask, np.bool_))
    if hops.size == 0:
        return 0
    gaps = np.diff(hops) - 1  # non-speech hops between consecutive speech hops
    return int(np.count_nonzero(gaps * HOP_S >= min_pause_s - 1e-9))


def fraction_per_second_of_hops(mask: npt.ArrayLike, seconds: int) -> npt.NDArray[np.float64]:
    """Speech fraction (0-1) of each whole second from a per-hop speech mask."""
    per_second = round(1.0 / HOP_S)
    padded = np.zeros(seconds * per_second, np.bool_)
    hops = np.asarray(mask, np.bool_)[: padded.shape[0]]
    padded[: hops.shape[0]] = hops
    out: npt.NDArray[np.float64] = padded.reshape(seconds, per_second).mean(axis=1)
    return out


@dataclass(frozen=True)
class Accuracy:
    """Fluency accuracy over a group of clips."""

    clips: int
    syllable_mape: float  # %, over clips with speech
    rate_mape: float  # %, speech rate = syllables / speech span
    false_syllables: int  # nuclei found in clips without speech
    syllable_bias: float  # %, mean signed error of the count (negative: too few)


def evaluate(
    clips: Sequence[Clip], counts: Sequence[int], spans_s: Sequence[float] | None = None
) -> Accuracy:
    """Accuracy of estimated syllable counts (and speech spans, s; default: the truth's)."""
    spans = [c.speech_span_s for c in clips] if spans_s is None else list(spans_s)
    speaking = [i for i, c in enumerate(clips) if c.syllables > 0]
    rates = [counts[i] / spans[i] if spans[i] > 0 else 0.0 for i in speaking]
    bias = [100.0 * (counts[i] - clips[i].syllables) / clips[i].syllables for i in speaking]
    return Accuracy(
        clips=len(clips),
        syllable_mape=mape([counts[i] for i in speaking], [clips[i].syllables for i in speaking]),
        rate_mape=mape(rates, [clips[i].speech_rate for i in speaking]),
        false_syllables=sum(counts[i] for i, c in enumerate(clips) if c.syllables == 0),
        syllable_bias=float(np.mean(bias)) if bias else 0.0,
    )


def groups(clips: Iterable[Clip]) -> dict[str, list[int]]:
    """Indices of the clips in each reported condition (a clip is in several groups)."""
    out: dict[str, list[int]] = {}
    for i, clip in enumerate(clips):
        spec = clip.spec
        keys = ["all"]
        if spec.condition == "clean":
            # Rate bands of RATES_WPM: 100-130, 160, 190-220 wpm.
            band = "slow" if spec.wpm <= 130 else "medium" if spec.wpm <= 160 else "fast"
            keys += ["clean", f"clean {band}", f"clean {spec.sex}"]
        elif spec.snr_db is not None:
            keys += ["noisy", f"{spec.noise} noise", f"{spec.noise} {spec.snr_db:g} dB"]
        else:
            keys += ["no speech"]
        for key in keys:
            out.setdefault(key, []).append(i)
    return out

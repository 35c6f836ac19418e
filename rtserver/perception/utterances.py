"""Utterances for speech-to-text, cut from one stream by the speech gate's final decisions.

An utterance runs from the first speech hop after a pause to the last speech hop before the
next pause of PAUSE_S or more: a breath between sentences, where no word is cut. Speech that
goes on for MAX_UTTERANCE_S without such a pause is cut at the quietest hop of the last
CUT_WINDOW_S before the limit (the gap between two words, most likely), and the next
utterance starts there.

Each utterance carries CONTEXT_S of audio on either side of the span it owns, so the
recogniser hears a word that straddles a cut whole. Which utterance a word belongs to is
then decided by its midpoint (:meth:`Utterance.owns`): a straddling word is transcribed in
both utterances and kept in exactly one, so no word is lost or doubled.

Times are media times (s) of the session's clock: the caller gives each batch of hops the
time of its first hop, so an utterance's times stay right across the stream's re-anchoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rtserver.kernels.audio import HOP, RATE, HopFeatures

HOP_S = HOP / RATE
PAUSE_S = 0.5  # a silence this long ends an utterance
MAX_UTTERANCE_S = 15.0  # continuous speech is cut once an utterance reaches this length
# ... at the quietest hop of the last this-many seconds before the limit. The cut waits for
# the limit, so this is also how late a cut utterance can be given: 1 s holds a gap between
# two words in fluent speech (several a second) and keeps a cut's lag near a pause's.
CUT_WINDOW_S = 1.0
# Audio kept on either side of an utterance's own span, for the recogniser: half a pause at
# most, so the context of two utterances either side of a pause never overlaps.
CONTEXT_S = PAUSE_S / 2
MIN_SPEECH_S = 0.1  # an utterance with less speech than this is a click, not a word

PAUSE_HOPS = round(PAUSE_S / HOP_S)
MAX_HOPS = round(MAX_UTTERANCE_S / HOP_S)
CUT_WINDOW_HOPS = round(CUT_WINDOW_S / HOP_S)
CONTEXT_HOPS = round(CONTEXT_S / HOP_S)
MIN_SPEECH_HOPS = round(MIN_SPEECH_S / HOP_S)


@dataclass(frozen=True)
class Utterance:
    """One utterance: the span it owns, and its audio with context on either side."""

    start_s: float  # media time (s) of the first hop of the span it owns
    end_s: float  # media time (s) of the end of its last hop
    audio: npt.NDArray[np.float32]  # 16 kHz mono, from audio_start_s, context included
    audio_start_s: float  # media time (s) of audio[0]
    cut_before: bool  # its start is a cut in continuous speech, not a pause
    cut_after: bool  # its end is a cut in continuous speech, not a pause

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def owns(self, word_start_s: float, word_end_s: float) -> bool:
        """Whether a word the recogniser found (media times) belongs to this utterance: its
        midpoint lies in the owned span. On a side that ends at a pause the span is open:
        the word was heard in this utterance's context, which no other utterance's reaches."""
        mid = (word_start_s + word_end_s) / 2.0
        after_start = mid >= self.start_s or not self.cut_before
        before_end = mid < self.end_s or not self.cut_after
        return after_start and before_end


class UtteranceCutter:
    """Cuts one stream's final hops into utterances, as they arrive.

    ``add_audio`` takes the stream's 16 kHz samples as they come (hop k is samples
    [k * HOP, (k + 1) * HOP)); ``push`` takes the next final hops (the fluency stream's
    output, some hops behind the audio: ``speech`` is the gate's decision) and returns the
    utterances they complete.
    Memory is bounded: samples are kept from CONTEXT_S before the utterance in progress (or
    before the current silence) on: at most MAX_UTTERANCE_S plus a little, and the audio
    not yet decided (the gate's lookahead).
    """

    def __init__(self) -> None:
        self._samples = np.zeros(0, np.float32)  # kept audio, from hop self._base on
        self._levels = np.zeros(0, np.float32)  # rms dBFS of each kept, decided hop
        self._times = np.zeros(0, np.float64)  # media time (s) of each kept, decided hop
        self._base = 0  # stream hop index of self._samples[0]
        self._next_hop = 0  # stream hop index of the next hop pushed
        self._start: int | None = None  # first hop of the utterance in progress
        self._last_speech = -1  # last speech hop of the utterance in progress
        self._speech_hops = 0  # speech hops in the utterance in progress
        self._cut_before = False  # the utterance in progress began at a cut

    def add_audio(self, samples: np.ndarray) -> None:
        """The stream's next 16 kHz samples."""
        self._samples = np.concatenate([self._samples, np.asarray(samples, np.float32)])

    def push(self, hops: HopFeatures, start_time: float) -> list[Utterance]:
        """Utterances completed by the next final ``hops``, the first of which starts at
        media time ``start_time`` (s)."""
        self._levels = np.concatenate([self._levels, hops.rms_dbfs.astype(np.float32)])
        times = start_time + np.arange(len(hops), dtype=np.float64) * HOP_S
        self._times = np.concatenate([self._times, times])
        done: list[Utterance] = []
        for speech in hops.speech.tolist():
            hop = self._next_hop
            self._next_hop += 1
            if speech:
                if self._start is None:
                    self._start, self._cut_before, self._speech_hops = hop, False, 0
                self._last_speech = hop
                self._speech_hops += 1
            elif self._start is not None and hop - self._last_speech >= PAUSE_HOPS:
                done += self._close(self._last_speech + 1, cut=False)
            if self._start is not None and self._next_hop - self._start >= MAX_HOPS:
                done += self._cut()
        self._trim()
        return done

    def flush(self) -> list[Utterance]:
        """The utterance in progress at the end of the stream, if any."""
        if self._start is None:
            return []
        return self._close(self._last_speech + 1, cut=False)

    def _cut(self) -> list[Utterance]:
        """Ends the utterance in progress at the quietest recent hop; the next one begins
        there, in the middle of the speech."""
        assert self._start is not None
        lo = max(self._start + 1, self._next_hop - CUT_WINDOW_HOPS)
        window = self._levels[lo - self._base : self._next_hop - self._base]
        at = lo + int(np.argmin(window))
        done = self._close(at, cut=True)
        self._start, self._cut_before = at, True
        self._last_speech = max(self._last_speech, at)
        self._speech_hops = 1  # the speech goes on across the cut
        return done

    def _close(self, end_hop: int, cut: bool) -> list[Utterance]:
        """The utterance in progress, owning hops [start, end_hop)."""
        assert self._start is not None
        start, speech_hops, cut_before = self._start, self._speech_hops, self._cut_before
        self._start, self._speech_hops = None, 0
        if speech_hops < MIN_SPEECH_HOPS and not (cut or cut_before):
            return []
        first = max(self._base, start - CONTEXT_HOPS)
        last = min(self._next_hop, end_hop + CONTEXT_HOPS)
        audio = self._samples[(first - self._base) * HOP : (last - self._base) * HOP]
        if len(audio) < (last - first) * HOP:  # the stream ended inside a hop
            audio = np.pad(audio, (0, (last - first) * HOP - len(audio)))
        return [
            Utterance(
                start_s=self._time(start),
                end_s=self._time(end_hop - 1) + HOP_S,
                audio=audio.copy(),
                audio_start_s=self._time(first),
                cut_before=cut_before,
                cut_after=cut,
            )
        ]

    def _time(self, hop: int) -> float:
        return float(self._times[hop - self._base])

    def _trim(self) -> None:
        """Drops audio no utterance can need any more: before CONTEXT_S ahead of the
        utterance in progress, or of the latest hop while there is none."""
        anchor = self._start if self._start is not None else self._next_hop
        keep_from = max(self._base, anchor - CONTEXT_HOPS)
        drop = keep_from - self._base
        if drop > 0:
            self._samples = self._samples[drop * HOP :]
            self._levels = self._levels[drop:]
            self._times = self._times[drop:]
            self._base = keep_from

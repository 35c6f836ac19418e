"""Per-second aggregation: frame and hop results in, one summary per second index out.

A second ``t`` covers media time [t, t+1). It is ready once every live track's analysis has
passed t+1, or, whatever is missing, once the wall clock is ``max_wait_s`` past its end:
a stalled track delays a signal by at most that much and never blocks it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtserver.kernels.audio import HOP, RATE, SILENCE_DBFS, HopFeatures
from rtserver.messages import AudioSecond, VideoSecond
from rtserver.perception import emotion
from rtserver.scoring.fluency import MIN_PAUSE_HOPS, FluencySecond, FluencyWindow

HOP_S = HOP / RATE  # 10 ms


@dataclass
class _Bucket:
    frames: int = 0
    analysed: int = 0
    faces: int = 0
    box: tuple[int, int, int, int] | None = None
    exposures: list[tuple[float, float]] = field(default_factory=list)
    emotions: list[np.ndarray] = field(default_factory=list)
    crops_dropped: int = 0
    hops: int = 0
    speech_hops: int = 0
    power_sum: float = 0.0
    pitches: list[float] = field(default_factory=list)
    speech_pitches: list[float] = field(default_factory=list)
    syllables: int = 0
    pause_hops: int = 0
    pause_starts: int = 0
    longest_pause_hops: int = 0


@dataclass(frozen=True)
class FaceResult:
    """What the video path learned from one analysed frame."""

    box: tuple[int, int, int, int] | None  # the largest face (x, y, w, h), or None
    exposure: tuple[float, float] | None = None  # its (brightness, contrast), 0-1
    emotion: np.ndarray | None = None  # its (7,) emotion probabilities, label order
    crop_dropped: bool = False  # the batcher dropped this face's crop under overload


@dataclass(frozen=True)
class SecondSummary:
    """One second, summarised: the parts of its signal message."""

    video: VideoSecond
    audio: AudioSecond
    emotion: dict[str, Any] | None
    fluency: dict[str, Any] | None = None


class TrackProgress:
    """How far a track's analysis has got on the session timeline (seconds).

    ``on_second`` is called whenever ``done_until`` passes a whole second, so that a
    publisher can look for ready seconds at once instead of at its next tick.
    """

    def __init__(self, on_second: Callable[[], None] | None = None) -> None:
        self.active = False
        self.received_until = 0.0  # media has arrived up to here
        self.ended = False
        self._done_until = 0.0  # analysis is complete up to here
        self._on_second = on_second

    @property
    def done_until(self) -> float:
        return self._done_until

    @done_until.setter
    def done_until(self, value: float) -> None:
        passed = math.floor(value) > math.floor(self._done_until)
        self._done_until = value
        if passed and self._on_second is not None:
            self._on_second()


class SecondAggregator:
    """Collects results per second and says which seconds may be published.

    ``on_second``: called when either track's analysis passes a whole second (see
    :class:`TrackProgress`).
    """

    def __init__(self, on_second: Callable[[], None] | None = None) -> None:
        self.next_t = 0  # the next second index to publish; everything before it is out
        self.video = TrackProgress(on_second)
        self.audio = TrackProgress(on_second)
        self.late_results = 0
        self._buckets: dict[int, _Bucket] = {}
        self._fluency = FluencyWindow()
        self._pause_run = 0  # hops of the pause running at the last hop added

    def _bucket(self, media_time: float) -> _Bucket | None:
        second = math.floor(media_time)
        if second < self.next_t:
            self.late_results += 1
            return None
        return self._buckets.setdefault(second, _Bucket())

    # -- results in -------------------------------------------------------------------

    def add_frame(self, media_time: float) -> None:
        """A decoded video frame starting at ``media_time`` (s) arrived."""
        bucket = self._bucket(media_time)
        if bucket is not None:
            bucket.frames += 1

    def add_face_result(self, media_time: float, result: FaceResult) -> None:
        """The results of the frame analysed at ``media_time`` (s)."""
        bucket = self._bucket(media_time)
        if bucket is None:
            return
        bucket.analysed += 1
        if result.box is not None:
            bucket.faces += 1
            bucket.box = result.box
        if result.exposure is not None:
            bucket.exposures.append(result.exposure)
        if result.emotion is not None:
            bucket.emotions.append(result.emotion)
        if result.crop_dropped:
            bucket.crops_dropped += 1

    def add_hops(self, start_time: float, features: HopFeatures) -> None:
        """Hop results; hop k covers [start_time + k*10 ms, start_time + (k+1)*10 ms).

        Vectorised per second touched (a block of hops spans one or two), since this runs
        for every audio block of every session.
        """
        n = len(features)
        if n == 0:
            return
        index = np.arange(n)
        seconds = np.floor(start_time + (index + 0.5) * HOP_S).astype(np.int64)
        power = np.power(10.0, features.rms_dbfs.astype(np.float64) / 10.0)
        pause = features.pause.astype(bool)
        # Length of the pause run at each hop, continuing the run the last block ended in.
        last_break = np.maximum.accumulate(np.where(pause, -1, index))
        run = np.where(last_break < 0, index + 1 + self._pause_run, index - last_break)
        run[~pause] = 0
        starts = pause & (run == 1)
        self._pause_run = int(run[-1])
        pitch = features.pitch_hz
        voiced = pitch > 0
        speech = features.speech.astype(bool)
        # Hops are consecutive, so each second they touch is one contiguous slice.
        bounds = np.flatnonzero(np.diff(seconds)) + 1
        for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), n], strict=True):
            second = int(seconds[lo])
            if second < self.next_t:
                self.late_results += hi - lo
                continue
            bucket = self._buckets.setdefault(second, _Bucket())
            bucket.hops += hi - lo
            bucket.power_sum += float(power[lo:hi].sum())
            bucket.speech_hops += int(speech[lo:hi].sum())
            bucket.pitches.extend(pitch[lo:hi][voiced[lo:hi]].tolist())
            bucket.speech_pitches.extend(pitch[lo:hi][voiced[lo:hi] & speech[lo:hi]].tolist())
            bucket.syllables += int(features.syllable[lo:hi].sum())
            in_pause = pause[lo:hi]
            if in_pause.any():
                # A pause is marked from its MIN_PAUSE_HOPS-th hop on (see PauseTracker):
                # its first marked hop brings the hops before it.
                new = int(starts[lo:hi].sum())
                bucket.pause_hops += int(in_pause.sum()) + new * (MIN_PAUSE_HOPS - 1)
                bucket.pause_starts += new
                longest = int(run[lo:hi].max()) + MIN_PAUSE_HOPS - 1
                bucket.longest_pause_hops = max(bucket.longest_pause_hops, longest)

    # -- seconds out ------------------------------------------------------------------

    def ready(self, elapsed: float, max_wait_s: float) -> list[int]:
        """Seconds that may be published now, given wall-clock ``elapsed`` since epoch (s)."""
        tracks = [t for t in (self.video, self.audio) if t.active and not t.ended]
        seconds = []
        t = self.next_t
        while True:
            end = t + 1
            analysed = bool(tracks) and all(track.done_until >= end for track in tracks)
            if not (analysed or elapsed >= end + max_wait_s):
                break
            seconds.append(t)
            t += 1
        return seconds

    def lag_measures_load(self, t: int) -> bool:
        """Whether second ``t``, published now, was held only by analysis: it is complete,
        or media a whole second past it has arrived and it still waited. Not so when the
        media itself stopped: the last second before a stall waits for the speech gate's
        lookahead, which only more audio brings."""
        tracks = [p for p in (self.video, self.audio) if p.active and not p.ended]
        if not tracks:
            return False
        complete = all(p.done_until >= t + 1 for p in tracks)
        return complete or all(p.received_until >= t + 2 for p in tracks)

    def take(self, t: int) -> SecondSummary:
        """Summarises second ``t`` (which must be ``next_t``) and moves past it."""
        if t != self.next_t:
            raise ValueError(f"second {t} taken out of order (next is {self.next_t})")
        bucket = self._buckets.pop(t, _Bucket())
        self.next_t = t + 1
        video = VideoSecond(
            fps=float(bucket.analysed),
            face=bucket.faces / bucket.analysed if bucket.analysed else 0.0,
            box=bucket.box,
            frames=bucket.frames,
            exposure=_mean_exposure(bucket.exposures),
            crops_dropped=bucket.crops_dropped,
        )
        loudness: float | None = None
        if bucket.hops:
            mean_power = bucket.power_sum / bucket.hops
            loudness = SILENCE_DBFS
            if mean_power > 0.0:
                loudness = max(SILENCE_DBFS, 10.0 * math.log10(mean_power))
        audio = AudioSecond(
            speech=bucket.speech_hops / bucket.hops if bucket.hops else 0.0,
            loudness_dbfs=None if loudness is None else round(loudness, 2),
            pitch_hz=round(float(np.median(bucket.pitches)), 1) if bucket.pitches else None,
            hops=bucket.hops,
        )
        fluency = self._fluency.summarise(
            FluencySecond(
                hops=bucket.hops,
                speech_hops=bucket.speech_hops,
                syllables=bucket.syllables,
                pause_hops=bucket.pause_hops,
                pause_starts=bucket.pause_starts,
                longest_pause_s=bucket.longest_pause_hops * HOP_S,
                pitches_hz=tuple(bucket.speech_pitches),
            )
        )
        return SecondSummary(video, audio, emotion.summarise(bucket.emotions), fluency)

    def media_end(self) -> float:
        """The furthest point any track's media reached (s)."""
        return max(self.video.received_until, self.audio.received_until)


def _mean_exposure(exposures: list[tuple[float, float]]) -> dict[str, float] | None:
    if not exposures:
        return None
    brightness, contrast = np.mean(np.asarray(exposures), axis=0)
    return {"brightness": round(float(brightness), 3), "contrast": round(float(contrast), 3)}

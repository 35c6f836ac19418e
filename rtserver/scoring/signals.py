"""Per-second aggregation: frame and hop results in, one summary per second index out.

A second ``t`` covers media time [t, t+1). It is ready once every live track's analysis has
passed t+1, or, whatever is missing, once the wall clock is ``max_wait_s`` past its end:
a stalled track delays a signal by at most that much and never blocks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtserver.kernels.audio import HOP, RATE, SILENCE_DBFS, HopFeatures
from rtserver.messages import AudioSecond, VideoSecond
from rtserver.scoring import emotion

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


@dataclass
class TrackProgress:
    """How far a track's analysis has got on the session timeline (seconds)."""

    active: bool = False
    done_until: float = 0.0  # analysis is complete up to here
    received_until: float = 0.0  # media has arrived up to here
    ended: bool = False


class SecondAggregator:
    """Collects results per second and says which seconds may be published."""

    def __init__(self) -> None:
        self.next_t = 0  # the next second index to publish; everything before it is out
        self.video = TrackProgress()
        self.audio = TrackProgress()
        self.late_results = 0
        self._buckets: dict[int, _Bucket] = {}

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
        """Hop results; hop k covers [start_time + k*10 ms, start_time + (k+1)*10 ms)."""
        power = np.power(10.0, features.rms_dbfs.astype(np.float64) / 10.0)
        for k in range(len(features)):
            bucket = self._bucket(start_time + (k + 0.5) * HOP_S)
            if bucket is None:
                continue
            bucket.hops += 1
            bucket.power_sum += float(power[k])
            if features.speech[k]:
                bucket.speech_hops += 1
            if features.pitch_hz[k] > 0:
                bucket.pitches.append(float(features.pitch_hz[k]))

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
        return SecondSummary(video, audio, emotion.summarise(bucket.emotions))

    def media_end(self) -> float:
        """The furthest point any track's media reached (s)."""
        return max(self.video.received_until, self.audio.received_until)


def _mean_exposure(exposures: list[tuple[float, float]]) -> dict[str, float] | None:
    if not exposures:
        return None
    brightness, contrast = np.mean(np.asarray(exposures), axis=0)
    return {"brightness": round(float(brightness), 3), "contrast": round(float(contrast), 3)}

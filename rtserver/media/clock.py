"""One media timeline per session, shared by its audio and video tracks.

RTP timestamps of different tracks start at unrelated random values, so each track is
anchored at the wall-clock arrival of its first frame, relative to the session's first
frame of any track. From then on a frame's media time follows its own timestamps, which keeps
the spacing the sender intended. If a track's timestamps drift from the wall clock by more
than ``REANCHOR_S`` (a sender restart, a jump), the track is re-anchored, so latency never
accumulates behind a broken clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction

REANCHOR_S = 2.0


@dataclass
class _Anchor:
    pts: int
    media_time: float  # seconds on the session timeline


class MediaClock:
    """Maps (track, pts, time_base) to seconds since the session's first media frame."""

    def __init__(self, now: float | None = None) -> None:
        self.epoch: float | None = None  # monotonic time of the first media frame
        self._anchors: dict[str, _Anchor] = {}
        self._created = time.monotonic() if now is None else now

    def media_time(self, track: str, pts: int | None, time_base: Fraction | None) -> float:
        """Seconds from the first media frame of the session to this frame's start."""
        now = time.monotonic()
        if self.epoch is None:
            self.epoch = now
        elapsed = now - self.epoch
        if pts is None or time_base is None:
            return elapsed
        anchor = self._anchors.get(track)
        if anchor is None:
            self._anchors[track] = _Anchor(pts, elapsed)
            return elapsed
        media_time = anchor.media_time + float((pts - anchor.pts) * time_base)
        if abs(media_time - elapsed) > REANCHOR_S:
            self._anchors[track] = _Anchor(pts, elapsed)
            return elapsed
        return media_time

    def reanchor(self) -> None:
        """Forgets every track's anchor: the next frame of each track (a reconnected
        candidate's new tracks, with unrelated timestamps) is placed at its wall-clock
        arrival, so the timeline goes on from where the wall clock is."""
        self._anchors.clear()

    def wall_time(self, media_time: float) -> float:
        """The monotonic wall-clock time at which ``media_time`` was (or will be) live."""
        if self.epoch is None:
            return time.monotonic()
        return self.epoch + media_time

    def elapsed(self) -> float:
        """Wall-clock seconds since the first media frame (0 before any)."""
        return 0.0 if self.epoch is None else time.monotonic() - self.epoch

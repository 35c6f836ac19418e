"""Live sessions: one WebRTC peer each, its media paths, and its per-second publishing.

The pipeline of a session reads top to bottom:
track -> sampler -> kernels (worker threads) -> SecondAggregator -> publish (store + bus).
The ticker publishes each second as soon as every live track's analysis has passed it, and
ends the session when its media stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Coroutine, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from rtserver.bus import Bus
from rtserver.config import Config
from rtserver.errors import AtCapacity, Conflict
from rtserver.media.audio import AudioPath
from rtserver.media.clock import MediaClock
from rtserver.media.ingest import PeerIngest
from rtserver.media.video import VideoPath
from rtserver.messages import (
    ControlMessage,
    FinalMessage,
    SignalMessage,
    StoredMessage,
    signal_from_wire,
)
from rtserver.metrics import Metrics
from rtserver.scoring.batcher import ModelBatcher
from rtserver.scoring.faces import FaceDetector
from rtserver.scoring.hints import HintRules
from rtserver.scoring.rubric import Interview, score_interview
from rtserver.scoring.signals import SecondAggregator, SecondSummary
from rtserver.scoring.vad import SileroVad
from rtserver.store import STATUS_LIVE, Store

log = logging.getLogger(__name__)

TICK_S = 0.05  # how often ready seconds are looked for; bounds the added lag
PARTIAL_SECOND_MIN_S = 0.25  # a last, partial second is published if it holds this much media


@dataclass
class Runtime:
    """What every session shares: configuration, storage, bus, metrics, workers, models."""

    config: Config
    store: Store
    bus: Bus
    metrics: Metrics
    executor: Executor
    detector: FaceDetector | None
    batcher: ModelBatcher | None = None
    backends: dict[str, str] = field(default_factory=dict)  # model name -> backend name
    vad: SileroVad | None = None  # speech detection for every session's fluency decisions


class Publisher:
    """Gives each message of a session its log position, stores it, then fans it out."""

    def __init__(self, runtime: Runtime, session_id: str, next_seq: int = 0) -> None:
        self.runtime = runtime
        self.session_id = session_id
        self.next_seq = next_seq

    def publish(self, message: SignalMessage | FinalMessage) -> StoredMessage:
        payload = message.to_wire()
        payload["seq"] = self.next_seq
        stored = StoredMessage(self.session_id, self.next_seq, message.type, payload)
        self.runtime.store.append_message(stored)  # the log first: backfill must hold it
        self.next_seq += 1
        self.runtime.bus.publish(stored)
        return stored


class LiveSession:
    """One candidate's live connection and everything computed from it."""

    def __init__(self, runtime: Runtime, session_id: str) -> None:
        self.runtime = runtime
        self.id = session_id
        config = runtime.config
        self.clock = MediaClock()
        self.aggregator = SecondAggregator()
        self.publisher = Publisher(runtime, session_id)
        self.signals: list[SignalMessage] = []
        analyse = config.analysis == "full"
        self.video = VideoPath(
            session_id,
            self.clock,
            self.aggregator,
            runtime.detector if analyse else None,
            runtime.executor,
            runtime.metrics,
            config.analysis_fps,
            runtime.batcher if analyse else None,
            config.detect_fps,
        )
        self.audio = AudioPath(
            session_id,
            self.clock,
            self.aggregator,
            runtime.executor,
            runtime.metrics,
            analyse,
            runtime.vad if analyse else None,
        )
        self.ingest = PeerIngest(
            session_id, config, self._on_track, self._on_connection_lost, self._on_control
        )
        self.hints = HintRules()
        self.question: int | None = None  # the candidate page's current question
        self.started_at = time.monotonic()
        self.ended = asyncio.Event()
        self.end_reason = ""
        self._drains: dict[str, asyncio.Task[None]] = {}  # track kind -> its drain task
        # Seconds summarised but not yet published, oldest first (normally empty).
        self._unpublished: deque[tuple[int, SecondSummary]] = deque()
        self._ticker: asyncio.Task[None] | None = None
        self._ending = False
        self._background: set[asyncio.Task[None]] = set()

    # -- connection -------------------------------------------------------------------

    async def accept(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Answers the candidate's offer and starts publishing. Raises BadSdp on a bad offer."""
        answer = await self.ingest.answer(offer)
        self._ticker = asyncio.create_task(self._tick_loop(), name=f"ticker-{self.id}")
        return answer

    def analysis_cost(self) -> float:
        """Analysis CPU seconds per second of media published so far (0 before any)."""
        if not self.signals:
            return 0.0
        return (self.video.cpu_s + self.audio.cpu_s) / len(self.signals)

    async def abort(self) -> None:
        """Undoes a failed start: stops any drains the offer's tracks already started."""
        for task in self._drains.values():
            task.cancel()
        await asyncio.gather(*self._drains.values(), return_exceptions=True)
        await self.ingest.close()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Runs ``coroutine`` in the background, holding a reference until it is done."""
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind not in ("audio", "video") or track.kind in self._drains:
            # One camera and one microphone per interview; extra tracks are not analysed.
            log.warning("ignoring extra %s track", track.kind, extra={"session": self.id})
            return
        path = self.video.run(track) if track.kind == "video" else self.audio.run(track)
        self._drains[track.kind] = asyncio.create_task(path, name=f"{track.kind}-drain-{self.id}")

    def _on_control(self, message: ControlMessage) -> None:
        log.info(
            "question %d began at %.1f s", message.index, message.at, extra={"session": self.id}
        )
        self.question = message.index

    @property
    def question_open(self) -> bool:
        """Whether the candidate is answering: a page with a control channel says so per
        question; a peer without one is answering for its whole session."""
        return not self.ingest.has_control or self.question is not None

    def _on_connection_lost(self, reason: str) -> None:
        if not self._ending:
            self._spawn(self.end(reason))

    # -- publishing -------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        config = self.runtime.config
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self._publish_ready(config.max_signal_wait_s)
            except Exception:
                # A failed publish (say, a full disk) must not stop the session's clock:
                # summarised seconds stay in `_unpublished` and go out on the next tick.
                log.exception("publishing failed; retrying", extra={"session": self.id})
            reason = self._end_condition()
            if reason:
                self._spawn(self.end(reason))
                return

    def _end_condition(self) -> str:
        """Why the session should end now, or '' while it should go on."""
        timeout = self.runtime.config.media_timeout_s
        last_media = max(self.video.last_media_at, self.audio.last_media_at)
        if time.monotonic() - (last_media or self.started_at) > timeout:
            return "media_timeout"
        tracks = [p for p in (self.aggregator.video, self.aggregator.audio) if p.active]
        if self._drains and tracks and all(p.ended for p in tracks):
            return "hangup"
        return ""

    def _publish_ready(self, max_wait_s: float) -> None:
        self._publish_seconds(self.aggregator.ready(self.clock.elapsed(), max_wait_s))

    def _publish_seconds(self, seconds: Iterable[int]) -> None:
        """Summarises ``seconds`` (next in order) and publishes everything summarised."""
        for t in seconds:
            self._unpublished.append((t, self.aggregator.take(t)))
        self._publish_pending()

    def _publish_pending(self) -> None:
        """Publishes summarised seconds in order; one that fails stays first in line."""
        while self._unpublished:
            t, second = self._unpublished[0]
            lag_s = max(0.0, time.monotonic() - self.clock.wall_time(t + 1.0))
            signal = SignalMessage(
                session=self.id,
                t=t,
                video=second.video,
                audio=second.audio,
                lag_ms=round(lag_s * 1000.0, 1),
                emotion=second.emotion,
                fluency=second.fluency,
            )
            self.publisher.publish(signal)
            self._unpublished.popleft()
            self.signals.append(signal)
            for hint in self.hints.on_second(signal, self.question_open):
                self.ingest.send_hint(hint)
                self.runtime.metrics.hints.inc(code=hint.code)
            metrics = self.runtime.metrics
            metrics.session_cost.set(round(self.analysis_cost(), 5), session=self.id)
            metrics.signals.inc()
            metrics.media_seconds.inc()
            metrics.signal_lag.observe(lag_s)

    # -- ending -----------------------------------------------------------------------

    async def end(self, reason: str) -> None:
        """Ends the session once: closes the peer, flushes the last seconds, sends the final."""
        if self._ending:
            await self.ended.wait()
            return
        self._ending = True
        self.end_reason = reason
        try:
            if self._ticker is not None:
                self._ticker.cancel()
            await self.ingest.close()
            await self._stop_drains()
            self._flush()
            final = score_interview(
                Interview(self.id, self.signals, reason, self.runtime.config.emotion == "on")
            )
            self.publisher.publish(final)
            self.runtime.store.mark_ended(self.id, reason)
            self.runtime.metrics.late_results.inc(self.aggregator.late_results)
            self.runtime.metrics.session_cost.remove(session=self.id)
            log.info(
                "session ended (%s): %d signals, score %.1f",
                reason,
                len(self.signals),
                final.score,
                extra={"session": self.id},
            )
        finally:
            for task in self._drains.values():
                task.cancel()
            self.runtime.bus.close_session(self.id)
            self.ended.set()

    async def _stop_drains(self) -> None:
        """Lets each drain finish the analysis it handed out (bounded), then stops it.

        A track that never delivered a frame is stopped at once: aiortc does not end a
        remote track whose connection closed before any media flowed, so its drain
        would otherwise wait out the whole bound.
        """
        progress = {"video": self.aggregator.video, "audio": self.aggregator.audio}
        for kind, task in self._drains.items():
            if not progress[kind].active:
                task.cancel()
        if self._drains:
            await asyncio.wait(self._drains.values(), timeout=3.0)

    def _flush(self) -> None:
        """Publishes every second not yet out, up to the end of the media."""
        media_end = self.aggregator.media_end()
        last = math.floor(media_end + 1.0 - PARTIAL_SECOND_MIN_S)
        self._publish_seconds(range(self.aggregator.next_t, last))


class SessionManager:
    """Holds the live sessions of this process and enforces capacity."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.live: dict[str, LiveSession] = {}
        self._joining: set[str] = set()

    def _update_gauge(self) -> None:
        self.runtime.metrics.live_sessions.set(len(self.live))

    async def join(self, session_id: str, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Starts a session from the candidate's offer and returns the server's answer."""
        capacity = self.runtime.config.max_sessions
        if session_id in self.live or session_id in self._joining:
            raise Conflict("session is already live")
        if len(self.live) + len(self._joining) >= capacity:
            raise AtCapacity(f"server is at its capacity of {capacity} live sessions")
        self._joining.add(session_id)
        try:
            session = LiveSession(self.runtime, session_id)
            try:
                answer = await session.accept(offer)
            except BaseException:
                await session.abort()
                raise
            if not self.runtime.store.mark_live(session_id):
                await session.ingest.close()
                raise Conflict("session is already live or ended")
            self.live[session_id] = session
        finally:
            self._joining.discard(session_id)
        self.runtime.metrics.sessions_total.inc(outcome="started")
        self._update_gauge()
        session._spawn(self._forget_when_ended(session))
        return answer

    async def _forget_when_ended(self, session: LiveSession) -> None:
        await session.ended.wait()
        self.live.pop(session.id, None)
        self.runtime.metrics.sessions_total.inc(outcome=session.end_reason or "ended")
        self._update_gauge()

    async def end(self, session_id: str, reason: str) -> bool:
        """Ends a live session; False when it is not live in this process."""
        session = self.live.get(session_id)
        if session is None:
            return False
        await session.end(reason)
        return True

    async def shutdown(self) -> None:
        sessions = list(self.live.values())
        for session in sessions:
            with contextlib.suppress(Exception):
                await session.end("server_shutdown")


def recover_interrupted(runtime: Runtime) -> list[str]:
    """Finishes sessions a crashed process left live: scores what was stored, ends them.

    Nothing already published is lost: the final score is computed from the stored signals.
    """
    recovered = []
    for session_id in runtime.store.sessions_with_status(STATUS_LIVE):
        stored = runtime.store.messages(session_id)
        if not any(m.kind == "final" for m in stored):
            signals = [signal_from_wire(m.payload) for m in stored if m.kind == "signal"]
            emotion_on = runtime.config.emotion == "on"
            final = score_interview(Interview(session_id, signals, "server_restart", emotion_on))
            next_seq = stored[-1].seq + 1 if stored else 0
            Publisher(runtime, session_id, next_seq).publish(final)
        runtime.store.mark_ended(session_id, "server_restart")
        recovered.append(session_id)
    return recovered

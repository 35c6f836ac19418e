"""Live sessions: the candidate's WebRTC peer, its media paths, and per-second publishing.

The pipeline of a session reads top to bottom:
track -> relay -> sampler -> kernels (worker threads) -> SecondAggregator -> publish (store +
bus). The relay (``media/relay.py``) also feeds the HR observers watching live. The ticker
publishes each second as soon as every live track's analysis has passed it, and ends the
session when its media stops.

A session outlives a dropped connection: when the candidate's connection is lost (see
``media/ingest.py`` for how a drop is told from a hangup), the session waits
``reconnect_grace_s`` for the candidate to come back with a new offer. The new connection is
a new :class:`Link` (peer and media paths) on the same clock and aggregator, so the timeline
goes on: the seconds in between are published without media, and the new tracks are placed
by their wall-clock arrival.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Coroutine, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from rtserver.bus.memory import Bus
from rtserver.config import Config
from rtserver.errors import AtCapacity, Conflict, ControlRefused
from rtserver.inference.batcher import ModelBatcher
from rtserver.live.hints import HintRules
from rtserver.live.questions import QuestionTimeline
from rtserver.media.audio import AudioPath
from rtserver.media.clock import MediaClock
from rtserver.media.ingest import PeerIngest
from rtserver.media.relay import SessionRelay
from rtserver.media.video import VideoPath
from rtserver.messages import (
    ControlMessage,
    FinalMessage,
    SignalMessage,
    StoredMessage,
    signal_from_wire,
)
from rtserver.metrics import Metrics
from rtserver.perception.faces import FaceDetector
from rtserver.perception.vad import SileroVad
from rtserver.scoring.rubric import Interview, score_interview
from rtserver.scoring.signals import SecondAggregator, SecondSummary
from rtserver.server.admission import Admission, RecentSignalLag
from rtserver.server.cpu_budget import CpuBudget
from rtserver.server.memory import HeapTrimmer
from rtserver.store.async_store import AsyncStore, StoreBacklogged
from rtserver.store.sqlite import STATUS_LIVE, Store

log = logging.getLogger(__name__)

# Ready seconds are looked for whenever a track's analysis passes a second, and at least this
# often (for seconds published without media, and the end conditions).
TICK_S = 0.05
PARTIAL_SECOND_MIN_S = 0.25  # a last, partial second is published if it holds this much media
# A new offer with the join token replaces a connection that still looks up when no media
# has come over it for this long: the candidate's page noticed the drop before ICE did.
RECONNECT_STALL_S = 2.0


@dataclass
class Runtime:
    """What every session shares: configuration, storage, bus, metrics, workers, models.

    ``db`` is the store as the event loop uses it (writes on the writer thread, reads in
    threads: ``rtserver/store/async_store.py``); ``store`` is its read connection, for code that
    runs off the loop.
    """

    config: Config
    store: Store
    db: AsyncStore
    bus: Bus
    metrics: Metrics
    executor: Executor
    detector: FaceDetector | None
    batcher: ModelBatcher | None = None
    backends: dict[str, str] = field(default_factory=dict)  # model name -> backend name
    vad: SileroVad | None = None  # speech detection for every session's fluency decisions
    # How late this process's signals have gone out lately (admission control reads it).
    signal_lag: RecentSignalLag = field(default_factory=RecentSignalLag)


class Publisher:
    """Gives each message of a session its log position, stores it, then fans it out.

    The store's writer thread commits the message, and only then does the bus get it (on
    the event loop, in order): backfill must hold everything an observer saw live.
    """

    def __init__(self, runtime: Runtime, session_id: str, next_seq: int = 0) -> None:
        self.runtime = runtime
        self.session_id = session_id
        self.next_seq = next_seq

    def publish(self, message: SignalMessage | FinalMessage) -> StoredMessage:
        """Hands the message to the store's writer without waiting. Raises StoreBacklogged
        when the writer's queue is full: the message is not taken and its seq stays free."""
        return self._offer(message)[0]

    async def publish_and_wait(self, message: SignalMessage | FinalMessage) -> StoredMessage:
        """Publishes the message, waiting for room in the writer's queue, and returns once
        it is committed and on the bus. Its seq is given once there is room, so the
        session's messages stay in seq order in the queue."""
        await self.runtime.db.writer.wait_for_room()
        stored, committed = self._offer(message)  # no await since: the room is still there
        await committed
        return stored

    async def finish(self, final: FinalMessage, reason: str) -> StoredMessage:
        """Publishes the session's final, marks the session ended (``reason``) and closes
        its subscriptions. The final reaches the bus only once both writes are committed,
        and the close follows it in the same step: whoever sees the final and then asks the
        server finds the session ended, as when the store was written on the loop."""
        runtime = self.runtime
        writer, bus, session = runtime.db.writer, runtime.bus, self.session_id
        await writer.wait_for_room()
        stored = self._stored(final)
        written = writer.offer(lambda store: store.append_message(stored), None, session)
        self.next_seq += 1

        def announce() -> None:
            # `written` resolved first (the writer's follow-ups run in order); a final
            # that could not be stored is never sent.
            if written.done() and not written.cancelled() and written.exception() is None:
                bus.publish(stored)
            bus.close_session(session)

        await writer.submit(lambda store: store.mark_ended(session, reason), announce, session)
        return stored

    def _stored(self, message: SignalMessage | FinalMessage) -> StoredMessage:
        payload = message.to_wire()
        payload["seq"] = self.next_seq
        return StoredMessage(self.session_id, self.next_seq, message.type, payload)

    def _offer(
        self, message: SignalMessage | FinalMessage
    ) -> tuple[StoredMessage, asyncio.Future[Any]]:
        stored = self._stored(message)
        bus = self.runtime.bus
        committed = self.runtime.db.offer_message(stored, functools.partial(bus.publish, stored))
        self.next_seq += 1
        return stored, committed


@dataclass
class Link:
    """One connection of the candidate: its peer, and the media paths draining its tracks."""

    video: VideoPath
    audio: AudioPath
    connected_at: float  # monotonic time the offer was answered
    ingest: PeerIngest = field(init=False)
    drains: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # kind -> drain
    retired: bool = False  # closed for good: its late tracks and events are ignored

    @property
    def last_media_at(self) -> float:
        """Monotonic time of the last frame, or of the connection before any frame."""
        return max(self.video.last_media_at, self.audio.last_media_at, self.connected_at)

    @property
    def cpu_s(self) -> float:
        return self.video.cpu_s + self.audio.cpu_s


class LiveSession:
    """One candidate's live connection (or connections, across drops) and everything
    computed from it."""

    def __init__(self, runtime: Runtime, session_id: str, questions: Sequence[str] = ()) -> None:
        self.runtime = runtime
        self.id = session_id
        self.questions = tuple(questions)  # the question texts, by index
        self.clock = MediaClock()
        # Set when a track's analysis passes a whole second: publishing looks at once.
        self._progressed = asyncio.Event()
        self.aggregator = SecondAggregator(on_second=self._progressed.set)
        self.publisher = Publisher(runtime, session_id)
        self.relay = SessionRelay(session_id, runtime.config)
        self.signals: list[SignalMessage] = []
        self.hints = HintRules()
        # When each question began, by the candidate page's control messages.
        self.timeline = QuestionTimeline(len(self.questions))
        self._refusal_logged = False  # one log line per session for refused control messages
        self.started_at = time.monotonic()  # reset when the first offer is answered
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.link = self._new_link()
        self._past_cpu_s = 0.0  # analysis CPU of earlier links (s)
        self._dropped_at: float | None = None  # monotonic time the connection dropped
        self._links = asyncio.Lock()  # one connection change (drop, reconnect) at a time
        # Seconds summarised but not yet published, oldest first (normally empty).
        self._unpublished: deque[tuple[int, SecondSummary]] = deque()
        self._ticker: asyncio.Task[None] | None = None
        self._ending = False
        self._background: set[asyncio.Task[None]] = set()

    @property
    def ingest(self) -> PeerIngest:
        """The candidate's current (or last) peer connection."""
        return self.link.ingest

    def _new_link(self) -> Link:
        runtime, config = self.runtime, self.runtime.config
        analyse = config.analysis == "full"
        video = VideoPath(
            self.id,
            self.clock,
            self.aggregator,
            runtime.detector if analyse else None,
            runtime.executor,
            runtime.metrics,
            config.analysis_fps,
            runtime.batcher if analyse else None,
            config.detect_fps,
        )
        audio = AudioPath(
            self.id,
            self.clock,
            self.aggregator,
            runtime.executor,
            runtime.metrics,
            analyse,
            runtime.vad if analyse else None,
        )
        link = Link(video, audio, time.monotonic())
        link.ingest = PeerIngest(
            self.id,
            config,
            functools.partial(self._on_track, link),
            functools.partial(self._on_connection_lost, link),
            self._on_control,
            self._on_control_refused,
        )
        return link

    # -- connection -------------------------------------------------------------------

    async def accept(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Answers the candidate's offer and starts publishing. Raises BadSdp on a bad offer."""
        answer = await self.link.ingest.answer(offer)
        self.link.connected_at = self.started_at = time.monotonic()
        self._ticker = asyncio.create_task(self._tick_loop(), name=f"ticker-{self.id}")
        return answer

    async def reconnect(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Answers the candidate's new offer after a drop, continuing the same timeline.

        Accepted while the session waits out its reconnect grace, or when the current
        connection has carried no media for RECONNECT_STALL_S (it is then replaced).
        Raises Conflict otherwise, and BadSdp on a bad offer (the session keeps waiting).
        """
        async with self._links:
            if self._ending:
                raise Conflict("session has already ended")
            old = self.link
            if self._dropped_at is None:
                stalled_s = time.monotonic() - old.last_media_at
                if old.ingest.connected and stalled_s < RECONNECT_STALL_S:
                    raise Conflict("session is already live")
                log.warning(
                    "new offer while the connection is silent (%.1f s); replacing it",
                    stalled_s,
                    extra={"session": self.id},
                )
                self._dropped_at = time.monotonic()
                await self._retire(old)
            link = self._new_link()
            try:
                answer = await link.ingest.answer(offer)
                if self._ending:
                    raise Conflict("session has already ended")
            except BaseException:
                await self._retire(link)
                raise
            link.connected_at = time.monotonic()
            self._past_cpu_s += old.cpu_s
            self.link = link
            log.info(
                "candidate reconnected, %.1f s after their last media",
                link.connected_at - old.last_media_at,
                extra={"session": self.id},
            )
            self._dropped_at = None
            return answer

    def analysis_cost(self) -> float:
        """Analysis CPU seconds per second of media published so far (0 before any)."""
        if not self.signals:
            return 0.0
        return (self._past_cpu_s + self.link.cpu_s) / len(self.signals)

    async def abort(self) -> None:
        """Undoes a failed start: stops the ticker, and any drains the offer's tracks
        already started."""
        if self._ticker is not None:
            self._ticker.cancel()
        await self._retire(self.link)
        await self.relay.close()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Runs ``coroutine`` in the background, holding a reference until it is done."""
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _on_track(self, link: Link, track: MediaStreamTrack) -> None:
        if link.retired or self._ending:
            track.stop()  # from a connection already replaced or closing
            return
        if track.kind not in ("audio", "video") or track.kind in link.drains:
            # One camera and one microphone per interview; extra tracks are not analysed.
            log.warning("ignoring extra %s track", track.kind, extra={"session": self.id})
            return
        # The relay must own the track before anything reads it: the analysis reads its
        # proxy, so observers can share every frame.
        source = self.relay.analysis_track(track)
        path = link.video.run(source) if track.kind == "video" else link.audio.run(source)
        link.drains[track.kind] = asyncio.create_task(
            _drain(path, source), name=f"{track.kind}-drain-{self.id}"
        )

    def _on_control(self, message: ControlMessage) -> None:
        """A question began; raises ControlRefused for one the session does not have or
        that is behind the current one (see ``rtserver/live/questions.py``)."""
        at_s = self.clock.elapsed()
        if self.timeline.begin(message.index, at_s):
            log.info(
                "question %d began at %.1f s (page: %.1f s)",
                message.index,
                at_s,
                message.at,
                extra={"session": self.id},
            )

    def _on_control_refused(self, refusal: ControlRefused) -> None:
        """Counts a refused control message; only the session's first is logged, so a
        flood of them cannot flood the log."""
        self.runtime.metrics.control_refused.inc(reason=refusal.reason)
        if not self._refusal_logged:
            self._refusal_logged = True
            log.info(
                "control message refused (%s): %s; further refusals in this session are only "
                "counted (rtserver_control_messages_refused_total)",
                refusal.reason,
                refusal.detail,
                extra={"session": self.id},
            )

    @property
    def question(self) -> int | None:
        """The candidate page's current question; None before the first."""
        return self.timeline.current

    def question_at(self, t: int) -> int | None:
        """The question index in force when second ``t`` began; None before the first."""
        return self.timeline.at(t)

    @property
    def question_open(self) -> bool:
        """Whether the candidate is answering: a page with a control channel says so per
        question; a peer without one is answering for its whole session."""
        return not self.link.ingest.has_control or self.question is not None

    def _on_connection_lost(self, link: Link, reason: str) -> None:
        if link.retired or self._ending:
            return
        if reason == "connection_lost":
            self._spawn(self._drop(link))
        else:
            self._spawn(self.end(reason))

    async def _drop(self, link: Link) -> None:
        """The connection dropped: closes it and waits for the candidate to reconnect."""
        async with self._links:
            if link is not self.link or self._ending or self._dropped_at is not None:
                return
            self._dropped_at = time.monotonic()
            log.warning(
                "connection dropped; waiting %.0f s for the candidate to reconnect",
                self.runtime.config.reconnect_grace_s,
                extra={"session": self.id},
            )
            await self._retire(link)

    async def _retire(self, link: Link) -> None:
        """Closes ``link``'s connection and lets its drains finish; the aggregator and the
        clock are then ready for the tracks of the next link."""
        link.retired = True
        await link.ingest.close()
        await self._stop_drains(link)
        for task in link.drains.values():
            task.cancel()
        await asyncio.gather(*link.drains.values(), return_exceptions=True)
        for progress in (self.aggregator.video, self.aggregator.audio):
            progress.active = False
            progress.ended = False
        self.clock.reanchor()

    # -- publishing -------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        config = self.runtime.config
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await self._progressed.wait()
            self._progressed.clear()
            try:
                self._publish_ready(config.max_signal_wait_s)
            except StoreBacklogged:
                # The store's writer is a whole queue behind: the seconds stay summarised
                # in `_unpublished` and are offered again on the next tick (counted in
                # rtserver_store_backlogged_total; the writer logs why it is behind).
                pass
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
        config = self.runtime.config
        now = time.monotonic()
        if now - self.started_at >= config.max_interview_s:
            return "max_length"
        if self._dropped_at is not None:
            lost = now - self._dropped_at >= config.reconnect_grace_s
            return "connection_lost" if lost else ""
        link = self.link
        if now - link.last_media_at > config.media_timeout_s:
            return "media_timeout"
        tracks = [p for p in (self.aggregator.video, self.aggregator.audio) if p.active]
        # Tracks that end on a closed connection are the ingest's to explain (a hangup or
        # a drop); on a connection still up, they mean the candidate stopped sending.
        if link.drains and tracks and all(p.ended for p in tracks) and link.ingest.connected:
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
                question=self.question_at(t),
            )
            self.publisher.publish(signal)
            self._unpublished.popleft()
            if self.aggregator.lag_measures_load(t):
                self.runtime.signal_lag.add(lag_s)
            self.signals.append(signal)
            for hint in self.hints.on_second(signal, self.question_open):
                self.link.ingest.send_hint(hint)
                self.runtime.metrics.hints.inc(code=hint.code)
            metrics = self.runtime.metrics
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
        link = self.link
        closed = False
        try:
            if self._ticker is not None:
                self._ticker.cancel()
            await link.ingest.close()
            await self.relay.close()
            await self._stop_drains(link)
            await self._flush()
            emotion_on = self.runtime.config.emotion == "on"
            final = score_interview(
                Interview(self.id, self.signals, reason, emotion_on, self.questions)
            )
            await self.publisher.finish(final, reason)
            closed = True
            self.runtime.metrics.late_results.inc(self.aggregator.late_results)
            if self.signals:
                self.runtime.metrics.session_cost.observe(self.analysis_cost())
            log.info(
                "session ended (%s): %d signals, score %.1f",
                reason,
                len(self.signals),
                final.score,
                extra={"session": self.id},
            )
        finally:
            for task in link.drains.values():
                task.cancel()
            if not closed:
                # Something failed before the final: still close, after what was queued.
                bus = self.runtime.bus
                await self.runtime.db.after_writes(
                    functools.partial(bus.close_session, self.id), self.id
                )
            self.ended.set()

    async def _stop_drains(self, link: Link) -> None:
        """Lets each drain finish the analysis it handed out (bounded), then stops it.

        A track that never delivered a frame is stopped at once: aiortc does not end a
        remote track whose connection closed before any media flowed, so its drain
        would otherwise wait out the whole bound.
        """
        progress = {"video": self.aggregator.video, "audio": self.aggregator.audio}
        for kind, task in link.drains.items():
            if not progress[kind].active:
                task.cancel()
        if link.drains:
            await asyncio.wait(link.drains.values(), timeout=3.0)

    async def _flush(self) -> None:
        """Publishes every second not yet out, up to the end of the media, waiting for room
        in the store writer's queue when it is full."""
        media_end = self.aggregator.media_end()
        last = math.floor(media_end + 1.0 - PARTIAL_SECOND_MIN_S)
        for t in range(self.aggregator.next_t, last):
            self._unpublished.append((t, self.aggregator.take(t)))
        while True:
            try:
                self._publish_pending()
                return
            except StoreBacklogged:
                await self.runtime.db.writer.wait_for_room()


class SessionHost(Protocol):
    """Where live sessions run: in this process (:class:`SessionManager`) or in worker
    processes (:class:`rtserver.server.workers.WorkerPool`). The API asks only this."""

    async def join(
        self, session_id: str, offer: RTCSessionDescription, questions: Sequence[str] = ()
    ) -> RTCSessionDescription: ...

    async def reconnect(
        self, session_id: str, offer: RTCSessionDescription
    ) -> RTCSessionDescription: ...

    async def end(self, session_id: str, reason: str) -> bool: ...

    async def watch(
        self, session_id: str, offer: RTCSessionDescription
    ) -> RTCSessionDescription: ...

    async def live_figures(self, session_id: str) -> dict[str, Any] | None: ...

    def live_count(self) -> int: ...

    def health(self) -> dict[str, Any]: ...

    async def render_metrics(self) -> str: ...

    async def shutdown(self) -> None: ...


class SessionManager:
    """Holds the live sessions of this process and enforces capacity: a session count, the
    machine's CPU budget when this process places sessions itself (``rtserver.server.cpu_budget``;
    a worker process leaves that to the server process), and no new session while the
    process falls behind (``rtserver.server.admission``)."""

    def __init__(self, runtime: Runtime, places_sessions: bool = True) -> None:
        self.runtime = runtime
        self.live: dict[str, LiveSession] = {}
        self._joining: set[str] = set()
        self.admission = Admission(runtime.config, runtime.signal_lag)
        self.cpu_budget: CpuBudget | None = None
        if places_sessions:
            config = runtime.config
            self.cpu_budget = CpuBudget(
                config.max_cpu, config.analysis, self.live_count, prior_cores=config.session_cpu
            )
        # Gives back the memory that ended sessions freed (rtserver/server/memory.py says why).
        self.trimmer = HeapTrimmer()

    def _update_gauge(self) -> None:
        self.runtime.metrics.live_sessions.set(len(self.live))

    async def join(
        self, session_id: str, offer: RTCSessionDescription, questions: Sequence[str] = ()
    ) -> RTCSessionDescription:
        """Starts a session from the candidate's offer and returns the server's answer;
        ``questions`` are the session's question texts, by index."""
        capacity = self.runtime.config.session_limit
        if session_id in self.live or session_id in self._joining:
            raise Conflict("session is already live")
        if self.live_count() >= capacity:
            raise AtCapacity(f"server is at its capacity of {capacity} live sessions")
        self.admission.check()
        budget = self.cpu_budget
        if budget is not None:
            budget.start()
        place = budget.reserve() if budget is not None else None
        self._joining.add(session_id)
        try:
            session = LiveSession(self.runtime, session_id, questions)
            try:
                answer = await session.accept(offer)
            except BaseException:
                await session.abort()
                raise
            if not await self.runtime.db.mark_live(session_id):
                await session.abort()
                raise Conflict("session is already live or ended")
            self.live[session_id] = session
        except BaseException:
            if budget is not None and place is not None:
                budget.release(place)
            raise
        finally:
            self._joining.discard(session_id)
        self.runtime.metrics.sessions_total.inc(outcome="started")
        self._update_gauge()
        session._spawn(self._forget_when_ended(session))
        return answer

    async def reconnect(
        self, session_id: str, offer: RTCSessionDescription
    ) -> RTCSessionDescription:
        """Answers a live session's candidate coming back (see LiveSession.reconnect)."""
        session = self.live.get(session_id)
        if session is None:
            raise Conflict("session is live in another process")
        answer = await session.reconnect(offer)
        self.runtime.metrics.reconnects.inc()
        return answer

    async def _forget_when_ended(self, session: LiveSession) -> None:
        await session.ended.wait()
        self.live.pop(session.id, None)
        self.runtime.metrics.sessions_total.inc(outcome=session.end_reason or "ended")
        self._update_gauge()
        self.trimmer.session_ended()

    async def end(self, session_id: str, reason: str) -> bool:
        """Ends a live session; False when it is not live in this process."""
        session = self.live.get(session_id)
        if session is None:
            return False
        await session.end(reason)
        return True

    async def watch(self, session_id: str, offer: RTCSessionDescription) -> RTCSessionDescription:
        """An HR observer's answer, relaying the live session's media; Conflict when the
        session is not live here."""
        session = self.live.get(session_id)
        if session is None:
            raise Conflict("session is not live")
        return await session.relay.watch(offer)

    async def live_figures(self, session_id: str) -> dict[str, Any] | None:
        """A live session's figures: signals published so far and analysis CPU seconds per
        second of media; None when it is not live here."""
        live = self.live.get(session_id)
        if live is None:
            return None
        return {
            "signals": len(live.signals),
            "analysis_cpu_per_media_s": round(live.analysis_cost(), 5),
        }

    def live_count(self) -> int:
        """Live sessions, and those joining now."""
        return len(self.live) + len(self._joining)

    def health(self) -> dict[str, Any]:
        """Extra /healthz fields: none for a single process."""
        return {}

    async def render_metrics(self) -> str:
        self.runtime.metrics.loop_lag.set(self.admission.loop_lag.lag_s)
        self.runtime.metrics.recent_signal_lag.set(self.runtime.signal_lag.mean_s())
        if self.cpu_budget is not None:
            self.runtime.metrics.observe_cpu_budget(self.cpu_budget)
        return self.runtime.metrics.render()

    async def shutdown(self) -> None:
        await self.admission.stop()
        if self.cpu_budget is not None:
            await self.cpu_budget.stop()
        sessions = list(self.live.values())
        for session in sessions:
            with contextlib.suppress(Exception):
                await session.end("server_shutdown")
        await self.trimmer.stop()


async def recover_interrupted(runtime: Runtime) -> list[str]:
    """Finishes sessions a crashed process left live: scores what was stored, ends them.

    Nothing already published is lost: the final score is computed from the stored signals.
    """
    live = await runtime.db.sessions_with_status(STATUS_LIVE)
    return await finish_sessions(runtime, live, "server_restart")


async def finish_sessions(runtime: Runtime, session_ids: Iterable[str], reason: str) -> list[str]:
    """Ends those of ``session_ids`` still live in the store, whose process is gone: each
    gets a final scored from its stored signals (unless it has one), then is marked ended
    and its subscriptions close. Returns the sessions ended."""
    recovered = []
    db = runtime.db
    live = set(await db.sessions_with_status(STATUS_LIVE))
    for session_id in session_ids:
        if session_id not in live:
            continue
        stored = await db.messages(session_id)
        if not any(m.kind == "final" for m in stored):
            signals = [signal_from_wire(m.payload) for m in stored if m.kind == "signal"]
            emotion_on = runtime.config.emotion == "on"
            record = await db.get_session(session_id)
            texts = [q.text for q in record.questions] if record else []
            final = score_interview(Interview(session_id, signals, reason, emotion_on, texts))
            next_seq = stored[-1].seq + 1 if stored else 0
            await Publisher(runtime, session_id, next_seq).finish(final, reason)
        else:
            await db.mark_ended(session_id, reason)
            await db.after_writes(functools.partial(runtime.bus.close_session, session_id))
        recovered.append(session_id)
    return recovered


async def _drain(path: Coroutine[Any, Any, None], proxy: MediaStreamTrack) -> None:
    """Runs a media path over its relay proxy, unsubscribing the proxy when it stops."""
    try:
        await path
    finally:
        proxy.stop()

"""One live session: the candidate's connection, its ticker, and its end.

The pipeline of a session reads top to bottom:
track -> relay -> sampler -> kernels (worker threads) -> SecondAggregator -> publish (store +
bus, ``seconds.py``). The relay (``media/relay.py``) also feeds the HR observers watching
live. The ticker publishes each second as soon as every live track's analysis has passed it,
and ends the session when its media stops.

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
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from rtserver.errors import Conflict, ControlRefused
from rtserver.live.hints import HintRules
from rtserver.live.job_scoring import job_prompts, with_job
from rtserver.live.link import Link, drain
from rtserver.live.questions import QuestionTimeline
from rtserver.live.runtime import Runtime
from rtserver.live.seconds import SecondPublisher
from rtserver.live.transcripts import SessionTranscriber, with_transcript
from rtserver.media.audio import AudioPath
from rtserver.media.clock import MediaClock
from rtserver.media.ingest import PeerIngest
from rtserver.media.relay import SessionRelay
from rtserver.media.video import VideoPath
from rtserver.messages import ControlMessage, SignalMessage
from rtserver.scoring.rubric import Interview, score_interview
from rtserver.scoring.signals import SecondAggregator
from rtserver.store import StoreBacklogged

log = logging.getLogger(__name__)

# Ready seconds are looked for whenever a track's analysis passes a second, and at least this
# often (for seconds published without media, and the end conditions).
TICK_S = 0.05
# A new offer with the join token replaces a connection that still looks up when no media
# has come over it for this long: the candidate's page noticed the drop before ICE did.
RECONNECT_STALL_S = 2.0


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
        self.relay = SessionRelay(session_id, runtime.config)
        self.hints = HintRules()
        # When each question began, by the candidate page's control messages.
        self.timeline = QuestionTimeline(len(self.questions))
        # Each summarised second goes out in order, stored then fanned out.
        self.seconds = SecondPublisher(
            runtime, session_id, self.aggregator, self.clock, self.timeline, self._on_signal
        )
        # What the candidate says, utterance by utterance, with speech-to-text on.
        self.transcriber: SessionTranscriber | None = None
        if runtime.asr is not None and runtime.config.analysis == "full":
            self.transcriber = SessionTranscriber(
                session_id,
                runtime.asr,
                self.clock,
                self.timeline,
                self.questions,
                self.seconds.publisher.publish_and_wait,
                runtime.metrics,
            )
        self._refusal_logged = False  # one log line per session for refused control messages
        self.started_at = time.monotonic()  # reset when the first offer is answered
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.link = self._new_link()
        self._past_cpu_s = 0.0  # analysis CPU of earlier links (s)
        self._dropped_at: float | None = None  # monotonic time the connection dropped
        self._links = asyncio.Lock()  # one connection change (drop, reconnect) at a time
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
            self.transcriber.on_utterance if self.transcriber is not None else None,
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
        if self.transcriber is not None:
            # With a job, speech-to-text hears each question's skills too ("PostgreSQL").
            self.transcriber.questions = await job_prompts(self.runtime, self.id, self.questions)
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
        if self.transcriber is not None:
            self.transcriber.close()

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
            drain(path, source), name=f"{track.kind}-drain-{self.id}"
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

    @property
    def signals(self) -> list[SignalMessage]:
        """The seconds published so far, in order."""
        return self.seconds.signals

    def _on_signal(self, signal: SignalMessage) -> None:
        """After each published second: the live hints it calls for go to the candidate."""
        for hint in self.hints.on_second(signal, self.question_open):
            self.link.ingest.send_hint(hint)
            self.runtime.metrics.hints.inc(code=hint.code)

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
                self.seconds.publish_ready(config.max_signal_wait_s)
            except StoreBacklogged:
                # The store's writer is a whole queue behind: the seconds stay summarised
                # in ``seconds`` and are offered again on the next tick (counted in
                # rtserver_store_backlogged_total; the writer logs why it is behind).
                pass
            except Exception:
                # A failed publish (say, a full disk) must not stop the session's clock:
                # summarised seconds are kept and go out on the next tick.
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
            await self.seconds.flush()
            config = self.runtime.config
            emotion_on = config.emotion == "on"
            final = score_interview(
                Interview(self.id, self.signals, reason, emotion_on, self.questions)
            )
            transcriber = self.transcriber
            if transcriber is not None:
                # The last utterances' transcripts go out before the final, which lists them.
                await transcriber.finish(config.transcript_wait_s)
                final = with_transcript(final, transcriber.messages, transcriber.missing)
            messages = transcriber.messages if transcriber is not None else []
            final = await with_job(self.runtime, self.id, final, messages)
            await self.seconds.publisher.finish(final, reason)
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
            if self.transcriber is not None:
                self.transcriber.close()
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

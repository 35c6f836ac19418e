"""The live sessions of one process: joining under the capacity limits, ending, and
finishing the sessions a crashed process left live.

:class:`SessionHost` is what the API asks of wherever sessions run: this process's
:class:`SessionManager`, or the worker pool (``rtserver/server/workers.py``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from aiortc import RTCSessionDescription

from rtserver.errors import AtCapacity, Conflict
from rtserver.live.job_scoring import with_job
from rtserver.live.publisher import Publisher
from rtserver.live.runtime import Runtime
from rtserver.live.session import LiveSession
from rtserver.live.transcripts import with_transcript
from rtserver.messages import signal_from_wire, transcript_from_wire
from rtserver.scoring.rubric import Interview, score_interview
from rtserver.server.admission import Admission
from rtserver.server.cpu_budget import CpuBudget
from rtserver.server.memory import HeapTrimmer
from rtserver.store import STATUS_LIVE


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
        asr = runtime.asr
        self.admission = Admission(
            runtime.config, runtime.signal_lag, (lambda: asr.backlog_s) if asr else None
        )
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
            if not await self.runtime.db.mark_live(session_id, self.runtime.config.node):
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
        self.runtime.metrics.observe_admission(self.admission)
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
            transcripts = [
                transcript_from_wire(m.payload) for m in stored if m.kind == "transcript"
            ]
            # Utterances still being transcribed when the process died are lost; which ones
            # is not known, so the transcript is marked incomplete.
            final = with_transcript(
                final, transcripts, complete=False, on=runtime.config.transcribe == "on"
            )
            final = await with_job(runtime, session_id, final, transcripts)
            next_seq = stored[-1].seq + 1 if stored else 0
            await Publisher(runtime, session_id, next_seq).finish(final, reason)
        else:
            await db.mark_ended(session_id, reason)
            await db.after_writes(functools.partial(runtime.bus.close_session, session_id))
        recovered.append(session_id)
    return recovered

"""The HTTP and websocket API (v1), the pages, health and metrics.

Every error is a typed :mod:`rtserver.errors` exception, turned into a JSON
``{"error": code, "detail": text}`` response in one handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import RTCSessionDescription
from aiortc.sdp import SessionDescription
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from rtserver.api.observers import stream_session
from rtserver.api.security import SecuredStarlette
from rtserver.bus.memory import Bus, MemoryBus
from rtserver.config import Config
from rtserver.errors import (
    AtCapacity,
    BadRequest,
    BadSdp,
    Conflict,
    Expired,
    NotFound,
    PayloadTooLarge,
    ResumeRequired,
    RtServerError,
    Unauthorized,
    http_status,
)
from rtserver.live.session import (
    Publisher,
    Runtime,
    SessionHost,
    SessionManager,
    recover_interrupted,
)
from rtserver.media.ice import quicken_consent_checks
from rtserver.media.turn import page_ice_configuration
from rtserver.messages import StoredMessage
from rtserver.metrics import Metrics
from rtserver.models.fetch import ensure_models
from rtserver.perception.analysis import build_analysis, needed_models
from rtserver.scoring.rubric import Interview, score_interview
from rtserver.scoring.summary import summarise
from rtserver.server.workers import WorkerPool
from rtserver.store.async_store import AsyncStore
from rtserver.store.sqlite import (
    DEFAULT_EXPIRES_IN_S,
    STATUS_ENDED,
    STATUS_ERASED,
    STATUS_LIVE,
    Question,
    SessionRecord,
    Store,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_QUESTIONS = 50
MAX_EXPIRES_IN_S = 365 * 24 * 3600  # the longest a join link may last (s)
NO_STORE = {"Cache-Control": "no-store"}  # responses that carry credentials


def find_web_client() -> Path:
    """The pages' directory: inside the installed package, where a wheel ships them
    (setup.py copies web_client/ there), else the source checkout's top-level web_client/
    (an editable install, or running from the repository)."""
    package = Path(__file__).resolve().parent.parent
    shipped = package / "web_client"
    return shipped if shipped.is_dir() else package.parent / "web_client"


WEB_CLIENT = find_web_client()


# -- request helpers ------------------------------------------------------------------


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object body; 413 over 64 KiB, 400 when it is not a JSON object."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"body is over {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"body is over {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def bearer_token(connection: HTTPConnection) -> str:
    """The HR key: from ``Authorization: Bearer``, or ``?token=`` on websockets only.

    Browsers cannot set headers on a websocket, so the query is accepted there and nowhere
    else: a key in a REST URL would end up in browser history and proxy logs.
    """
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    if connection.scope["type"] == "websocket":
        return connection.query_params.get("token", "")
    return ""


def client_address(connection: HTTPConnection) -> str:
    return connection.client.host if connection.client else "unknown"


class Api:
    """Route handlers, bound to one server's runtime."""

    def __init__(self, runtime: Runtime, api_key: str, host: SessionHost | None = None) -> None:
        self.runtime = runtime
        # The store off the event loop: every read in a thread, every write on the writer
        # thread (rtserver/store/async_store.py).
        self.db = runtime.db
        # Where the live sessions run: here, or in worker processes (rtserver/server/workers.py).
        self.manager: SessionHost = host if host is not None else SessionManager(runtime)
        self._api_key = api_key

    # -- auth -------------------------------------------------------------------------

    def is_hr(self, connection: HTTPConnection) -> bool:
        token = bearer_token(connection)
        return bool(token) and hmac.compare_digest(token.encode(), self._api_key.encode())

    def require_hr(self, connection: HTTPConnection) -> str:
        """The audit actor for an HR request; raises 401 without the API key."""
        if not self.is_hr(connection):
            raise Unauthorized("missing or wrong API key (send Authorization: Bearer <key>)")
        return f"hr@{client_address(connection)}"

    async def session_or_404(self, session_id: str) -> SessionRecord:
        record = await self.db.get_session(session_id)
        if record is None or record.status == STATUS_ERASED:
            raise NotFound(f"no session {session_id}")
        return record

    async def candidate_session(self, session_id: str, token: Any) -> SessionRecord:
        """The session a join token holder asks about: 404 unknown, 401 wrong token, 410
        once its link has expired (checked after the token, so that only its holder
        learns it)."""
        record = await self.session_or_404(session_id)
        if not isinstance(token, str) or not await self.db.check_join_token(record.id, token):
            raise Unauthorized("wrong or missing join token")
        if record.is_expired():
            raise Expired("this interview link has expired; ask for a new one")
        return record

    def base_url(self, request: Request) -> str:
        configured = self.runtime.config.public_url
        return (configured or str(request.base_url)).rstrip("/")

    # -- sessions ---------------------------------------------------------------------

    async def create_session(self, request: Request) -> Response:
        actor = self.require_hr(request)
        body = await read_json(request)
        candidate = _optional_str(body, "candidate")
        job = _optional_str(body, "job")
        questions = _questions(body.get("questions"))
        expires_in_s = _expires_in(body.get("expires_in"))
        record, join_token = await self.db.create_session(candidate, job, questions, expires_in_s)
        await self.db.audit(actor, "create", record.id)
        base = self.base_url(request)
        return JSONResponse(
            {
                "id": record.id,
                "join_token": join_token,
                "candidate_url": f"{base}/candidate/{record.id}?token={join_token}",
                "observe_url": f"{base}/observe/{record.id}",
                "expires_at": record.expires_at,
            },
            status_code=201,
        )

    async def list_sessions(self, request: Request) -> Response:
        actor = self.require_hr(request)
        records = await self.db.list_sessions()
        await self.db.audit(actor, "list", None, f"{len(records)} sessions")
        return JSONResponse({"sessions": [r.to_wire() for r in records]})

    async def get_session(self, request: Request) -> Response:
        actor = self.require_hr(request)
        record = await self.session_or_404(request.path_params["session_id"])
        await self.db.audit(actor, "view_session", record.id)
        data = record.to_wire()
        figures = await self.manager.live_figures(record.id)
        data["live"] = figures is not None
        data["signals"] = figures["signals"] if figures else None
        data["analysis_cpu_per_media_s"] = figures["analysis_cpu_per_media_s"] if figures else None
        return JSONResponse(data)

    async def get_questions(self, request: Request) -> Response:
        """The interview questions and what the candidate page needs to know before it
        starts (join token)."""
        token = request.query_params.get("token", "")
        record = await self.candidate_session(request.path_params["session_id"], token)
        config = self.runtime.config
        questions = [{"text": q.text, "seconds": q.seconds} for q in record.questions]
        # The page's STUN/TURN servers come with them: one TURN credential per fetch, so the
        # page fetches this again before each connection; never cached.
        ice = page_ice_configuration(config, record.id)
        return JSONResponse(
            {
                "questions": questions,
                "status": record.status,
                "emotion": config.emotion,
                "expires_at": record.expires_at,
                "max_interview_s": config.max_interview_s,
                **ice,
            },
            headers=NO_STORE,
        )

    async def offer(self, request: Request) -> Response:
        """The candidate joins, or, while the session is live, comes back after a drop.

        The first answer carries the session's resume secret; a rejoin of the live session
        must send it back (its hash is checked here, in the process that checks the join
        token, wherever the session runs), so a join link alone cannot take a live session
        over. A live session is not cut off by its link expiring: its rejoin needs the
        secret, and ``--max-interview`` bounds it.
        """
        session_id = request.path_params["session_id"]
        record = await self.session_or_404(session_id)
        body = await read_json(request)
        token = body.get("token")
        if not isinstance(token, str) or not await self.db.check_join_token(record.id, token):
            raise Unauthorized("wrong or missing join token")
        actor = "candidate@" + client_address(request)
        if record.status == STATUS_LIVE:
            resume = await self._check_resume(record, body.get("resume"), actor)
            answer = await self.manager.reconnect(record.id, _parse_candidate_offer(body))
            await self.db.audit(actor, "rejoin", record.id)
            return _answer_response(answer, resume)
        if record.is_expired():
            raise Expired("this interview link has expired; ask for a new one")
        if record.status == STATUS_ENDED:
            raise Conflict("session has already ended")
        offer = _parse_candidate_offer(body)
        texts = [q.text for q in record.questions]
        answer = await self.manager.join(record.id, offer, texts)
        resume = secrets.token_urlsafe(32)
        if not await self.db.set_resume_secret(record.id, resume):
            # Only the one join that made the session live gets here (store.mark_live).
            log.error("session already had a resume secret", extra={"session": record.id})
        await self.db.audit(actor, "join", record.id)
        return _answer_response(answer, resume)

    async def _check_resume(self, record: SessionRecord, resume: Any, actor: str) -> str:
        """The resume secret a rejoin of live ``record`` carries; raises ResumeRequired
        (audited) when it is missing or wrong."""
        if not isinstance(resume, str) or not resume:
            problem = "no resume secret"
        elif not await self.db.check_resume_secret(record.id, resume):
            problem = "wrong resume secret"
        else:
            return resume
        await self.db.audit(actor, "rejoin_refused", record.id, problem)
        raise ResumeRequired(
            f"this session is live: {problem}. A rejoin must send the resume secret of the "
            'first answer ("resume")'
        )

    async def ice_servers(self, request: Request) -> Response:
        """The observer page's STUN/TURN servers for /watch, with a fresh TURN credential."""
        self.require_hr(request)
        return JSONResponse(page_ice_configuration(self.runtime.config, "hr"), headers=NO_STORE)

    async def watch(self, request: Request) -> Response:
        """An HR observer's recvonly offer, answered with the candidate's live video and
        audio (relayed, so re-encoded per observer)."""
        actor = self.require_hr(request)
        record = await self.session_or_404(request.path_params["session_id"])
        offer = _parse_watch_offer(await read_json(request))
        answer = await self.manager.watch(record.id, offer)
        await self.db.audit(actor, "watch", record.id)
        return JSONResponse({"sdp": answer.sdp, "type": answer.type})

    async def summary(self, request: Request) -> Response:
        """The candidate's summary (join token): plain strengths and things to work on,
        once the final exists; never the score."""
        token = request.query_params.get("token", "")
        record = await self.candidate_session(request.path_params["session_id"], token)
        final = await self.db.final_message(record.id)
        if final is None:
            status = "live" if record.status == STATUS_LIVE else "pending"
            return JSONResponse({"status": status, "strengths": [], "improvements": []})
        # Audited when it is actually shown, not for every poll while it is pending.
        await self.db.audit("candidate@" + client_address(request), "view_summary", record.id)
        summary = summarise(final.payload)
        return JSONResponse(
            {
                "status": "ended",
                "strengths": list(summary.strengths),
                "improvements": list(summary.improvements),
                # Why it ended (e.g. max_length), so the page can say so plainly.
                "end_reason": final.payload.get("end_reason") or None,
            }
        )

    async def end_session(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        record = await self.session_or_404(session_id)
        actor = await self._hr_or_candidate(request, record)
        if record.status == STATUS_ENDED:
            raise Conflict("session has already ended")
        ended_by = "ended_by_hr" if actor.startswith("hr") else "ended_by_candidate"
        if not await self.manager.end(record.id, ended_by):
            if record.status == STATUS_LIVE:
                raise Conflict("session is live in another process")
            # Never joined: end it here, with an empty final so observers are not left waiting.
            emotion_on = self.runtime.config.emotion == "on"
            texts = [q.text for q in record.questions]
            final = score_interview(Interview(record.id, [], ended_by, emotion_on, texts))
            await Publisher(self.runtime, record.id).finish(final, ended_by)
        await self.db.audit(actor, "end", record.id)
        ended = await self.session_or_404(session_id)
        return JSONResponse(ended.to_wire())

    async def _hr_or_candidate(self, request: Request, record: SessionRecord) -> str:
        if self.is_hr(request):
            return f"hr@{client_address(request)}"
        token = request.query_params.get("token", "")
        if not token and int(request.headers.get("content-length") or 0) > 0:
            body = await read_json(request)
            token = body.get("token", "") if isinstance(body.get("token"), str) else ""
        if token and await self.db.check_join_token(record.id, token):
            return f"candidate@{client_address(request)}"
        raise Unauthorized("send the HR API key or the session's join token")

    async def report(self, request: Request) -> Response:
        actor = self.require_hr(request)
        record = await self.session_or_404(request.path_params["session_id"])
        final = await self.db.final_message(record.id)
        if final is None:
            raise Conflict(f"session is {record.status}; the report exists once it has ended")
        await self.db.audit(actor, "view_report", record.id)
        # An hour is 3600 signals: read, decoded and encoded again on a read thread.
        body = await self.db.read(_report_body, record, final)
        return Response(body, media_type="application/json")

    async def erase(self, request: Request) -> Response:
        """Erases a candidate's data (GDPR-style). Live sessions are ended first."""
        actor = self.require_hr(request)
        record = await self.session_or_404(request.path_params["session_id"])
        await self.manager.end(record.id, "erased")
        await self.db.erase(record.id)
        await self.db.audit(actor, "erase", record.id)
        return Response(status_code=204)

    async def audit_log(self, request: Request) -> Response:
        actor = self.require_hr(request)
        record = await self.session_or_404(request.path_params["session_id"])
        await self.db.audit(actor, "view_audit", record.id)
        return JSONResponse({"audit": await self.db.audit_log(record.id)})

    async def signals(self, websocket: WebSocket) -> None:
        session_id = websocket.path_params["session_id"]
        try:
            actor = self.require_hr(websocket)
            await self.session_or_404(session_id)
        except RtServerError as error:
            await websocket.send_denial_response(error_response(error))
            return
        await self.db.audit(actor, "observe", session_id)
        await websocket.accept()
        await stream_session(websocket, session_id, self.db, self.runtime.bus, self.runtime.metrics)

    # -- pages and operations ---------------------------------------------------------

    async def candidate_page(self, request: Request) -> Response:
        return FileResponse(WEB_CLIENT / "candidate.html")

    async def observer_page(self, request: Request) -> Response:
        return FileResponse(WEB_CLIENT / "observer.html")

    async def index(self, request: Request) -> Response:
        return FileResponse(WEB_CLIENT / "index.html")

    async def healthz(self, request: Request) -> Response:
        """``{"status": "ok"}`` for anyone (load balancers, uptime checks); the rest (live
        sessions, backends, worker pids) only with the HR key."""
        if not self.is_hr(request):
            return JSONResponse({"status": "ok"})
        config = self.runtime.config
        return JSONResponse(
            {
                "status": "ok",
                "live_sessions": self.manager.live_count(),
                "analysis": config.analysis,
                "emotion": config.emotion,
                "detector": config.detector,
                "backends": self.runtime.backends,
                **self.manager.health(),
            }
        )

    async def metrics(self, request: Request) -> Response:
        """Prometheus metrics; HR key only (Prometheus sends it as a bearer token)."""
        self.require_hr(request)
        return PlainTextResponse(
            await self.manager.render_metrics(), media_type="text/plain; version=0.0.4"
        )


def _report_body(store: Store, record: SessionRecord, final: StoredMessage) -> bytes:
    """The report as JSON bytes, as JSONResponse would write it (runs on a read thread)."""
    signals = [m.payload for m in store.messages(record.id) if m.kind == "signal"]
    report = {"session": record.to_wire(), "final": final.payload, "signals": signals}
    return json.dumps(
        report, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode()


def _optional_str(body: dict[str, Any], key: str, limit: int = 500) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(f"{key} must be a string of at most {limit} characters")
    return value


def _expires_in(raw: Any) -> float:
    """How long a new session's join link lasts (s): ``expires_in``, 1 s to a year, or the
    default week when absent."""
    if raw is None:
        return DEFAULT_EXPIRES_IN_S
    number = isinstance(raw, int | float) and not isinstance(raw, bool)
    if not number or not 1 <= raw <= MAX_EXPIRES_IN_S:
        raise BadRequest(f"expires_in must be a number of seconds from 1 to {MAX_EXPIRES_IN_S}")
    return float(raw)


def _questions(raw: Any) -> list[Question]:
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_QUESTIONS:
        raise BadRequest(f"questions must be a list of at most {MAX_QUESTIONS} items")
    questions = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise BadRequest('each question must be {"text": str, "seconds": int}')
        seconds = item.get("seconds", 120)
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 1 <= seconds <= 3600:
            raise BadRequest("question seconds must be an integer from 1 to 3600")
        questions.append(Question(item["text"][:2000], seconds))
    return questions


def _answer_response(answer: RTCSessionDescription, resume: str) -> JSONResponse:
    return JSONResponse({"sdp": answer.sdp, "type": answer.type, "resume": resume})


def _parse_offer(body: dict[str, Any]) -> RTCSessionDescription:
    """Validates an offer body: an SDP offer with at least one audio or video m-line."""
    sdp, kind = body.get("sdp"), body.get("type")
    if kind != "offer":
        raise BadRequest('type must be "offer"')
    if not isinstance(sdp, str) or not sdp.strip():
        raise BadSdp("sdp must be a non-empty string")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:
        # aiortc's parser raises whatever the bad line provokes (even StopIteration).
        raise BadSdp(f"malformed SDP: {exc!r}") from exc
    if not any(media.kind in ("audio", "video") for media in parsed.media):
        raise BadSdp("the offer has no audio or video m-line")
    return RTCSessionDescription(sdp=sdp, type="offer")


def _parse_candidate_offer(body: dict[str, Any]) -> RTCSessionDescription:
    """Validates a candidate's offer: as :func:`_parse_offer`, with at most one audio, one
    video and one application (data channels) m-line. A track beyond those would never be
    drained, and aiortc queues its packets without bound."""
    offer = _parse_offer(body)
    kinds = [media.kind for media in SessionDescription.parse(offer.sdp).media]
    for kind in ("audio", "video", "application"):
        if kinds.count(kind) > 1:
            raise BadSdp(
                f"the offer has more than one {kind} m-line: an interview takes one camera "
                "and one microphone"
            )
    return offer


def _parse_watch_offer(body: dict[str, Any]) -> RTCSessionDescription:
    """Validates an observer's offer: at most one audio and one video m-line, each recvonly
    (an observer sends nothing: media it sent would queue up unread)."""
    offer = _parse_offer(body)
    kinds: list[str] = []
    for media in SessionDescription.parse(offer.sdp).media:
        if media.kind not in ("audio", "video"):
            continue
        if media.direction != "recvonly":
            raise BadSdp(f"the observer's {media.kind} m-line must be recvonly")
        if media.kind in kinds:
            raise BadSdp(f"the observer's offer has more than one {media.kind} m-line")
        kinds.append(media.kind)
    return offer


def error_response(error: RtServerError) -> JSONResponse:
    headers = {}
    if isinstance(error, AtCapacity):
        headers["Retry-After"] = str(error.retry_after_s)
    return JSONResponse(
        {"error": error.code, "detail": error.detail},
        status_code=http_status(error),
        headers=headers,
    )


async def handle_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RtServerError)
    api: Api = request.app.state.api
    api.runtime.metrics.rejected.inc(code=exc.code)
    log.info("%s %s refused: %s", request.method, request.url.path, exc.detail)
    return error_response(exc)


def build_runtime(
    config: Config, bus: Bus | None = None, fetch_missing_models: bool = True
) -> Runtime:
    """Everything the sessions of one process share, models loaded (not yet warmed up);
    ``bus`` defaults to an in-process :class:`MemoryBus`. A worker process passes
    ``fetch_missing_models=False``: the server process fetched them before starting it."""
    metrics = Metrics()
    executor = ThreadPoolExecutor(config.analysis_threads, thread_name_prefix="analysis")
    analysis = build_analysis(config, metrics, executor, fetch_missing_models)
    store = Store(config.db_path)
    return Runtime(
        config=config,
        store=store,
        db=AsyncStore(store, Store(config.db_path), metrics),
        bus=bus if bus is not None else MemoryBus(),
        metrics=metrics,
        executor=executor,
        detector=analysis.detector,
        batcher=analysis.batcher,
        backends=analysis.backends,
        vad=analysis.vad,
    )


def warm_up(runtime: Runtime) -> None:
    """Compiles and loads everything before the first session, so it pays no start-up cost."""
    from rtserver.kernels import audio
    from rtserver.perception import speech, syllables

    audio.warm_up()
    speech.warm_up()
    syllables.warm_up()
    if runtime.vad is not None:
        runtime.vad.stream().process(np.zeros(2048, np.float32))
    if runtime.detector is not None:
        runtime.detector.detect(np.zeros((240, 320), np.uint8))


def build_front_runtime(config: Config) -> Runtime:
    """The server process's runtime when worker processes run the sessions: storage, the
    bus its observers subscribe to, metrics; no models."""
    store, metrics = Store(config.db_path), Metrics()
    return Runtime(
        config=config,
        store=store,
        db=AsyncStore(store, Store(config.db_path), metrics),
        bus=MemoryBus(),
        metrics=metrics,
        executor=ThreadPoolExecutor(1, thread_name_prefix="front"),
        detector=None,
    )


def worker_count(config: Config) -> int:
    """Worker processes to run: as configured, or one per core."""
    return config.workers or os.cpu_count() or 1


def create_app(config: Config, api_key: str) -> Starlette:
    """The server; with more than one worker (see :func:`worker_count`), the sessions run in
    worker processes (rtserver/server/workers.py) and this process serves HTTP and observers."""
    if worker_count(config) > 1:
        return _create_front_app(config, api_key, worker_count(config))
    quicken_consent_checks()  # a vanished candidate is noticed in seconds (media/ice.py)
    runtime = build_runtime(config)
    api = Api(runtime, api_key)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        recovered = await recover_interrupted(runtime)
        if recovered:
            log.warning("ended %d sessions interrupted by a restart", len(recovered))
        await asyncio.get_running_loop().run_in_executor(runtime.executor, warm_up, runtime)
        if runtime.batcher is not None:
            runtime.batcher.start()
        if isinstance(api.manager, SessionManager) and api.manager.cpu_budget is not None:
            api.manager.cpu_budget.start()  # from after the warm-up, which is no measure of it
        try:
            yield
        finally:
            await api.manager.shutdown()
            if runtime.batcher is not None:
                await runtime.batcher.stop()
            runtime.executor.shutdown(wait=False, cancel_futures=True)
            await runtime.db.close()  # everything queued is written first
            runtime.store.close()

    return _app(api, lifespan)


def _create_front_app(config: Config, api_key: str, workers: int) -> Starlette:
    runtime = build_front_runtime(config)
    pool = WorkerPool(runtime, workers)
    api = Api(runtime, api_key, pool)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Before any worker starts: what a crashed server left live is no worker's.
        recovered = await recover_interrupted(runtime)
        if recovered:
            log.warning("ended %d sessions interrupted by a restart", len(recovered))
        # Models are fetched here, once, before any worker starts: workers only verify
        # them (under the models directory's lock, rtserver/models/fetch.py).
        await asyncio.to_thread(ensure_models, config.models_path, needed_models(config))
        try:
            await pool.start()
            yield
        finally:
            await pool.shutdown()
            runtime.executor.shutdown(wait=False, cancel_futures=True)
            await runtime.db.close()  # everything queued is written first
            runtime.store.close()

    return _app(api, lifespan)


def _app(
    api: Api, lifespan: Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]
) -> Starlette:
    routes = [
        Route("/", api.index),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/healthz", api.healthz),
        Route("/metrics", api.metrics),
        Route("/api/v1/ice-servers", api.ice_servers, methods=["GET"]),
        Route("/api/v1/sessions", api.create_session, methods=["POST"]),
        Route("/api/v1/sessions", api.list_sessions, methods=["GET"]),
        Route("/api/v1/sessions/{session_id}", api.get_session, methods=["GET"]),
        Route("/api/v1/sessions/{session_id}", api.erase, methods=["DELETE"]),
        Route("/api/v1/sessions/{session_id}/questions", api.get_questions, methods=["GET"]),
        Route("/api/v1/sessions/{session_id}/offer", api.offer, methods=["POST"]),
        Route("/api/v1/sessions/{session_id}/end", api.end_session, methods=["POST"]),
        Route("/api/v1/sessions/{session_id}/watch", api.watch, methods=["POST"]),
        Route("/api/v1/sessions/{session_id}/summary", api.summary, methods=["GET"]),
        Route("/api/v1/sessions/{session_id}/report", api.report, methods=["GET"]),
        Route("/api/v1/sessions/{session_id}/audit", api.audit_log, methods=["GET"]),
        WebSocketRoute("/api/v1/sessions/{session_id}/signals", api.signals),
        Route("/candidate/{session_id}", api.candidate_page),
        Route("/observe", api.observer_page),
        Route("/observe/{session_id}", api.observer_page),
        Mount("/static", app=StaticFiles(directory=WEB_CLIENT, check_dir=False), name="static"),
    ]
    app = SecuredStarlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={RtServerError: handle_error},
    )
    app.state.api = api
    return app

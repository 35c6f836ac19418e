"""The HTTP and websocket API (v1): the app factory and the route table.

Each resource's handlers live in their own module (``sessions``, ``candidates``,
``observers``, ``pages``, ``health``); every error is a typed :mod:`rtserver.errors`
exception, turned into a JSON ``{"error": code, "detail": text}`` response in one handler
(``http.py``). The live sessions run in this process or in worker processes
(``rtserver/server/``); the runtime they share is built in ``rtserver/live/runtime.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from rtserver.api import (
    accounts,
    audit_log,
    audits,
    candidate_data,
    candidates,
    decisions,
    health,
    jobs,
    observers,
    openapi,
    outcomes,
    pages,
    self_identification,
    sessions,
)
from rtserver.api.auth import BootstrapKeyWarning
from rtserver.api.context import Api
from rtserver.api.http import handle_error, handle_store_error
from rtserver.api.pages import WEB_CLIENT
from rtserver.api.security import SecuredStarlette
from rtserver.ats.webhooks import WebhookDispatcher
from rtserver.config import Config
from rtserver.errors import RtServerError
from rtserver.live.manager import SessionManager, recover_interrupted
from rtserver.live.runtime import (
    Runtime,
    build_front_runtime,
    build_runtime,
    start_queues,
    stop_queues,
    warm_up,
)
from rtserver.media.ice import quicken_consent_checks
from rtserver.models.fetch import ensure_models
from rtserver.perception.analysis import needed_models
from rtserver.server.workers import WorkerPool
from rtserver.store.audit_log import AuditPruner
from rtserver.store.engine import OPERATIONAL_ERRORS
from rtserver.store.retention import RetentionSweeper

log = logging.getLogger(__name__)


def worker_count(config: Config) -> int:
    """Worker processes to run: as configured, or one per core."""
    return config.workers or os.cpu_count() or 1


def create_app(config: Config, api_key: str) -> Starlette:
    """The server; with more than one worker (see :func:`worker_count`), the sessions run in
    worker processes (rtserver/server/workers.py) and this process serves HTTP and observers.
    On many hosts (``--role front`` or ``node``) the apps of rtserver/cluster/apps.py."""
    if config.role != "all":
        from rtserver.cluster.apps import create_front_app, create_node_app

        create = create_front_app if config.role == "front" else create_node_app
        return create(config, api_key)
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
        start_queues(runtime)
        if isinstance(api.manager, SessionManager) and api.manager.cpu_budget is not None:
            api.manager.cpu_budget.start()  # from after the warm-up, which is no measure of it
        webhooks = start_webhooks(runtime)
        pruner = start_audit_pruning(runtime)
        retention = start_retention(runtime)
        try:
            yield
        finally:
            await stop_retention(retention)
            await api.manager.shutdown()
            await pruner.stop()
            await stop_webhooks(runtime, webhooks)
            await stop_queues(runtime)
            await close_runtime(runtime, api)

    return routed_app(api, lifespan)


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
        webhooks = start_webhooks(runtime)
        pruner = start_audit_pruning(runtime)
        retention = start_retention(runtime)
        try:
            await pool.start()
            yield
        finally:
            await stop_retention(retention)
            await pool.shutdown()
            await pruner.stop()
            await stop_webhooks(runtime, webhooks)
            await close_runtime(runtime, api)

    return routed_app(api, lifespan)


async def close_runtime(runtime: Runtime, api: Api) -> None:
    """The last of a server's shutdown: everything queued is written, then what those writes
    published leaves for the bus (Redis), then the store and the accounts close."""
    runtime.executor.shutdown(wait=False, cancel_futures=True)
    await runtime.db.close()
    await runtime.bus.close()
    runtime.store.close()
    api.accounts.close()


def start_webhooks(runtime: Runtime) -> WebhookDispatcher | None:
    """The ATS webhook dispatcher, in the server process only, when there is a secret to
    sign with (without one, no receiver can be configured)."""
    if not runtime.config.webhook_secret or runtime.outbox is None:
        return None
    dispatcher = WebhookDispatcher(runtime.outbox, runtime.config.webhook_secret)
    dispatcher.start()
    return dispatcher


def start_audit_pruning(runtime: Runtime) -> AuditPruner:
    """Audit rows past the retention period pruned now and hourly, in the server process
    only (rtserver/store/audit_log.py)."""
    pruner = AuditPruner(runtime.db.prune_audit_log, runtime.config.audit_retention_days)
    pruner.start()
    return pruner


async def stop_webhooks(runtime: Runtime, dispatcher: WebhookDispatcher | None) -> None:
    if dispatcher is not None:
        await dispatcher.stop()
    if runtime.outbox is not None:
        runtime.outbox.close()


def start_retention(runtime: Runtime) -> RetentionSweeper | None:
    """The retention sweeper (store/retention.py), in the server process only; None when
    ``retention_sweep_s`` is 0."""
    config = runtime.config
    if config.retention_sweep_s <= 0:
        return None
    sweeper = RetentionSweeper(
        runtime.db, runtime.outbox, config.retention_days, config.retention_sweep_s
    )
    sweeper.start()
    return sweeper


async def stop_retention(sweeper: RetentionSweeper | None) -> None:
    if sweeper is not None:
        await sweeper.stop()


def routed_app(
    api: Api, lifespan: Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]
) -> Starlette:
    session = "/api/v1/sessions/{session_id}"
    routes = [
        Route("/", pages.index),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/healthz", health.healthz),
        Route("/metrics", health.metrics),
        Route("/api/v1/ice-servers", observers.ice_servers, methods=["GET"]),
        Route("/api/v1/login", accounts.login, methods=["POST"]),
        Route("/api/v1/logout", accounts.logout, methods=["POST"]),
        Route("/api/v1/me", accounts.me, methods=["GET"]),
        Route("/api/v1/me/totp", accounts.begin_totp, methods=["POST"]),
        Route("/api/v1/me/totp/confirm", accounts.confirm_totp, methods=["POST"]),
        Route("/api/v1/me/password", accounts.change_password, methods=["POST"]),
        Route("/api/v1/users", accounts.list_users, methods=["GET"]),
        Route("/api/v1/users", accounts.create_user, methods=["POST"]),
        Route("/api/v1/users/{user_id}", accounts.update_user, methods=["PATCH"]),
        Route("/api/v1/users/{user_id}/reset-2fa", accounts.reset_user_totp, methods=["POST"]),
        Route("/api/v1/units", accounts.list_units, methods=["GET"]),
        Route("/api/v1/units", accounts.create_unit, methods=["POST"]),
        Route("/api/v1/tokens", accounts.list_tokens, methods=["GET"]),
        Route("/api/v1/tokens", accounts.create_token, methods=["POST"]),
        Route("/api/v1/tokens/{token_id}", accounts.revoke_token, methods=["DELETE"]),
        Route("/api/v1/jobs", jobs.create_job, methods=["POST"]),
        Route("/api/v1/jobs", jobs.list_jobs, methods=["GET"]),
        Route("/api/v1/jobs/{job_id}", jobs.get_job, methods=["GET"]),
        Route("/api/v1/jobs/{job_id}", jobs.update_job, methods=["PUT"]),
        Route("/api/v1/jobs/{job_id}/outcomes", outcomes.record_outcomes, methods=["POST"]),
        Route("/api/v1/jobs/{job_id}/outcomes", outcomes.list_outcomes, methods=["GET"]),
        Route("/api/v1/jobs/{job_id}/audit", audits.bias_audit, methods=["GET"]),
        Route("/api/v1/jobs/{job_id}/calibrations", audits.calibrations, methods=["GET"]),
        Route("/api/v1/sessions", sessions.create_session, methods=["POST"]),
        Route("/api/v1/sessions", sessions.list_sessions, methods=["GET"]),
        Route(session, sessions.get_session, methods=["GET"]),
        Route(session, sessions.erase, methods=["DELETE"]),
        Route(f"{session}/questions", candidates.get_questions, methods=["GET"]),
        Route(f"{session}/offer", candidates.offer, methods=["POST"]),
        Route(f"{session}/end", sessions.end_session, methods=["POST"]),
        Route(f"{session}/watch", observers.watch, methods=["POST"]),
        Route(f"{session}/summary", candidates.summary, methods=["GET"]),
        Route(f"{session}/report", sessions.report, methods=["GET"]),
        Route(f"{session}/audit", sessions.audit_log, methods=["GET"]),
        Route(f"{session}/decision", decisions.decide, methods=["POST"]),
        Route(f"{session}/decision", decisions.list_decisions, methods=["GET"]),
        Route(f"{session}/explanation", decisions.explanation, methods=["GET"]),
        Route(f"{session}/legal-hold", candidate_data.set_legal_hold, methods=["PUT"]),
        Route(f"{session}/legal-hold", candidate_data.lift_legal_hold, methods=["DELETE"]),
        Route(f"{session}/export", candidate_data.export, methods=["GET"]),
        Route(f"{session}/erasure-request", candidate_data.request_erasure, methods=["POST"]),
        Route(
            f"{session}/self-identification",
            self_identification.self_identify,
            methods=["POST"],
        ),
        Route("/api/v1/webhooks/deliveries", decisions.deliveries, methods=["GET"]),
        Route("/api/v1/audit-log", audit_log.audit_log, methods=["GET"]),
        Route("/api/v1/openapi.json", openapi.openapi_json, methods=["GET"]),
        WebSocketRoute(f"{session}/signals", observers.signals),
        Route("/candidate/{session_id}", pages.candidate_page),
        Route("/observe", pages.observer_page),
        Route("/observe/{session_id}", pages.observer_page),
        Route("/jobs", pages.jobs_page),
        Route("/login", pages.login_page),
        Route("/audit.css", pages.audit_stylesheet),
        Mount("/static", app=StaticFiles(directory=WEB_CLIENT, check_dir=False), name="static"),
    ]
    app = SecuredStarlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            RtServerError: handle_error,
            **{error: handle_store_error for error in OPERATIONAL_ERRORS},
        },
        middleware=[Middleware(BootstrapKeyWarning, bootstrap_key=api.bootstrap_key)],
    )
    app.state.api = api
    return app

"""The two apps of a deployment on many hosts: a front end and a media node.

- **Front end** (``--role front``): every route of the API. Sessions are placed on media nodes
  and reached through them (``cluster/host.py``); observers get backfill from the store and
  live messages from Redis. It keeps nothing of its own between requests, so any number run
  behind any load balancer. The periodic jobs of one deployment (webhook delivery, audit-log
  pruning, retention sweeps) run where they always did, in the front ends; each is safe to
  run in several at once (a dispatcher claims each delivery with a lease, a compare-and-set
  in the store, so no event goes out twice at once; pruning and erasure run in write
  transactions and find nothing left to do when another front end was first).
- **Media node** (``--role node``): runs sessions (``cluster/node.py``). Its HTTP port serves
  ``/healthz`` and ``/metrics`` only: candidates and HR reach it through a front end, and
  its peers over WebRTC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from rtserver.api import health
from rtserver.api.app import (
    close_runtime,
    routed_app,
    start_audit_pruning,
    start_retention,
    start_webhooks,
    stop_retention,
    stop_webhooks,
)
from rtserver.api.context import Api
from rtserver.api.http import handle_error
from rtserver.api.security import SecuredStarlette
from rtserver.cluster.calls import CallClient, Signer
from rtserver.cluster.host import ClusterHost
from rtserver.cluster.node import MediaNode
from rtserver.config import Config
from rtserver.errors import RtServerError
from rtserver.live.manager import SessionManager
from rtserver.live.runtime import (
    build_front_runtime,
    build_runtime,
    start_queues,
    stop_queues,
    warm_up,
)
from rtserver.media.ice import quicken_consent_checks
from rtserver.models.fetch import ensure_models

log = logging.getLogger(__name__)


def signer_for(config: Config) -> Signer:
    if not config.cluster_secret:
        log.warning(
            "no --cluster-secret: calls between front ends and nodes are guarded by Redis's"
            " password alone"
        )
    return Signer(config.cluster_secret.encode())


def create_front_app(config: Config, api_key: str) -> Starlette:
    """A stateless front end: the whole API, sessions on the media nodes."""
    runtime = build_front_runtime(config)
    redis = Redis.from_url(config.bus)
    host = ClusterHost(runtime, redis, CallClient(redis, signer_for(config)))
    api = Api(runtime, api_key, host)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if config.transcribe == "on":  # the final of a lost node's session rates its answers
            await asyncio.to_thread(ensure_models, config.models_path, ["sentence_encoder"])
        webhooks = start_webhooks(runtime)
        pruner = start_audit_pruning(runtime)
        retention = start_retention(runtime)
        host.start()
        try:
            yield
        finally:
            await host.shutdown()
            await stop_retention(retention)
            await pruner.stop()
            await stop_webhooks(runtime, webhooks)
            await close_runtime(runtime, api)
            await redis.aclose()

    return routed_app(api, lifespan)


def create_node_app(config: Config, api_key: str) -> Starlette:
    """A media node: runs the sessions placed on it; HTTP for /healthz and /metrics."""
    quicken_consent_checks()  # a vanished candidate is noticed in seconds (media/ice.py)
    runtime = build_runtime(config)
    manager = SessionManager(runtime)
    api = Api(runtime, api_key, manager)
    redis = Redis.from_url(config.bus)
    node = MediaNode(manager, redis, signer_for(config))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.get_running_loop().run_in_executor(runtime.executor, warm_up, runtime)
        start_queues(runtime)
        if manager.cpu_budget is not None:
            manager.cpu_budget.start()  # from after the warm-up, which is no measure of it
        await node.start()
        try:
            yield
        finally:
            await node.stop()
            await stop_queues(runtime)
            await close_runtime(runtime, api)
            await redis.aclose()

    routes = [
        Route("/healthz", health.healthz),
        Route("/metrics", health.metrics),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
    ]
    app = SecuredStarlette(
        routes=routes, lifespan=lifespan, exception_handlers={RtServerError: handle_error}
    )
    app.state.api = api
    return app

"""Operations: ``/healthz`` for load balancers and uptime checks, ``/metrics`` for Prometheus."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from rtserver.accounts.roles import Permission
from rtserver.api.context import api_of


async def healthz(request: Request) -> Response:
    """``{"status": "ok"}`` for anyone (load balancers, uptime checks); the rest (live
    sessions, backends, worker pids) only for a signed-in caller."""
    api = api_of(request)
    if await api.principal(request) is None:
        return JSONResponse({"status": "ok"})
    config = api.runtime.config
    return JSONResponse(
        {
            "status": "ok",
            "live_sessions": api.manager.live_count(),
            "analysis": config.analysis,
            "emotion": config.emotion,
            "transcription": config.transcribe,
            "detector": config.detector,
            "backends": api.runtime.backends,
            **api.manager.health(),
        }
    )


async def metrics(request: Request) -> Response:
    """Prometheus metrics, for admins: Prometheus sends an admin's API token (or the bootstrap
    key) as a bearer token."""
    api = api_of(request)
    await api.require(request, Permission.ADMINISTER)
    return PlainTextResponse(
        await api.manager.render_metrics(), media_type="text/plain; version=0.0.4"
    )

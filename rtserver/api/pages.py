"""The pages: the candidate's, the observer's, the jobs page and the index, served from
``web_client/``."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response


def find_web_client() -> Path:
    """The pages' directory: inside the installed package, where a wheel ships them
    (setup.py copies web_client/ there), else the source checkout's top-level web_client/
    (an editable install, or running from the repository)."""
    package = Path(__file__).resolve().parent.parent
    shipped = package / "web_client"
    return shipped if shipped.is_dir() else package.parent / "web_client"


WEB_CLIENT = find_web_client()


async def candidate_page(request: Request) -> Response:
    return FileResponse(WEB_CLIENT / "candidate.html")


async def observer_page(request: Request) -> Response:
    return FileResponse(WEB_CLIENT / "observer.html")


async def jobs_page(request: Request) -> Response:
    """HR's jobs: the list, the editor, and a new interview for a job (the key in the page)."""
    return FileResponse(WEB_CLIENT / "jobs.html")


async def login_page(request: Request) -> Response:
    """HR's login: password, then the authenticator's code, or enrolling one."""
    return FileResponse(WEB_CLIENT / "login.html")


async def index(request: Request) -> Response:
    return FileResponse(WEB_CLIENT / "index.html")


async def audit_stylesheet(request: Request) -> Response:
    """The bias audit report's stylesheet, for the jobs page: the one the printable report
    (``rtserver audit --html``) carries inline, so both look the same."""
    from rtserver.scoring.audit_report import FRAGMENT_STYLE

    return Response(FRAGMENT_STYLE, media_type="text/css", headers={"Cache-Control": "no-cache"})

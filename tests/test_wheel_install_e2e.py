"""A clean install works: the wheel, installed without extras into a fresh venv, serves the
pages and streams live signals to an observer.

The test extra brings libraries a core install may silently depend on (``websockets`` did:
uvicorn then answered 404 to every websocket), and an editable install finds files in the
source checkout that a wheel does not ship (``web_client/`` did). Only a real wheel in a
clean venv catches that class of bug, so this test:

- builds a wheel from the files a fresh clone has (pip's isolated build, as a user's);
- installs it, with no extras, into a new venv (dependencies from pip's configured index
  and cache);
- starts that venv's ``rtserver serve`` on its defaults (one worker per core; only the CPU
  budget is off, as in every test: see tests/server.py), loopback only, with the
  repository's converted models (``--models-dir``: nothing is converted);
- checks that both pages and every static file are served from the installed package;
- connects an observer websocket and receives a signal made from a real aiortc peer's
  media (the peer runs in the test's own venv, see ``tests/peer.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from media import SpeechTrack
from peer import connect_peer, create_session, signals_url
from server import ServerProcess
from websockets.asyncio.client import connect as ws_connect

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
# Packages only the test extra brings: none may be importable in the clean venv.
TEST_ONLY = ("pytest", "playwright", "skimage", "matplotlib")
CONTENT_TYPES = {
    ".html": ("text/html",),
    ".css": ("text/css",),
    ".js": ("text/javascript", "application/javascript"),
}


def fresh_clone_files() -> list[str]:
    """What a fresh clone holds, relative to the repository: tracked files, and new files
    git does not ignore (so an uncommitted new file counts, a build artefact does not)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    if listed.returncode != 0:
        pytest.fail(f"the wheel test needs a git checkout: {listed.stderr.decode()}")
    return [name for name in listed.stdout.decode().split("\0") if (REPO / name).is_file()]


def isolated_env() -> dict[str, str]:
    """This environment, less what would let the clean venv see the source tree, the test
    venv or the user's site-packages; pip's own settings (index, cache) stay."""
    hidden = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in hidden and not name.startswith("RTSERVER_")
    }
    env["PYTHONNOUSERSITE"] = "1"
    return env


def run(command: list[str], timeout_s: float, **kwargs: Any) -> str:
    """Runs ``command``; fails the test with its output when it fails."""
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs
    )
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


class Timings(dict[str, float]):
    """Seconds per step, printed at the end (``pytest -s``) and kept on failure."""

    def step(self, name: str, started: float) -> None:
        self[name] = round(time.monotonic() - started, 1)


@pytest.fixture(scope="module")
def timings() -> Iterator[Timings]:
    times = Timings()
    yield times
    print(f"\nwheel install test, seconds per step: {json.dumps(times)}")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory, timings: Timings) -> Path:
    """rtserver's wheel, built by pip (isolated build) from a copy of a fresh clone."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    for name in fresh_clone_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    started = time.monotonic()
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q"]
    run([*pip_wheel, "-w", str(root), str(source)], timeout_s=600, env=isolated_env())
    timings.step("build_wheel", started)
    (built,) = root.glob("rtserver-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, timings: Timings) -> Iterator[Path]:
    """A new venv holding the wheel and its core dependencies, nothing else; deleted
    afterwards (it is about 0.8 GB)."""
    started = time.monotonic()
    venv = wheel.parent / "venv"
    env = isolated_env()
    run([sys.executable, "-m", "venv", str(venv)], timeout_s=120, env=env)
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], 900, env=env)
    timings.step("install", started)
    try:
        yield venv
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def test_the_wheel_ships_the_pages_and_the_compiled_kernel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    shipped = {n.removeprefix("rtserver/") for n in names if n.startswith("rtserver/web_client/")}
    expected = {n for n in fresh_clone_files() if n.startswith("web_client/")}
    assert shipped == expected, sorted(shipped ^ expected)
    assert any(n.startswith("rtserver/kernels/frame.") and n.endswith(".so") for n in names)


def test_the_install_holds_no_extras_and_runs_from_the_venv(installed: Path) -> None:
    """The check below means something only if the venv is clean and the server it runs is
    the installed package, not the source tree."""
    probe = (
        "import importlib.util, json, rtserver; "
        f"print(json.dumps([rtserver.__file__, [n for n in {TEST_ONLY!r} "
        "if importlib.util.find_spec(n)]]))"
    )
    out = run([str(installed / "bin" / "python"), "-c", probe], 120, env=isolated_env(), cwd="/")
    location, present = json.loads(out)
    assert Path(location).is_relative_to(installed), location
    assert present == [], f"test-only packages in the clean venv: {present}"


async def test_installed_server_serves_pages_and_live_signals(
    installed: Path,
    tmp_path: Path,
    models_dir: Path,
    face_video: Path,
    speech_wav: SpeechTrack,
    timings: Timings,
) -> None:
    models_before = model_files(models_dir)
    started = time.monotonic()
    server = ServerProcess(
        tmp_path / "data",
        program=[str(installed / "bin" / "rtserver")],
        env=isolated_env(),
        cwd=tmp_path,
        workers=None,  # the defaults a user gets: one worker per core,
        cpu_budget=True,  # and the CPU budget (one session fits on any machine)
    ).start(timeout_s=180)
    timings.step("server_start", started)
    peer = None
    try:
        started = time.monotonic()
        async with httpx.AsyncClient(trust_env=False, timeout=15.0) as client:
            session = await create_session(client, server.base_url, server.api_key)
            url = signals_url(server.base_url, session["id"], server.api_key)
            first_signal = asyncio.create_task(next_signal(url, timeout_s=60))
            peer = await connect_peer(
                server.base_url,
                session["id"],
                session["join_token"],
                face_video,
                speech_wav.path,
                client=client,
            )
            signal = await first_signal
            timings.step("first_signal", started)
            started = time.monotonic()
            await assert_pages_served(client, server.base_url, session)
            timings.step("pages", started)
            await client.post(
                f"{server.base_url}/api/v1/sessions/{session['id']}/end",
                headers=server.hr_headers,
            )
    finally:
        if peer is not None:
            await peer.close()
        server.stop()
    log = server.log()
    # The installed package took the repository's models as they were: nothing converted.
    assert model_files(models_dir) == models_before
    assert "No supported WebSocket library" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    # A second of the peer's media, analysed by the installed package.
    assert signal["session"] == session["id"] and signal["t"] == 0, signal
    assert signal["audio"]["hops"] > 0 and signal["video"]["fps"] > 0, signal


def model_files(models_dir: Path) -> dict[str, int]:
    """Each file of the models directory, by name, with its modification time (ns)."""
    return {
        str(path.relative_to(models_dir)): path.stat().st_mtime_ns
        for path in models_dir.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    }


async def next_signal(url: str, timeout_s: float) -> dict[str, Any]:
    """The first ``signal`` message of an observer websocket."""

    async def receive() -> dict[str, Any]:
        async with ws_connect(url, proxy=None, open_timeout=10.0) as ws:
            async for raw in ws:
                message = json.loads(raw)
                if message.get("type") == "signal":
                    return dict(message)
        raise AssertionError("the signals websocket closed before any signal")

    return await asyncio.wait_for(receive(), timeout_s)


async def assert_pages_served(
    client: httpx.AsyncClient, base_url: str, session: dict[str, Any]
) -> None:
    """The home page, the candidate's, observer's and jobs pages, and every file of
    ``web_client/`` under /static, byte for byte."""
    pages = {
        f"{base_url}/": "index.html",
        session["candidate_url"]: "candidate.html",
        f"{base_url}/observe": "observer.html",
        f"{base_url}/observe/{session['id']}": "observer.html",
        f"{base_url}/jobs": "jobs.html",
    }
    for url, name in pages.items():
        response = await client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        assert response.headers["content-type"].startswith("text/html"), response.headers
        assert response.content == (REPO / "web_client" / name).read_bytes(), url
    static = [n for n in fresh_clone_files() if n.startswith("web_client/")]
    assert {"web_client/candidate.js", "web_client/observer.js", "web_client/common.js"} <= set(
        static
    )
    for name in static:
        relative = name.removeprefix("web_client/")
        response = await client.get(f"{base_url}/static/{relative}")
        assert response.status_code == 200, (relative, response.status_code)
        assert response.content == (REPO / name).read_bytes(), relative
        wanted = CONTENT_TYPES.get(Path(name).suffix)
        if wanted is not None:
            assert response.headers["content-type"].startswith(wanted), (relative, response.headers)

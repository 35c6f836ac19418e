"""Runs the real server (uvicorn, as `rtserver serve` does) in a subprocess on a free port."""

from __future__ import annotations

import os
import random
import signal
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from processes import wait_until_ready

API_KEY = "test-api-key-0123456789"
# Converted models, made by `make models` before the tests run (tests never download).
MODELS_DIR = Path(__file__).resolve().parents[1] / ".models"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_udp_range(count: int, address: str = "127.0.0.1") -> tuple[int, int]:
    """``count`` consecutive UDP ports free on ``address`` (first, last), below Linux's
    ephemeral range (32768-60999) so no other program's ephemeral socket takes one of them
    between this check and the server's bind."""
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(20000, 32000 - count)
        sockets: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind((address, port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return first, first + count - 1
    raise RuntimeError(f"no {count} consecutive free UDP ports on {address}")


@dataclass
class ServerProcess:
    data_dir: Path
    options: list[str] = field(default_factory=list)
    port: int = 0
    api_key: str = API_KEY
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    # Worker processes (--workers); 1 keeps the whole server in one process, the default
    # path of most tests. None leaves the flag out (one worker per core).
    workers: int | None = 1
    # The command that runs rtserver: this interpreter's package by default (a wheel test
    # runs another venv's `rtserver` script), and its environment and working directory
    # (this process's by default; RTSERVER_API_KEY is always set).
    program: list[str] = field(default_factory=lambda: [sys.executable, "-m", "rtserver"])
    env: dict[str, str] | None = None
    cwd: Path | None = None
    # Whether the server keeps its CPU budget (rtserver/server/cpu_budget.py), as it does by
    # default. Off unless asked for: the tests' own peers, browsers and servers share the
    # machine's few cores, so the budget would refuse joins by whatever else runs. The
    # budget's own tests, the wheel test and bench.streams --limits defaults keep it.
    cpu_budget: bool = False
    # Whether the server transcribes speech, as it does by default. Off unless asked for:
    # Whisper would add its decoding to every test server's load on the machine's few
    # cores; the transcript tests, the browser interview and the wheel test keep it.
    transcribe: bool = False
    # A PEM certificate and its key: the server serves HTTPS and WSS (--tls-cert, --tls-key),
    # and these helpers trust that certificate alone (`verify`).
    tls: tuple[Path, Path] | None = None
    # The loopback address it listens on and gathers ICE candidates at: a "host" of a
    # deployment on many hosts has its own (127.0.0.2, 127.0.0.3, ...).
    address: str = "127.0.0.1"

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}:{self.port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What an httpx client passes as ``verify`` to reach this server."""
        return ssl.create_default_context(cafile=self.tls[0]) if self.tls else True

    @property
    def hr_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        self.port = self.port or free_port()
        self.log_path = self.data_dir / f"server-{self.port}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ if self.env is None else self.env,
            RTSERVER_API_KEY=self.api_key,
            PYTHONUNBUFFERED="1",
        )
        command = [
            *self.program, "serve",
            "--host", self.address,
            "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            "--ice-address", self.address,
            "--models-dir", str(MODELS_DIR),
            *([] if self.workers is None else ["--workers", str(self.workers)]),
            *([] if self.cpu_budget or "--max-cpu" in self.options else ["--max-cpu", "0"]),
            *([] if self.transcribe or "--transcribe" in self.options else ["--transcribe", "off"]),
            *([] if self.tls is None else ["--tls-cert", str(self.tls[0])]),
            *([] if self.tls is None else ["--tls-key", str(self.tls[1])]),
            *self.options,
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd
        )
        wait_until_ready(
            self.process,
            self._answers_healthz,
            name="server",
            awaited="become healthy",
            log=self.log,
            stop=self.stop,
            timeout_s=timeout_s,
        )
        return self

    def _answers_healthz(self) -> bool:
        try:
            healthz = httpx.get(self.base_url + "/healthz", timeout=1.0, verify=self.verify)
        except httpx.HTTPError:
            return False
        return healthz.status_code == 200

    def stop(self, timeout_s: float = 15.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def healthy(self) -> bool:
        response = httpx.get(self.base_url + "/healthz", timeout=2.0, verify=self.verify)
        return response.status_code == 200 and response.json()["status"] == "ok"

    def health(self) -> dict[str, Any]:
        """The whole /healthz (workers, backends...): it needs the HR key; without it the
        server answers only its status."""
        response = httpx.get(
            self.base_url + "/healthz", headers=self.hr_headers, timeout=5.0, verify=self.verify
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def metrics(self) -> str:
        """The Prometheus page, which needs the HR key."""
        response = httpx.get(
            self.base_url + "/metrics", headers=self.hr_headers, timeout=10.0, verify=self.verify
        )
        response.raise_for_status()
        return response.text

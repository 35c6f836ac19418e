"""A private Redis for the tests: Debian's ``redis-server`` on a free loopback port, in a temp
directory, that a test may stop, kill and restart (never the shared one on 6379).

Why each setting is there:
- ``bind 127.0.0.1``, ``protected-mode yes``: nothing beyond loopback reaches it;
- ``save ""``, ``appendonly no``: no persistence, so a restart is a Redis that lost
  everything, the worst case a bus must survive (and nothing is written at exit);
- ``port`` kept across :meth:`RedisServer.restart`: clients reconnect to the same URL, as
  they would to a restarted production Redis.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from processes import wait_until_ready

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_tcp_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """One redis-server process: :meth:`start`, :meth:`stop` (or kill), :meth:`restart`."""

    work_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "redis.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        """Starts the server (on the port it had, if it ran before); returns once it answers
        PING."""
        if self.running:
            raise RuntimeError("redis-server is already running")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_tcp_port()
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "yes",
            "--dir",
            str(self.work_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_path),
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_until_ready(
            self.process,
            self.answers_ping,
            name="redis-server",
            awaited="answer PING",
            log=self.log,
            stop=self.stop,
            timeout_s=timeout_s,
            poll_s=0.02,
        )
        return self

    def answers_ping(self) -> bool:
        """Whether the server answers an inline PING with +PONG."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, kill: bool = False, timeout_s: float = 10.0) -> None:
        """Stops the server: SIGTERM (no persistence, so nothing is saved), or SIGKILL as a
        crash would; returns once the process is gone and its port is closed."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self, kill: bool = False) -> RedisServer:
        """Stops the server and starts an empty one on the same port."""
        self.stop(kill=kill)
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

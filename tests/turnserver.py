"""A real TURN server for the tests: Debian's coturn (``turnserver``) on free loopback ports,
with a temp config, authenticating by the TURN REST API's shared secret as in production
(``use-auth-secret`` and ``static-auth-secret``).

Why each setting is there:
- ``listening-ip`` and ``relay-ip`` 127.0.0.1: nothing listens or relays beyond loopback;
- ``allow-loopback-peers``: every peer of these tests is on 127.0.0.1, and coturn refuses
  to relay to loopback addresses unless told to (otherwise a TURN client could reach
  services bound to the TURN host's loopback, which production must not allow);
- ``denied-peer-ip`` everything, ``allowed-peer-ip`` 127.0.0.1 (allowed wins): the relay
  forwards to 127.0.0.1 only, so nothing leaves the machine;
- ``no-tls``, ``no-dtls``, ``no-cli``, ``no-rfc5780``: no certificate, no admin console and
  no extra ports (coturn's CLI would take 5766 for every instance).
"""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from aioice import stun
from processes import wait_until_ready

TURNSERVER = shutil.which("turnserver")


def free_udp_tcp_port() -> int:
    """A loopback port free for both UDP and TCP (coturn listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


@dataclass
class TurnServer:
    work_dir: Path
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    realm: str = "rtserver.test"
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "turnserver.log"

    def start(self, timeout_s: float = 15.0) -> TurnServer:
        if TURNSERVER is None:
            raise RuntimeError("coturn's turnserver is not installed (.ci/run installs it)")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_udp_tcp_port()
        conf = self.work_dir / "turnserver.conf"
        conf.write_text(
            "\n".join(
                [
                    "listening-ip=127.0.0.1",
                    "relay-ip=127.0.0.1",
                    f"listening-port={self.port}",
                    "use-auth-secret",
                    f"static-auth-secret={self.secret}",
                    f"realm={self.realm}",
                    "fingerprint",
                    "allow-loopback-peers",
                    "denied-peer-ip=0.0.0.0-255.255.255.255",
                    "allowed-peer-ip=127.0.0.1",
                    "no-multicast-peers",
                    "no-tls",
                    "no-dtls",
                    "no-cli",
                    "no-rfc5780",
                    "no-software-attribute",
                    f"userdb={self.work_dir / 'turndb'}",
                    f"pidfile={self.work_dir / 'turnserver.pid'}",
                    "simple-log",
                    "verbose",
                ]
            )
            + "\n"
        )
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [TURNSERVER, "-c", str(conf), "--log-file", "stdout"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until_ready(
            self.process,
            self.answers_stun,
            name="turnserver",
            awaited="answer STUN",
            log=self.log,
            stop=self.stop,
            timeout_s=timeout_s,
        )
        return self

    def answers_stun(self) -> bool:
        """Whether a STUN Binding request to the server gets its success response."""
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            try:
                sock.sendto(bytes(request), ("127.0.0.1", self.port))
                response = stun.parse_message(sock.recv(2048))
            except (OSError, ValueError):
                return False
        return response.message_class == stun.Class.RESPONSE

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

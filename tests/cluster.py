"""A deployment on many hosts, on one machine, for the tests and bench.streams.

Each "host" is a group of processes with its own loopback address (127.0.0.2, 127.0.0.3, …):
a stateless front end (``--role front``) and a media node (``--role node`` with its own
``--node-id``), both listening and gathering ICE candidates only there. Every host shares one
Redis (the bus, the registry and the calls: a private ``redis-server`` that a test may
restart) and one PostgreSQL database (a fresh one per deployment), and one master key, as
real hosts would share them.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis_server import RedisServer
from server import ServerProcess

CLUSTER_SECRET = "test-cluster-secret-0123456789"


@dataclass
class Host:
    name: str
    address: str
    front: ServerProcess
    node: ServerProcess


@dataclass
class Deployment:
    """Redis, PostgreSQL and the hosts' processes: :meth:`add_host`, :meth:`stop`."""

    work_dir: Path
    store_url: str
    redis: RedisServer
    node_ttl_s: float = 3.0
    node_options: list[str] = field(default_factory=lambda: ["--analysis", "decode"])
    # More options for the front ends (bench.streams lifts their rate limits here).
    front_options: list[str] = field(default_factory=list)
    # Whether the nodes keep their CPU budget (ServerProcess.cpu_budget: off unless asked).
    cpu_budget: bool = False
    master_key: str = field(default_factory=lambda: base64.b64encode(os.urandom(32)).decode())
    hosts: list[Host] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            RTSERVER_MASTER_KEY=self.master_key,
            RTSERVER_CLUSTER_SECRET=CLUSTER_SECRET,
        )

    def shared_options(self) -> list[str]:
        return [
            "--store", self.store_url,
            "--bus", self.redis.url,
            "--node-ttl", str(self.node_ttl_s),
        ]  # fmt: skip

    def add_host(self, name: str, address: str) -> Host:
        """Starts a host's media node, then its front end; returns once both are healthy
        (a node is healthy once it is in the registry)."""
        node = self.start_node(name, address)
        front = ServerProcess(
            self.work_dir / name / "front",
            options=[*self.shared_options(), "--role", "front", *self.front_options],
            env=self.env,
            address=address,
            workers=None,
        ).start()
        host = Host(name, address, front, node)
        self.hosts.append(host)
        return host

    def start_node(self, name: str, address: str, port: int = 0) -> ServerProcess:
        node = ServerProcess(
            self.work_dir / name / "node",
            options=[
                *self.shared_options(),
                "--role=node",
                f"--node-id={name}",
                *self.node_options,
            ],
            env=self.env,
            address=address,
            port=port,
            workers=None,
            cpu_budget=self.cpu_budget,
        )
        return node.start(timeout_s=120)

    def kill_node(self, host: Host) -> None:
        """SIGKILL, as a crash or a pulled plug would: no goodbye to the registry."""
        assert host.node.process is not None
        host.node.process.send_signal(signal.SIGKILL)
        host.node.process.wait(10)
        host.node.process = None

    def stop(self) -> None:
        for host in self.hosts:
            host.front.stop()
            host.node.stop()


async def wait_for(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], check: Any, timeout_s: float
) -> dict[str, Any]:
    """Polls ``url`` (JSON) until ``check(body)`` holds; the body. AssertionError, with the
    last body, after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.get(url, headers=headers)
        if response.status_code == 200:
            body = response.json()
            if check(body):
                return body
        await asyncio.sleep(0.25)
    raise AssertionError(f"{url} never satisfied the check; last: {body}")

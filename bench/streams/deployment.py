"""What a step runs against: one embedded server, or a deployment on two hosts of this machine.

- ``embedded``: ``rtserver serve`` with its defaults for one machine (``--role all``, SQLite,
  the in-process bus), or a server already running (``--server``).
- ``two-hosts``: tests/cluster.py's :class:`Deployment`, as the cluster tests run it: a private
  ``redis-server``, a fresh PostgreSQL database on the shared server (dropped after), and two
  "hosts" on their own loopback addresses (127.0.0.2, 127.0.0.3), each a front end
  (``--role front``) and a media node (``--role node``).

Each says what a step needs of it: the front ends (sessions are created, joined and observed
through them in turn), the pages whose ``/metrics`` are summed (the nodes', where the sessions
run), the logs, and its **parts**: the processes that serve the sessions, by name, so that
CPU per stream counts every one of them (the PostgreSQL backends serving our database
included) and shows each.
"""

from __future__ import annotations

import base64
import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

# The test helpers (server, cluster, redis_server, postgres) are plain modules in tests/.
ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from cluster import Deployment  # noqa: E402
from postgres import ADMIN_URL, create_database, drop_database  # noqa: E402
from redis_server import RedisServer  # noqa: E402
from server import ServerProcess  # noqa: E402

from bench.streams.measure import process_tree  # noqa: E402

DEPLOYMENTS = ("embedded", "two-hosts")
# The parts whose memory is not the deployment's own: every PostgreSQL backend maps the
# server's shared buffers, so their RSS counts pages that belong to no one session.
SHARED_MEMORY_PARTS = ("postgresql",)
HOSTS = (("host-a", "127.0.0.2"), ("host-b", "127.0.0.3"))


@dataclass
class System:
    """A running server or deployment, as a step sees it."""

    name: str  # "embedded" or "two-hosts"
    key: str  # the HR API key of every front end
    fronts: list[str]  # base URLs; session i goes through fronts[i % len]
    metrics_bases: list[str]  # base URLs whose /metrics are summed: where sessions run
    log_paths: list[Path] = field(default_factory=list)
    server_pid: int | None = None  # embedded: the server's pid (None: not measured)

    def parts(self) -> dict[str, list[int]]:
        """The processes that serve the sessions, by part; {} when they are not known."""
        if self.server_pid is None:
            return {}
        return {"server": process_tree(self.server_pid)}

    def stop(self) -> None:
        """Stops what this system started (nothing, for a server it did not start)."""


@dataclass
class EmbeddedSystem(System):
    server: ServerProcess | None = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def embedded(server: ServerProcess) -> EmbeddedSystem:
    """A started single server as a system."""
    assert server.process is not None and server.log_path is not None
    return EmbeddedSystem(
        name="embedded",
        key=server.api_key,
        fronts=[server.base_url],
        metrics_bases=[server.base_url],
        log_paths=[server.log_path],
        server_pid=server.process.pid,
        server=server,
    )


@dataclass
class TwoHostSystem(System):
    deployment: Deployment | None = None
    redis: RedisServer | None = None
    store_url: str = ""
    admin_url: str = ADMIN_URL

    @property
    def database(self) -> str:
        return self.store_url.rsplit("/", 1)[1]

    @property
    def redis_port(self) -> int:
        assert self.redis is not None
        return self.redis.port

    def parts(self) -> dict[str, list[int]]:
        """Per host its front end and its node (each process with its children), the
        redis-server, and the PostgreSQL backends connected to our database now."""
        assert self.deployment is not None and self.redis is not None
        out: dict[str, list[int]] = {}
        for host in self.deployment.hosts:
            for role, process in (("front", host.front), ("node", host.node)):
                if process.process is not None:
                    out[f"{host.name} {role}"] = process_tree(process.process.pid)
        if self.redis.process is not None:
            out["redis-server"] = [self.redis.process.pid]
        out["postgresql"] = self.backend_pids()
        return out

    def backend_pids(self) -> list[int]:
        """The pids of the PostgreSQL backends on our database. Asked over a connection to
        the admin database, so that asking costs our database nothing."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.database,)
            ).fetchall()
        return sorted(int(row[0]) for row in rows)

    def stop(self) -> None:
        if self.deployment is not None:
            self.deployment.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.store_url:
            with contextlib.suppress(psycopg.Error):
                drop_database(self.store_url, self.admin_url)


def start_two_hosts(
    work_dir: Path,
    node_options: list[str],
    front_options: list[str],
    cpu_budget: bool = False,
    admin_url: str = ADMIN_URL,
) -> TwoHostSystem:
    """Starts Redis, a fresh database and the two hosts; stops what it started if any part
    fails to come up."""
    system = TwoHostSystem(name="two-hosts", key="", fronts=[], metrics_bases=[])
    try:
        system.redis = RedisServer(work_dir / "redis").start()
        system.store_url = create_database(admin_url)
        system.admin_url = admin_url
        system.deployment = Deployment(
            work_dir,
            system.store_url,
            system.redis,
            node_options=node_options,
            front_options=front_options,
            cpu_budget=cpu_budget,
            master_key=base64.b64encode(os.urandom(32)).decode(),
        )
        for name, address in HOSTS:
            system.deployment.add_host(name, address)
    except BaseException:
        system.stop()
        raise
    hosts = system.deployment.hosts
    system.key = hosts[0].front.api_key
    system.fronts = [host.front.base_url for host in hosts]
    system.metrics_bases = [host.node.base_url for host in hosts]
    system.log_paths = [
        path for host in hosts for path in (host.front.log_path, host.node.log_path) if path
    ]
    return system

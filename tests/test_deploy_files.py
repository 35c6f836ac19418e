"""The deployment files (deploy/): what can be checked without Docker.

- compose.yaml parses, and every variable it reads is named in env.example; every secret is
  required (``${NAME:?...}``: compose refuses to start without it) and left empty there.
- Every rtserver command line in it, with its service's environment filled from env.example
  (and generated secrets), is accepted by rtserver's own parser and configuration
  (``rtserver.cli.parse_args`` and ``serve_config``, as ``rtserver serve`` runs them).
- Media nodes have distinct node ids and HTTP ports, and UDP port ranges that the host opens
  to them (host networking, or the range published) and that overlap neither each other's
  nor coturn's relay ports; front ends trust exactly the load balancer's address.
- The Dockerfile fetches the models where the image's configuration looks for them.
"""

from __future__ import annotations

import base64
import re
import secrets
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from rtserver.cli import parse_args, serve_config
from rtserver.config import Config
from rtserver.media.ice import PortRange, parse_port_range

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SECRETS = {
    "RTSERVER_MASTER_KEY",
    "RTSERVER_CLUSTER_SECRET",
    "RTSERVER_API_KEY",
    "RTSERVER_TURN_SECRET",
    "REDIS_PASSWORD",
    "POSTGRES_PASSWORD",
}
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt}
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


def read_env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (DEPLOY / "env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"env.example: not NAME=VALUE: {line!r}"
            values[name.strip()] = value.strip()
    return values


def filled_env() -> dict[str, str]:
    """env.example's values, with a fresh value of the right form for each empty secret."""
    values = read_env_example()
    for name in SECRETS:
        if not values.get(name):
            values[name] = (
                base64.b64encode(secrets.token_bytes(32)).decode()
                if name == "RTSERVER_MASTER_KEY"
                else secrets.token_hex(32)
            )
    return values


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution, for the forms compose.yaml uses."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match[1], match[2] or "", match[3] or ""
        value = env.get(name)
        unset_or_empty = not value if operator.startswith(":") else value is None
        if operator.endswith("?") and unset_or_empty:
            raise KeyError(f"${{{name}}} is required: {argument}")
        if operator.endswith("-") and unset_or_empty:
            return argument
        if operator.endswith("+"):
            return "" if unset_or_empty else argument
        return value or ""

    return VARIABLE.sub(substitute, text.replace("$$", "\0")).replace("\0", "$")


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    return node


def compose_raw() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return parsed


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """compose.yaml with its variables filled (default: env.example's, secrets generated)."""
    return resolve(compose_raw(), filled_env() if env is None else env)  # type: ignore[no-any-return]


def variables(node: Any) -> set[tuple[str, str]]:
    """Each (name, operator) that a value of compose.yaml (not a comment) substitutes."""
    if isinstance(node, str):
        return {(m[1], m[2] or "") for m in VARIABLE.finditer(node)}
    values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return set().union(*(variables(value) for value in values))


def rtserver_services(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in spec["services"].items()
        if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def config_of(service: dict[str, Any]) -> Config:
    """The configuration ``rtserver`` would run this service with."""
    environment = {k: str(v) for k, v in (service.get("environment") or {}).items()}
    args = parse_args(command_of(service))  # SystemExit on a flag rtserver does not have
    assert args.command == "serve"
    return serve_config(args, environment)


def configs_by_role(role: str, env: Mapping[str, str] | None = None) -> dict[str, Config]:
    services = rtserver_services(compose(env))
    configs = {name: config_of(service) for name, service in services.items()}
    return {name: config for name, config in configs.items() if config.role == role}


# -- the files parse and name their variables -------------------------------------------------


def test_compose_parses_and_env_example_names_every_variable() -> None:
    spec = compose()
    assert {"redis", "postgres", "coturn", "caddy", "front"} <= set(spec["services"])
    names = {name for name, _ in variables(compose_raw())}
    missing = names - set(read_env_example())
    assert not missing, f"compose.yaml reads variables env.example does not name: {missing}"


def test_every_secret_is_required_and_left_empty_in_the_example() -> None:
    example = read_env_example()
    operators = variables(compose_raw())
    for name in SECRETS:
        assert name in example, f"env.example does not name the secret {name}"
        assert example[name] == "", f"env.example ships a value for the secret {name}"
        assert (name, ":?") in operators, f"compose.yaml does not require {name} (${{{name}:?}})"
    with pytest.raises(KeyError, match="REDIS_PASSWORD"):
        compose({**filled_env(), "REDIS_PASSWORD": ""})


def test_redis_and_postgresql_take_the_passwords_rtserver_uses() -> None:
    env = filled_env()
    spec = compose(env)
    redis = spec["services"]["redis"]["command"]
    assert redis[redis.index("--requirepass") + 1] == env["REDIS_PASSWORD"]
    postgres = spec["services"]["postgres"]["environment"]
    assert postgres["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]
    configs = {**configs_by_role("front", env), **configs_by_role("node", env)}
    assert configs
    for name, config in configs.items():
        assert f":{env['REDIS_PASSWORD']}@{env['DATA_HOST']}:6379" in config.bus, name
        assert f":{env['POSTGRES_PASSWORD']}@{env['DATA_HOST']}:5432/" in config.store, name
        assert config.cluster_secret and config.master_key, name


# -- the rtserver command lines ----------------------------------------------------------------


def test_every_rtserver_command_line_is_a_valid_configuration() -> None:
    services = rtserver_services(compose())
    assert services, "compose.yaml runs no rtserver service"
    roles = {name: config_of(service).role for name, service in services.items()}
    assert sorted(set(roles.values())) == ["front", "node"]
    ttls = {config_of(service).node_ttl_s for service in services.values()}
    assert len(ttls) == 1, "front ends and nodes must agree on --node-ttl"


def test_a_wrong_flag_or_value_is_caught() -> None:
    """The checks above would fail on a command line rtserver refuses."""
    node = dict(rtserver_services(compose())["media-1"])
    with pytest.raises(SystemExit):
        config_of({**node, "command": [*command_of(node), "--no-such-flag"]})
    from rtserver.config import ConfigError

    with pytest.raises(ConfigError, match="udp_ports"):
        config_of({**node, "command": [*command_of(node), "--udp-ports", "20399-20000"]})


def test_media_nodes_have_their_own_ids_ports_and_udp_ranges() -> None:
    spec = compose()
    nodes = configs_by_role("node")
    assert len(nodes) >= 2
    assert len({config.node for config in nodes.values()}) == len(nodes), "node ids collide"
    host_network = {
        name for name, service in spec["services"].items() if service.get("network_mode") == "host"
    }
    http_ports = [config.port for name, config in nodes.items() if name in host_network]
    assert len(set(http_ports)) == len(http_ports), "nodes on one host share an HTTP port"
    ranges: dict[str, PortRange] = {"coturn relays": coturn_relay_ports()}
    for name, config in nodes.items():
        ports = parse_port_range(config.udp_ports)
        assert ports is not None, f"{name} has no --udp-ports: no firewall can open its ports"
        assert config.ice_addresses, f"{name} has no --ice-address"
        assert name in host_network or published_udp(spec["services"][name], ports), (
            f"{name}: its --udp-ports {ports} are neither on the host's network nor published"
        )
        ranges[name] = ports
    for a, first in ranges.items():
        for b, second in ranges.items():
            if a < b:
                overlap = first.first <= second.last and second.first <= first.last
                assert not overlap, f"{a} ({first}) and {b} ({second}) overlap"


def published_udp(service: dict[str, Any], ports: PortRange) -> bool:
    """Whether ``ports`` are published as UDP, each on the same host port."""
    for entry in service.get("ports", []):
        text = str(entry)
        if not text.endswith("/udp"):
            continue
        host, _, container = text.removesuffix("/udp").rpartition(":")
        if container == str(ports) and host.rpartition(":")[2] == str(ports):
            return True
    return False


def coturn_relay_ports() -> PortRange:
    conf = (DEPLOY / "turnserver.conf").read_text()
    low = re.search(r"^min-port=(\d+)$", conf, re.M)
    high = re.search(r"^max-port=(\d+)$", conf, re.M)
    assert low and high, "turnserver.conf sets no relay port range"
    return PortRange(int(low[1]), int(high[1]))


def test_front_ends_trust_the_load_balancer_and_say_https() -> None:
    spec = compose()
    balancer = spec["services"]["caddy"]["networks"]["edge"]["ipv4_address"]
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    for name, config in configs_by_role("front").items():
        assert config.trusted_proxies == (balancer,), name
        assert config.url.startswith("https://"), name
        assert re.search(rf"dynamic a {name} {config.port}\b", caddyfile), (
            f"the Caddyfile does not balance over {name}:{config.port}"
        )
        assert config.turn_secret and any(url.startswith("turn:") for url in config.ice_servers)


def test_the_image_fetches_the_models_where_rtserver_looks() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    fetched = re.search(r"rtserver models fetch --dir (\S+)", dockerfile)
    configured = re.search(r"RTSERVER_MODELS_DIR=(\S+)", dockerfile)
    assert fetched and configured
    assert fetched[1] == configured[1]
    assert re.search(r"pip install [^\n]*\s\.$", dockerfile, re.M), "pip install . is missing"

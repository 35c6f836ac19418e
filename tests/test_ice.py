"""The UDP port range of ICE host candidates (rtserver/media/ice.py, ``--udp-ports``).

The picker's order is checked alone; the gathering is aioice's own ``Connection`` with the
range installed, binding real sockets on 127.0.0.1 (and, for STUN and TURN, talking to a
real coturn on loopback, tests/turnserver.py). Each test puts aioice back as it found it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aioice.ice
import pytest
from server import free_udp_range
from turnserver import TURNSERVER, TurnServer

from rtserver.config import ConfigError, load_config
from rtserver.errors import NoUdpPort, http_status
from rtserver.media.ice import (
    PortPicker,
    PortRange,
    parse_port_range,
    restrict_host_addresses,
    restrict_host_ports,
)
from rtserver.media.turn import turn_credential


@pytest.fixture
def loopback_ice() -> Iterator[None]:
    """Host candidates on 127.0.0.1 only, and aioice unpatched again afterwards."""
    restrict_host_addresses(["127.0.0.1"])
    try:
        yield
    finally:
        restrict_host_ports(None)
        restrict_host_addresses([])


# -- parsing and the picker ------------------------------------------------------------------


def test_parse_port_range() -> None:
    assert parse_port_range("40000-40999") == PortRange(40000, 40999)
    assert len(PortRange(40000, 40999)) == 1000
    assert parse_port_range(" 5000 ") == PortRange(5000, 5000)
    assert parse_port_range("") is None
    assert 40000 in PortRange(40000, 40001) and 40002 not in PortRange(40000, 40001)
    for bad in ("40999-40000", "80-90", "40000-70000", "a-b", "40000-", "-5"):
        with pytest.raises(ValueError, match="udp_ports"):
            parse_port_range(bad)


def test_config_takes_and_checks_udp_ports() -> None:
    assert load_config({"udp_ports": "40000-40099"}, {}).udp_ports == "40000-40099"
    assert load_config({}, {"RTSERVER_UDP_PORTS": "41000-41009"}).udp_ports == "41000-41009"
    assert load_config({}, {}).udp_ports == ""
    with pytest.raises(ConfigError, match="FIRST-LAST"):
        load_config({"udp_ports": "40999-40000"}, {})


def test_the_picker_tries_every_port_once_from_after_the_last_bound() -> None:
    picker = PortPicker(PortRange(1000, 1004), start=1002)
    assert picker.order() == [1002, 1003, 1004, 1000, 1001]
    picker.bound(1003)
    assert picker.order() == [1004, 1000, 1001, 1002, 1003]
    picker.bound(1004)  # the last port: the next try wraps to the first
    assert picker.order()[0] == 1000


def test_the_picker_starts_anywhere_in_the_range() -> None:
    ports = PortRange(20000, 20009)
    starts = {PortPicker(ports).order()[0] for _ in range(200)}
    assert starts <= set(range(20000, 20010))
    assert len(starts) > 5  # not always the first port: workers sharing a range spread out
    assert all(sorted(PortPicker(ports).order()) == list(range(20000, 20010)) for _ in range(20))


# -- gathering with aioice -------------------------------------------------------------------


async def gather(**options: object) -> aioice.ice.Connection:
    connection = aioice.ice.Connection(ice_controlling=False, **options)  # type: ignore[arg-type]
    await connection.gather_candidates()
    return connection


async def test_host_candidates_bind_in_the_range_until_it_is_full(loopback_ice: None) -> None:
    first, last = free_udp_range(2)
    restrict_host_ports(PortRange(first, last))
    one = await gather()
    two = await gather()
    ports = {c.port for c in one.local_candidates + two.local_candidates}
    assert ports == {first, last}, "each connection holds one port of the range"
    assert all(c.type == "host" and c.host == "127.0.0.1" for c in one.local_candidates)
    with pytest.raises(NoUdpPort, match=f"{first}-{last}") as refused:
        await gather()
    assert http_status(refused.value) == 503
    assert refused.value.retry_after_s > 0
    (freed,) = one.local_candidates
    await one.close()
    three = await gather()  # a closed connection's port is free again
    assert [c.port for c in three.local_candidates] == [freed.port]
    for connection in (two, three):
        await connection.close()


async def test_a_port_held_by_another_program_is_skipped(loopback_ice: None) -> None:
    first, last = free_udp_range(2)
    restrict_host_ports(PortRange(first, last))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", first))
        connection = await gather()
        assert [c.port for c in connection.local_candidates] == [last]
        with pytest.raises(NoUdpPort):
            await gather()
        await connection.close()


async def test_without_a_range_aioice_binds_any_port(loopback_ice: None) -> None:
    first, last = free_udp_range(1)
    restrict_host_ports(PortRange(first, last))
    restrict_host_ports(None)
    connections = [await gather() for _ in range(3)]  # a range of one would refuse the second
    assert len({c.local_candidates[0].port for c in connections}) == 3
    for connection in connections:
        await connection.close()


@pytest.mark.skipif(TURNSERVER is None, reason="coturn's turnserver is not installed")
async def test_stun_and_turn_candidates_with_a_range(loopback_ice: None, tmp_path: Path) -> None:
    """The server-reflexive candidate shares its host candidate's socket, so its port is in
    the range; the relayed one is the TURN server's, as without a range."""
    turn = TurnServer(tmp_path / "turn").start()
    try:
        first, last = free_udp_range(1)
        restrict_host_ports(PortRange(first, last))
        credential = turn_credential(turn.secret, "rtserver", 600, time.time())
        connection = await gather(
            stun_server=("127.0.0.1", turn.port),
            turn_server=("127.0.0.1", turn.port),
            turn_username=credential.username,
            turn_password=credential.credential,
        )
        by_type = {c.type: c for c in connection.local_candidates}
        assert set(by_type) == {"host", "srflx", "relay"}, connection.local_candidates
        assert by_type["host"].port == first
        assert (by_type["srflx"].host, by_type["srflx"].port) == ("127.0.0.1", first)
        assert by_type["relay"].port not in PortRange(first, last)
        await connection.close()
    finally:
        turn.stop()

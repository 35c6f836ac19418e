"""Which host addresses and UDP ports ICE uses, and how fast a vanished peer is noticed.

aioice offers every non-loopback interface as a host candidate and has no option to limit
that, so the server replaces ``aioice.ice.get_host_addresses`` once, at start-up. Production
needs this on multi-homed hosts; tests and benchmarks pin it to 127.0.0.1.

aioice binds each host candidate to an ephemeral port the kernel picks, and has no option to
limit that either; no firewall rule or container port mapping can open "whatever the kernel
picks". With ``--udp-ports FIRST-LAST``, :func:`restrict_host_ports` replaces
``Connection.get_component_candidates`` so host candidates bind only to ports of that range
(the candidate's peer and every observer's alike: both are aiortc peers of this process).
Server-reflexive (STUN) candidates share their host candidate's socket, so they are in the
range too; a relayed (TURN) candidate's socket only talks to the TURN server, and keeps an
ephemeral port. When every port of the range is taken, the new peer fails with
:class:`rtserver.errors.NoUdpPort` (503), and nothing else is touched.

aioice checks ICE consent (RFC 7675) about every 5 s and gives up after 6 misses, so a
candidate whose network vanished (no DTLS close, no RTCP BYE: nothing arrives at all) is
noticed only after about 30 s, long after the 10 s media timeout would have ended the
session as "media_timeout". :func:`quicken_consent_checks` makes it about 4-7 s, so a drop
is told apart from stopped media and the candidate gets the reconnect grace.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import random
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aioice.ice
import aioice.turn
from aioice.candidate import Candidate, candidate_foundation, candidate_priority

from rtserver.errors import NoUdpPort

log = logging.getLogger(__name__)

_original_get_host_addresses = aioice.ice.get_host_addresses
_original_get_component_candidates = aioice.ice.Connection.get_component_candidates

# A consent check every 0.8-1.2 s, each waiting 0.5 s for its answer; 4 misses in a row
# end the ICE connection. On a path losing 10 % of packets, 4 misses in a row happen about
# once in 10 000 checks (a few hours of one session); even then the candidate just reconnects.
CONSENT_INTERVAL_S = 1
CONSENT_FAILURES = 4


def restrict_host_addresses(addresses: Sequence[str]) -> None:
    """Advertises only ``addresses`` (an empty sequence restores every interface)."""
    if not addresses:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return
    parsed = [ipaddress.ip_address(address) for address in addresses]

    def configured_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            str(ip)
            for ip in parsed
            if (ip.version == 4 and use_ipv4) or (ip.version == 6 and use_ipv6)
        ]

    aioice.ice.get_host_addresses = configured_addresses


def quicken_consent_checks() -> None:
    """Checks ICE consent every second and gives up after :data:`CONSENT_FAILURES` misses,
    for every connection of this process (aioice reads these module constants per check)."""
    aioice.ice.CONSENT_INTERVAL = CONSENT_INTERVAL_S
    aioice.ice.CONSENT_FAILURES = CONSENT_FAILURES


# -- the UDP port range of host candidates ---------------------------------------------------

# Below this a port is privileged (binding needs root) or a well-known service's.
LOWEST_PORT = 1024
HIGHEST_PORT = 65535


@dataclass(frozen=True)
class PortRange:
    """UDP ports ``first`` to ``last``, both included."""

    first: int
    last: int

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


def parse_port_range(text: str) -> PortRange | None:
    """``"40000-40999"`` as a :class:`PortRange` (one port: ``"40000"``); None for ``""``
    (any port). Raises ValueError saying what is wrong."""
    text = text.strip()
    if not text:
        return None
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
    if match is None:
        raise ValueError(f"udp_ports must be FIRST-LAST, e.g. 40000-40999, not {text!r}")
    first = int(match[1])
    last = int(match[2]) if match[2] else first
    if not LOWEST_PORT <= first <= last <= HIGHEST_PORT:
        raise ValueError(
            f"udp_ports {text!r}: want FIRST-LAST with "
            f"{LOWEST_PORT} <= FIRST <= LAST <= {HIGHEST_PORT}"
        )
    return PortRange(first, last)


class PortPicker:
    """The order in which this process tries the ports of a range.

    Each try begins just after the port this process bound last, so a port just freed is
    the last one taken again (a dead connection's late packets then meet no new socket),
    and the first try begins at a random port, so the processes sharing one range (the
    workers of a host) do not all collide on its first ports. The kernel is the arbiter of
    which ports are free: a bind that fails with EADDRINUSE moves on to the next.
    """

    def __init__(self, ports: PortRange, start: int | None = None) -> None:
        self.ports = ports
        self._next = random.randrange(len(ports)) if start is None else start - ports.first

    def order(self) -> list[int]:
        """Every port of the range once, from where the last bind left off."""
        count = len(self.ports)
        return [self.ports.first + (self._next + i) % count for i in range(count)]

    def bound(self, port: int) -> None:
        """Notes that ``port`` was just bound: the next try begins after it."""
        self._next = port - self.ports.first + 1


ProtocolFactory = Callable[[], aioice.ice.StunProtocol]


async def bind_in_range(
    factory: ProtocolFactory, address: str, picker: PortPicker
) -> tuple[asyncio.DatagramTransport, aioice.ice.StunProtocol]:
    """A UDP endpoint on ``address`` at the first free port of ``picker``'s range. Raises
    NoUdpPort when every port is taken, OSError when ``address`` cannot be bound at all."""
    loop = asyncio.get_running_loop()
    for port in picker.order():
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                factory, local_addr=(address, port)
            )
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        picker.bound(port)
        return transport, protocol
    raise NoUdpPort(
        f"every UDP port of {picker.ports} ({len(picker.ports)} ports, --udp-ports) is in use"
        f" on {address}; try again when a session or an observer has left"
    )


_picker: PortPicker | None = None


async def _component_candidates_in_range(
    self: aioice.ice.Connection, component: int, addresses: list[str], timeout: int = 5
) -> list[Candidate]:
    """aioice's ``Connection.get_component_candidates`` with host candidates bound in the
    port range: the host part is ours (aioice hard-codes port 0), the STUN query is aioice's
    own function on our sockets, and TURN is aioice's own method, given no address."""
    picker = _picker
    if picker is None or not addresses:
        return await _original_get_component_candidates(self, component, addresses, timeout)
    deadline = asyncio.get_running_loop().time() + timeout
    hosts = await _bind_hosts(self, component, addresses, picker)
    self._protocols += hosts
    reflexive = [
        asyncio.create_task(aioice.ice.server_reflexive_candidate(protocol, self.stun_server))
        for protocol in hosts
        if self.stun_server and ipaddress.ip_address(protocol.local_candidate.host).version == 4
    ]
    # With no addresses aioice gathers only the relayed candidate (when TURN is configured).
    candidates = [p.local_candidate for p in hosts]
    relayed = await _original_get_component_candidates(self, component, [], timeout)
    if reflexive:
        left_s = max(0.0, deadline - asyncio.get_running_loop().time())
        done, pending = await asyncio.wait(reflexive, timeout=left_s)
        candidates += [t.result()[0] for t in done if t.exception() is None]
        for task in pending:
            task.cancel()
    return candidates + relayed


async def _bind_hosts(
    connection: aioice.ice.Connection, component: int, addresses: list[str], picker: PortPicker
) -> list[aioice.ice.StunProtocol]:
    """One host candidate's protocol per address that can be bound, as aioice makes them;
    NoUdpPort (with what was bound closed again) when the range is full on any address."""
    hosts: list[aioice.ice.StunProtocol] = []
    for address in addresses:
        try:
            transport, protocol = await bind_in_range(
                lambda: aioice.ice.StunProtocol(connection), address, picker
            )
        except NoUdpPort:
            for bound in hosts:
                bound.transport.close()
            raise
        except OSError as exc:  # as aioice does: an address that cannot be bound is skipped
            log.info("could not bind a host candidate to %s: %s", address, exc)
            continue
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, aioice.turn.UDP_SOCKET_BUFFER_SIZE)
        host, port = transport.get_extra_info("sockname")[:2]
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host),
            component=component,
            transport="udp",
            priority=candidate_priority(component, "host"),
            host=host,
            port=port,
            type="host",
        )
        hosts.append(protocol)
    return hosts


def restrict_host_ports(ports: PortRange | None) -> None:
    """Binds every host candidate of this process to a port of ``ports`` (None restores
    aioice's ephemeral ports)."""
    global _picker
    _picker = None if ports is None else PortPicker(ports)
    # One replacement, installed once, that falls back to aioice's own method without a range.
    aioice.ice.Connection.get_component_candidates = _component_candidates_in_range  # type: ignore[method-assign]

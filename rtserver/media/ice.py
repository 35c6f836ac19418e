"""Which host addresses ICE advertises, and how fast a vanished peer is noticed.

aioice offers every non-loopback interface as a host candidate and has no option to limit
that, so the server replaces ``aioice.ice.get_host_addresses`` once, at start-up. Production
needs this on multi-homed hosts; tests and benchmarks pin it to 127.0.0.1.

aioice checks ICE consent (RFC 7675) about every 5 s and gives up after 6 misses, so a
candidate whose network vanished (no DTLS close, no RTCP BYE: nothing arrives at all) is
noticed only after about 30 s, long after the 10 s media timeout would have ended the
session as "media_timeout". :func:`quicken_consent_checks` makes it about 4-7 s, so a drop
is told apart from stopped media and the candidate gets the reconnect grace.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import aioice.ice

_original_get_host_addresses = aioice.ice.get_host_addresses

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

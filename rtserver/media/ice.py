"""Which host addresses ICE advertises.

aioice offers every non-loopback interface as a host candidate and has no option to limit
that, so the server replaces ``aioice.ice.get_host_addresses`` once, at start-up. Production
needs this on multi-homed hosts; tests and benchmarks pin it to 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import aioice.ice

_original_get_host_addresses = aioice.ice.get_host_addresses


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

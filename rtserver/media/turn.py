"""The STUN/TURN servers every peer is given, with time-limited TURN credentials.

TURN credentials follow the TURN REST API scheme (draft-uberti-behave-turn-rest-00), which
coturn checks with ``use-auth-secret`` and ``static-auth-secret``: the username is
``<expiry unix time>:<id>`` and the credential is base64(HMAC-SHA1(secret, username)).
coturn recomputes the HMAC with the same secret and refuses the username once its expiry
has passed, so the secret never leaves this server and a credential copied out of a
browser is worthless after its lifetime.

One list of servers (``Config.ice_servers``) serves three kinds of peer, each given fresh
credentials for every connection:
- the candidate page (``/questions``) and the observer page (``/api/v1/ice-servers``):
  RTCIceServer dicts, plus ``Config.ice_transport_policy`` ("relay" sends all media
  through TURN);
- the server's own aiortc peers (:func:`server_ice_configuration`). aiortc uses the first
  STUN and the first TURN server only, and always the policy "all": a server reached
  through its own relay would only add a hop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcicetransport import parse_stun_turn_uri

from rtserver.config import Config

TRANSPORT_POLICIES = ("all", "relay")
# The username of the server's own TURN allocations (a page's is its session id or "hr").
SERVER_TURN_ID = "rtserver"


@dataclass(frozen=True)
class TurnCredential:
    """A TURN REST API credential pair."""

    username: str  # "<expiry unix time>:<id>"
    credential: str  # base64(HMAC-SHA1(secret, username))
    expires_at: int  # unix time (s) after which the TURN server refuses it


def turn_credential(secret: str, user_id: str, ttl_s: float, now: float) -> TurnCredential:
    """A credential for ``user_id`` valid until ``now + ttl_s`` (unix seconds).

    The id only labels the allocation in the TURN server's logs; a ':' in it (the scheme's
    separator) is replaced, so the expiry is always what precedes the first ':'.
    """
    expires_at = int(now + ttl_s)
    username = f"{expires_at}:{user_id.replace(':', '_')}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredential(username, base64.b64encode(digest).decode("ascii"), expires_at)


def is_turn_url(url: str) -> bool:
    return url.partition(":")[0].lower() in ("turn", "turns")


def check_ice_settings(config: Config) -> None:
    """Raises ValueError saying what is wrong with the ICE settings of ``config``."""
    for url in config.ice_servers:
        try:
            parsed = parse_stun_turn_uri(url)
            # Browsers and aiortc reach TURN over UDP or TCP only (aiortc skips others).
            if parsed.get("transport", "udp") not in ("udp", "tcp"):
                raise ValueError(f"unsupported transport {parsed['transport']!r}")
        except ValueError as exc:
            raise ValueError(
                f"bad ICE server URL {url!r} ({exc}); use stun:HOST[:PORT], "
                "turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT][?transport=tcp]"
            ) from None
    has_turn = any(is_turn_url(url) for url in config.ice_servers)
    if has_turn and not config.turn_secret:
        raise ValueError(
            "a turn: or turns: ICE server needs turn_secret (coturn's static-auth-secret): "
            "browsers refuse TURN servers without credentials"
        )
    if config.ice_transport_policy not in TRANSPORT_POLICIES:
        raise ValueError("ice_transport_policy must be 'all' or 'relay'")
    if config.ice_transport_policy == "relay" and not has_turn:
        raise ValueError("ice_transport_policy 'relay' needs a turn: or turns: ICE server")
    if not 60 <= config.turn_ttl_s <= 7 * 86400:
        raise ValueError("turn_ttl_s must be between 60 seconds and 7 days")


def ice_servers(config: Config, user_id: str, now: float | None = None) -> list[dict[str, Any]]:
    """RTCIceServer dicts (the browser's shape): the STUN URLs in one entry, the TURN URLs in
    another with one credential for ``user_id``, fresh from ``now`` (default: the clock);
    [] when none are configured."""
    stun = [url for url in config.ice_servers if not is_turn_url(url)]
    turn = [url for url in config.ice_servers if is_turn_url(url)]
    servers: list[dict[str, Any]] = []
    if stun:
        servers.append({"urls": stun})
    if turn:
        issued = time.time() if now is None else now
        credential = turn_credential(config.turn_secret, user_id, config.turn_ttl_s, issued)
        servers.append(
            {"urls": turn, "username": credential.username, "credential": credential.credential}
        )
    return servers


def page_ice_configuration(config: Config, user_id: str) -> dict[str, Any]:
    """What a page builds its RTCPeerConnection from (api.md items 1 and 2)."""
    return {
        "ice_servers": ice_servers(config, user_id),
        "ice_transport_policy": config.ice_transport_policy,
    }


def server_ice_configuration(config: Config) -> RTCConfiguration:
    """The server's own aiortc peers: the same servers with a fresh credential; with none
    configured, no server at all (aiortc would otherwise add Google's public STUN)."""
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(
                urls=server["urls"],
                username=server.get("username"),
                credential=server.get("credential"),
            )
            for server in ice_servers(config, SERVER_TURN_ID)
        ]
    )

"""TURN credentials (the TURN REST API scheme) and the ICE servers each peer is given.

That coturn accepts these credentials, and refuses wrong or expired ones, is checked against
the real server in test_turn_e2e.py.
"""

from __future__ import annotations

import base64
import hashlib

import pytest

from rtserver.cli import parse_args
from rtserver.config import Config, ConfigError, load_config
from rtserver.media.ingest import ice_configuration
from rtserver.media.turn import (
    SERVER_TURN_ID,
    ice_servers,
    page_ice_configuration,
    turn_credential,
)

TURN = "turn:turn.example.org:3478?transport=udp"
TURNS = "turns:turn.example.org:443?transport=tcp"
STUN = "stun:stun.example.org:3478"
NOW = 1_800_000_000.0


def hmac_sha1(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA1 written out from RFC 2104, independently of the stdlib's hmac module."""
    block = 64
    key = key.ljust(block, b"\0") if len(key) <= block else hashlib.sha1(key).digest()
    key = key.ljust(block, b"\0")
    inner = hashlib.sha1(bytes(k ^ 0x36 for k in key) + message).digest()
    return hashlib.sha1(bytes(k ^ 0x5C for k in key) + inner).digest()


def test_a_credential_follows_the_turn_rest_api_scheme() -> None:
    credential = turn_credential("shared-secret", "session42", ttl_s=600, now=NOW)
    assert credential.username == f"{int(NOW) + 600}:session42"
    assert credential.expires_at == int(NOW) + 600
    expected = hmac_sha1(b"shared-secret", credential.username.encode())
    assert base64.b64decode(credential.credential, validate=True) == expected
    # Another secret, or another moment, gives another credential.
    assert turn_credential("other", "session42", 600, NOW).credential != credential.credential
    assert turn_credential("shared-secret", "session42", 600, NOW + 1).username != (
        credential.username
    )


def test_an_id_cannot_move_the_expiry() -> None:
    """coturn reads the expiry before the first ':', so an id must not carry one."""
    credential = turn_credential("s", "evil:9999999999", ttl_s=60, now=NOW)
    expiry, _, user = credential.username.partition(":")
    assert expiry == str(int(NOW) + 60) and ":" not in user


def test_no_servers_configured_means_none_for_pages_and_server() -> None:
    config = Config()
    assert page_ice_configuration(config, "s") == {"ice_servers": [], "ice_transport_policy": "all"}
    # An explicit empty list: aiortc would fill in Google's public STUN server for None.
    assert ice_configuration(config).iceServers == []


def test_turn_urls_get_one_credential_and_stun_urls_none() -> None:
    config = load_config(
        {"ice_servers": [STUN, TURN, TURNS], "turn_secret": "k", "turn_ttl_s": 900}, {}
    )
    servers = ice_servers(config, "session42", now=NOW)
    assert servers == [
        {"urls": [STUN]},
        {
            "urls": [TURN, TURNS],
            "username": f"{int(NOW) + 900}:session42",
            "credential": turn_credential("k", "session42", 900, NOW).credential,
        },
    ]


def test_the_server_peers_get_the_same_servers_with_their_own_credential() -> None:
    config = load_config({"ice_servers": [STUN, TURN], "turn_secret": "k"}, {})
    stun, turn = ice_configuration(config).iceServers
    assert stun.urls == [STUN] and stun.username is None
    assert turn.urls == [TURN]
    assert turn.username is not None and turn.username.endswith(":" + SERVER_TURN_ID)
    expiry = int(turn.username.partition(":")[0])
    assert turn.credential == turn_credential("k", SERVER_TURN_ID, expiry - NOW, NOW).credential


def test_the_pages_get_the_transport_policy() -> None:
    config = load_config({"ice_servers": [TURN], "turn_secret": "k"}, {})
    assert page_ice_configuration(config, "s")["ice_transport_policy"] == "all"
    relay = load_config({"ice_servers": [TURN], "ice_transport_policy": "relay"},
                        {"RTSERVER_TURN_SECRET": "k"})  # fmt: skip
    assert page_ice_configuration(relay, "s")["ice_transport_policy"] == "relay"


@pytest.mark.parametrize(
    ("cli", "env", "reason"),
    [
        ({"ice_servers": [TURN]}, {}, "turn_secret"),
        ({"ice_servers": [STUN], "ice_transport_policy": "relay"}, {}, "relay"),
        ({"ice_servers": [TURN], "turn_secret": "k", "ice_transport_policy": "any"}, {}, "all"),
        ({"ice_servers": ["http://turn.example.org"]}, {}, "bad ICE server URL"),
        ({"ice_servers": ["turn:h?transport=sctp"], "turn_secret": "k"}, {}, "bad ICE server"),
        ({"ice_servers": [TURN], "turn_secret": "k", "turn_ttl_s": 5}, {}, "turn_ttl_s"),
    ],
)
def test_bad_ice_settings_are_config_errors(
    cli: dict[str, object], env: dict[str, str], reason: str
) -> None:
    with pytest.raises(ConfigError, match=reason):
        load_config(cli, env)


def test_the_secret_comes_from_the_environment_and_never_shows_in_repr() -> None:
    secret = "s3cret-for-coturn"
    config = load_config({"ice_servers": [TURN]}, {"RTSERVER_TURN_SECRET": secret})
    assert config.turn_secret == secret
    assert secret not in repr(config)


def test_the_flags_name_the_settings() -> None:
    args = parse_args(
        ["serve", "--ice-server", TURN, "--turn-secret", "k", "--turn-ttl", "600",
         "--ice-transport-policy", "relay"]
    )  # fmt: skip
    values = {
        name: getattr(args, name)
        for name in ("ice_servers", "turn_secret", "turn_ttl_s", "ice_transport_policy")
    }
    config = load_config(values, {})
    assert (config.ice_servers, config.turn_secret) == ((TURN,), "k")
    assert (config.turn_ttl_s, config.ice_transport_policy) == (600.0, "relay")

"""TLS and proxy settings (``rtserver/transport.py``), with real certificates and keys on
disk: what ``rtserver serve`` refuses to start with and what it says, the uvicorn settings
made from the configuration, and the links that follow the scheme. HTTPS, WSS and HSTS on a
running server are in ``test_tls_e2e.py``; the proxies in ``test_trusted_proxies_e2e.py``."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
from certificates import make_certificate

from rtserver.cli import main
from rtserver.config import ConfigError, load_config
from rtserver.transport import TLS_CIPHERS, TlsError, check_tls, uvicorn_options


def serve_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path, *flags: str) -> str:
    """Runs ``rtserver serve`` with ``flags``; asserts it exits 2 before serving, and
    returns what it printed on stderr."""
    argv = ["serve", "--data-dir", str(tmp_path / "data"), "--port", "1", *flags]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "HR API key" not in out  # it stopped before anything else
    return err


def test_a_good_pair_makes_a_tls12_context(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    context = check_tls(cert, key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 and all(("ECDHE" in n or "DHE" in n) for n in tls12)  # forward secret
    assert all(("GCM" in n or "CHACHA20" in n) for n in tls12)  # AEAD only
    assert not any("CBC" in n or n.endswith("-SHA") for n in tls12)


@pytest.mark.parametrize(
    "problem, expected",
    [
        ("missing cert", "TLS certificate {cert}: no such file"),
        ("missing key", "TLS key {key}: no such file"),
        ("cert is a directory", "is a directory"),
        ("cert not PEM", "not a PEM certificate"),
        ("key not PEM", "not a PEM private key"),
        ("key encrypted", "the key is encrypted"),
        ("key of another cert", "does not match the certificate"),
    ],
)
def test_a_bad_certificate_or_key_stops_the_start_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str, expected: str
) -> None:
    cert, key = make_certificate(tmp_path / "good")
    if problem == "missing cert":
        cert = tmp_path / "nowhere.crt"
    elif problem == "missing key":
        key = tmp_path / "nowhere.key"
    elif problem == "cert is a directory":
        cert = tmp_path
    elif problem == "cert not PEM":
        cert.write_bytes(b"not a certificate\n")
    elif problem == "key not PEM":
        key.write_text(cert.read_text())  # a certificate where the key should be
    elif problem == "key encrypted":
        _, key = make_certificate(tmp_path / "locked", password=b"secret pass phrase")
    else:
        _, key = make_certificate(tmp_path / "other")
    message = expected.format(cert=cert, key=key)
    with pytest.raises(TlsError, match=r"^TLS ") as refused:
        check_tls(cert, key)
    assert message in str(refused.value)
    err = serve_fails(capsys, tmp_path, "--tls-cert", str(cert), "--tls-key", str(key))
    assert err.startswith("rtserver: TLS ") and message in err
    assert "Traceback" not in err


def test_an_unreadable_key_is_named(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    # Not a permission bit, which root (these tests' user, in containers) reads through.
    beyond_a_file = key / "key.pem"
    with pytest.raises(TlsError, match=f"TLS key {beyond_a_file}: cannot be read"):
        check_tls(cert, beyond_a_file)


def test_an_expired_certificate_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = make_certificate(tmp_path, expired=True)
    with caplog.at_level(logging.WARNING, logger="rtserver.transport"):
        check_tls(cert, key)  # a renewal may be on its way: not a reason to refuse to start
    (record,) = caplog.records
    assert str(cert) in record.getMessage() and "browsers will refuse it" in record.getMessage()
    caplog.clear()
    fresh_cert, fresh_key = make_certificate(tmp_path / "fresh")
    with caplog.at_level(logging.WARNING, logger="rtserver.transport"):
        check_tls(fresh_cert, fresh_key)
    assert not caplog.records


def test_cert_and_key_go_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert, _ = make_certificate(tmp_path)
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        load_config({"tls_cert": str(cert)}, {})
    err = serve_fails(capsys, tmp_path, "--tls-cert", str(cert))
    assert "tls_cert and tls_key go together" in err


def test_uvicorn_gets_the_tls_files_and_our_ciphers(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    config = load_config({}, {"RTSERVER_TLS_CERT": str(cert), "RTSERVER_TLS_KEY": str(key)})
    options = uvicorn_options(config)
    assert options["ssl_certfile"] == str(cert) and options["ssl_keyfile"] == str(key)
    assert options["ssl_ciphers"] == TLS_CIPHERS
    assert config.url == f"https://127.0.0.1:{config.port}"
    plain = load_config({}, {})
    assert "ssl_certfile" not in uvicorn_options(plain)
    assert plain.url == f"http://127.0.0.1:{plain.port}"
    assert load_config({"public_url": "https://x.example/"}, {}).url == "https://x.example"


def test_proxy_headers_are_read_only_from_trusted_proxies() -> None:
    # uvicorn on its own believes 127.0.0.1: with no proxy configured it must read nothing.
    assert uvicorn_options(load_config({}, {}))["proxy_headers"] is False
    config = load_config({"trusted_proxies": ["10.0.0.0/8", "192.0.2.1", "::1"]}, {})
    options = uvicorn_options(config)
    assert options["proxy_headers"] is True
    assert options["forwarded_allow_ips"] == ["10.0.0.0/8", "192.0.2.1", "::1"]
    from_env = load_config({}, {"RTSERVER_TRUSTED_PROXIES": "10.1.0.0/16, 192.0.2.1"})
    assert from_env.trusted_proxies == ("10.1.0.0/16", "192.0.2.1")


@pytest.mark.parametrize("bad", ["proxy.example", "10.0.0.1/8", "300.1.1.1", "10.0.0.0/33"])
def test_a_trusted_proxy_that_could_never_match_is_an_error(bad: str) -> None:
    # uvicorn would take each for a name no peer ever has, and trust no one, silently.
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_config({"trusted_proxies": [bad]}, {})

"""How the server meets the network: TLS served directly (HTTPS and WSS), and the reverse
proxies whose ``X-Forwarded-*`` headers are believed.

Both become uvicorn's settings (:func:`uvicorn_options`); uvicorn does the work. TLS ends
in uvicorn's own SSL context, built from the files named in :class:`Config`, which
:func:`check_tls` reads first so that a wrong file stops the start with a sentence saying
which and why, not a stack trace from deep inside uvicorn (or, for an encrypted key,
OpenSSL asking for a pass phrase on the terminal). The proxy headers go through uvicorn's
``ProxyHeadersMiddleware``, which takes addresses and CIDR networks and picks the client from
``X-Forwarded-For`` right to left, skipping trusted hops: a client cannot name itself by
sending the header, as a proxy appends the address it saw. HSTS is added where the request's
scheme is https or wss (``rtserver/api/security.py``), so it follows from either.
"""

from __future__ import annotations

import datetime
import logging
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from rtserver.config import Config

log = logging.getLogger(__name__)

# TLS 1.2's forward-secret AEAD suites, Mozilla's "intermediate" profile (TLS 1.3's suites
# are all of that kind and always on). Left to itself, uvicorn takes Python's default list,
# which also allows CBC suites (ECDHE-RSA-AES128-SHA256...); older uvicorns set "TLSv1",
# which allows CBC with SHA-1 too.
TLS_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)


class TlsError(ValueError):
    """The TLS certificate or key cannot be used; the message says which file and why."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TlsError(f"TLS {what} {path}: no such file") from None
    except IsADirectoryError:
        raise TlsError(f"TLS {what} {path}: is a directory, not a PEM file") from None
    except OSError as exc:
        raise TlsError(f"TLS {what} {path}: cannot be read ({exc.strerror})") from None


def check_tls(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A server context made of the certificate and key, as uvicorn will make it; raises
    :class:`TlsError` when a file is missing, unreadable, not PEM, the key is encrypted or
    does not match the certificate. Warns when the certificate is outside its validity."""
    cert_pem, key_pem = _read(cert_path, "certificate"), _read(key_path, "key")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise TlsError(
            f"TLS certificate {cert_path}: not a PEM certificate (-----BEGIN CERTIFICATE-----)"
        ) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise TlsError(
            f"TLS key {key_path}: the key is encrypted; give it unencrypted, readable by the "
            "server's user only (e.g. openssl pkey -in KEY -out KEY.plain; chmod 600)"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise TlsError(f"TLS key {key_path}: not a PEM private key ({exc})") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise TlsError(
            f"TLS key {key_path} does not match the certificate {cert_path} (the first "
            "certificate in the file must be the server's own, its chain after it)"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.set_ciphers(TLS_CIPHERS)
        context.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as exc:  # e.g. a key too weak for OpenSSL's security level
        raise TlsError(f"TLS certificate {cert_path} with key {key_path}: {exc}") from None
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        log.warning(
            "TLS certificate %s is valid only from %s to %s: browsers will refuse it",
            cert_path,
            cert.not_valid_before_utc.isoformat(),
            cert.not_valid_after_utc.isoformat(),
        )
    return context


def uvicorn_options(config: Config) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run`` for TLS and proxies; raises
    :class:`TlsError` (see :func:`check_tls`)."""
    options: dict[str, Any] = {
        # uvicorn believes X-Forwarded-* from 127.0.0.1 unless told otherwise (or from
        # $FORWARDED_ALLOW_IPS): with no proxy configured, the headers are not read at all.
        "proxy_headers": bool(config.trusted_proxies),
        "forwarded_allow_ips": list(config.trusted_proxies),
    }
    if config.tls_cert:
        cert, key = Path(config.tls_cert), Path(config.tls_key)
        check_tls(cert, key)
        # uvicorn's SSLContext(PROTOCOL_TLS_SERVER) takes Python's minimum, TLS 1.2.
        options.update(ssl_certfile=str(cert), ssl_keyfile=str(key), ssl_ciphers=TLS_CIPHERS)
    return options

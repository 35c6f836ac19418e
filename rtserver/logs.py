"""Structured logs: one line per record, the session id on every line about a session, and
secrets in URLs masked. Every process (the server and its workers) sets them up here."""

from __future__ import annotations

import logging
import re


class _SessionField(logging.Filter):
    """Gives every record a ``session`` field, so the format can always print it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "session"):
            record.session = "-"
        return True


class RedactingFormatter(logging.Formatter):
    """Masks secrets in URLs (``token=...``): access logs print query strings verbatim."""

    _TOKEN = re.compile(r"(token=)[^&\s\"']+")

    def format(self, record: logging.LogRecord) -> str:
        return self._TOKEN.sub(r"\1***", super().format(record))


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_SessionField())
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s %(name)s session=%(session)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiortc and aioice log every packet-level event at INFO, faster-whisper every
    # transcription's duration.
    for noisy in ("aiortc", "aioice", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

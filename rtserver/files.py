"""Files the server writes for later readers: whole or not at all, and known by their hash."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def sha256_of(path: Path) -> str:
    """The SHA-256 of the file's bytes, as 64 lowercase hex digits."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Writes ``data`` to ``path`` so that readers see either the old file or all of the new
    one: a temp file in the same directory, flushed to disk, then renamed over ``path``.
    ``mode`` is the new file's permissions (mkstemp alone would make it 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise

"""The demo session of ``rtserver serve --demo`` (``make run``): one session, reused.

Every start used to create another "Demo candidate" session, so the observer's list filled
with unused demos. The demo is now reused while nobody has joined it yet, and a new one is
made only once it was used (live, ended or erased) or its link no longer works (a wrong
token, or an expired link). Join tokens are stored hashed, so the store cannot give the
demo's link back: the link is kept in a 0600 file in the data directory, beside the HR key,
which is as secret.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from rtserver.store import CLI_ACTOR, STATUS_CREATED, Store

log = logging.getLogger(__name__)

DEMO_FILE = "demo_session.json"
DEMO_CANDIDATE = "Demo candidate"
DEMO_JOB = "Demo role"


@dataclass(frozen=True)
class DemoSession:
    id: str
    join_token: str
    created: bool  # True when made now, False when an unused one was reused


def demo_file(data_dir: Path) -> Path:
    return data_dir / DEMO_FILE


def _read_saved(path: Path) -> tuple[str, str] | None:
    """The saved demo's (id, join token), or None when there is none or it is unreadable."""
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None
    if not isinstance(saved, dict):
        return None
    session_id, token = saved.get("id"), saved.get("join_token")
    if isinstance(session_id, str) and isinstance(token, str):
        return session_id, token
    return None


def _still_unused(store: Store, session_id: str, token: str) -> bool:
    """Whether the saved demo can still be joined as a fresh interview."""
    record = store.get_session(session_id)
    if record is None or record.status != STATUS_CREATED:
        return False
    return store.check_join_token(session_id, token) and not record.is_expired()


def _save(path: Path, session_id: str, token: str) -> None:
    """Writes the link 0600 from the start (never readable by others, even briefly), then
    moves it into place so a crash cannot leave half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"id": session_id, "join_token": token}, handle)
    os.replace(temporary, path)


def demo_session(store: Store, data_dir: Path) -> DemoSession:
    """The demo session: the saved one while it is unused, else a new one (saved)."""
    path = demo_file(data_dir)
    saved = _read_saved(path)
    if saved is not None and _still_unused(store, *saved):
        return DemoSession(saved[0], saved[1], created=False)
    record, token = store.create_session(DEMO_CANDIDATE, DEMO_JOB, [])
    store.audit(CLI_ACTOR, "create", record.id, "demo session")
    _save(path, record.id, token)
    return DemoSession(record.id, token, created=True)

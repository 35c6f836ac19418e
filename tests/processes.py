"""Starting the real servers the tests run (rtserver, redis-server, turnserver): each is
started, then polled until it answers, failing early, with its log, if it exits first."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable


def wait_until_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    name: str,
    awaited: str,
    log: Callable[[], str],
    stop: Callable[[], object],
    timeout_s: float,
    poll_s: float = 0.1,
) -> None:
    """Returns once ``ready()`` holds. Raises RuntimeError, with the log, when the process
    exits first ("NAME exited early"), or, after stopping it, when ``timeout_s`` passes
    ("NAME did not AWAITED")."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{log()}")
        if ready():
            return
        time.sleep(poll_s)
    stop()
    raise RuntimeError(f"{name} did not {awaited}:\n{log()}")

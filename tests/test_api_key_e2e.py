"""End to end: `rtserver serve` prints the HR API key only on the start that generated it.

A key printed on every start ends up in every log collector and terminal scrollback; after
the first start the server says where the key is stored instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from server import ServerProcess

pytestmark = pytest.mark.e2e


def start_and_stop(data_dir: Path, *options: str) -> str:
    """Starts the server on ``data_dir`` with no key configured, stops it; its output."""
    server = ServerProcess(data_dir, options=["--analysis", "decode", *options], api_key="")
    server.start()
    try:
        key = (data_dir / "api_key").read_text().strip()
        assert len(key) >= 32
        server.api_key = key  # the generated key works
        health = httpx.get(server.base_url + "/healthz", headers=server.hr_headers, timeout=5.0)
        assert "live_sessions" in health.json()
    finally:
        server.stop()
    return server.log()


def test_the_key_is_printed_only_when_generated(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_and_stop(data_dir, "--demo")
    key = (data_dir / "api_key").read_text().strip()
    assert "HR API key (new" in first and key in first, first[-2000:]

    again = start_and_stop(data_dir, "--demo")
    assert key not in again, again[-2000:]
    assert f"HR API key: stored in {(data_dir / 'api_key').resolve()}" in again, again[-2000:]
    # The demo's observer link carries the key only when it was just generated.
    assert "Demo observer link" in again and "#token=" not in again, again[-2000:]
    # The demo nobody joined is the same session, with the same link (rtserver/api/demo.py).
    link = re.compile(r"Demo candidate link: http://[^/]+(/candidate/\S+)")  # each on its port
    assert link.findall(first) == link.findall(again) != [], again[-2000:]
    assert "not used yet, reused" in again

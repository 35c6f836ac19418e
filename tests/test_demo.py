"""The demo session of ``rtserver serve --demo`` (``rtserver/api/demo.py``): reused while it is
unused, replaced once used, its link kept in a 0600 file in the data directory."""

from __future__ import annotations

import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtserver.api.demo import DEMO_CANDIDATE, demo_file, demo_session
from rtserver.cli import create_demo_session
from rtserver.config import Config
from rtserver.store import STATUS_CREATED, Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "db.sqlite3")
    yield store
    store.close()


def demos(store: Store) -> list[str]:
    return [r.id for r in store.list_sessions() if r.candidate == DEMO_CANDIDATE]


def test_an_unused_demo_is_reused_with_its_link(store: Store, tmp_path: Path) -> None:
    first = demo_session(store, tmp_path)
    again = demo_session(store, tmp_path)
    assert first.created and not again.created
    assert (again.id, again.join_token) == (first.id, first.join_token)
    assert store.check_join_token(again.id, again.join_token)  # the link still works
    assert demos(store) == [first.id]
    mode = stat.S_IMODE(demo_file(tmp_path).stat().st_mode)
    assert mode == 0o600, oct(mode)


@pytest.mark.parametrize("used", ["live", "ended", "erased"])
def test_a_used_demo_is_replaced(store: Store, tmp_path: Path, used: str) -> None:
    first = demo_session(store, tmp_path)
    if used == "live":
        assert store.mark_live(first.id, "test-node")
    elif used == "ended":
        store.mark_ended(first.id, "ended_by_hr")
    else:
        store.erase(first.id)
    second = demo_session(store, tmp_path)
    assert second.created and second.id != first.id
    record = store.get_session(second.id)
    assert record is not None and record.status == STATUS_CREATED
    assert demo_session(store, tmp_path).id == second.id  # and that one is reused in turn


@pytest.mark.parametrize(
    "content", ["not json", "[]", '{"id": 1}', '{"id": "gone", "join_token": "x"}']
)
def test_a_broken_or_stale_link_file_gives_a_new_demo(
    store: Store, tmp_path: Path, content: str
) -> None:
    demo_file(tmp_path).write_text(content)
    demo = demo_session(store, tmp_path)
    assert demo.created and store.check_join_token(demo.id, demo.join_token)
    assert stat.S_IMODE(demo_file(tmp_path).stat().st_mode) == 0o600


def test_an_expired_demo_link_gives_a_new_demo(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = demo_session(store, tmp_path)
    record = store.get_session(first.id)
    assert record is not None
    later = record.expires_at + 1.0
    monkeypatch.setattr(time, "time", lambda: later)
    second = demo_session(store, tmp_path)
    assert second.created and second.id != first.id


def test_a_wrong_token_in_the_file_gives_a_new_demo(store: Store, tmp_path: Path) -> None:
    first = demo_session(store, tmp_path)
    demo_file(tmp_path).write_text(f'{{"id": "{first.id}", "join_token": "forged"}}')
    assert demo_session(store, tmp_path).id != first.id


def test_each_serve_demo_prints_the_same_unused_link(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `make run` does on every start: the second start prints the first one's links
    and the session list holds one demo."""
    config = Config(data_dir=tmp_path / "data")
    create_demo_session(config, "hr-key", show_key=True)
    first = capsys.readouterr().out
    create_demo_session(config, "hr-key", show_key=True)
    second = capsys.readouterr().out
    link = re.compile(r"Demo candidate link: (\S+)")
    assert link.findall(first) == link.findall(second) != []
    assert "reused" in second and "new" in first
    store = Store(config.db_path)
    try:
        assert len(demos(store)) == 1
    finally:
        store.close()

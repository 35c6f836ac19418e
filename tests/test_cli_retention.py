"""`rtserver retention sweep [--dry-run]`, run as an operator runs it (e.g. from cron) on a
data directory's store: what is due is listed, then erased and audit-logged by the system."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from rtserver.messages import StoredMessage
from rtserver.store import STATUS_ENDED, STATUS_ERASED, Store


def rtserver(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "rtserver", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_a_sweep_lists_then_erases_what_is_due(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = Store(data / "rtserver.sqlite3")
    ids = []
    for name in ("Old", "Held", "Recent"):
        record, _ = store.create_session(name, None, [])
        store.mark_live(record.id, "test-node")
        store.append_message(StoredMessage(record.id, 0, "final", {"score": 1}))
        store.mark_ended(record.id, "hangup")
        ids.append(record.id)
    old, held, recent = ids
    store.set_legal_hold(held, "a claim", "hr")
    store.close()
    db = sqlite3.connect(data / "rtserver.sqlite3")
    with db:  # two of them ended 31 days ago
        db.execute(
            "UPDATE sessions SET retain_from = retain_from - 31 * 86400 WHERE id IN (?, ?)",
            (old, held),
        )
    db.close()

    dry = rtserver(
        "retention", "sweep", "--dry-run", "--data-dir", str(data), "--retention-days", "30"
    )
    assert dry.returncode == 0, dry.stderr
    assert f"due {old}: 30 days from " in dry.stdout
    assert held not in dry.stdout and recent not in dry.stdout
    assert "1 session due" in dry.stdout

    store = Store(data / "rtserver.sqlite3")
    assert store.get_session(old).status == STATUS_ENDED  # type: ignore[union-attr]
    store.close()

    done = rtserver("retention", "sweep", "--data-dir", str(data), "--retention-days", "30")
    assert done.returncode == 0, done.stderr
    assert f"erased {old}" in done.stdout and "1 session erased" in done.stdout
    store = Store(data / "rtserver.sqlite3")
    try:
        statuses = {sid: store.get_session(sid).status for sid in ids}  # type: ignore[union-attr]
        assert statuses == {old: STATUS_ERASED, held: STATUS_ENDED, recent: STATUS_ENDED}
        assert store.messages(old) == []
        assert [(r["action"], r["actor"]) for r in store.audit_log(old)] == [
            ("retention_erase", "system@local")
        ]
    finally:
        store.close()

    # With the default of 180 days, nothing else is due.
    again = rtserver("retention", "sweep", "--data-dir", str(data))
    assert again.returncode == 0 and "0 sessions erased" in again.stdout


def test_a_sweep_without_a_store_says_so(tmp_path: Path) -> None:
    missing = rtserver("retention", "sweep", "--data-dir", str(tmp_path / "nothing"))
    assert missing.returncode == 1 and "no store" in missing.stderr
    assert not (tmp_path / "nothing").exists()

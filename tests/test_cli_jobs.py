"""The job commands, run as a user runs them: `rtserver jobs import` into a data directory's
store, and `rtserver score`'s refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rtserver.store import Store

JOB = Path(__file__).parent / "jobs" / "store_manager.json"


def rtserver(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "rtserver", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_a_job_file_is_imported_and_updated_in_versions(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    first = rtserver("jobs", "import", str(JOB), "--data-dir", data)
    assert first.returncode == 0, first.stderr
    made = json.loads(first.stdout)
    assert made["version"] == 1 and made["title"] == json.loads(JOB.read_text())["title"]
    second = rtserver("jobs", "import", str(JOB), "--update", made["id"], "--data-dir", data)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == {**made, "version": 2}

    store = Store(tmp_path / "data" / "rtserver.sqlite3")
    try:
        assert store.get_job(made["id"], 1) is not None
        assert store.get_job(made["id"]).version == 2  # type: ignore[union-attr]
        actions = [(e["actor"], e["action"]) for e in store.audit_log(None)]
    finally:
        store.close()
    assert ("cli@local", "create_job") in actions and ("cli@local", "update_job") in actions

    unknown = rtserver("jobs", "import", str(JOB), "--update", "nosuchjob", "--data-dir", data)
    assert unknown.returncode == 1 and "no job nosuchjob" in unknown.stderr


def test_invalid_files_are_refused_with_every_problem(tmp_path: Path) -> None:
    body = json.loads(JOB.read_text())
    body["competencies"][0]["weight"] = 0.95
    body["questions"][0]["competencies"] = ["charm"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(body))
    refused = rtserver("jobs", "import", str(bad), "--data-dir", str(tmp_path / "data"))
    assert refused.returncode == 2
    assert "weights must sum to 1" in refused.stderr and "'charm'" in refused.stderr

    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"answers": [{"question": 99, "text": "Hello."}]}))
    scored = rtserver("score", "--job", str(JOB), str(answers), cwd=tmp_path)
    assert scored.returncode == 2 and "question index from 0 to" in scored.stderr
    # The answers are checked before any model is fetched or loaded.
    assert not (tmp_path / "rtserver-data").exists()

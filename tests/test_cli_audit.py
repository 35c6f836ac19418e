"""`rtserver outcomes import`, `rtserver calibrate` and `rtserver audit`, run as a user runs
them, on a hiring history in a real store and on CSV files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.hiring_history import PastCandidate, job_body, seed_history
from rtserver.store import Store

IDS = ("problem_solving", "system_design", "code_quality", "collaboration")
PLANTED = np.array([0.1, 0.5, 0.3, 0.1])  # what later performance really rewards


def rtserver(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rtserver", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def history(n: int, seed: int = 7) -> tuple[list[PastCandidate], np.ndarray]:
    """``n`` past candidates with competency scores, decisions and self-identification, and
    their later performance (planted weights plus noise)."""
    rng = np.random.default_rng(seed)
    scores = np.clip(rng.normal(55, 15, size=(n, len(IDS))), 0, 100)
    performance = scores @ PLANTED / 20 + rng.normal(0, 0.35, size=n)
    people = []
    for i in range(n):
        sex = ("Female", "Male", None)[i % 3]
        race = ("Asian", "White", "Black or African American")[i % 2]
        decision = "advance" if scores[i] @ PLANTED > 55 else "reject"
        competencies = dict(zip(IDS, map(float, scores[i]), strict=True))
        people.append(PastCandidate(f"cand-{i}", competencies, decision, sex, race))
    return people, performance


@pytest.fixture
def data_dir(tmp_path: Path) -> tuple[Path, str, np.ndarray]:
    data = tmp_path / "data"
    store = Store(data / "rtserver.sqlite3")
    job = store.save_job(job_body(), "hr@test")
    people, performance = history(120)
    seed_history(store, job, people)
    store.close()
    return data, job.id, performance


def write_outcomes(path: Path, performance: np.ndarray) -> None:
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["candidate", "hired", "performance", "rated_at"])
        for i, value in enumerate(performance):
            out.writerow([f"cand-{i}", 1, f"{value:.3f}", "2026-09-30"])


def test_outcomes_calibration_and_audit_from_the_store(
    data_dir: tuple[Path, str, np.ndarray], tmp_path: Path
) -> None:
    data, job_id, performance = data_dir
    outcomes = tmp_path / "outcomes.csv"
    write_outcomes(outcomes, performance)
    imported = rtserver("outcomes", "import", outcomes, "--job", job_id, "--data-dir", data)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["recorded"] == 120

    shown = rtserver("calibrate", "--job", job_id, "--data-dir", data, "--json")
    assert shown.returncode == 0, shown.stderr
    result: dict[str, Any] = json.loads(shown.stdout)
    assert result["n"] == 120 and set(result["weights"]) == set(IDS)
    assert sum(result["weights"].values()) == pytest.approx(1.0)
    assert result["validity"]["calibrated"]["r"] > result["validity"]["prior"]["r"]
    assert "applied" not in result
    store = Store(data / "rtserver.sqlite3")
    assert store.get_job(job_id).version == 1  # type: ignore[union-attr]  # never silently
    store.close()

    refused = rtserver("calibrate", "--job", job_id, "--data-dir", data, "--apply")
    assert refused.returncode == 2 and "--by NAME" in refused.stderr
    applied = rtserver("calibrate", "--job", job_id, "--data-dir", data, "--apply", "--by", "Dana")
    assert applied.returncode == 0, applied.stderr
    assert "applied by Dana" in applied.stdout and "version 1 -> 2" in applied.stdout
    store = Store(data / "rtserver.sqlite3")
    try:
        job = store.get_job(job_id)
        assert job is not None and job.version == 2 and job.created_by == "cli:Dana"
        weights = {c["id"]: c["weight"] for c in job.body["competencies"]}
        assert weights == pytest.approx(result["weights"])
        [calibration] = store.calibrations(job_id)
        assert calibration["result"]["validity"] == result["validity"]
        actions = [entry["action"] for entry in store.audit_log()]
    finally:
        store.close()
    assert {"record_outcomes", "calibrate", "apply_calibration"} <= set(actions)

    report = tmp_path / "audit.html"
    audited = rtserver("audit", "--job", job_id, "--data-dir", data, "--json", "--html", report)
    assert audited.returncode == 0, audited.stderr
    audit = json.loads(audited.stdout)
    assert audit["n"] == 120 and audit["unknown"]["sex"] == 40
    assert len(audit["competencies"]) == len(IDS)
    assert "0.8" in report.read_text() and "<svg" in report.read_text()
    table = rtserver("audit", "--job", job_id, "--data-dir", data)
    assert table.returncode == 0 and "Female" in table.stdout
    empty = rtserver("audit", "--job", job_id, "--data-dir", data, "--from", "2999-01-01")
    assert empty.returncode == 1 and "no decided, scored sessions" in empty.stderr


def test_the_commands_take_csv_files_and_refuse_bad_ones(tmp_path: Path) -> None:
    people, performance = history(40, seed=3)
    calibration = tmp_path / "calibration.csv"
    with calibration.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["candidate", *IDS, "performance"])
        for person, value in zip(people, performance, strict=True):
            out.writerow([person.name, *(person.competencies[c] for c in IDS), value])
    fitted = rtserver("calibrate", "--csv", calibration, "--json")
    assert fitted.returncode == 0, fitted.stderr
    assert json.loads(fitted.stdout)["n"] == 40

    few = tmp_path / "few.csv"
    few.write_text("\n".join(calibration.read_text().splitlines()[:21]) + "\n")
    refused = rtserver("calibrate", "--csv", few)
    assert refused.returncode == 2 and "at least 30" in refused.stderr

    audit = tmp_path / "audit.csv"
    audit.write_text(
        "candidate,score,selected,sex,race\n"
        + "".join(
            f"c{i},{50 + i % 7},{int(i % 3 == 0)},{('Female', 'Male', '')[i % 3]},White\n"
            for i in range(30)
        )
    )
    audited = rtserver("audit", "--csv", audit, "--json")
    assert audited.returncode == 0, audited.stderr
    assert json.loads(audited.stdout)["unknown"]["sex"] == 10

    garbled = tmp_path / "garbled.csv"
    garbled.write_text("candidate,score,selected,sex,race\nc1,high,1,Female,White\n")
    bad = rtserver("audit", "--csv", garbled)
    assert bad.returncode == 2 and "line 2" in bad.stderr
    both = rtserver("audit")
    assert both.returncode == 2 and "--job ID" in both.stderr


def test_the_synthetic_history_takes_the_three_commands(tmp_path: Path) -> None:
    """bench.hiring_history's data directory, as the README's walk-through uses it."""
    from bench import hiring_history

    data = tmp_path / "history"
    assert hiring_history.main(["--data-dir", str(data), "--n", "90", "--seed", "4"]) == 0
    store = Store(data / "rtserver.sqlite3")
    [job] = store.list_jobs()
    assert len(store.scored_sessions(job.id)) == 90
    store.close()
    imported = rtserver(
        "outcomes", "import", data / "outcomes.csv", "--job", job.id, "--data-dir", data
    )
    assert imported.returncode == 0 and json.loads(imported.stdout)["recorded"] == 90
    audited = rtserver("audit", "--job", job.id, "--data-dir", data, "--json")
    assert audited.returncode == 0 and json.loads(audited.stdout)["n"] == 90

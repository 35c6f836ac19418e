"""The packages' import rules (README, "Where things are"), checked in fresh interpreters."""

import subprocess
import sys
from pathlib import Path

import pytest


def loaded_after_import(module: str) -> set[str]:
    """The rtserver modules a fresh interpreter has loaded after importing ``module``."""
    code = (
        f"import sys, {module}\n"
        "print('\\n'.join(m for m in sys.modules if m.startswith('rtserver')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(out.stdout.split())


@pytest.mark.parametrize("module", ["rtserver.server.worker", "rtserver.server.workers"])
def test_the_process_model_never_imports_the_api(module: str) -> None:
    loaded = loaded_after_import(module)
    assert module in loaded
    assert not {m for m in loaded if m.startswith("rtserver.api")}


@pytest.mark.parametrize(
    "module", ["rtserver.scoring.rubric", "rtserver.scoring.summary", "rtserver.scoring.signals"]
)
def test_scoring_reads_no_media_and_serves_nothing(module: str) -> None:
    loaded = loaded_after_import(module)
    assert module in loaded
    forbidden = ("rtserver.api", "rtserver.media", "rtserver.live", "rtserver.server")
    assert not {m for m in loaded if m.startswith(forbidden)}


@pytest.mark.parametrize(
    "module",
    [
        "rtserver.scoring.job_fit",
        "rtserver.scoring.job_report",
        "rtserver.scoring.rubric",
        "rtserver.live.job_scoring",
    ],
)
def test_what_scores_a_candidate_loads_nothing_of_demographics(module: str) -> None:
    loaded = loaded_after_import(module)
    assert module in loaded
    demographic = {
        "rtserver.scoring.audit",
        "rtserver.scoring.groups",
        "rtserver.scoring.samples",
        "rtserver.api.self_identification",
    }
    assert not loaded & demographic


def test_only_the_audit_reads_self_identification() -> None:
    """The one store method that returns candidates' self-identification is called by the
    bias audit's two entry points (the API's and the command's) and by nothing else."""
    root = Path(__file__).resolve().parents[1] / "rtserver"
    readers = {
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if "self_identification_for_audit(" in path.read_text()
    }
    assert readers == {"store/sqlite.py", "api/audits.py", "cli_audit.py"}


def test_only_the_candidates_own_export_reads_their_self_identification() -> None:
    """The store method that returns one candidate's self-identification serves their own
    export (api/candidate_data.py, which withholds it from HR's) and nothing else."""
    root = Path(__file__).resolve().parents[1] / "rtserver"
    readers = {
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if "self_identification_of(" in path.read_text()
    }
    assert readers == {"store/sqlite.py", "api/candidate_data.py"}

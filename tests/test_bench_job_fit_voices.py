"""Smoke test of bench/job_fit_voices.py: two answers, two voices, through the live path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import job_fit_voices  # noqa: E402


def test_two_answers_spoken_by_two_voices_are_scored(
    tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "voices.json"
    argv = ["--answers", "2", "--models-dir", str(models_dir), "--json", str(out)]
    assert job_fit_voices.main(argv) == 0
    assert "voices' difference" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2
    for row in rows:
        assert len(row["voices"]) == 2 and all(0 <= s <= 100 for s in row["voices"])
        assert all(heard.strip() for heard in row["heard"])  # both voices were heard
        assert all(0 <= w <= 1 for w in row["wer"])

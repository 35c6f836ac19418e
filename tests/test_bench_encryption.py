"""Smoke test of the encryption bench (bench/encryption.py): a quick run and its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.encryption import main


def test_a_quick_run_reports_both_contenders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "encryption.json"
    assert main(["--quick", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    for figure in ("write_us", "backfill_ms"):
        assert set(figures[figure]) == {"plaintext", "sealed"}
        assert all(value > 0 for value in figures[figure].values())
    assert 0.2 < figures["write_ratio"] < 20 and 0.2 < figures["backfill_ratio"] < 20
    assert 300 < figures["message_bytes"] < 1000
    assert "sealed" in capsys.readouterr().out

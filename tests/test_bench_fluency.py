"""Smoke test of the fluency benchmark (bench/fluency.py) at its --quick size.

It runs the bench once on the quick subset of the evaluation set, with the real VAD model,
and checks that the JSON report has the promised shape with finite numbers, that ours was
measured and judged by every target, and that each peer was either measured or skipped
with its reason (a peer's package is a bench-only dependency: where it is not installed,
its test is skipped with the bench's reason). It does not judge accuracy or timings.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from fluency_set import espeak_available

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import fluency  # noqa: E402

ROW_KEYS = {"section", "case", "ours", "peer", "unit", "ratio", "note"}
TARGET_KEYS = {"name", "value", "target", "met"}
# Each peer, and the module whose absence skips it.
PEERS = {
    "parselmouth": "parselmouth",
    "webrtcvad-3": "webrtcvad",
    "webrtcvad-2": "webrtcvad",
    "silero-vad": "silero_vad",
}
TARGET_PREFIXES = ("syllables:", "rate:", "pauses:", "speech:", "noise:", "speed:")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> dict[str, Any]:
    """The JSON report of one quick run (its printed table is checked to mention targets)."""
    if not espeak_available():
        pytest.skip("espeak-ng is not installed: the evaluation set cannot be built")
    tmp = tmp_path_factory.mktemp("bench-fluency")
    out = tmp / "fluency.json"
    args = ["--quick", "--json", str(out), "--models-dir", str(models_dir)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = fluency.main([*args, "--cache-dir", str(tmp / "clips")])
    assert code == 0
    assert "targets" in printed.getvalue()
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded


def test_report_has_the_promised_shape(report: dict[str, Any]) -> None:
    assert set(report) == {"results", "targets", "skipped", "versions"}
    for row in report["results"]:
        assert set(row) == ROW_KEYS
        assert row["section"] in fluency.SECTIONS
        assert isinstance(row["case"], str) and isinstance(row["unit"], str)
        for key in ("ours", "peer", "ratio"):
            assert row[key] is None or math.isfinite(row[key]), (row["case"], key)
    for target in report["targets"]:
        assert set(target) == TARGET_KEYS
        assert isinstance(target["met"], bool)
        assert math.isfinite(target["value"]) and math.isfinite(target["target"])
    assert all(line.startswith("skipped: ") for line in report["skipped"])


def test_ours_is_measured_and_judged(report: dict[str, Any]) -> None:
    assert not [line for line in report["skipped"] if line.startswith("skipped: ours")]
    rows = report["results"]
    assert rows
    for row in rows:
        assert row["ours"] is not None, row["case"]
        if row["section"] == "speed" and row["peer"] is not None:
            assert row["ratio"] is not None
    names = [target["name"] for target in report["targets"]]
    for prefix in TARGET_PREFIXES:
        assert sum(name.startswith(prefix) for name in names) == 1, prefix


@pytest.mark.parametrize("peer", PEERS)
def test_each_peer_is_measured_or_skipped_with_a_reason(report: dict[str, Any], peer: str) -> None:
    package = PEERS[peer]
    reasons = [line for line in report["skipped"] if line.startswith(f"skipped: {package}")]
    reasons += [line for line in report["skipped"] if line.startswith(f"skipped: {peer}")]
    if importlib.util.find_spec(package) is None:
        assert reasons, f"{package} is not installed, but the bench gave no reason"
        pytest.skip(reasons[0])
    assert not reasons, reasons
    rows = [row for row in report["results"] if row["case"].endswith(f" vs {peer}")]
    sections = {row["section"] for row in rows}
    assert {"pauses", "speech", "noise", "speed"} <= sections
    for row in rows:
        counts_syllables = row["section"] not in ("syllables", "rate") or peer == "parselmouth"
        assert (row["peer"] is not None) == counts_syllables, row["case"]


def test_a_peer_that_is_not_installed_is_skipped_with_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.import_module

    def without_peers(name: str, package: str | None = None) -> Any:
        if name in ("parselmouth", "webrtcvad", "silero_vad"):
            raise ImportError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(fluency.importlib, "import_module", without_peers)
    peers, skipped = fluency.load_peers()
    assert peers == []
    assert [line.split(":")[1].strip() for line in skipped] == [
        "parselmouth",
        "webrtcvad",
        "silero-vad",
    ]
    assert all("not installed" in line for line in skipped)


def test_ours_without_the_vad_model_is_skipped_with_its_reason(tmp_path: Path) -> None:
    ours = fluency.load_ours(tmp_path)
    assert isinstance(ours, str) and ours.startswith("skipped: ours: not available (")

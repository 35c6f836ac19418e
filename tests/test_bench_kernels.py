"""Smoke test of the kernel benchmark (bench/kernels.py) at its --quick sizes.

It checks that every comparison runs and that the JSON report has the promised shape with
finite numbers; it does not judge the timings, which depend on the machine.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from rtserver.kernels.frame import crop_resize_normalize

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import kernels  # noqa: E402

ROW_KEYS = {"section", "case", "ours", "peer", "unit", "ratio", "note"}
TARGET_KEYS = {"name", "value", "target", "met"}


def test_quick_run_writes_a_complete_json_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "kernels.json"
    assert kernels.main(["--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "targets" in printed

    report = json.loads(out.read_text())
    assert set(report) == {"results", "targets"}
    rows, targets = report["results"], report["targets"]
    for row in rows:
        assert set(row) == ROW_KEYS
        assert isinstance(row["case"], str) and isinstance(row["unit"], str)
        for key in ("ours", "peer", "ratio"):
            assert row[key] is None or math.isfinite(row[key]), (row["case"], key)
        assert row["ours"] is not None
    for target in targets:
        assert set(target) == TARGET_KEYS
        assert isinstance(target["met"], bool)
        assert math.isfinite(target["value"]) and math.isfinite(target["target"])

    sections = {row["section"] for row in rows}
    assert {"frame", "resampler", "audio path"} <= sections
    frame_cases = [row["case"] for row in rows if row["section"] == "frame"]
    assert len(frame_cases) == 2 * len(kernels.FACE_COUNTS)  # vs OpenCV and vs NumPy each
    names = [target["name"] for target in targets]
    assert any(name.startswith("frame:") for name in names)
    assert any(name.startswith("audio path:") for name in names)
    # The pitch rows need librosa (a bench-only dependency) and espeak-ng; without them they
    # are skipped, not failed.
    pitch_expected = kernels.optional_librosa() is not None and shutil.which("espeak-ng")
    assert ("pitch" in sections) == bool(pitch_expected)
    assert any(name.startswith("pitch:") for name in names) == bool(pitch_expected)


def test_numpy_crops_agree_with_the_kernel() -> None:
    """The bench's plain NumPy peer computes what the kernel computes."""
    rng = np.random.default_rng(1)
    plane = kernels.luma_plane(rng)
    boxes = kernels.face_boxes(rng, 5)
    ours = np.empty((5, kernels.CROP, kernels.CROP), np.float32)
    theirs = np.empty_like(ours)
    crop_resize_normalize(plane, boxes, ours, kernels.MARGIN)
    kernels.numpy_crops(plane, boxes, theirs)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-4)

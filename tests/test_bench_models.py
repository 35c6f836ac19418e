"""Smoke test of the model benchmark (bench/models.py) at its --quick sizes.

It checks that every measurement runs on the real models and photos, and that the JSON
report has the promised shape with finite numbers and every emotion backend either measured
or skipped with its reason; it does not judge the timings, which depend on the machine. The
fer peer needs a venv with TensorFlow and is not run here: only its skip paths are.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import models  # noqa: E402
from rtserver.inference.engine import BACKENDS  # noqa: E402

ROW_KEYS = {"section", "case", "ours", "peer", "unit", "ratio", "note"}
TARGET_KEYS = {"name", "value", "target", "met"}


def test_quick_run_writes_a_complete_json_report(
    tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "models.json"
    assert models.main(["--quick", "--json", str(out), "--models-dir", str(models_dir)]) == 0
    printed = capsys.readouterr().out
    assert "targets" in printed

    report = json.loads(out.read_text())
    assert set(report) == {"results", "targets", "skipped"}
    rows, targets, skipped = report["results"], report["targets"], report["skipped"]
    for row in rows:
        assert set(row) == ROW_KEYS
        assert isinstance(row["case"], str) and isinstance(row["unit"], str)
        for key in ("ours", "peer", "ratio"):
            assert row[key] is None or math.isfinite(row[key]), (row["case"], key)
        assert row["ours"] is not None and row["ours"] > 0
    for target in targets:
        assert set(target) == TARGET_KEYS
        assert isinstance(target["met"], bool)
        assert math.isfinite(target["value"]) and math.isfinite(target["target"])
    assert all(isinstance(line, str) and line.startswith("skipped: ") for line in skipped)

    # Every backend is measured at every batch size, or skipped with a reason.
    measured = {row["case"] for row in rows if row["section"] == "emotion"}
    for name in (*BACKENDS, "torch-cpu"):
        cases = {f"{name}, batch {n}" for n in models.QUICK.batches}
        reasons = [
            line.removeprefix(f"skipped: emotion backend {name}:").strip()
            for line in skipped
            if line.startswith(f"skipped: emotion backend {name}:")
        ]
        if cases <= measured:
            assert not reasons, name
        else:
            assert not cases & measured, name
            assert len(reasons) == 1 and reasons[0], name
    assert {f"onnxruntime-cpu, batch {n}" for n in models.QUICK.batches} <= measured

    detector = [row for row in rows if row["section"] == "detector"]
    assert [row["case"].split(" vs ")[1].split(",")[0] for row in detector] == [
        "Haar@160",
        "Haar@640",
    ]
    for row in detector:
        assert "BlazeFace 1," in row["note"]  # the real face is found
    (path,) = [row for row in rows if row["section"] == "whole path"]
    assert path["peer"] is None and path["ratio"] is None
    assert any(line.startswith("skipped: fer peer: no --fer-python") for line in skipped)
    assert "skipped: fer peer" in printed

    # Faces by size: recall and ms per frame at every height, now against before.
    faces = {row["case"]: row for row in rows if row["section"] == "faces"}
    for height in (48, 64, 80, 100, 130, 200):
        recall = faces[f"{height} px, recall: now vs before"]
        assert 0 < recall["ours"] <= 1 and 0 <= recall["peer"] <= 1
        cost = faces[f"{height} px, s/frame: now vs before"]
        assert cost["ours"] > 0 and cost["peer"] > 0
        live = faces[f"{height} px, live: s/detection now vs before"]
        assert live["ours"] > 0 and "face in " in live["note"]
    assert "no-face images: s/frame now vs before" in faces
    # The sparse full-range variant is measured beside the dense one, or said to be skipped.
    sparse_skipped = any(line.startswith("skipped: faces by size, sparse") for line in skipped)
    assert sparse_skipped != ("recall now, sparse variant" in printed)
    assert "faces by size" in printed and "recall now" in printed

    names = [target["name"] for target in targets]
    assert names[:3] == [
        "emotion faces/s on one CPU thread at batch 64",
        "BlazeFace ms per 640x480 frame, one thread",
        "BlazeFace vs Haar@640 speed ratio",
    ]
    for height in (48, 64, 80, 100, 130, 200):
        assert f"recall at {height} px" in names
        assert f"median ms per frame on its own at {height} px, one thread" in names
        assert f"median ms per detection in a live stream at {height} px, one thread" in names
    assert any(name.startswith("false detections on ") for name in names)


def test_fer_peer_without_fer_is_skipped_with_the_reason() -> None:
    """An interpreter without fer and tensorflow (this venv's) gives a skip line, not an error."""
    frames = np.zeros((1, 48, 64, 3), np.uint8)
    result = models.run_fer_peer(Path(sys.executable), frames, repeats=1)
    assert isinstance(result, str)
    assert result.startswith("skipped: fer peer: ")
    assert "cannot import fer and tensorflow" in result


def test_fer_peer_with_a_missing_interpreter_is_skipped(tmp_path: Path) -> None:
    frames = np.zeros((1, 48, 64, 3), np.uint8)
    result = models.run_fer_peer(tmp_path / "no-python", frames, repeats=1)
    assert isinstance(result, str) and result.startswith("skipped: fer peer: cannot run")


def test_face_frames_are_strided_luma_of_the_same_frames() -> None:
    rgb = models.face_frames(2)
    assert rgb.shape == (2, 480, 640, 3) and rgb.dtype == np.uint8
    assert not np.array_equal(rgb[0], rgb[1])  # the camera pans
    luma = models.luma_plane(rgb[0])
    assert luma.shape == (480, 640) and luma.strides[0] > 640

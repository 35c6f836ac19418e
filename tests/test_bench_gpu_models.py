"""Smoke test of the GPU model check (bench/gpu_models.py, run by bench/gpu_check.sh).

Here it runs on whatever the machine has: the CPU rows are measured, and each GPU backend
either runs and agrees with the CPU, or is skipped with the reason it cannot run.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.gpu_models import GPU_BACKENDS, TOLERANCE, check_models  # noqa: E402


def test_every_backend_runs_and_agrees_or_says_why_not(models_dir: Path) -> None:
    results = check_models(models_dir, quick=True)
    assert {r.model for r in results} == {"emotion", "face_detector"}
    for model in ("emotion", "face_detector"):
        rows = {r.backend: r for r in results if r.model == model}
        assert set(rows) == {"onnxruntime-cpu", *GPU_BACKENDS}
        cpu = rows["onnxruntime-cpu"]
        assert cpu.ok and all(math.isfinite(v) and v > 0 for v in cpu.items_per_s.values())
        for name in GPU_BACKENDS:
            row = rows[name]
            if row.skipped:
                assert not row.items_per_s  # a skipped backend reports no numbers
            else:
                assert row.max_abs_diff is not None and row.max_abs_diff <= TOLERANCE

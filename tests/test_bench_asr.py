"""Smoke test of the speech-to-text benchmark (bench/asr.py) at its --quick size.

It runs the bench once, in a process of its own, on the quick clips with the real Whisper
model (``make models``), offline (the real recordings are not fetched, so their column is
empty and says why), and checks that the JSON report has every row and every column with
sane values, and the targets of every row that ran. A row whose package is missing
(pocketsphinx is a bench-only dependency) must be skipped with its reason. It does not
judge accuracy or timings.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from asr_set import Clip
from fluency_set import espeak_available

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import asr  # noqa: E402

# Each row, and the module whose absence skips it.
ROW_MODULES = {"ours": "faster_whisper", "plain": "faster_whisper", "pocketsphinx": "pocketsphinx"}
TARGET_NAMES = {"WER, clean espeak", "WER, all speech", "words invented, noise alone"}
TIMEOUT_S = 600


def default_model() -> Path:
    """The model the bench would use, or skip the test with the bench's own reason."""
    args = argparse.Namespace(asr_model=None, models_dir=asr.MODELS_DIR)
    try:
        return asr.model_dir(args)
    except asr.ModelMissing as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not espeak_available():
        pytest.skip("espeak-ng is not installed: the clips cannot be made")
    default_model()
    tmp = tmp_path_factory.mktemp("bench-asr")
    out = tmp / "asr.json"
    command = [sys.executable, "-m", "bench.asr", "--quick", "--offline", "--json", str(out)]
    done = subprocess.run(
        [*command, "--cache-dir", str(tmp / "clips")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "targets" in done.stdout and "WER in %" in done.stdout
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded


def test_report_has_every_row_and_its_columns(report: dict[str, Any]) -> None:
    assert set(report) >= {"rows", "targets", "clips", "skipped", "versions", "threads"}
    assert set(report["rows"]) == set(asr.ROWS)
    assert report["threads"] == 1
    assert set(report["clips"]) == {"tuning", "held-out"}
    for name, row in report["rows"].items():
        if row["skipped"] is not None:
            assert row["skipped"].startswith(f"skipped: {name}: "), row["skipped"]
            continue
        assert set(row["splits"]) == {"tuning", "held-out", "all"}
        for split, figures in row["splits"].items():
            assert set(figures) == set(asr.COLUMNS), (name, split)
            check_figures(name, figures)
        assert set(row["by_condition"]) >= {"clean"}
        assert all(0.0 <= v <= 500.0 for v in row["by_condition"].values())
        assert set(row["transcripts"]) >= {"a0-en-us+m3-140", "noise-tuning-hum50-30"}


def check_figures(row: str, figures: dict[str, Any]) -> None:
    for key in ("wer_clean", "wer_noisy", "wer_speech"):
        value = figures[key]
        assert value is None or 0.0 <= value <= 500.0, (row, key, value)
    assert figures["wer_clean"] is not None
    # Offline, with an empty cache: no real speech, and the report says why.
    assert figures["wer_real"] is None
    assert isinstance(figures["invented_words"], int) and figures["invented_words"] >= 0
    assert math.isfinite(figures["cpu_rtf"]) and 0.0 < figures["cpu_rtf"] < 20.0
    assert figures["clips"] > 0 and figures["audio_s"] > 0.0
    lags = ("lag_p50_s", "lag_p95_s", "decode_p50_s", "decode_p95_s", "decode_cpu_rtf")
    if row == "ours":
        assert all(figures[key] is not None and figures[key] > 0.0 for key in lags)
        # The lag holds the gate's lookahead (0.27 s), the pause that ends an utterance
        # (unless the clip ended first) and the decode.
        assert figures["lag_p50_s"] >= figures["decode_p50_s"] + 0.27
        assert figures["lag_p95_s"] >= figures["lag_p50_s"]
        assert figures["decode_cpu_rtf"] <= figures["cpu_rtf"]
    else:
        assert all(figures[key] is None for key in lags)


def test_every_row_that_ran_is_judged_on_each_split(report: dict[str, Any]) -> None:
    ran = [name for name, row in report["rows"].items() if row["skipped"] is None]
    for target in report["targets"]:
        assert set(target) == {"row", "split", "name", "value", "target", "unit", "met"}
        assert isinstance(target["met"], bool) and math.isfinite(target["value"])
    for name in ran:
        for split in ("tuning", "held-out"):
            names = {
                t["name"] for t in report["targets"] if (t["row"], t["split"]) == (name, split)
            }
            assert names == TARGET_NAMES | ({"lag p95"} if name == "ours" else set())
    assert any(line.startswith("skipped: real speech: ") for line in report["skipped"])


@pytest.mark.parametrize("row", asr.ROWS)
def test_each_row_runs_or_is_skipped_with_a_reason(report: dict[str, Any], row: str) -> None:
    skipped = report["rows"][row]["skipped"]
    if importlib.util.find_spec(ROW_MODULES[row]) is None:
        assert skipped is not None and "not installed" in skipped
        pytest.skip(skipped)
    assert skipped is None, skipped


def test_the_model_is_looked_for_where_fetch_puts_it(tmp_path: Path) -> None:
    args = argparse.Namespace(asr_model=None, models_dir=tmp_path)
    with pytest.raises(asr.ModelMissing, match="rtserver models fetch"):
        asr.model_dir(args)
    (tmp_path / asr.ASR_MODEL).mkdir()
    (tmp_path / asr.ASR_MODEL / "model.bin").write_bytes(b"")
    assert asr.model_dir(args) == tmp_path / asr.ASR_MODEL
    mine = tmp_path / "mine"
    with pytest.raises(asr.ModelMissing, match=str(mine)):
        asr.model_dir(argparse.Namespace(asr_model=mine, models_dir=tmp_path))


def test_rows_are_chosen_by_name() -> None:
    assert asr.parse_rows("plain, pocketsphinx") == ["plain", "pocketsphinx"]
    with pytest.raises(argparse.ArgumentTypeError):
        asr.parse_rows("plain,whisperx")


def test_figures_pool_errors_and_count_invented_words() -> None:
    second = np.zeros(16000, np.float32)
    clips = [
        Clip("a", "tuning", "espeak", "clean", "q", "one two three four", np.tile(second, 2)),
        Clip("b", "tuning", "espeak", "white10", "q", "five six", second),
        Clip("r", "held-out", "real", "real", "q", "seven eight", second),
        Clip("n", "tuning", "noise", "white", "q", "", second),
    ]
    said = ["one two three", "five six", "seven eight nine", "Thank you."]
    f = asr.figures(clips, [asr.Transcript(t) for t in said], [0.5, 0.25, 0.25, 0.25])
    assert f.wer_clean == pytest.approx(25.0) and f.wer_noisy == pytest.approx(0.0)
    assert f.wer_real == pytest.approx(50.0) and f.wer_speech == pytest.approx(200 / 8)
    assert f.invented_words == 2
    assert f.cpu_rtf == pytest.approx(1.25 / 5.0)
    assert f.lag_p95_s is None
    heard = [asr.Heard(0.0, 1.0, "one two three", 0.2, 0.2, 1.0)]
    with_lag = asr.figures(clips[:1], [asr.Transcript("one two three", heard)], [0.5])
    assert with_lag.lag_p50_s == pytest.approx(1.0) and with_lag.decode_p95_s == pytest.approx(0.2)

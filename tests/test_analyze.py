"""`rtserver analyze FILE`: the live per-second pipeline on recorded files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from media import INTERVIEW_SCRIPT, SpeechTrack
from server import MODELS_DIR
from wer import word_error_rate

ANALYZE = [sys.executable, "-m", "rtserver", "analyze", "--models-dir", str(MODELS_DIR)]


def analyze(path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ANALYZE, *options, str(path)], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def interview_webm(tmp_path_factory: pytest.TempPathFactory, face_video: Path,
                   speech_wav: SpeechTrack) -> Path:  # fmt: skip
    """The face video and the speech muxed into one WebM (VP8 + Opus), as a recording."""
    out = tmp_path_factory.mktemp("analyze") / "interview.webm"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(face_video), "-i", str(speech_wav.path),
         "-c:v", "libvpx", "-b:v", "600k", "-c:a", "libopus", "-shortest", str(out)],
        check=True, timeout=120,
    )  # fmt: skip
    return out


def test_analyze_a_wav_gives_every_second_and_a_summary(
    speech_wav: SpeechTrack, models_dir: Path
) -> None:
    done = analyze(speech_wav.path, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    seconds, summary = result["seconds"], result["summary"]
    assert [s["t"] for s in seconds] == list(range(len(seconds)))
    assert abs(len(seconds) - speech_wav.duration_s) <= 1.0
    assert summary["duration_s"] == pytest.approx(speech_wav.duration_s, abs=0.1)
    spoken = sum(b - a for a, b in speech_wav.intervals)
    assert summary["speech_s"] == pytest.approx(spoken, abs=0.5)
    # The script has one 2.5 s pause between its two sentences.
    assert summary["pause_count"] == 1
    assert summary["pause_s"] == pytest.approx(2.5, abs=0.4)
    assert summary["syllables"] > 10
    assert 2.0 < summary["articulation_rate_sps"] < 7.0
    assert summary["speech_rate_sps"] < summary["articulation_rate_sps"]
    # No video in a wav: the video fields say so, and emotion is null.
    assert all(s["video"]["fps"] == 0 and s["emotion"] is None for s in seconds)
    fluent = [s["fluency"] for s in seconds if s["fluency"]]
    assert sum(f["syllables"] for f in fluent) == summary["syllables"]
    assert sum(f["pause_count"] for f in fluent) >= 1


def test_analyze_a_recording_with_video_gives_faces_and_emotion(
    interview_webm: Path, models_dir: Path
) -> None:
    done = analyze(interview_webm, "--json")
    assert done.returncode == 0, done.stderr
    seconds = json.loads(done.stdout)["seconds"]
    analysed = [s for s in seconds if s["video"]["fps"] > 0]
    assert len(analysed) >= len(seconds) - 1
    assert sum(s["video"]["face"] for s in analysed) / len(analysed) > 0.8
    assert all(s["emotion"] is not None for s in analysed if s["video"]["face"] > 0)
    assert any(s["audio"]["speech"] > 0.5 for s in seconds)
    table = analyze(interview_webm)  # the human-readable form
    assert table.returncode == 0 and "speech_rate_sps" in table.stdout
    assert "transcript:" in table.stdout


def test_analyze_transcribes_what_was_said(speech_wav: SpeechTrack, models_dir: Path) -> None:
    done = analyze(speech_wav.path, "--json")
    assert done.returncode == 0, done.stderr
    transcript = json.loads(done.stdout)["transcript"]
    # The script's two sentences, 2.5 s apart: two utterances, in order.
    assert len(transcript) == 2
    spoken = " ".join(part for part in INTERVIEW_SCRIPT if isinstance(part, str))
    heard = " ".join(segment["text"] for segment in transcript)
    assert word_error_rate(spoken, heard) <= 0.15, heard
    for segment, (start, end) in zip(transcript, speech_wav.intervals, strict=True):
        assert set(segment) == {"start", "end", "text", "words"}
        assert abs(segment["start"] - start) < 0.3 and abs(segment["end"] - end) < 0.3
        for word in segment["words"]:
            assert start - 0.35 <= word["start"] <= word["end"] <= end + 0.35
    off = analyze(speech_wav.path, "--json", "--transcribe", "off")
    assert off.returncode == 0 and "transcript" not in json.loads(off.stdout)


def test_analyze_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    junk = tmp_path / "junk.webm"
    junk.write_bytes(b"this is not a media file")
    done = analyze(junk)
    assert done.returncode == 1
    assert "cannot open" in done.stderr

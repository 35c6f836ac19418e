"""The speech-to-text evaluation set is what it says: words compared fairly, splits kept apart,
noise at the stated SNR, and the real recordings only when they are the pinned ones."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from asr_set import (
    ANSWERS,
    NOISES,
    QUICK_NAMES,
    REAL,
    RENDITIONS,
    SPLITS,
    Clip,
    WordErrors,
    clip_specs,
    extract_real,
    load_generated,
    load_real,
    normalise,
    pooled_errors,
    word_errors,
)
from fluency_set import espeak_available


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "It was the best of times, it was the worst of times.",
            "it was the best of times it was the worst of times",
        ),
        (
            "In 2019 we sent 40,000 invoices.",
            "in two thousand nineteen we sent forty thousand invoices",
        ),
        ("An alert at 80%.", "an alert at eighty percent"),
        ("An alert at 80 percent", "an alert at eighty percent"),
        ("145 ms, 3.5 s", "one hundred forty five ms three point five s"),
        ("the 21st time", "the twenty first time"),
        ("I\u2019m good at trade-offs\u2014honestly.", "i am good at trade offs honestly"),
        (
            "We're sure it won't, can't or shouldn't",
            "we are sure it will not can not or should not",
        ),
        ("I've said we'll go; let's", "i have said we will go let us"),
        ("It's the team's call, I'd say", "it's the team's call i'd say"),
        ("'Quoted' words", "quoted words"),
        ("Ever tried. Ever failed. No matter.", "ever tried ever failed no matter"),
        ("", ""),
        (" . , ! ", ""),
    ],
)
def test_normalise(text: str, words: str) -> None:
    assert normalise(text) == words.split()


def test_spelt_out_and_written_numbers_compare_equal() -> None:
    assert normalise("We had 45 minutes") == normalise("we had forty-five minutes")
    assert normalise("in 2019") == normalise("In two thousand nineteen")


def test_word_errors_count_each_kind() -> None:
    errors = word_errors("the cat sat on the mat", "The cat sat on a mat today.")
    assert (errors.substitutions, errors.deletions, errors.insertions) == (1, 0, 1)
    assert errors.reference_words == 6 and errors.wer == pytest.approx(2 / 6)
    assert word_errors("Ever tried.", "") == WordErrors(deletions=2, reference_words=2)
    assert word_errors("", "Thank you.") == WordErrors(insertions=2)
    assert np.isnan(word_errors("", "").wer)
    assert word_errors("In 2019.", "in two thousand nineteen").errors == 0


def test_errors_pool_over_clips_with_speech_only() -> None:
    audio = np.zeros(16000, np.float32)
    clips = [
        Clip("a", "tuning", "espeak", "clean", "", "one two three four", audio),
        Clip("b", "tuning", "espeak", "clean", "", "five six", audio),
        Clip("n", "tuning", "noise", "white", "", "", audio),
    ]
    pooled = pooled_errors(clips, ["one two three four", "five", "thank you"])
    assert pooled == WordErrors(deletions=1, reference_words=6)


def test_the_splits_share_no_sentence_and_every_clip_has_its_answer_split() -> None:
    specs = clip_specs()
    assert len({s.name for s in specs}) == len(specs)
    by_split = {
        split: {t for s in specs if s.split == split for t in s.sentences} for split in SPLITS
    }
    assert by_split["tuning"] and by_split["held-out"]
    assert not by_split["tuning"] & by_split["held-out"]
    for answer in ANSWERS:
        assert set(answer.sentences) <= by_split[answer.split]
    assert all(s.prompt for s in specs)
    assert set(QUICK_NAMES) <= {s.name for s in specs}
    assert {s.split for s in specs if s.name in QUICK_NAMES} == set(SPLITS)


def test_every_clean_answer_has_two_noisy_twins_and_every_noise_is_used() -> None:
    specs = clip_specs()
    clean = [s for s in specs if s.condition == "clean" and not s.name.startswith("long-")]
    assert len(clean) == RENDITIONS * len(ANSWERS)
    for spec in clean:
        twins = [s for s in specs if s.name.startswith(spec.name + "-")]
        assert len(twins) == 2
        assert all(t.sentences == spec.sentences and t.split == spec.split for t in twins)
        assert all(t.snr_db is not None for t in twins)
    used = {(s.noise, s.snr_db) for s in specs if s.snr_db is not None}
    assert used == set(NOISES)
    assert clip_specs() == specs  # seeded


@pytest.fixture(scope="module")
def quick_set(tmp_path_factory: pytest.TempPathFactory) -> list[Clip]:
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    return load_generated(tmp_path_factory.mktemp("asr_set"), quick=True)


def test_noisy_twins_have_the_stated_snr(tmp_path: Path) -> None:
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    for name, snr_db in (("a4-en-us+f3-140-white10", 10.0), ("a0-en-us+f3-165-pink5", 5.0)):
        base = name.rsplit("-", 1)[0]
        clips = {c.name: c for c in load_generated(tmp_path, names={name, base})}
        clean, noisy = clips[base].audio.astype(np.float64), clips[name].audio
        speech = clean != 0.0  # the clean clip is digital silence between sentences
        noise = noisy - clean
        snr = 10 * np.log10(np.mean(clean[speech] ** 2) / np.mean(noise[speech] ** 2))
        assert snr == pytest.approx(snr_db, abs=0.3), name


def test_quick_clips_are_16k_audio_with_speech_where_said(quick_set: list[Clip]) -> None:
    assert {c.name for c in quick_set} == set(QUICK_NAMES)
    for clip in quick_set:
        assert clip.audio.dtype == np.float32 and np.all(np.abs(clip.audio) < 1.0)
        level = 10 * np.log10(np.mean(clip.audio.astype(np.float64) ** 2) + 1e-20)
        if clip.kind == "espeak":
            assert clip.reference and -35.0 < level < -15.0, clip.name
            assert 5.0 < clip.duration_s < 20.0
        else:
            assert clip.reference == "" and clip.duration_s == 8.0


def test_the_long_clips_run_past_fifteen_seconds_without_a_pause(tmp_path: Path) -> None:
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    for clip in load_generated(tmp_path, names={"long-tuning", "long-held-out"}):
        voiced = np.flatnonzero(np.abs(clip.audio) > 1e-4)
        gaps = np.diff(voiced) / 16000
        assert gaps.max() < 0.5  # no pause that would end an utterance
        assert (voiced[-1] - voiced[0]) / 16000 > 15.0


def test_real_speech_is_refused_unless_it_is_the_pinned_recording(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_real(tmp_path)
    wheel = tmp_path / "moonshine_voice-0.1.5-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for source in REAL:
            archive.writestr(source.member, b"RIFF not the recording")
    with pytest.raises(ValueError, match="sha256"):
        extract_real(wheel, tmp_path / "real")
    (tmp_path / "real").mkdir(exist_ok=True)
    for source in REAL:
        (tmp_path / "real" / f"{source.name}.wav").write_bytes(b"RIFF tampered")
    with pytest.raises(ValueError, match="sha256"):
        load_real(tmp_path / "real")
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("other.txt", b"")
    with pytest.raises(ValueError, match="has no"):
        extract_real(empty, tmp_path / "real")

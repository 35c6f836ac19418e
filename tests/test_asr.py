"""inference/asr.py: Whisper tiny.en through faster-whisper, on real espeak-ng speech.

The model is the one `make models` fetched (tests never download). Each clip is a few
seconds, so every transcription costs about half a second on one core.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import ctranslate2
import numpy as np
import numpy.typing as npt
import pytest
from vad_speech import noise, rms_dbfs, synth

from rtserver.inference import asr
from rtserver.inference.asr import (
    AsrSegment,
    SpeechModelError,
    SpeechRecognizer,
    choose_device,
    load_recognizer,
)
from rtserver.inference.engine import BackendUnavailable
from rtserver.models.fetch import MODELS

RATE = asr.SAMPLE_RATE
VOICE = "en-us"
# Sentences tiny.en gets right in espeak's en-us voice at 150 wpm (it hears "brown fox" in
# that voice as "round-fark"), so that a regression shows as word errors.
SCRIPT = (
    "Thank you for taking the time to meet with me today",
    "We tested every stage before the release went out",
    "She said the project was finished two weeks early",
)
PAUSE_S = 1.2
# espeak-ng says "Kubernetes" as tiny.en does not expect: "Cuba neat" unless prompted.
PROMPTED = "We moved the service to Kubernetes last year"
PROMPT = "Kubernetes"
HAS_CUDA = ctranslate2.get_cuda_device_count() > 0
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def normalise(text: str) -> list[str]:
    """Lower-case words without punctuation, digits spelt out (Whisper writes "2 weeks")."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()
    return [NUMBERS[int(w)] if w.isdigit() and int(w) < len(NUMBERS) else w for w in words]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word edits (Levenshtein) from ``hypothesis`` to ``reference``, per reference word."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        diagonal, row[0] = row[0], i
        for j in range(1, len(hyp) + 1):
            diagonal, row[j] = (
                row[j],
                min(row[j] + 1, row[j - 1] + 1, diagonal + (ref[i - 1] != hyp[j - 1])),
            )
    return row[-1] / len(ref)


def level(x: npt.NDArray[np.float64], dbfs: float = -23.0) -> npt.NDArray[np.float32]:
    return (x * 10.0 ** ((dbfs - rms_dbfs(x)) / 20.0)).astype(np.float32)


def text_of(segments: list[AsrSegment]) -> str:
    return " ".join(segment.text for segment in segments)


@pytest.fixture(scope="module")
def recognizer(models_dir: Path) -> SpeechRecognizer:
    return load_recognizer(models_dir / MODELS["asr"].file, device="cpu")


@pytest.fixture(scope="module")
def answer() -> tuple[npt.NDArray[np.float32], list[tuple[float, float]]]:
    """SCRIPT spoken with PAUSE_S between sentences, 0.5 s of silence around; and each
    sentence's (start, end) in seconds."""
    pieces: list[npt.NDArray[np.float64]] = [np.zeros(RATE // 2)]
    spans: list[tuple[float, float]] = []
    cursor = RATE // 2
    for i, sentence in enumerate(SCRIPT):
        said = synth(sentence, VOICE, 150)
        pieces.append(said)
        spans.append((cursor / RATE, (cursor + said.size) / RATE))
        cursor += said.size
        pieces.append(np.zeros(int((PAUSE_S if i < len(SCRIPT) - 1 else 0.5) * RATE)))
        cursor += pieces[-1].size
    return level(np.concatenate(pieces)), spans


@pytest.fixture(scope="module")
def prompted_clip() -> npt.NDArray[np.float32]:
    return level(
        np.concatenate([np.zeros(RATE // 4), synth(PROMPTED, VOICE, 150), np.zeros(RATE // 4)])
    )


def test_speech_is_transcribed_with_word_timings_inside_the_spoken_spans(
    recognizer: SpeechRecognizer,
    answer: tuple[npt.NDArray[np.float32], list[tuple[float, float]]],
) -> None:
    audio, spans = answer
    segments = recognizer.transcribe(audio)
    words = [word for segment in segments for word in segment.words]
    assert word_error_rate(" ".join(SCRIPT), " ".join(word.w for word in words)) <= 0.1, words
    assert word_error_rate(" ".join(SCRIPT), text_of(segments)) <= 0.1, segments
    duration = audio.size / RATE
    starts = [word.start for word in words]
    assert starts == sorted(starts)
    for word in words:
        assert 0.0 <= word.start <= word.end <= duration, word
        assert 0.0 <= word.p <= 1.0, word
        assert word.w == word.w.strip() and word.w, word
        # Whisper's word timings are good to a few hundred ms: none lands in a pause.
        middle = (word.start + word.end) / 2
        assert any(a - 0.3 <= middle <= b + 0.3 for a, b in spans), (word, spans)
    for segment in segments:
        assert segment.start <= segment.words[0].start
        assert segment.words[-1].end <= segment.end <= duration
    # Each later sentence's first word starts near where espeak started saying it. Whisper
    # starts a clip's first word at the clip's start, whatever silence leads it: only the
    # end of that one is near (a live utterance starts where speech does, give or take).
    assert spans[0][0] <= words[0].end <= spans[0][1]
    for sentence, (start, _end) in zip(SCRIPT[1:], spans[1:], strict=True):
        first = normalise(sentence)[0]
        assert any(
            normalise(word.w) == [first] and abs(word.start - start) <= 0.4 for word in words
        ), (sentence, start, words)


@pytest.mark.parametrize("prompt", [None, "Tell me about a project you are proud of."])
def test_noise_and_silence_give_no_words(recognizer: SpeechRecognizer, prompt: str | None) -> None:
    """Whisper writes "Thank you." or "." into silence and noise unless gated (a prompt
    tempts it to go on talking)."""
    rng = np.random.default_rng(5)
    click = np.zeros(RATE, np.float32)
    click[RATE // 2 : RATE // 2 + 40] = 0.5
    clips = {
        "digital silence": np.zeros(2 * RATE, np.float32),
        "a short silence": np.zeros(RATE // 5, np.float32),
        "white noise": (noise("white", 3 * RATE, rng) * 0.01).astype(np.float32),
        "pink noise": (noise("pink", 3 * RATE, rng) * 0.03).astype(np.float32),
        "50 Hz hum": (noise("hum50", 6 * RATE, rng) * 0.1).astype(np.float32),
        "a click": click,
    }
    for name, audio in clips.items():
        assert recognizer.transcribe(audio, prompt) == [], name


def test_the_prompt_conditions_the_decoding(
    recognizer: SpeechRecognizer, prompted_clip: npt.NDArray[np.float32]
) -> None:
    plain = text_of(recognizer.transcribe(prompted_clip))
    prompted = text_of(recognizer.transcribe(prompted_clip, PROMPT))
    assert "kubernetes" not in plain.lower()
    assert "kubernetes" in normalise(prompted), prompted
    assert word_error_rate(PROMPTED, prompted) <= 0.15, prompted


def test_a_batch_gives_what_each_clip_gives_alone(
    recognizer: SpeechRecognizer,
    answer: tuple[npt.NDArray[np.float32], list[tuple[float, float]]],
    prompted_clip: npt.NDArray[np.float32],
) -> None:
    clips: list[tuple[npt.NDArray[np.float32], str | None]] = [
        (prompted_clip, PROMPT),
        (answer[0], None),
        (np.zeros(RATE, np.float32), None),
        (prompted_clip, None),
    ]
    batch = recognizer.transcribe_batch(clips)
    assert batch == [recognizer.transcribe(audio, prompt) for audio, prompt in clips]
    assert batch[2] == []
    assert "kubernetes" in text_of(batch[0]).lower()
    assert recognizer.transcribe_batch([]) == []


def test_audio_shapes_and_types(
    recognizer: SpeechRecognizer, prompted_clip: npt.NDArray[np.float32]
) -> None:
    assert recognizer.transcribe(np.zeros(0, np.float32)) == []
    # float64 samples are taken as they are (converted to float32).
    as_float64 = recognizer.transcribe(prompted_clip.astype(np.float64), PROMPT)
    assert as_float64 == recognizer.transcribe(prompted_clip, PROMPT)
    with pytest.raises(ValueError, match="mono"):
        recognizer.transcribe(np.zeros((2, RATE), np.float32))


def test_a_missing_or_incomplete_model_is_a_typed_error_and_nothing_downloads(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import faster_whisper.transcribe
    import tokenizers

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to download a model")

    monkeypatch.setattr(faster_whisper.transcribe, "download_model", no_download)
    monkeypatch.setattr(tokenizers.Tokenizer, "from_pretrained", no_download)
    with pytest.raises(SpeechModelError, match=r"lacks model\.bin, tokenizer\.json"):
        load_recognizer(tmp_path / "missing", device="cpu")
    # Without tokenizer.json, faster-whisper would fetch one from the hub.
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("model.bin", "config.json", "vocabulary.txt"):
        (partial / name).symlink_to(models_dir / MODELS["asr"].file / name)
    with pytest.raises(SpeechModelError, match=r"lacks tokenizer\.json.*rtserver models fetch"):
        load_recognizer(partial, device="cpu")
    # A directory CTranslate2 refuses.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.bin").write_bytes(b"not a model")
    (broken / "tokenizer.json").write_bytes(
        (models_dir / "asr_tiny_en/tokenizer.json").read_bytes()
    )
    with pytest.raises(SpeechModelError, match="cannot load speech model"):
        load_recognizer(broken, device="cpu")


def test_the_device_choice_is_logged_in_one_line(
    models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="rtserver.inference.asr"):
        recognizer = load_recognizer(models_dir / MODELS["asr"].file)
    lines = [r.getMessage() for r in caplog.records if r.name == "rtserver.inference.asr"]
    assert len(lines) == 1, lines
    if HAS_CUDA:
        assert recognizer.name == "faster-whisper asr_tiny_en cuda float16"
        assert "cuda float16 (CTranslate2 sees" in lines[0]
    else:
        assert recognizer.name == "faster-whisper asr_tiny_en cpu int8"
        assert "cpu int8 (CTranslate2 sees no CUDA device)" in lines[0]
    with pytest.raises(ValueError, match="asr device must be one of auto, cpu, cuda"):
        choose_device("gpu")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA device: asking for it is no error")
def test_cuda_without_a_gpu_is_a_typed_error(models_dir: Path) -> None:
    assert choose_device("auto") == ("cpu", "int8", "CTranslate2 sees no CUDA device")
    with pytest.raises(BackendUnavailable, match="'cuda' but CTranslate2 sees no CUDA device"):
        load_recognizer(models_dir / MODELS["asr"].file, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device: float16 on CUDA needs a GPU machine")
def test_cuda_float16_agrees_with_the_cpu(
    models_dir: Path,
    recognizer: SpeechRecognizer,
    answer: tuple[npt.NDArray[np.float32], list[tuple[float, float]]],
    prompted_clip: npt.NDArray[np.float32],
) -> None:
    gpu = load_recognizer(models_dir / MODELS["asr"].file, device="cuda")
    assert gpu.name.endswith("cuda float16")
    for audio, prompt in ((answer[0], None), (prompted_clip, PROMPT)):
        on_cpu = text_of(recognizer.transcribe(audio, prompt))
        on_gpu = text_of(gpu.transcribe(audio, prompt))
        assert word_error_rate(on_cpu, on_gpu) <= 0.1, (on_cpu, on_gpu)
    batch = gpu.transcribe_batch([(answer[0], None), (prompted_clip, PROMPT)])
    assert batch == [gpu.transcribe(answer[0]), gpu.transcribe(prompted_clip, PROMPT)]


def test_the_encoder_window_is_the_clip_and_a_second_of_silence() -> None:
    second = asr.FRAMES_PER_S
    assert asr._window_frames(3 * second, asr.WINDOW_PADS_S[0]) == 4 * second
    assert asr._window_frames(301, 1.0) % 2 == 0  # the encoder halves it
    assert asr._window_frames(29 * second + 50, 1.0) == asr.FULL_WINDOW_FRAMES
    assert asr._window_frames(second, -1.0) == asr.FULL_WINDOW_FRAMES


def test_a_pass_that_starts_over_is_doubted() -> None:
    assert asr._repeats("I would like to learn more. I would like learn more about")
    assert asr._repeats("We moved the service. We Moved the Service to")
    assert asr._repeats("Fail again. Fail again.")  # said twice at once
    assert not asr._repeats("I think it went well, and I think so too")  # two words, apart
    assert not asr._repeats("Ever tried. Ever failed. No matter.")
    assert not asr._repeats("")


def test_timestamps_past_the_window_or_too_fast_for_speech_are_off_the_clock() -> None:
    window_s = 4.0
    assert not asr._off_clock([(0.0, 2.5, 8), (2.5, 3.9, 5)], window_s)
    assert asr._off_clock([(0.0, 12.1, 10)], window_s)  # past the window
    assert asr._off_clock([(0.0, 0.5, 13)], window_s)  # 13 words in half a second
    assert not asr._off_clock([], window_s)


def test_pieces_of_a_word_are_joined_as_written() -> None:
    aligned = [
        {"word": " about", "start": 0.0, "end": 0.3, "probability": 0.9},
        {"word": " 40", "start": 0.3, "end": 0.5, "probability": 0.8},
        {"word": ",000", "start": 0.5, "end": 0.9, "probability": 0.6},
        {"word": " invoices.", "start": 0.9, "end": 1.4, "probability": 0.95},
    ]
    whole = asr._whole_words(aligned)
    assert [w["word"] for w in whole] == [" about", " 40,000", " invoices."]
    assert (whole[1]["start"], whole[1]["end"], whole[1]["probability"]) == (0.3, 0.9, 0.6)
    assert aligned[1]["word"] == " 40"  # the caller's list is left as it was


def test_a_long_utterance_is_heard_whole(recognizer: SpeechRecognizer) -> None:
    """The longest utterance the cutter gives (15 s, and its context) in one pass: no word
    of the end is lost to the token bound, and nothing is said twice."""
    sentences = SCRIPT * 2
    said = synth(" ".join(sentences), VOICE, 180)
    clip = level(np.concatenate([said, np.zeros(RATE // 2)]))
    assert 12 * RATE <= clip.size <= 16 * RATE, clip.size / RATE
    heard = text_of(recognizer.transcribe(clip))
    assert word_error_rate(" ".join(sentences), heard) <= 0.15, heard

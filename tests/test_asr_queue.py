"""The speech-to-text queue: never drops, transcribes in order, exports its backlog, and
admission control refuses new sessions while the backlog is over its bound. The real
recogniser (Whisper tiny.en through faster-whisper) on real espeak-ng speech."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from media import make_speech_wav, read_wav
from wer import word_error_rate

from rtserver.config import Config
from rtserver.errors import Overloaded
from rtserver.inference.asr import load_recognizer
from rtserver.inference.asr_queue import AsrQueue
from rtserver.metrics import Metrics
from rtserver.server.admission import Admission, RecentSignalLag

SENTENCES = (
    "The quarterly report is due on Friday.",
    "Our team moved the servers to a new data centre.",
    "I would like to learn more about the role.",
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """Each sentence as float32 16 kHz audio."""
    out = []
    folder = tmp_path_factory.mktemp("asr_queue")
    for k, sentence in enumerate(SENTENCES):
        track = make_speech_wav(folder / f"s{k}.wav", (0.3, sentence, 0.3), rate_hz=16000)
        samples, _ = read_wav(track.path)
        out.append(samples.astype(np.float32))
    return out


@pytest.fixture(scope="module")
def recognizer(models_dir: Path):  # type: ignore[no-untyped-def]
    return load_recognizer(Config(models_dir=str(models_dir)).asr_model_path, "cpu")


async def test_every_utterance_is_transcribed_in_order_and_the_backlog_drains(
    clips: list[np.ndarray], recognizer
) -> None:  # type: ignore[no-untyped-def]
    metrics = Metrics()
    queue = AsrQueue(recognizer, metrics)
    queue.start()
    try:
        jobs = clips * 3  # nine utterances, more than the decoder takes at once
        total_s = sum(len(c) for c in jobs) / 16000
        futures = [queue.submit("s", clip, None) for clip in jobs]
        assert queue.backlog_s == pytest.approx(total_s)
        assert metrics.asr_backlog.value() == pytest.approx(total_s)
        config = Config(max_asr_backlog_s=total_s / 2)
        admission = Admission(config, RecentSignalLag(), lambda: queue.backlog_s)
        with pytest.raises(Overloaded, match="speech-to-text"):
            admission.check()
        results = await asyncio.wait_for(asyncio.gather(*futures), 120)
        assert queue.backlog_s == 0.0 and metrics.asr_backlog.value() == 0.0
        admission.check()  # drained: admitted again
        await admission.stop()
    finally:
        await queue.stop()
    for segments, sentence in zip(results, SENTENCES * 3, strict=True):
        heard = " ".join(segment.text for segment in segments)
        assert word_error_rate(sentence, heard) <= 0.2, heard
    assert metrics.asr_audio_seconds.value() == pytest.approx(total_s)


async def test_a_cancelled_utterance_is_not_decoded(clips: list[np.ndarray], recognizer) -> None:  # type: ignore[no-untyped-def]
    metrics = Metrics()
    queue = AsrQueue(recognizer, metrics)
    first = queue.submit("s", clips[0], None)
    dropped = queue.submit("s", clips[1], None)
    dropped.cancel()
    queue.start()
    try:
        await asyncio.wait_for(first, 60)
        await asyncio.sleep(0.2)
        assert queue.backlog_s == 0.0
    finally:
        await queue.stop()
    assert metrics.asr_audio_seconds.value() == pytest.approx(len(clips[0]) / 16000)


async def test_stopping_cancels_what_is_still_queued(clips: list[np.ndarray], recognizer) -> None:  # type: ignore[no-untyped-def]
    queue = AsrQueue(recognizer, Metrics())
    waiting = queue.submit("s", clips[0], None)  # never started
    await queue.stop()
    assert waiting.cancelled()

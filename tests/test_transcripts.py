"""One session's transcriber: utterances published in order under their question, and, when
the final cannot wait, the spans not transcribed named rather than dropped. The real
recogniser on real espeak-ng speech."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from media import make_speech_wav, read_wav
from wer import word_error_rate

from rtserver.config import Config
from rtserver.inference.asr import SpeechRecognizer, load_recognizer
from rtserver.inference.asr_queue import AsrQueue
from rtserver.live.questions import QuestionTimeline
from rtserver.live.transcripts import SessionTranscriber
from rtserver.media.clock import MediaClock
from rtserver.messages import TranscriptMessage
from rtserver.metrics import Metrics
from rtserver.perception.utterances import Utterance

SENTENCES = ("The quarterly report is due on Friday.", "I would like to learn more about the role.")
QUESTIONS = ("What is due this week?", "What would you like to ask us?")


@pytest.fixture(scope="module")
def utterances(tmp_path_factory: pytest.TempPathFactory) -> list[Utterance]:
    """Each sentence as an utterance, the second one 10 s later on the session's clock."""
    out = []
    folder = tmp_path_factory.mktemp("transcripts")
    for k, sentence in enumerate(SENTENCES):
        track = make_speech_wav(folder / f"s{k}.wav", (0.25, sentence, 0.25), rate_hz=16000)
        samples, _ = read_wav(track.path)
        start = 10.0 * k
        out.append(
            Utterance(
                start_s=start + 0.25,
                end_s=start + track.duration_s - 0.25,
                audio=samples.astype(np.float32),
                audio_start_s=start,
                cut_before=False,
                cut_after=False,
            )
        )
    return out


@pytest.fixture(scope="module")
def recognizer(models_dir: Path) -> SpeechRecognizer:
    return load_recognizer(Config(models_dir=str(models_dir)).asr_model_path, "cpu")


def transcriber(queue: AsrQueue, published: list[TranscriptMessage]) -> SessionTranscriber:
    timeline = QuestionTimeline(len(QUESTIONS))
    timeline.begin(0, 0.0)
    timeline.begin(1, 5.0)

    async def publish(message: TranscriptMessage) -> None:
        published.append(message)

    return SessionTranscriber("s", queue, MediaClock(), timeline, QUESTIONS, publish, queue.metrics)


async def test_utterances_are_published_in_order_under_their_question(
    utterances: list[Utterance], recognizer: SpeechRecognizer
) -> None:
    queue, published = AsrQueue(recognizer, Metrics()), []
    queue.start()
    try:
        session = transcriber(queue, published)
        for utterance in utterances:
            session.on_utterance(utterance)
        await session.finish(60.0)
    finally:
        await queue.stop()
    assert session.messages == published
    assert [m.question for m in published] == [0, 1]
    assert [m.start for m in published] == [u.start_s for u in utterances]
    for message, sentence in zip(published, SENTENCES, strict=True):
        assert word_error_rate(sentence, message.text) <= 0.2, message.text
        assert all(
            message.start - 0.3 <= w.start <= w.end <= message.end + 0.3 for w in message.words
        )
    assert session.missing == []


async def test_a_final_that_cannot_wait_names_the_spans_it_lacks(
    utterances: list[Utterance], recognizer: SpeechRecognizer
) -> None:
    queue, published = AsrQueue(recognizer, Metrics()), []  # not started: nothing is decoded
    session = transcriber(queue, published)
    for utterance in utterances:
        session.on_utterance(utterance)
    await session.finish(0.2)
    assert published == []
    expected = [(round(u.start_s, 3), round(u.end_s, 3)) for u in utterances]
    assert session.missing == expected
    # The queue will not decode what the session gave up on: once started, it has nothing
    # waiting and nothing in progress.
    assert queue.backlog_s > 0
    queue.start()
    await asyncio.sleep(0.2)
    try:
        assert queue.backlog_s == 0.0
    finally:
        await queue.stop()
    assert queue.metrics.asr_audio_seconds.value() == 0.0

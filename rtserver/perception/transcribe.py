"""What the candidate said in one utterance: the recogniser's words, on the media clock.

The recogniser (``rtserver/inference/asr.py``) hears an utterance with its context on either
side and times its words from the start of that audio. Here they are moved onto the
session's media clock and only the words the utterance owns are kept
(:meth:`Utterance.owns`): a word heard in the context of a cut belongs to its neighbour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rtserver.inference.asr import AsrSegment
from rtserver.messages import TranscriptWord
from rtserver.perception.utterances import Utterance


@dataclass(frozen=True)
class HeardUtterance:
    """An utterance's words and text, on the media clock."""

    start: float  # s: the utterance's own span, from the speech gate
    end: float
    text: str
    words: tuple[TranscriptWord, ...]

    def to_wire(self) -> dict[str, Any]:
        """``{"start", "end", "text", "words"}``, as ``rtserver analyze --json`` lists it."""
        return asdict(self)


def words_of(utterance: Utterance, segments: Sequence[AsrSegment]) -> HeardUtterance:
    """The words of ``segments`` (timed from the start of ``utterance.audio``) that the
    utterance owns, moved onto the media clock, with their text."""
    offset = utterance.audio_start_s
    words = tuple(
        TranscriptWord(
            w=word.w,
            start=round(offset + word.start, 3),
            end=round(offset + word.end, 3),
            p=round(word.p, 3),
        )
        for segment in segments
        for word in segment.words
        if utterance.owns(offset + word.start, offset + word.end)
    )
    return HeardUtterance(
        start=round(utterance.start_s, 3),
        end=round(utterance.end_s, 3),
        text=text_of(words),
        words=words,
    )


def text_of(words: Sequence[TranscriptWord]) -> str:
    """The words as one line, one space between them."""
    return " ".join(word.w.strip() for word in words if word.w.strip())

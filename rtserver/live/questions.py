"""A live session's question timeline: which question the candidate was answering when.

The candidate page says on its ``control`` data channel when a question begins. The
timeline is bounded by the session's question count: questions only go forward, so it
holds at most one entry per question however many messages arrive. A repeat of the current
question (the page re-states it after a reconnect) changes nothing; an index outside the
session's questions, or one before the current question, is refused.
"""

from __future__ import annotations

import bisect

from rtserver.errors import ControlRefused

# Why a control message is refused: the label values of
# ``rtserver_control_messages_refused_total``, a fixed set so the metric stays bounded.
REFUSAL_REASONS = ("too_large", "not_json", "malformed", "unknown_question", "backwards")


class QuestionTimeline:
    """When each question began, in session time (s); at most ``question_count`` entries.

    A session without questions has one: the candidate page then shows one open prompt,
    index 0.
    """

    def __init__(self, question_count: int) -> None:
        self.question_count = max(1, question_count)
        self._starts: list[float] = []  # session time (s) each entry began, ascending
        self._indices: list[int] = []  # the question index of each entry, ascending

    def __len__(self) -> int:
        return len(self._starts)

    @property
    def current(self) -> int | None:
        """The question being answered now; None before the first."""
        return self._indices[-1] if self._indices else None

    def begin(self, index: int, at_s: float) -> bool:
        """Question ``index`` begins at session time ``at_s`` (s). True when that changed
        the timeline, False for a repeat of the current question; raises ControlRefused
        for an index outside the session's questions or before the current one."""
        if not 0 <= index < self.question_count:
            raise ControlRefused(
                "unknown_question",
                f"question index {index} is outside this session's "
                f"{self.question_count} question(s)",
            )
        current = self.current
        if current is not None and index == current:
            return False
        if current is not None and index < current:
            raise ControlRefused(
                "backwards", f"question {index} is before the current question {current}"
            )
        # Session time never runs backwards, but a start is kept in order regardless.
        self._starts.append(max(at_s, self._starts[-1]) if self._starts else at_s)
        self._indices.append(index)
        return True

    def at(self, t: float) -> int | None:
        """The question in force at session time ``t`` (s); None before the first."""
        position = bisect.bisect_right(self._starts, t)
        return self._indices[position - 1] if position else None

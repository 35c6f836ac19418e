"""Control-channel messages (rtserver/media/ingest.py ``parse_control``) under hypothesis:
whatever a candidate's page sends on the ``control`` data channel, text or bytes, is either
a well-formed question message or refused with ControlRefused and one of the fixed reasons
(the metric's label values); nothing else escapes into aiortc's event handlers. Fed on
through a session's question timeline, as ``PeerIngest`` does, the timeline stays bounded
and only moves forward."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rtserver.errors import ControlRefused
from rtserver.live.questions import REFUSAL_REASONS, QuestionTimeline
from rtserver.media.ingest import MAX_CONTROL_BYTES, parse_control
from rtserver.messages import ControlMessage

SETTINGS = settings(max_examples=400, deadline=None)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from([2**63, -(2**63), 10**300, 1e6, 999_999.999, -0.0]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def question_like(draw: st.DrawFn) -> str:
    """JSON close to a real control message: the right type, odd index and at."""
    message: dict[str, Any] = {"type": draw(st.sampled_from(["question", "Question", ""]))}
    for key in ("index", "at"):
        if draw(st.booleans()):
            message[key] = draw(json_values)
    message.update(draw(st.dictionaries(st.text(max_size=5), json_values, max_size=2)))
    return json.dumps(message)


@st.composite
def nested(draw: st.DrawFn) -> str:
    """Deeply nested JSON within the size limit (a parser's recursion is bounded too)."""
    depth = draw(st.integers(1, MAX_CONTROL_BYTES // 2))
    opener = draw(st.sampled_from(["[", '{"a":']))
    closer = "]" if opener == "[" else "}"
    inner = '{"type":"question","index":0,"at":0}'
    return opener * depth + inner + closer * depth * draw(st.integers(0, 1))


control_data = (
    question_like()
    | nested()
    | st.text(max_size=MAX_CONTROL_BYTES + 10)
    | st.binary(max_size=MAX_CONTROL_BYTES + 10)
    | json_values.map(json.dumps)
    | st.builds(lambda s: s.encode(), question_like())
)


def parsed_or_refused(data: str | bytes) -> ControlMessage | ControlRefused:
    try:
        return parse_control(data)
    except ControlRefused as refusal:
        return refusal


@SETTINGS
@given(data=control_data)
def test_any_message_is_a_question_or_refused_with_a_known_reason(data: str | bytes) -> None:
    result = parsed_or_refused(data)
    if isinstance(result, ControlRefused):
        assert result.reason in REFUSAL_REASONS
        assert result.code == "bad_request" and result.detail
    else:
        assert isinstance(result.index, int) and result.index >= 0
        assert isinstance(result.at, float) and 0 <= result.at < 1e6
        assert len(data) <= MAX_CONTROL_BYTES


@SETTINGS
@given(
    questions=st.integers(0, 8),
    stream=st.lists(
        control_data
        | st.builds(
            lambda i, at: json.dumps({"type": "question", "index": i, "at": at}),
            st.integers(-2, 10),
            st.floats(0, 100),
        ),
        max_size=30,
    ),
)
def test_a_stream_of_messages_keeps_the_timeline_bounded_and_forward(
    questions: int, stream: list[str | bytes]
) -> None:
    timeline = QuestionTimeline(questions)
    for at_s, data in enumerate(stream):
        result = parsed_or_refused(data)
        if isinstance(result, ControlMessage):
            try:
                timeline.begin(result.index, float(at_s))
            except ControlRefused as refusal:
                assert refusal.reason in REFUSAL_REASONS
    assert len(timeline) <= timeline.question_count
    entries = [timeline.at(float(t)) for t in range(len(stream) + 1)]
    known = [e for e in entries if e is not None]
    assert known == sorted(known)
    assert all(0 <= e < timeline.question_count for e in known)


def test_deep_nesting_is_refused_not_raised() -> None:
    """Found by the property above: 4 KiB of ``[`` made json.loads raise RecursionError,
    which escaped parse_control into the data channel's event handler."""
    refusal = parsed_or_refused("[" * MAX_CONTROL_BYTES)
    assert isinstance(refusal, ControlRefused) and refusal.reason == "not_json"

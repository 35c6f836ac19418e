"""End to end: the HTTP API fuzzed with schemathesis from /api/v1/openapi.json, and the
signals websocket's query strings with hypothesis, against a real server while a real aiortc
peer sends VP8 and Opus into a live interview (bench/fuzz_api.py, bounded here; the longer
run is ``python -m bench.fuzz_api``).

One run (a module fixture) is checked from each side: no 5xx and every schemathesis check
passed, every documented operation driven, a clean server log, a healthy server afterwards,
no second lost from the live interview, the requests that once got a 500 now refused with a
typed 400, and every websocket connection refused with its typed error or streamed and
closed normally.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.fuzz_api import FINDINGS, FuzzRun, run_fuzz, table
from rtserver.api.openapi import DOCUMENT

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 4  # per operation and phase: a bounded run (the bench runs 100 and more)
SOCKET_EXAMPLES = 40
MIN_REQUESTS = 3  # per documented operation


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzRun]:
    work = tmp_path_factory.mktemp("fuzz")
    run = asyncio.run(
        run_fuzz(
            work,
            Path(tmp_path_factory.getbasetemp()) / "fuzz-media",
            max_examples=MAX_EXAMPLES,
            socket_examples=SOCKET_EXAMPLES,
            seed_value=17,
            st_args=["--workers", "2"],
        )
    )
    print(table(run))
    yield run


def test_no_request_got_a_server_error_and_every_check_passed(fuzz: FuzzRun) -> None:
    assert fuzz.st_exit_code == 0, fuzz.st_output[-6000:]
    assert not fuzz.server_errors, fuzz.server_errors[:20]
    assert fuzz.report["test_cases"]["generated"] >= 200


def test_every_documented_operation_was_driven(fuzz: FuzzRun) -> None:
    operations = [
        f"{method.upper()} {path}" for path, item in DOCUMENT["paths"].items() for method in item
    ]
    starved = {op: sum(fuzz.requests.get(op, {}).values()) for op in operations}
    starved = {op: n for op, n in starved.items() if n < MIN_REQUESTS}
    # openapi.json itself: schemathesis reads it once to load the schema, then tests it.
    starved.pop("GET /api/v1/openapi.json", None)
    assert not starved, starved
    # The seeded ids got requests past the 404: some of every kind of answer came back.
    assert sum(n for s in fuzz.requests.values() for st, n in s.items() if st[0] == "2") >= 100


def test_the_server_log_has_no_unhandled_exception(fuzz: FuzzRun) -> None:
    assert not fuzz.log_problems, fuzz.log_problems[:20]


def test_the_server_stayed_healthy_and_stopped_cleanly(fuzz: FuzzRun) -> None:
    assert fuzz.healthy_after
    assert fuzz.server_exit_code == 0


def test_the_live_interview_lost_no_second(fuzz: FuzzRun) -> None:
    live = fuzz.live
    assert live is not None
    assert not live.problems(), live.problems()
    # It ran for the whole fuzz, not a moment of it (it starts before and ends after).
    assert live.seconds_sent >= int(fuzz.duration_s), (live.seconds_sent, fuzz.duration_s)
    assert live.stored == list(range(len(live.stored)))
    assert live.observed == live.stored


def test_past_findings_are_answered_as_they_should_be(fuzz: FuzzRun) -> None:
    """Each request that got a 500 before its fix now gets its typed refusal (a 400 or a
    404 with its error code), or succeeds (a TOTP code in Arabic-Indic digits)."""
    assert len(fuzz.findings) == len(FINDINGS)
    for finding in FINDINGS:
        assert fuzz.findings[finding.name] == finding.answer, finding


def test_websocket_query_strings_are_refused_typed_or_streamed(fuzz: FuzzRun) -> None:
    socket = fuzz.socket
    assert socket is not None
    assert not socket.problems, socket.problems
    assert socket.tried >= SOCKET_EXAMPLES
    # The properties held on each kind of answer, not on refusals alone.
    assert {"101 close 1000", "401", "404"} <= set(socket.outcomes), socket.outcomes

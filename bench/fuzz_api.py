"""The HTTP API fuzzed with schemathesis, against a real server, while a real interview runs.

One server (``rtserver serve`` on loopback, as the tests start it) gets a store seeded with
a job and its hiring history (``bench/hiring_history.py``) and sessions in each state, so
that generated requests reach past the 404 of an unknown id (``bench/fuzz_hooks.py`` puts
those ids into them). One real aiortc peer replays VP8 video of a face and Opus speech
(``bench/streams``) into a live session, watched over the signals websocket, for the whole
run. ``st run`` then drives every operation of ``/api/v1/openapi.json`` with generated
input, authenticated with the bootstrap key: schema-derived boundary cases (coverage),
random valid and invalid input (fuzzing) and chains of calls along the document's links
(stateful).

The run passes when:

- no request gets a 5xx, and schemathesis' checks pass: each answer has a status, content
  type, headers and body the document gives (``ENFORCED_CHECKS``);
- the server's log has no traceback or unhandled exception (``LOG_PROBLEMS``);
- the server is healthy afterwards (``/healthz``) and exits cleanly;
- the live interview lost nothing: its stored signals, and those its observer received,
  are every second t = 0..N-1 once, N covering all the media sent, and it ended by the
  candidate's own hang-up.

``tests/test_fuzz_api_e2e.py`` runs a bounded fuzz in CI; a longer one is::

    python -m bench.fuzz_api --max-time 600 --workers 2 --out fuzz-report

which prints the requests per route and the findings, and writes them as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import multiprocessing
import os
import re
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import hypothesis
from hypothesis import strategies as st
from starlette.datastructures import QueryParams
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

# The test helpers (media, peer, server) are plain modules in tests/, not a package.
ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from server import ServerProcess  # noqa: E402

from bench.fuzz_hooks import FIXTURES_ENV  # noqa: E402
from bench.hiring_history import PastCandidate, job_body, job_fit_final, seed_history  # noqa: E402
from bench.streams.generator import ClientPeer  # noqa: E402
from bench.streams.media import encode_media  # noqa: E402
from rtserver.accounts import passwords, totp  # noqa: E402
from rtserver.api.openapi import DOCUMENT  # noqa: E402
from rtserver.messages import StoredMessage  # noqa: E402
from rtserver.store import ROOT_UNIT, Store  # noqa: E402
from rtserver.store.accounts import AccountStore  # noqa: E402

# What every answer is checked for. Left out: positive_data_acceptance and
# negative_data_rejection (the document cannot say every rule: a job's weights summing to 1,
# an SDP that parses; and the server ignores unknown fields on purpose), and the checks of
# unlisted methods (unsupported_method, allow_header_conformance): Starlette answers those
# itself, with a plain-text 405.
ENFORCED_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "ignored_auth",
    "use_after_free",
    "ensure_resource_availability",
)
LOG_PROBLEMS = ("Traceback", "Exception in ASGI application", "Task exception was never retrieved")
STREAM_SIGNALS = 3
FUZZ_PASSWORD = "fuzzing passphrase"
# Rate limits off: a fuzz's requests come from one address, and it means to reach the
# handlers (the limits' own tests are tests/test_rate_limits*.py).
SERVER_OPTIONS = ("--rate-login", "0", "--rate-sessions", "0", "--rate-offers", "0",
                  "--rate-signals", "0")  # fmt: skip
ACCESS = re.compile(r'"(GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS|TRACE) (\S+) HTTP/[\d.]+" (\d{3})')


@dataclass(frozen=True)
class Fixtures:
    """What the seeded store holds for the fuzz to name (bench/fuzz_hooks.py)."""

    sessions: list[tuple[str, str]]  # (id, join token)
    jobs: list[str]
    stream: str  # an ended session for the websocket fuzz, with STREAM_SIGNALS signals
    users: list[str]  # ids of users and API tokens the fuzz may change
    tokens: list[str]
    # A user with a second factor, for the past findings only (the fuzz would lock it out):
    # (username, password, TOTP secret).
    totp_user: tuple[str, str, str]
    # Sessions the fuzz must not touch: the websocket fuzz's and the live interview's.
    protected: list[str] = field(default_factory=list)


def seed(data_dir: Path) -> Fixtures:
    """A job with twelve decided, scored past candidates, one ended and undecided, one
    nobody has joined; written before the server starts, as its own store."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(data_dir / "rtserver.sqlite3")
    try:
        job = store.save_job(job_body(), "hr@fuzz")
        scores = ("problem_solving", "system_design", "code_quality", "collaboration")
        past = [
            PastCandidate(
                f"Past-{i}",
                {cid: 40.0 + 4 * i for cid in scores},
                "advance" if i % 2 else "reject",
                "Female" if i % 3 else "Male",
                "Asian",
            )
            for i in range(12)
        ]
        ids = seed_history(store, job, past)
        ended, ended_token = store.create_session("Eve", job.id, [], job_version=job.version)
        store.mark_live(ended.id, "bench")
        final = job_fit_final(job, dict.fromkeys(scores, 70.0))
        store.append_message(StoredMessage(ended.id, 0, "final", final))
        store.mark_ended(ended.id, "completed")
        waiting, waiting_token = store.create_session("Wes", job.id, [], job_version=job.version)
        plain, plain_token = store.create_session("Pat", "Cashier", [])
        stream, _ = store.create_session("Olive", "Cashier", [])
        store.mark_live(stream.id, "bench")
        for t in range(STREAM_SIGNALS):
            signal = {"type": "signal", "v": 1, "session": stream.id, "t": t}
            store.append_message(StoredMessage(stream.id, t, "signal", signal))
        final = {"type": "final", "v": 1, "session": stream.id, "end_reason": "hangup"}
        store.append_message(StoredMessage(stream.id, STREAM_SIGNALS, "final", final))
        store.mark_ended(stream.id, "hangup")
        # The past candidates' tokens are not kept (seed_history drops them): HR routes
        # reach them by id, the candidate routes by the three above.
        sessions = [(ended.id, ended_token), (waiting.id, waiting_token), (plain.id, plain_token)]
        sessions += [(sid, "") for sid in list(ids.values())[:3]]
    finally:
        store.close()
    accounts = AccountStore(data_dir / "rtserver.sqlite3")
    try:
        accounts.add_unit("store-1", "Store 1", ROOT_UNIT)
        hashed = passwords.hash_password(FUZZ_PASSWORD)
        users = [
            accounts.add_user(f"fuzz-{role}", role, hashed, role, "store-1").id
            for role in ("viewer", "recruiter")
        ]
        _, token = accounts.add_token("fuzz", "viewer", "store-1", time.time() + 86400, "fuzz")
        totp_user = accounts.add_user("fuzz-totp", "TOTP", hashed, "recruiter", "store-1", True)
        secret = totp.new_secret()
        accounts.set_pending_totp(totp_user.id, secret)
        accounts.activate_totp(totp_user.id, 0, [])
    finally:
        accounts.close()
    return Fixtures(
        sessions,
        [job.id],
        stream.id,
        users,
        [token.id],
        ("fuzz-totp", FUZZ_PASSWORD, secret),
        [stream.id],
    )


@dataclass
class LiveCheck:
    """What became of the interview that ran during the fuzz."""

    session: str
    seconds_sent: int = 0
    stored: list[int] = field(default_factory=list)  # t of each stored signal, in order
    observed: list[int] = field(default_factory=list)  # t of each signal the observer got
    end_reason: str = ""
    error: str = ""

    def problems(self) -> list[str]:
        out = [self.error] if self.error else []
        for name, seconds in (("stored", self.stored), ("observed", self.observed)):
            if seconds != list(range(len(seconds))):
                missing = sorted(set(range(max(seconds, default=-1) + 1)) - set(seconds))
                repeated = sorted(t for t, n in collections.Counter(seconds).items() if n > 1)
                out.append(f"{name} signals: missing {missing}, repeated {repeated}")
            if len(seconds) < self.seconds_sent:
                out.append(f"{name} signals: {len(seconds)} for {self.seconds_sent} s sent")
        if self.end_reason != "hangup":
            out.append(f"the interview ended by {self.end_reason!r}, not the candidate's hangup")
        return out


@dataclass
class FuzzRun:
    seed: int
    max_examples: int
    duration_s: float = 0.0  # the schemathesis run's wall time
    st_exit_code: int | None = None
    st_output: str = ""
    report: dict[str, Any] = field(default_factory=dict)  # schemathesis' JSON report
    requests: dict[str, dict[str, int]] = field(default_factory=dict)  # route -> status -> n
    server_errors: list[str] = field(default_factory=list)  # access-log lines with a 5xx
    log_problems: list[str] = field(default_factory=list)
    healthy_after: bool = False
    server_exit_code: int | None = None
    live: LiveCheck | None = None
    findings: dict[str, str] = field(default_factory=dict)  # past finding -> its answer now
    socket: SocketFuzz | None = None

    @property
    def failures(self) -> list[dict[str, Any]]:
        failures: list[dict[str, Any]] = self.report.get("failures", [])
        return failures

    def problems(self) -> list[str]:
        """Everything that fails the run; empty when it passed."""
        out = []
        if self.st_exit_code != 0:
            found = ", ".join(
                f"{f['code']} {f['title']}: {', '.join(f['operations'])}" for f in self.failures
            )
            out.append(
                f"schemathesis exited {self.st_exit_code}: {found or self.st_output[-3000:]}"
            )
        out += [f"5xx: {line}" for line in self.server_errors[:20]]
        out += [f"server log: {line}" for line in self.log_problems[:20]]
        if not self.healthy_after:
            out.append("the server was not healthy after the fuzz")
        if self.server_exit_code not in (0, None):
            out.append(f"the server exited {self.server_exit_code}")
        out += self.live.problems() if self.live else ["no live interview ran"]
        for finding in FINDINGS:
            answer = self.findings.get(finding.name, "not replayed")
            if answer != finding.answer:
                out.append(f"past finding {finding.name!r}: {answer}, not {finding.answer}")
        out += self.socket.problems if self.socket else ["no websocket fuzz ran"]
        return out


def route_patterns() -> list[tuple[str, re.Pattern[str]]]:
    """Each documented operation as (\"METHOD /path/{param}\", regex of its request line)."""
    out = []
    for path, item in DOCUMENT["paths"].items():
        regex = re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path)) + "$")
        for method in item:
            out.append((f"{method.upper()} {path}", regex))
    return out


def count_requests(log: str) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Requests per documented operation and status, from the server's access log, and the
    lines of those answered with a 5xx."""
    patterns = route_patterns()
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    errors = []
    for line in log.splitlines():
        match = ACCESS.search(line)
        if match is None:
            continue
        method, target, status = match.groups()
        path = target.split("?", 1)[0]
        name = next(
            (n for n, regex in patterns if n.startswith(method + " ") and regex.match(path)),
            "other (a method the document lacks, /healthz)",
        )
        counts[name][status] += 1
        if status.startswith("5"):
            errors.append(line.strip())
    return {name: dict(c) for name, c in sorted(counts.items())}, errors


@dataclass(frozen=True)
class Finding:
    """A request that once got a 500, replayed on every run: it must now be refused with a
    typed 400. ``{job}`` and ``{session}`` in the path are the seeded job and session."""

    name: str
    method: str
    path: str
    body: bytes | None = None
    code: str = "bad_request"  # the error code it is refused with now
    status: int = 400  # and its status (200: a request that must now succeed)

    @property
    def answer(self) -> str:
        return f"{self.status} {self.code}".rstrip()


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


JOB_FILE = (TESTS / "jobs" / "backend_engineer.json").read_text()
FINDINGS = (
    Finding(
        "job threshold past float's range",
        "POST",
        "/api/v1/jobs",
        JOB_FILE.replace('"threshold": 70', '"threshold": 1' + "0" * 400).encode(),
        "invalid_job",
    ),
    Finding(
        "anchor level '²' (isdigit, not int)",
        "POST",
        "/api/v1/jobs",
        JOB_FILE.replace('"1":', '"\u00b2":', 1).encode(),
        "invalid_job",
    ),
    Finding("job ?version=²", "GET", "/api/v1/jobs/{job}?version=%C2%B2"),
    Finding("job ?version past SQLite's integers", "GET", "/api/v1/jobs/{job}?version=" + "9" * 20),
    Finding(
        "outcome performance past float's range",
        "POST",
        "/api/v1/jobs/{job}/outcomes",
        b'{"outcomes": [{"session": "{session}", "performance": 1' + b"0" * 400 + b"}]}",
        "invalid_outcomes",
    ),
    Finding("a lone surrogate in a body", "POST", "/api/v1/sessions", b'{"candidate": "\\ud800"}'),
    Finding(
        "an integer of 5000 digits",
        "POST",
        "/api/v1/sessions",
        b'{"expires_in": 1' + b"0" * 4999 + b"}",
    ),
    Finding("audit log ?after=²", "GET", "/api/v1/audit-log?after=%C2%B2"),
    Finding(
        "audit log ?to=9999-12-31 (the day after overflows)",
        "GET",
        "/api/v1/audit-log?to=9999-12-31",
    ),
    Finding(
        "a TOTP code in Arabic-Indic digits",
        "POST",
        "/api/v1/login",
        b'{"username": "{username}", "password": "{password}", "totp": "{totp}"}',
        "",
        200,
    ),
    # Principal.sees("") was true (as for an object of no unit, the root's); the store has no
    # unit "" (a KeyError). Now "" is no unit in anyone's scope: 404.
    Finding(
        "an API token for unit ''",
        "POST",
        "/api/v1/tokens",
        b'{"name": "ats", "role": "viewer", "unit": ""}',
        "not_found",
        404,
    ),
    Finding(
        "an org unit under ''",
        "POST",
        "/api/v1/units",
        b'{"id": "u1", "name": "x", "parent": ""}',
        "not_found",
        404,
    ),
    Finding(
        "a user moved to unit ''",
        "PATCH",
        "/api/v1/users/{user}",
        b'{"unit": ""}',
        "not_found",
        404,
    ),
    Finding(
        "an offer nested 5000 deep (no credential needed)",
        "POST",
        "/api/v1/sessions/{session}/offer",
        _deep(5000).encode(),
    ),
)


async def replay_findings(base: str, api_key: str, fixtures: Fixtures) -> dict[str, str]:
    """Each finding's answer, as "<status> <error code>". Each is sent on a connection of its
    own: a server closes the connection after a 500, and the next request on it would fail."""
    job, session = fixtures.jobs[0], fixtures.sessions[0][0]
    username, password, secret = fixtures.totp_user
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    answers = {}
    for finding in FINDINGS:
        path = finding.path.replace("{job}", job).replace("{session}", session)
        path = path.replace("{user}", fixtures.users[0])
        # The code an authenticator shows now, in the digits of an Arabic phone keyboard.
        arabic = "".join(chr(0x0660 + int(d)) for d in totp.now_code(secret))
        values = {"session": session, "username": username, "password": password, "totp": arabic}
        body = finding.body
        for name, value in values.items():
            body = body.replace(b"{%s}" % name.encode(), value.encode()) if body else None
        async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=30.0) as http:
            try:
                response = await http.request(finding.method, path, content=body, headers=headers)
            except httpx.HTTPError as exc:  # the server dropped the connection
                answers[finding.name] = f"no answer ({exc!r})"
                continue
        try:
            code = response.json().get("error", "")
        except ValueError:
            code = "(not JSON)"
        answers[finding.name] = f"{response.status_code} {code}".rstrip()
    return answers


@dataclass(frozen=True)
class SocketCase:
    session: str  # the path's session id, before quoting
    query: str  # the raw query string
    authorization: str | None  # the Authorization header, if any


def socket_cases(session: str, api_key: str) -> st.SearchStrategy[SocketCase]:
    """Connections to the signals websocket: the right session or others (unknown, empty,
    with a "/"), the key in ?token= or the header or both, right or wrong, among other
    keys, repeated keys and malformed escapes."""
    keys = st.sampled_from(["token", "after", "since", "seq", "TOKEN", "token ", ""]) | st.text(
        max_size=8
    )
    values = st.sampled_from(
        [api_key, api_key, "", "-1", "0", "1e9", "null", f"{api_key} ", api_key[:-1]]
    ) | st.text(max_size=20)
    pairs = st.lists(st.tuples(keys, values), max_size=4)
    tails = st.sampled_from(["", "&", "%", "%zz", "%ff%fe", "%00", "+", "=", "&=&", ";token="])
    # The right session and key are drawn often enough that streams are tried too.
    sessions = st.sampled_from([session, session, "0" * 32, session.upper(), session + "x", ""])
    sessions |= st.text(max_size=12)
    headers = st.sampled_from(
        [None, f"Bearer {api_key}", "Bearer wrong", "Basic abc", "bearer", f"Token {api_key}"]
    )
    return st.builds(
        SocketCase,
        sessions,
        st.builds(lambda p, t: urllib.parse.urlencode(p) + t, pairs, tails),
        headers,
    )


def expected_status(case: SocketCase, session: str, api_key: str) -> int:
    """What the server should answer: 101 (open, then the stream), 401 (no or a wrong key:
    a bearer header wins over ?token=), 404 (no such session), or uvicorn's 403 for a path
    no route matches (an empty id, or one with a "/")."""
    if not case.session or "/" in case.session:
        return 403
    scheme, _, token = (case.authorization or "").partition(" ")
    if scheme.lower() == "bearer" and token:
        credential = token.strip()
    else:
        credential = QueryParams(case.query).get("token", "")
    if credential != api_key:
        return 401
    return 101 if case.session == session else 404


def probe_socket(base: str, case: SocketCase) -> tuple[int, int | None, list[Any], Any]:
    """Connects: (HTTP status, close code, messages received, the refusal's JSON body)."""
    path = f"/api/v1/sessions/{urllib.parse.quote(case.session, safe='')}/signals"
    url = base.replace("http", "ws", 1) + path + (f"?{case.query}" if case.query else "")
    headers = {"Authorization": case.authorization} if case.authorization else {}
    try:
        with ws_connect(
            url, additional_headers=headers, open_timeout=15, close_timeout=5, proxy=None
        ) as socket:
            messages = []
            with contextlib.suppress(ConnectionClosed):
                while True:
                    messages.append(json.loads(socket.recv(timeout=15)))
            code = socket.protocol.close_rcvd.code if socket.protocol.close_rcvd else None
            return 101, code, messages, None
    except InvalidStatus as refused:
        try:
            body = json.loads(refused.response.body or b"")
        except ValueError:
            body = None
        return refused.response.status_code, None, [], body


@dataclass
class SocketFuzz:
    tried: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # "101 close 1000", "401", ...
    problems: list[str] = field(default_factory=list)


def fuzz_socket(
    base: str, api_key: str, session: str, messages: int, examples: int, seed_value: int
) -> SocketFuzz:
    """Hypothesis drives connections (socket_cases) at the signals websocket: each is
    refused before the upgrade with the typed error the oracle gives, or opens, streams
    the ended ``session``'s ``messages`` stored messages and closes normally (1000)."""
    result = SocketFuzz()
    counts: collections.Counter[str] = collections.Counter()

    @hypothesis.seed(seed_value)
    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=socket_cases(session, api_key))
    # Each kind of answer at least once, whatever is drawn: the stream, 401, 404, 403.
    @hypothesis.example(case=SocketCase(session, f"token={api_key}", None))
    @hypothesis.example(case=SocketCase(session, "after=2", f"Bearer {api_key}"))
    @hypothesis.example(case=SocketCase(session, f"token={api_key}", "Bearer wrong"))
    @hypothesis.example(case=SocketCase("0" * 32, f"token={api_key}", None))
    @hypothesis.example(case=SocketCase("a/b", f"token={api_key}", None))
    def probe(case: SocketCase) -> None:
        status, close, received, body = probe_socket(base, case)
        result.tried += 1
        counts[f"{status}" + (f" close {close}" if status == 101 else "")] += 1
        expected = expected_status(case, session, api_key)
        assert status == expected, (case, status, expected, body)
        if status == 101:
            assert close == 1000, (case, close)
            assert len(received) == messages and received[-1]["type"] == "final", received
        elif status in (401, 404):
            assert isinstance(body, dict) and set(body) >= {"error", "detail"}, body

    try:
        probe()
    except Exception as exc:  # a failed property, shrunk: reported, not raised
        result.problems.append(f"websocket: {exc!r}"[:3000])
    result.outcomes = dict(sorted(counts.items()))
    return result


async def _run_schemathesis(
    base: str, api_key: str, work: Path, fixtures: Fixtures, run: FuzzRun, args: list[str]
) -> None:
    fixture_file = work / "fixtures.json"
    fixture_file.write_text(json.dumps(asdict(fixtures)))
    report_path = work / "schemathesis.json"
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "bench.fuzz_hooks",
        FIXTURES_ENV: str(fixture_file),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "NO_COLOR": "1",
    }
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{base}/api/v1/openapi.json",
        "--header", f"Authorization: Bearer {api_key}",
        "--checks", ",".join(ENFORCED_CHECKS),
        "--max-examples", str(run.max_examples),
        "--seed", str(run.seed),
        "--request-timeout", "30",
        "--report", "json", "--report-json-path", str(report_path),
        "--output-sanitize", "false",
        *args,
    ]  # fmt: skip
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=work,
    )
    output, _ = await process.communicate()
    run.duration_s = time.monotonic() - started
    run.st_exit_code = process.returncode
    run.st_output = output.decode(errors="replace")
    if report_path.exists():
        run.report = json.loads(report_path.read_text())


async def _live_interview(base: str, api_key: str, media_dir: Path) -> tuple[ClientPeer, float]:
    """A session joined by a replaying peer and watched by an observer, sending from now."""
    media = await asyncio.to_thread(encode_media, media_dir, 15, (320, 240), 300, 32)
    async with httpx.AsyncClient(trust_env=False, timeout=30.0) as http:
        created = await http.post(
            f"{base}/api/v1/sessions",
            json={"candidate": "Live during fuzz"},
            headers={"Authorization": f"Bearer {api_key}"},
        )
        created.raise_for_status()
        session = created.json()
        peer = ClientPeer(session["id"], session["join_token"])
        await peer.connect(base, api_key, media, http)
    peer.clock.start(time.monotonic())
    return peer, peer.clock.start_at


async def _finish_interview(peer: ClientPeer, base: str, api_key: str) -> LiveCheck:
    """Sends on to the next whole second, hangs up, and reads what the store kept."""
    check = LiveCheck(peer.session)
    seconds = math.ceil(time.monotonic() - peer.clock.start_at) + 1
    check.seconds_sent = seconds
    try:
        await peer.run(seconds)
    finally:
        await peer.shut()
    check.error = peer.error
    check.end_reason = peer.end_reason
    check.observed = [arrival[0] for arrival in peer.arrivals]
    async with httpx.AsyncClient(trust_env=False, timeout=60.0) as http:
        report = await http.get(
            f"{base}/api/v1/sessions/{peer.session}/report",
            headers={"Authorization": f"Bearer {api_key}"},
        )
    if report.status_code == 200:
        check.stored = [int(signal["t"]) for signal in report.json()["signals"]]
    else:
        check.error = check.error or f"report: HTTP {report.status_code} {report.text[:200]}"
    return check


async def run_fuzz(
    work: Path,
    media_dir: Path,
    *,
    max_examples: int,
    socket_examples: int,
    seed_value: int = 1,
    st_args: Sequence[str] = (),
    server_options: Sequence[str] = (),
) -> FuzzRun:
    """One whole fuzz run (see the module's docstring); ``work`` holds the server's data
    directory and log, and schemathesis' files."""
    work.mkdir(parents=True, exist_ok=True)
    fixtures = seed(work / "data")
    server = ServerProcess(work / "data", options=[*SERVER_OPTIONS, *server_options])
    run = FuzzRun(seed_value, max_examples)
    await asyncio.to_thread(server.start, 120.0)
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        peer, _ = await _live_interview(server.base_url, server.api_key, media_dir)
        fixtures.protected.append(peer.session)
        try:
            # The websocket fuzz and the past findings run beside schemathesis' requests.
            _, run.socket, run.findings = await asyncio.gather(
                _run_schemathesis(
                    server.base_url, server.api_key, work, fixtures, run, list(st_args)
                ),
                # In a process of its own: hypothesis checks that nothing else touches the
                # global random state while it draws, and the peer's aiortc here does.
                asyncio.get_running_loop().run_in_executor(
                    pool,
                    fuzz_socket,
                    server.base_url,
                    server.api_key,
                    fixtures.stream,
                    STREAM_SIGNALS + 1,
                    socket_examples,
                    seed_value,
                ),
                replay_findings(server.base_url, server.api_key, fixtures),
            )
        finally:
            run.live = await _finish_interview(peer, server.base_url, server.api_key)
        run.healthy_after = await asyncio.to_thread(server.healthy)
    finally:
        pool.shutdown(cancel_futures=True)
        run.server_exit_code = await asyncio.to_thread(server.stop)
    log = server.log()
    run.requests, run.server_errors = count_requests(log)
    run.log_problems = [line for line in log.splitlines() if any(p in line for p in LOG_PROBLEMS)]
    return run


def table(run: FuzzRun) -> str:
    """Requests per operation and status class, the totals and the findings."""
    lines = [f"{'operation':<58} {'requests':>8} {'2xx':>6} {'4xx':>6} {'5xx':>5}"]
    total: collections.Counter[str] = collections.Counter()
    for name, statuses in run.requests.items():
        by_class: collections.Counter[str] = collections.Counter()
        for status, n in statuses.items():
            by_class[status[0] + "xx"] += n
        total.update(by_class)
        lines.append(
            f"{name:<58} {sum(statuses.values()):>8} {by_class['2xx']:>6} "
            f"{by_class['4xx']:>6} {by_class['5xx']:>5}"
        )
    lines.append(
        f"{'total':<58} {sum(total.values()):>8} {total['2xx']:>6} {total['4xx']:>6} "
        f"{total['5xx']:>5}"
    )
    cases = run.report.get("test_cases", {})
    lines.append(
        f"schemathesis: {cases.get('generated', '?')} test cases in {run.duration_s:.0f} s "
        f"(seed {run.seed}, max {run.max_examples} per operation), exit {run.st_exit_code}"
    )
    if run.socket:
        outcomes = ", ".join(f"{k}: {n}" for k, n in run.socket.outcomes.items())
        lines.append(f"websocket: {run.socket.tried} connections ({outcomes})")
    for name, answer in run.findings.items():
        lines.append(f"past finding {name}: {answer}")
    if run.live:
        lines.append(
            f"live interview: {run.live.seconds_sent} s sent, {len(run.live.stored)} signals "
            f"stored, {len(run.live.observed)} observed, ended by {run.live.end_reason!r}"
        )
    problems = run.problems()
    lines.append("findings: none" if not problems else "findings:")
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-examples", type=int, default=100, help="per operation and phase")
    parser.add_argument("--socket-examples", type=int, default=500, help="websocket connections")
    parser.add_argument("--max-time", type=int, help="seconds: fuzz on until they are spent")
    parser.add_argument("--workers", type=int, default=1, help="schemathesis' concurrent workers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="directory for the report (default: a temp one)")
    parser.add_argument("--media-dir", type=Path, help="cache of the generated media")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="fuzz-api-"))
    st_args = ["--workers", str(args.workers)]
    if args.max_time:
        st_args += ["--max-time", str(args.max_time)]
    run = asyncio.run(
        run_fuzz(
            out,
            args.media_dir or out / "media",
            max_examples=args.max_examples,
            socket_examples=args.socket_examples,
            seed_value=args.seed,
            st_args=st_args,
        )
    )
    print(table(run))
    summary = {k: v for k, v in asdict(run).items() if k not in ("st_output", "report")}
    summary["schemathesis"] = {k: run.report.get(k) for k in ("test_cases", "failures", "phases")}
    summary["problems"] = run.problems()
    (out / "fuzz_api.json").write_text(json.dumps(summary, indent=1))
    (out / "schemathesis.txt").write_text(run.st_output)
    print(f"written to {out}")
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 1 if run.problems() else 0


if __name__ == "__main__":
    sys.exit(main())

"""schemathesis hooks for the API fuzz (bench/fuzz_api.py), loaded by the ``st`` process
through ``SCHEMATHESIS_HOOKS=bench.fuzz_hooks``.

Ids drawn at random name no session and no job, so almost every request would stop at the
404 before its body is read. Before each call, three cases in four have their
``session_id`` (with the session's own join token wherever the case sends a ``token``) or
``job_id``, ``user_id`` or ``token_id`` replaced by one the fuzz seeded
(``RTSERVER_FUZZ_FIXTURES``, a JSON file): an ended, scored job session, a session nobody
joined yet, the job with its hiring history, users and an API token of a store.
Which case gets which is a hash of the case, so a run with one seed repeats. The stateful
phase's chains keep the ids their own calls created.

The live interview running beside the fuzz is ``protected``: a call naming it (learnt
from a listing, say) is sent to an unknown id instead, so the fuzz cannot end or erase the
session whose seconds the run checks.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

import schemathesis

FIXTURES_ENV = "RTSERVER_FUZZ_FIXTURES"
UNKNOWN_ID = "0" * 32


def _load() -> dict[str, Any]:
    path = os.environ.get(FIXTURES_ENV)
    if not path:
        return {"sessions": [], "jobs": [], "protected": []}
    fixtures: dict[str, Any] = json.loads(Path(path).read_text())
    return fixtures


FIXTURES = _load()


def _pick(case: Any) -> int:
    label = repr((case.operation.label, case.path_parameters, case.query, case.body))
    return zlib.crc32(label.encode("utf-8", "backslashreplace"))


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: Any, kwargs: dict[str, Any]) -> None:
    params = case.path_parameters
    if not params:
        return
    pick = _pick(case)
    sessions = FIXTURES["sessions"]
    # A stateful chain uses the ids its own calls created: those stay as they are.
    if case.meta is not None and case.meta.phase.name == "stateful":
        pick = 0
    if "session_id" in params and sessions and pick % 4:
        session_id, token = sessions[(pick // 4) % len(sessions)]
        params["session_id"] = session_id
        for sent in (case.query, case.body):
            if isinstance(sent, dict) and "token" in sent:
                sent["token"] = token
    for name, key in (("job_id", "jobs"), ("user_id", "users"), ("token_id", "tokens")):
        known = FIXTURES.get(key) or []
        if name in params and known and pick % 4:
            params[name] = known[(pick // 4) % len(known)]
    if params.get("session_id") in FIXTURES["protected"]:
        params["session_id"] = UNKNOWN_ID

"""Outcomes, self-identification and the bias audit against a running server, on a hiring
history written into its store before it starts (tests/hiring_history.py)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from server import ServerProcess

from bench.hiring_history import PastCandidate, job_body, job_fit_final, seed_history
from rtserver.messages import StoredMessage
from rtserver.store import JobRecord, Store

pytestmark = pytest.mark.e2e

RACES = ("Asian", "White", "Black or African American", "Hispanic or Latino")


@dataclass
class History:
    server: ServerProcess
    job: JobRecord
    ids: dict[str, str]  # session ids by candidate name
    waiting: tuple[str, str]  # a session not yet held: (id, join token)
    ended: tuple[str, str]  # an ended session whose candidate has not answered the form


def planted_candidates() -> list[PastCandidate]:
    """20 women of whom 6 were advanced and 20 men of whom 12 were: selection rates 0.3 and
    0.6, an impact ratio of 0.5. Two never answered the form; two more are undecided."""
    people = []
    races = itertools.cycle(RACES)
    for sex, advanced in (("Female", 6), ("Male", 12)):
        for i in range(20):
            level = 30.0 + 2.5 * i
            scores = {
                "problem_solving": level,
                "system_design": level + 5,
                "code_quality": 100 - level,
                "collaboration": 50.0,
            }
            decision = "advance" if i < advanced else "reject"
            people.append(PastCandidate(f"{sex}-{i}", scores, decision, sex, next(races)))
    people.append(PastCandidate("Quiet-1", people[0].competencies, "reject", answered_form=False))
    people.append(PastCandidate("Quiet-2", people[1].competencies, "advance", answered_form=False))
    people.append(PastCandidate("Later-1", people[2].competencies, None, "Female", "White"))
    people.append(PastCandidate("Later-2", people[3].competencies, None, "Male", "Asian"))
    return people


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    data = tmp_path_factory.mktemp("audit") / "data"
    data.mkdir()
    store = Store(data / "rtserver.sqlite3")
    job = store.save_job(job_body(), "hr@test")
    ids = seed_history(store, job, planted_candidates())
    waiting, waiting_token = store.create_session("Wes", job.id, [], job_version=1)
    ended, ended_token = store.create_session("Eve", job.id, [], job_version=1)
    store.mark_live(ended.id, "test-node")
    final = job_fit_final(job, planted_candidates()[0].competencies)
    store.append_message(StoredMessage(ended.id, 0, "final", final))
    store.mark_ended(ended.id, "completed")
    store.close()
    server = ServerProcess(data).start()
    yield History(server, job, ids, (waiting.id, waiting_token), (ended.id, ended_token))
    server.stop()
    assert "Traceback" not in server.log(), server.log()[-4000:]


@pytest_asyncio.fixture
async def hr(history: History) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=history.server.base_url,
        headers=history.server.hr_headers,
        trust_env=False,
        timeout=30.0,
    ) as http:
        yield http


async def test_self_identification_is_taken_only_after_the_interview(
    history: History, hr: httpx.AsyncClient
) -> None:
    waiting, token = history.waiting
    url = f"/api/v1/sessions/{waiting}/self-identification"
    before = await hr.post(url, json={"token": token, "sex": "Female", "race": "Asian"})
    assert before.status_code == 409 and "after the interview" in before.json()["detail"]

    ended, token = history.ended
    url = f"/api/v1/sessions/{ended}/self-identification"
    wrong = await hr.post(url, json={"token": "not-the-token", "sex": "Female"})
    assert wrong.status_code == 401
    odd = await hr.post(url, json={"token": token, "sex": "Robot"})
    assert odd.status_code == 400 and "sex must be one of" in odd.json()["detail"]
    saved = await hr.post(url, json={"token": token, "sex": "Female", "race": "decline"})
    assert saved.status_code == 201 and saved.json() == {"saved": True}

    questions = await hr.get(f"/api/v1/sessions/{ended}/questions", params={"token": token})
    offered = questions.json()["self_identification"]
    assert "Female" in offered["sex"] and "Two or More Races" in offered["race"]
    session = (await hr.get(f"/api/v1/sessions/{ended}")).json()
    assert "Female" not in str(session)  # what HR reads of a session never carries it
    audit_log = (await hr.get(f"/api/v1/sessions/{ended}/audit")).json()
    entries = [e for e in audit_log["audit"] if e["action"] == "self_identify"]
    assert len(entries) == 1 and "Female" not in entries[0]["detail"]


async def test_outcomes_are_recorded_whole_or_not_at_all(
    history: History, hr: httpx.AsyncClient
) -> None:
    url = f"/api/v1/jobs/{history.job.id}/outcomes"
    good = [
        {"candidate": "Female-0", "hired": True, "performance": 4.0, "rated_at": "2026-06-30"},
        {"session": history.ids["Male-0"], "hired": True, "performance": 3.5},
    ]
    recorded = await hr.post(url, json={"outcomes": good})
    assert recorded.status_code == 201, recorded.text
    assert recorded.json()["recorded"] == 2

    bad = [*good, {"candidate": "Nobody", "performance": 2}, {"session": "x", "hired": "?"}]
    refused = await hr.post(url, json={"outcomes": bad})
    assert refused.status_code == 400
    body = refused.json()
    assert body["error"] == "invalid_outcomes" and len(body["problems"]) == 2, body

    listed = (await hr.get(url)).json()["outcomes"]
    assert sorted(o["performance"] for o in listed) == [3.5, 4.0]
    assert (await hr.get("/api/v1/jobs/nope/outcomes")).status_code == 404
    anonymous = await hr.post(url, json={"outcomes": good}, headers={"Authorization": ""})
    assert anonymous.status_code == 401


async def test_the_bias_audit_reproduces_the_planted_gap(
    history: History, hr: httpx.AsyncClient
) -> None:
    url = f"/api/v1/jobs/{history.job.id}/audit"
    response = await hr.get(url)
    assert response.status_code == 200, response.text
    audit = response.json()
    # 42 decided (2 of them without the form); Later-1, Later-2 and Eve undecided, left out.
    assert audit["n"] == 42 and audit["undecided"] == 3 and audit["unscored"] == 0
    assert audit["unknown"]["sex"] == 2 and audit["unknown"]["race"] == 2
    sexes = {g["group"]: g for g in audit["groups"] if g["dimension"] == "sex"}
    assert (sexes["Female"]["n"], sexes["Female"]["selected"]) == (20, 6)
    assert (sexes["Male"]["n"], sexes["Male"]["selected"]) == (20, 12)
    assert sexes["Female"]["selection_rate"] == pytest.approx(0.3)
    assert sexes["Female"]["impact_ratio"] == pytest.approx(0.5)
    assert sexes["Female"]["below_four_fifths"] and not sexes["Male"]["below_four_fifths"]
    assert {g["dimension"] for g in audit["groups"]} == {"sex", "race", "sex_race"}
    assert [c["competency"] for c in audit["competencies"]] == [
        "problem_solving",
        "system_design",
        "code_quality",
        "collaboration",
    ]
    assert audit["job"]["id"] == history.job.id

    html = await hr.get(url, params={"format": "html"})
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "<svg" in html.text and "Female" in html.text
    future = await hr.get(url, params={"from": "2999-01-01"})
    assert future.status_code == 409
    assert (await hr.get(url, params={"to": "yesterday"})).status_code == 400
    assert (await hr.get(url, headers={"Authorization": ""})).status_code == 401


async def test_erasing_a_candidate_takes_their_outcome_and_answers_out_of_the_audit(
    history: History, hr: httpx.AsyncClient
) -> None:
    session = history.ids["Male-1"]
    await hr.post(
        f"/api/v1/jobs/{history.job.id}/outcomes",
        json={"outcomes": [{"session": session, "hired": True, "performance": 5}]},
    )
    before = (await hr.get(f"/api/v1/jobs/{history.job.id}/audit")).json()
    assert (await hr.delete(f"/api/v1/sessions/{session}")).status_code in (200, 204)
    after = (await hr.get(f"/api/v1/jobs/{history.job.id}/audit")).json()
    assert after["n"] == before["n"] - 1
    men = next(g for g in after["groups"] if g["group"] == "Male")
    assert men["n"] == 19
    outcomes = (await hr.get(f"/api/v1/jobs/{history.job.id}/outcomes")).json()["outcomes"]
    assert session not in {o["session"] for o in outcomes}
    store = Store(history.server.data_dir / "rtserver.sqlite3")
    try:
        assert store.self_identification_for_audit([session]) == {}
    finally:
        store.close()

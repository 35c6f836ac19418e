"""The jobs API against a running server: create, list, view, edit (a new version each
time), refusals with every problem listed, and sessions created from a job."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from server import ServerProcess

from rtserver.store import Store

pytestmark = pytest.mark.e2e

JOBS = Path(__file__).parent / "jobs"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("jobs") / "data").start()
    yield process
    process.stop()
    assert "Traceback" not in process.log(), process.log()[-4000:]


@pytest_asyncio.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    async with httpx.AsyncClient(
        base_url=server.base_url, headers=headers, trust_env=False, timeout=15.0
    ) as http:
        yield http


def job_file(stem: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((JOBS / f"{stem}.json").read_text())
    return data


async def test_a_job_is_created_edited_in_versions_and_listed(client: httpx.AsyncClient) -> None:
    body = job_file("backend_engineer")
    threshold = body["threshold"]
    created = await client.post("/api/v1/jobs", json=body)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["version"] == 1 and job["title"] == body["title"]
    assert [c["id"] for c in job["competencies"]] == [c["id"] for c in body["competencies"]]

    body["threshold"] = 80
    edited = await client.put(f"/api/v1/jobs/{job['id']}", json=body)
    assert edited.status_code == 200, edited.text
    assert edited.json()["version"] == 2 and edited.json()["threshold"] == 80

    latest = (await client.get(f"/api/v1/jobs/{job['id']}")).json()
    first = (await client.get(f"/api/v1/jobs/{job['id']}?version=1")).json()
    assert (latest["version"], latest["threshold"]) == (2, 80)
    assert (first["version"], first["threshold"]) == (1, threshold)
    listed = (await client.get("/api/v1/jobs")).json()["jobs"]
    assert [(j["id"], j["version"]) for j in listed if j["id"] == job["id"]] == [(job["id"], 2)]

    missing = await client.get(f"/api/v1/jobs/{job['id']}?version=9")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert (await client.put("/api/v1/jobs/nosuchjob", json=body)).status_code == 404
    assert (await client.get(f"/api/v1/jobs/{job['id']}?version=x")).status_code == 400


async def test_an_invalid_job_is_refused_with_every_problem(client: httpx.AsyncClient) -> None:
    body = job_file("store_manager")
    body["competencies"][0]["weight"] = 0.9
    body["questions"][0]["competencies"] = ["charisma"]
    refused = await client.post("/api/v1/jobs", json=body)
    assert refused.status_code == 400
    answer = refused.json()
    assert answer["error"] == "invalid_job"
    assert any("weights must sum to 1" in p for p in answer["problems"]), answer
    assert any("'charisma'" in p for p in answer["problems"]), answer
    assert (await client.post("/api/v1/jobs", content=b"[1, 2]")).status_code == 400


async def test_jobs_need_the_hr_key(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as anonymous:
        assert (await anonymous.get("/api/v1/jobs")).status_code == 401
        assert (await anonymous.post("/api/v1/jobs", json={})).status_code == 401


async def test_a_session_from_a_job_takes_its_questions_and_version(
    client: httpx.AsyncClient,
) -> None:
    body = job_file("support_agent")
    job = (await client.post("/api/v1/jobs", json=body)).json()
    made = await client.post("/api/v1/sessions", json={"candidate": "A", "job": job["id"]})
    assert made.status_code == 201, made.text
    session = (await client.get(f"/api/v1/sessions/{made.json()['id']}")).json()
    assert session["job"] == job["id"] and session["job_version"] == 1
    assert [q["text"] for q in session["questions"]] == [q["text"] for q in body["questions"]]

    both = {"job": job["id"], "questions": [{"text": "Why us?", "seconds": 60}]}
    refused = await client.post("/api/v1/sessions", json=both)
    assert refused.status_code == 400 and "not both" in refused.json()["detail"]

    # Any other "job" is a label, as before jobs existed: its own questions, no version.
    labelled = await client.post(
        "/api/v1/sessions",
        json={"job": "Night shift", "questions": [{"text": "Why us?", "seconds": 60}]},
    )
    session = (await client.get(f"/api/v1/sessions/{labelled.json()['id']}")).json()
    assert session["job"] == "Night shift" and session["job_version"] is None
    assert [q["text"] for q in session["questions"]] == ["Why us?"]


async def test_job_changes_are_audit_logged(
    server: ServerProcess, client: httpx.AsyncClient
) -> None:
    job = (await client.post("/api/v1/jobs", json=job_file("warehouse_lead"))).json()
    await client.put(f"/api/v1/jobs/{job['id']}", json=job_file("warehouse_lead"))
    store = Store(server.data_dir / "rtserver.sqlite3")
    try:
        entries = [(e["action"], e["detail"]) for e in store.audit_log(None)]
    finally:
        store.close()
    assert ("create_job", f"job {job['id']} version 1") in entries
    assert ("update_job", f"job {job['id']} version 2") in entries

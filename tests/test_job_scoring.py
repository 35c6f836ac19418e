"""live/job_scoring.py: the job's vocabulary in speech-to-text's prompts, and a final that
always goes out, with or without a job."""

from __future__ import annotations

import json
from pathlib import Path

from rtserver.config import load_config
from rtserver.live.job_scoring import job_prompts, with_job
from rtserver.live.runtime import build_front_runtime
from rtserver.messages import FinalMessage
from rtserver.store import Question

JOB = Path(__file__).parent / "jobs" / "backend_engineer.json"


async def test_prompts_carry_the_skills_of_the_competencies_asked_about(tmp_path: Path) -> None:
    runtime = build_front_runtime(load_config({"data_dir": str(tmp_path)}, {}))
    try:
        body = json.loads(JOB.read_text())
        job = await runtime.db.write(lambda store: store.save_job(body, "hr"))
        texts = [q["text"] for q in body["questions"]]
        questions = [Question(text, 60) for text in texts]
        with_job_session, _ = await runtime.db.create_session("A", job.id, questions, 60.0, 1)
        plain, _ = await runtime.db.create_session("B", "a label", questions, 60.0)

        prompts = await job_prompts(runtime, with_job_session.id, texts)
        assert prompts[0].startswith(texts[0])
        assert "PostgreSQL" in prompts[0] and "Grafana" in prompts[0]  # problem solving's
        assert "pytest" in prompts[2] and "Kafka" not in prompts[2]  # code quality's only
        assert await job_prompts(runtime, plain.id, texts) == tuple(texts)

        # A final without a job goes out as it was; with a lost job, with a note.
        final = FinalMessage(session=plain.id, score=55.0, dimensions={}, duration_s=10.0)
        assert await with_job(runtime, plain.id, final, []) == final
        lost, _ = await runtime.db.create_session("C", "gone", questions, 60.0, 3)
        noted = await with_job(runtime, lost.id, final, [])
        assert noted.score == 55.0 and "could not be computed" in noted.notes[-1]
    finally:
        await runtime.db.close()
        runtime.store.close()

"""A session's job-fit, added to its final when the session was created with a job.

The job's version is the one the session recorded when it was created, so an edit made
during the interview does not change how it is scored. The sentence encoder is loaded
once per process, on the first final that needs it, off the event loop; rating a whole
interview takes a second or two of one core, also off the loop. A final always goes out:
if the job-fit cannot be computed (the job was lost, the model is missing), the final
keeps its delivery score and says why in its notes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Sequence

from rtserver.live.runtime import Runtime
from rtserver.messages import FinalMessage, TranscriptMessage
from rtserver.models.fetch import MODELS
from rtserver.scoring.competencies import TextEncoder
from rtserver.scoring.job_report import with_job_fit
from rtserver.scoring.jobs import parse_job

log = logging.getLogger(__name__)

_encoder_lock = threading.Lock()


async def with_job(
    runtime: Runtime, session_id: str, final: FinalMessage, transcripts: Sequence[TranscriptMessage]
) -> FinalMessage:
    """``final`` with the job-fit of ``transcripts`` when the session has a job; as it is
    otherwise."""
    record = await runtime.db.get_session(session_id)
    if record is None or record.job is None or record.job_version is None:
        return final
    job_id, version = record.job, record.job_version
    stored = await runtime.db.read(lambda store: store.get_job(job_id, version))
    if stored is None:
        return _without(final, f"job {job_id} version {version} is no longer stored")
    try:
        job = parse_job(stored.body)
        ref = {"id": stored.id, "version": stored.version, "title": job.title}
        loop = asyncio.get_running_loop()
        encoder = await loop.run_in_executor(runtime.executor, text_encoder, runtime)
        return await loop.run_in_executor(
            runtime.executor, with_job_fit, final, ref, job, transcripts, encoder
        )
    except Exception as exc:  # the final must go out whatever failed here
        log.exception("job-fit failed", extra={"session": session_id})
        return _without(final, f"{type(exc).__name__}: {exc}")


async def job_prompts(
    runtime: Runtime, session_id: str, questions: Sequence[str]
) -> tuple[str, ...]:
    """What speech-to-text is conditioned on for each question (Whisper's prompt): the
    question, and with a job the skills of the competencies it targets, so that a
    candidate's "Kubernetes" is heard as such. The questions alone without a job, or if the
    job cannot be read."""
    prompts = tuple(questions)
    try:
        record = await runtime.db.get_session(session_id)
        if record is None or record.job is None or record.job_version is None:
            return prompts
        job_id, version = record.job, record.job_version
        stored = await runtime.db.read(lambda store: store.get_job(job_id, version))
        if stored is None:
            return prompts
        job = parse_job(stored.body)
    except Exception:
        log.exception("job vocabulary not loaded", extra={"session": session_id})
        return prompts
    out = []
    for index, text in enumerate(prompts):
        asked = job.questions[index] if index < len(job.questions) else None
        skills = (
            []
            if asked is None
            else [skill for cid in asked.competencies for skill in job.competency(cid).skills]
        )
        out.append(f"{text} {', '.join(dict.fromkeys(skills))}." if skills else text)
    return tuple(out)


def text_encoder(runtime: Runtime) -> TextEncoder:
    """The process's sentence encoder, loaded on first use (thread-safe)."""
    with _encoder_lock:
        if runtime.text_encoder is None:
            from rtserver.inference.sentence_encoder import SentenceEncoder

            path = runtime.config.models_path / MODELS["sentence_encoder"].file
            runtime.text_encoder = SentenceEncoder(path)
        return runtime.text_encoder


def _without(final: FinalMessage, why: str) -> FinalMessage:
    note = f"The job-fit could not be computed ({why}); the score is the delivery score."
    return dataclasses.replace(final, notes=(*final.notes, note))

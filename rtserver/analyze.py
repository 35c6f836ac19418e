"""``rtserver analyze FILE``: the live per-second pipeline, run on a recorded file.

The same classes as a live session (``VideoPath`` and ``AudioPath`` with their detector,
tracker, model batcher, kernels, VAD, speech gate and syllable detector, then
``SecondAggregator``), fed from PyAV's decoder instead of a WebRTC track, and never paced:
a file is analysed as fast as the machine goes. Any container and codec PyAV reads works
(wav, flac, webm, mp4, y4m...). Audio is resampled to 48 kHz, what WebRTC delivers, so the
audio path sees exactly what it sees live.
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from rtserver.config import Config
from rtserver.inference.asr import SpeechRecognizer
from rtserver.kernels.audio import HOP, INPUT_RATE, RATE, HopFeatures
from rtserver.media.audio import AudioPath, PcmChunk, pcm_of
from rtserver.media.clock import MediaClock
from rtserver.media.video import FrameSampler, VideoPath
from rtserver.messages import SignalMessage
from rtserver.metrics import Metrics
from rtserver.perception.analysis import build_analysis
from rtserver.perception.transcribe import words_of
from rtserver.perception.utterances import Utterance
from rtserver.perception.vad import SileroVad
from rtserver.scoring.fluency import MIN_PAUSE_HOPS
from rtserver.scoring.signals import SecondAggregator

HOP_S = HOP / RATE
# Offline, audio goes through the path a second at a time: the per-block overhead that the
# live path pays every 100 ms is paid once a second, and the results are the same.
OFFLINE_BLOCK = INPUT_RATE


class _CallerRuns(Executor):
    """analyze_audio calls the path's analysis directly; nothing is ever submitted here."""


_NO_EXECUTOR = _CallerRuns()


class AnalyzeError(RuntimeError):
    """The file cannot be analysed (unreadable, or no audio and no video stream)."""


@dataclass(frozen=True)
class Summary:
    """Whole-file fluency figures."""

    duration_s: float  # media analysed (s)
    speech_s: float  # time detected as speech (s)
    syllables: int
    speech_rate_sps: float  # syllables over the span from the first to the last speech
    articulation_rate_sps: float  # syllables over speech time
    pause_count: int  # pauses >= 0.25 s between the first and the last speech
    pause_s: float  # their total length (s)


def summarise_hops(hops: HopFeatures) -> Summary:
    """The summary of a whole stream's final hops."""
    speech = hops.speech.astype(bool)
    syllables = int(hops.syllable.sum())
    speech_s = float(speech.sum()) * HOP_S
    spoken = np.flatnonzero(speech)
    pause_count, pause_hops = 0, 0
    span_s = 0.0
    if len(spoken):
        first, last = int(spoken[0]), int(spoken[-1])
        span_s = (last - first + 1) * HOP_S
        gaps = np.diff(spoken) - 1  # silent hops between consecutive speech hops
        pauses = gaps[gaps >= MIN_PAUSE_HOPS]
        pause_count, pause_hops = len(pauses), int(pauses.sum())
    return Summary(
        duration_s=round(len(hops) * HOP_S, 2),
        speech_s=round(speech_s, 2),
        syllables=syllables,
        speech_rate_sps=round(syllables / span_s, 3) if span_s else 0.0,
        articulation_rate_sps=round(syllables / speech_s, 3) if speech_s else 0.0,
        pause_count=pause_count,
        pause_s=round(pause_hops * HOP_S, 2),
    )


def _seconds(media_time: float | None, pts: int | None, time_base: Any, start: float) -> float:
    if pts is None or time_base is None:
        return media_time or 0.0
    return float(pts * time_base) - start


async def analyze_file(path: Path, config: Config) -> dict[str, Any]:
    """``{"seconds": [signal...], "summary": {...}}`` for the file at ``path``."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise AnalyzeError(f"cannot open {path}: {exc}") from exc
    with container:
        audio_stream = next(iter(container.streams.audio), None)
        video_stream = next(iter(container.streams.video), None)
        if audio_stream is None and video_stream is None:
            raise AnalyzeError(f"{path} has no audio or video stream")
        start = float(container.start_time or 0) / av.time_base if container.start_time else 0.0
        metrics = Metrics()
        with ThreadPoolExecutor(config.analysis_threads, thread_name_prefix="analyze") as pool:
            analysis = build_analysis(config, metrics, pool)
            aggregator = SecondAggregator()
            clock = MediaClock()  # unused offline: media times come from the file
            video = VideoPath(
                "analyze", clock, aggregator, analysis.detector, pool, metrics,
                config.analysis_fps, analysis.batcher, config.detect_fps,
            )  # fmt: skip
            utterances: list[Utterance] = []
            on_utterance = utterances.append if analysis.recognizer is not None else None
            audio = AudioPath(
                "analyze", clock, aggregator, pool, metrics, True, analysis.vad, on_utterance
            )
            sampler = FrameSampler(config.analysis_fps)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=INPUT_RATE)
            hops: list[HopFeatures] = []
            if analysis.batcher is not None:
                analysis.batcher.max_wait_s = 0.0  # one file: no other session to wait for
                analysis.batcher.start()
            try:
                streams = [s for s in (audio_stream, video_stream) if s is not None]
                block: list[PcmChunk] = []
                for frame in container.decode(*streams):
                    if isinstance(frame, av.AudioFrame):
                        block += [_pcm(out, start) for out in resampler.resample(frame)]
                        if sum(len(c.samples) for c in block) >= OFFLINE_BLOCK:
                            hops.append(_audio(audio, block))
                            block = []
                    elif isinstance(frame, av.VideoFrame):
                        await _video(video, aggregator, sampler, frame, start)
                block += [_pcm(out, start) for out in resampler.resample(None)]
                hops += [_audio(audio, block), audio.finish()]
            finally:
                if analysis.batcher is not None:
                    await analysis.batcher.stop()
    media_end = max(aggregator.media_end(), audio.timeline_end())
    seconds = []
    for t in range(max(0, math.ceil(media_end - 1e-6))):
        second = aggregator.take(t)
        signal = SignalMessage(
            session=path.name,
            t=t,
            video=second.video,
            audio=second.audio,
            lag_ms=0.0,  # offline: nothing is live, so there is no lag to report
            emotion=second.emotion,
            fluency=second.fluency,
        )
        seconds.append(signal.to_wire())
    summary = summarise_hops(HopFeatures.concat(hops))
    result: dict[str, Any] = {"seconds": seconds, "summary": summary.__dict__}
    if analysis.recognizer is not None:
        result["transcript"] = transcribe_all(analysis.recognizer, utterances)
    return result


def transcribe_all(
    recognizer: SpeechRecognizer, utterances: list[Utterance]
) -> list[dict[str, Any]]:
    """Each utterance transcribed, as ``{"start", "end", "text", "words"}`` (media times)."""
    return [
        words_of(utterance, recognizer.transcribe(utterance.audio, None)).to_wire()
        for utterance in utterances
    ]


def _pcm(frame: av.AudioFrame, start: float) -> PcmChunk:
    return PcmChunk(pcm_of(frame), _seconds(None, frame.pts, frame.time_base, start))


def _audio(audio: AudioPath, block: list[PcmChunk]) -> HopFeatures:
    if not block:
        return HopFeatures.empty()
    features = audio.analyse_chunks(block)
    audio.add_features(features)
    return features


async def _video(
    video: VideoPath,
    aggregator: SecondAggregator,
    sampler: FrameSampler,
    frame: av.VideoFrame,
    start: float,
) -> None:
    media_time = _seconds(frame.time, frame.pts, frame.time_base, start)
    aggregator.add_frame(media_time)
    progress = aggregator.video
    progress.received_until = max(progress.received_until, media_time)
    if video.detector is not None and sampler.take(media_time):
        aggregator.add_face_result(media_time, await video.analyse_frame(frame, media_time))


@dataclass(frozen=True)
class AudioAnalysis:
    """What the live audio path makes of a whole recording."""

    hops: HopFeatures  # every final hop: speech, syllables, pauses, levels, pitch
    seconds: list[dict[str, Any]]  # per-second (audio, fluency) as the signals carry them
    summary: Summary


def analyze_audio(samples: np.ndarray, vad: SileroVad, chunk_s: float = 0.02) -> AudioAnalysis:
    """The live audio path (AudioPath, its kernels, VAD, gate, syllables and the per-second
    aggregator) on mono 48 kHz float samples, fed ``chunk_s`` at a time as WebRTC delivers
    them. Runs on the calling thread."""
    aggregator = SecondAggregator()
    audio = AudioPath("analyze", MediaClock(), aggregator, _NO_EXECUTOR, Metrics(), True, vad)
    step = max(1, round(chunk_s * INPUT_RATE))
    parts = []
    for start in range(0, len(samples), step):
        block = samples[start : start + step].reshape(-1, 1)
        parts.append(audio.analyse_chunks([PcmChunk(block, start / INPUT_RATE)]))
        audio.add_features(parts[-1])
    parts.append(audio.finish())
    hops = HopFeatures.concat(parts)
    seconds = []
    for t in range(math.ceil(len(hops) * HOP_S - 1e-6)):
        second = aggregator.take(t)
        seconds.append({"t": t, "audio": asdict(second.audio), "fluency": second.fluency})
    return AudioAnalysis(hops, seconds, summarise_hops(hops))


def run(path: Path, config: Config) -> dict[str, Any]:
    return asyncio.run(analyze_file(path, config))

"""The per-session audio path: track -> downmix/resample to 16 kHz -> 10 ms hops ->
fluency decisions (speech, syllables, pauses) -> aggregator; and, with speech-to-text on,
the same decisions cut the 16 kHz audio into utterances for the transcriber.

Decoded 20 ms frames are drained continuously into a bounded buffer (2 s; the oldest audio
is dropped and counted if analysis ever falls that far behind). Analysis takes everything
pending in one batch in a worker thread, where the Numba kernels and ONNX Runtime run
without the GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from rtserver.handoff import DropOldest, finish_worker
from rtserver.kernels.audio import (
    HOP,
    INPUT_RATE,
    RATE,
    HopAnalyzer,
    HopFeatures,
    Resampler48kTo16k,
)
from rtserver.media.clock import MediaClock
from rtserver.media.ingest import frames_of
from rtserver.metrics import Metrics
from rtserver.perception.fluency_stream import FluencyStream
from rtserver.perception.utterances import Utterance, UtteranceCutter
from rtserver.perception.vad import SileroVad
from rtserver.scoring.signals import SecondAggregator

log = logging.getLogger(__name__)

PENDING_FRAMES = 100  # 2 s of 20 ms frames
# Audio is analysed in blocks of about this many 20 ms frames (100 ms): every block costs a
# fixed few hundred microseconds of Python and model-call overhead whatever its length, so
# analysing each 20 ms frame alone would cost several times the CPU. The frame that lets the
# next second out does not wait for its block to fill, so blocks add no signal lag.
BLOCK_FRAMES = 5
FRAME_S = 0.02
MAX_GAP_FILL_S = 2.0  # gaps up to this are filled with silence; longer ones re-anchor
INPUT_PER_HOP = HOP * INPUT_RATE // RATE  # 480 input samples per 10 ms hop


@dataclass(frozen=True)
class PcmChunk:
    """Decoded audio: (samples, channels) int16 or float at 48 kHz, starting at media_time."""

    samples: np.ndarray
    media_time: float


def pcm_of(frame: av.AudioFrame) -> np.ndarray:
    """(samples, channels) array of a decoded frame, packed or planar."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        return np.ascontiguousarray(data.T)
    return data.reshape(-1, channels)


def mono_float(samples: np.ndarray) -> np.ndarray:
    """(n, channels) int16 or float samples -> (n,) float32 mono in [-1, 1]."""
    scale = 1.0 / 32768.0 if samples.dtype == np.int16 else 1.0
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    return (mono * scale).astype(np.float32, copy=False)


class AudioTimeline:
    """Assigns media times to 48 kHz input samples, bridging small gaps with silence."""

    def __init__(self) -> None:
        self.anchor_time: float | None = None
        self.anchor_sample = 0
        self.samples_in = 0  # 48 kHz samples handed to the resampler so far

    def expected_time(self) -> float:
        assert self.anchor_time is not None
        return self.anchor_time + (self.samples_in - self.anchor_sample) / INPUT_RATE

    def place(self, chunk: PcmChunk) -> int:
        """Silence samples (48 kHz) to insert before ``chunk`` to keep it at its media time."""
        if self.anchor_time is None:
            self.anchor_time = chunk.media_time
            self.anchor_sample = self.samples_in
            return 0
        gap = chunk.media_time - self.expected_time()
        if 0.03 < gap <= MAX_GAP_FILL_S:
            return round(gap * INPUT_RATE)
        if gap > MAX_GAP_FILL_S or gap < -0.2:
            self.anchor_time = chunk.media_time
            self.anchor_sample = self.samples_in
        return 0

    def hop_start_time(self, hop_index: int) -> float:
        """Media time (s) at which 10 ms hop ``hop_index`` of the 16 kHz stream starts."""
        assert self.anchor_time is not None
        return self.anchor_time + (hop_index * INPUT_PER_HOP - self.anchor_sample) / INPUT_RATE


class AudioPath:
    """Drains one audio track and feeds hop features into the session's aggregator."""

    def __init__(
        self,
        session_id: str,
        clock: MediaClock,
        aggregator: SecondAggregator,
        executor: Executor,
        metrics: Metrics,
        analyse: bool = True,
        vad: SileroVad | None = None,
        on_utterance: Callable[[Utterance], None] | None = None,
    ) -> None:
        """``vad`` enables the fluency decisions; without it, hops keep the kernel's simple
        energy-and-voicing speech decision and carry no syllables or pauses.
        ``on_utterance`` (with ``vad``) is called on the event loop with each utterance the
        speech gate completes, in order."""
        self.session_id = session_id
        self.clock = clock
        self.aggregator = aggregator
        self.executor = executor
        self.metrics = metrics
        self.analyse = analyse
        self.last_media_at = 0.0
        self.cpu_s = 0.0  # thread CPU spent analysing this track (s)
        self.timeline = AudioTimeline()
        self.resampler = Resampler48kTo16k()
        self.hops = HopAnalyzer()
        self.fluency = FluencyStream(vad) if vad is not None and analyse else None
        self.on_utterance = on_utterance if self.fluency is not None else None
        self.cutter = UtteranceCutter() if self.on_utterance is not None else None
        self._utterances: list[Utterance] = []  # cut in the analysis thread, handed out after
        self.hops_done = 0  # hops handed to the aggregator
        self._pending: DropOldest[PcmChunk] = DropOldest(bound=PENDING_FRAMES)
        self._busy = False
        # Media time (s) between the input's end and the analysis's end: what the
        # resampler, the hop frames and the fluency lookahead hold back. Measured per block.
        self._held_s = 0.0
        self._flush_now = asyncio.Event()  # analyse the queued frames without waiting
        self._flushed_second = -1  # the last second a flush was for

    async def run(self, track: MediaStreamTrack) -> None:
        progress = self.aggregator.audio
        worker = asyncio.create_task(self._analyse_loop(), name=f"audio-{self.session_id}")
        try:
            async for frame in frames_of(track, av.AudioFrame):
                self.last_media_at = time.monotonic()
                media_time = self.clock.media_time("audio", frame.pts, frame.time_base)
                progress.active = True
                duration = frame.samples / frame.sample_rate
                progress.received_until = max(progress.received_until, media_time + duration)
                if not self.analyse:
                    progress.done_until = media_time + duration
                    self.metrics.audio_seconds.inc(duration)
                    continue
                if frame.sample_rate != INPUT_RATE:
                    log.warning("unexpected audio rate %d Hz; frame skipped", frame.sample_rate)
                    continue
                if not self._pending.put(PcmChunk(pcm_of(frame), media_time)):
                    self.metrics.frames_skipped.inc(reason="audio_overflow")
                if self._completes_a_second(media_time + duration):
                    self._flush_now.set()
        finally:
            await finish_worker(worker, lambda: not self._busy and not self._pending)
            self.finish()
            progress.ended = True
            log.info("audio track ended", extra={"session": self.session_id})

    def finish(self) -> HopFeatures:
        """At the end of the track: the hops the fluency stage still held, decided as the
        stream's end decides them, go to the aggregator (and are returned)."""
        if self.fluency is None or self.timeline.anchor_time is None:
            return HopFeatures.empty()
        features = self.fluency.flush()
        if self.cutter is not None:
            self._cut(features)
            self._utterances += self.cutter.flush()
        self.add_features(features)
        self.aggregator.audio.done_until = self.timeline_end()
        return features

    def timeline_end(self) -> float:
        """Media time (s) up to which hops have reached the aggregator."""
        if self.timeline.anchor_time is None:
            return 0.0
        return self.timeline.hop_start_time(self.hops_done)

    def add_features(self, features: HopFeatures) -> None:
        """Hands the next ``features`` (in stream order) to the aggregator, and the
        utterances they completed to ``on_utterance``."""
        self.aggregator.add_hops(self.timeline.hop_start_time(self.hops_done), features)
        self.hops_done += len(features)
        self._held_s = self.timeline.expected_time() - self.timeline_end()
        utterances, self._utterances = self._utterances, []
        if self.on_utterance is not None:
            for utterance in utterances:
                self.on_utterance(utterance)

    def _cut(self, features: HopFeatures) -> None:
        """Runs in the analysis thread: the final ``features`` (the next after
        ``hops_done``) through the utterance cutter."""
        assert self.cutter is not None
        if len(features):
            start = self.timeline.hop_start_time(self.hops_done)
            self._utterances += self.cutter.push(features, start)

    def _completes_a_second(self, input_end: float) -> bool:
        """Whether the frames queued up to media time ``input_end`` (s), once analysed, take
        the analysis past the end of the next second not yet published (once per second)."""
        due = max(self.aggregator.next_t, self._flushed_second + 1)
        if input_end - self._held_s < due + 1:
            return False
        self._flushed_second = due
        return True

    async def _analyse_loop(self) -> None:
        loop = asyncio.get_running_loop()
        progress = self.aggregator.audio
        while True:
            await self._pending.wait()
            if len(self._pending) < BLOCK_FRAMES and not self._flush_now.is_set():
                # Let a block gather, unless a frame lets a second out; the frames stay
                # queued meanwhile, so a track that ends now still has them analysed
                # (finish_worker waits for the queue).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout((BLOCK_FRAMES - len(self._pending)) * FRAME_S):
                        await self._flush_now.wait()
            self._flush_now.clear()
            chunks = self._pending.take_all()
            self._busy = True
            try:
                features = await loop.run_in_executor(self.executor, self.analyse_chunks, chunks)
            finally:
                self._busy = False
            self.add_features(features)
            # Exact whatever is still queued: the queued frames are later media.
            progress.done_until = self.timeline.hop_start_time(self.hops_done)

    def analyse_chunks(self, chunks: list[PcmChunk]) -> HopFeatures:
        """Runs in a worker thread: resample the chunks and compute their hop features and,
        with a VAD, their fluency decisions; returns the hops that became final.

        Gap filling changes the hop timeline, so it happens here, in stream order, before
        the samples enter the resampler.
        """
        started = time.thread_time()
        parts: list[np.ndarray] = []
        for chunk in chunks:
            silence = self.timeline.place(chunk)
            if silence:
                parts.append(np.zeros(silence, np.float32))
                self.timeline.samples_in += silence
            mono = mono_float(chunk.samples)
            parts.append(mono)
            self.timeline.samples_in += len(mono)
        pcm = np.concatenate(parts) if len(parts) > 1 else parts[0]
        samples = self.resampler.process(pcm)
        features = self.hops.process(samples)
        if self.cutter is not None:
            self.cutter.add_audio(samples)
        stage = self.metrics.stage_cpu
        stage.inc(time.thread_time() - started, stage="audio_kernels")
        if self.fluency is not None:
            vad_before, decide_before = self.fluency.cpu_vad_s, self.fluency.cpu_decide_s
            features = self.fluency.process(samples, features)
            stage.inc(self.fluency.cpu_vad_s - vad_before, stage="vad")
            stage.inc(self.fluency.cpu_decide_s - decide_before, stage="fluency")
            if self.cutter is not None:
                self._cut(features)
        spent = time.thread_time() - started
        self.cpu_s += spent
        self.metrics.analysis_cpu.inc(spent, path="audio")
        self.metrics.audio_seconds.inc(len(features) * HOP / RATE)
        return features

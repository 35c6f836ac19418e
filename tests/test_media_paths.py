"""Pieces of the media paths that need no peer: sampling, plane reading, timelines."""

from fractions import Fraction

import av
import numpy as np

from rtserver.media.audio import AudioTimeline, PcmChunk, mono_float, pcm_of
from rtserver.media.clock import MediaClock
from rtserver.media.video import FrameSampler, luma_plane


def test_sampler_takes_one_frame_per_slot_by_timestamp() -> None:
    sampler = FrameSampler(10.0)
    times = [i / 30 for i in range(90)]  # 30 fps for 3 s
    taken = [t for t in times if sampler.take(t)]
    assert len(taken) == 30
    # Jittery, bursty arrival still yields one frame per 100 ms slot.
    sampler = FrameSampler(10.0)
    bursty = [0.0, 0.01, 0.02, 0.25, 0.26, 0.31, 0.95, 0.99]
    assert [t for t in bursty if sampler.take(t)] == [0.0, 0.25, 0.31, 0.95]


def test_luma_plane_is_a_strided_view_without_copy() -> None:
    frame = av.VideoFrame(width=322, height=241, format="yuv420p")
    plane = frame.planes[0]
    rows = np.frombuffer(memoryview(plane), np.uint8)
    rows[:] = np.arange(rows.size, dtype=np.uint64).astype(np.uint8)
    luma = luma_plane(frame)
    assert luma.shape == (241, 322)
    assert luma.strides == (plane.line_size, 1)
    assert plane.line_size > 322  # the padding is really skipped
    expected = rows.reshape(241, plane.line_size)[:, :322]
    assert np.array_equal(luma, expected)
    assert np.shares_memory(luma, rows)


def test_luma_of_rgb_frame_is_converted() -> None:
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 1] = 255
    luma = luma_plane(av.VideoFrame.from_ndarray(rgb, format="rgb24"))
    assert luma.shape == (20, 30) and 140 < int(luma.mean()) < 160  # green's luma ~150


def test_pcm_downmix_and_scale() -> None:
    frame = av.AudioFrame.from_ndarray(
        np.array([[16384, -16384] * 960], np.int16), format="s16", layout="stereo"
    )
    frame.sample_rate = 48000
    pcm = pcm_of(frame)
    assert pcm.shape == (960, 2)
    assert np.allclose(mono_float(pcm), 0.0)
    assert np.allclose(mono_float(pcm[:, :1]), 0.5)


def test_audio_timeline_bridges_small_gaps_and_reanchors_big_ones() -> None:
    timeline = AudioTimeline()
    chunk = np.zeros((960, 2), np.int16)
    assert timeline.place(PcmChunk(chunk, 1.0)) == 0
    timeline.samples_in += 960
    assert timeline.place(PcmChunk(chunk, 1.02)) == 0  # on time
    timeline.samples_in += 960
    assert timeline.place(PcmChunk(chunk, 1.14)) == 4800  # 100 ms lost: bridged
    timeline.samples_in += 4800 + 960
    assert abs(timeline.hop_start_time(timeline.samples_in // 480) - 1.16) < 1e-9
    assert timeline.place(PcmChunk(chunk, 9.0)) == 0  # a long gap re-anchors instead
    assert timeline.anchor_time == 9.0


def test_media_clock_anchors_each_track_and_follows_its_timestamps() -> None:
    clock = MediaClock()
    start = clock.media_time("video", 123_000, Fraction(1, 90_000))
    assert start < 0.01
    assert abs(clock.media_time("video", 123_000 + 45_000, Fraction(1, 90_000)) - 0.5) < 0.01
    # A jump far from the wall clock re-anchors rather than drifting into the future.
    assert clock.media_time("video", 123_000 + 90_000 * 3600, Fraction(1, 90_000)) < 1.0
    assert clock.media_time("audio", 5, Fraction(1, 48_000)) < 1.0

"""The utterance cutter: pauses end utterances, long speech is cut at its quietest hop, and
the cut is the same however the stream is split."""

import itertools

import numpy as np
import pytest

from rtserver.kernels.audio import HOP, HopFeatures
from rtserver.perception.utterances import (
    CONTEXT_HOPS,
    HOP_S,
    MAX_HOPS,
    PAUSE_HOPS,
    Utterance,
    UtteranceCutter,
)


def hops_of(speech: np.ndarray, levels: np.ndarray | None = None) -> HopFeatures:
    hops = HopFeatures.empty(len(speech))
    hops.speech[:] = speech
    hops.rms_dbfs[:] = np.where(speech, -20.0, -60.0) if levels is None else levels
    return hops


def samples_for(n_hops: int) -> np.ndarray:
    """Audio whose every sample says which hop it is in (hop index / 1e5)."""
    return np.repeat(np.arange(n_hops, dtype=np.float32) / 1e5, HOP)


def run(speech: np.ndarray, levels: np.ndarray | None = None, chunks: list[int] | None = None):
    cutter, out = UtteranceCutter(), []
    features, audio = hops_of(speech, levels), samples_for(len(speech))
    bounds = np.cumsum([0, *(chunks or [len(speech)])])
    for a, b in itertools.pairwise(bounds):
        cutter.add_audio(audio[a * HOP : b * HOP])
        out += cutter.push(features.slice(int(a), int(b)), float(a) * HOP_S)
    return out + cutter.flush(), cutter


def spans(utterances: list[Utterance]) -> list[tuple[int, int]]:
    return [(round(u.start_s / HOP_S), round(u.end_s / HOP_S)) for u in utterances]


def test_pauses_of_half_a_second_end_utterances_and_shorter_ones_do_not() -> None:
    speech = np.zeros(600, bool)
    speech[50:150] = True  # 1 s
    speech[180:250] = True  # after a 0.3 s gap: the same utterance
    speech[300:400] = True  # after a 0.5 s pause: a new one
    speech[560:580] = True  # the stream ends inside it: flush gives it
    utterances, _ = run(speech)
    assert spans(utterances) == [(50, 250), (300, 400), (560, 580)]
    assert not any(u.cut_before or u.cut_after for u in utterances)


def test_audio_holds_the_span_with_context_on_either_side() -> None:
    speech = np.zeros(500, bool)
    speech[100:200] = True
    (utterance,), _ = run(speech)
    first = round(utterance.audio_start_s / HOP_S)
    assert first == 100 - CONTEXT_HOPS
    hop_ids = np.round(utterance.audio[::HOP] * 1e5).astype(int)
    assert hop_ids.tolist() == list(range(100 - CONTEXT_HOPS, 200 + CONTEXT_HOPS))


def test_a_click_is_no_utterance() -> None:
    speech = np.zeros(400, bool)
    speech[100:105] = True
    assert run(speech)[0] == []


def test_long_speech_is_cut_at_the_quietest_hop_before_the_limit() -> None:
    n = 4000  # 40 s of speech without a pause
    speech = np.ones(n, bool)
    levels = np.full(n, -20.0, np.float32)
    quiet = [1420, 2850]  # a dip between two words in each cut window
    levels[quiet] = -45.0
    utterances, _ = run(speech, levels)
    got = spans(utterances)
    assert got == [(0, 1420), (1420, 2850), (2850, 4000)]
    assert all(end - start <= MAX_HOPS for start, end in got)
    assert [u.cut_before for u in utterances] == [False, True, True]
    assert [u.cut_after for u in utterances] == [True, True, False]


def test_a_word_across_a_cut_belongs_to_exactly_one_utterance() -> None:
    speech = np.ones(2000, bool)
    levels = np.full(2000, -20.0, np.float32)
    levels[1400] = -40.0
    first, second, *_ = run(speech, levels)[0]
    cut_s = 1400 * HOP_S
    for start, end in [(cut_s - 0.2, cut_s + 0.1), (cut_s - 0.1, cut_s + 0.2), (cut_s, cut_s)]:
        assert first.owns(start, end) != second.owns(start, end)
    assert first.owns(1.0, 1.3) and not second.owns(1.0, 1.3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_split_of_the_stream_gives_the_same_utterances(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 5000
    speech = np.zeros(n, bool)
    at = 0
    while at < n:  # speech runs of 0.1-20 s, silences of 0.1-1.5 s
        run_len = int(rng.integers(10, 2000))
        speech[at : at + run_len] = True
        at += run_len + int(rng.integers(10, 150))
    levels = rng.uniform(-40, -15, n).astype(np.float32)
    whole, _ = run(speech, levels)
    chunks = list(rng.integers(1, 300, 60))
    chunks.append(n - sum(chunks))
    pieces, _ = run(speech, levels, [int(c) for c in chunks if c > 0])
    assert spans(pieces) == spans(whole)
    for a, b in zip(pieces, whole, strict=True):
        assert np.array_equal(a.audio, b.audio) and a.audio_start_s == b.audio_start_s
    # Every speech hop is owned by exactly one utterance.
    owned = np.zeros(n, int)
    for start, end in spans(whole):
        owned[start:end] += 1
    assert (owned[speech] == 1).all()
    assert all(end - start <= MAX_HOPS for start, end in spans(whole))


def test_memory_stays_bounded_in_silence_and_in_speech() -> None:
    cutter = UtteranceCutter()
    for speech_on in (False, True):
        for _ in range(100):  # 100 s
            cutter.add_audio(samples_for(100))
            cutter.push(hops_of(np.full(100, speech_on)), cutter._next_hop * HOP_S)
        assert len(cutter._samples) <= (MAX_HOPS + 2 * CONTEXT_HOPS + PAUSE_HOPS) * HOP


def test_times_follow_the_start_times_given_and_the_audio_runs_ahead() -> None:
    """Audio arrives before the decisions (the gate's lookahead); each batch of hops comes
    with its media time, which may jump (the stream re-anchored after a gap)."""
    speech = np.zeros(400, bool)
    speech[50:100] = True
    speech[300:350] = True
    features, audio = hops_of(speech), samples_for(400)
    cutter = UtteranceCutter()
    cutter.add_audio(audio)  # all of it, ahead of every decision
    first = cutter.push(features.slice(0, 200), 10.0)
    second = cutter.push(features.slice(200, 400), 30.0) + cutter.flush()
    assert [(u.start_s, u.end_s) for u in first] == [(10.5, 11.0)]
    (late,) = second
    assert abs(late.start_s - 31.0) < 1e-9 and abs(late.end_s - 31.5) < 1e-9
    hop_ids = np.round(late.audio[::HOP] * 1e5).astype(int)
    assert hop_ids[0] == 300 - CONTEXT_HOPS

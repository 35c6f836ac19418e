"""The fluency evaluation set is what it says: real espeak-ng speech with exact truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fluency_set import (
    LIVE_RATE,
    MIN_PAUSE_S,
    QUICK_NAMES,
    RATE,
    RATES_WPM,
    VOICES,
    Clip,
    count_syllables,
    espeak,
    evaluate,
    fraction_per_second_of_hops,
    groups,
    load_set,
    mae,
    mape,
    pauses_of_hops,
    span_of_hops,
)
from scipy.signal import welch

# Syllables of words whose espeak-ng pronunciation, US and British, has the dictionary count.
KNOWN_WORDS = {
    "cat": 1,
    "strengths": 1,
    "boy": 1,  # a diphthong counts once
    "house": 1,
    "water": 2,
    "button": 2,  # a syllabic n (US) or a schwa (British)
    "little": 2,  # a syllabic l
    "rhythm": 2,
    "banana": 3,
    "elephant": 3,
    "beautiful": 3,
    "family": 3,
    "probably": 3,
    "radio": 3,
    "television": 4,
    "university": 5,
    "communication": 5,
    "international": 5,
}


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Clip]:
    """The whole fluency set, generated once per session (test_syllables shares it)."""
    return load_set(tmp_path_factory.getbasetemp() / "fluency_set")


def speaking(clips: list[Clip]) -> list[Clip]:
    return [c for c in clips if c.syllables > 0]


def twin(clips: list[Clip], noisy: Clip) -> Clip:
    """The clean clip a noisy one was made from."""
    return next(
        c
        for c in clips
        if c.spec.condition == "clean"
        and (c.spec.voice, c.spec.wpm, c.spec.sentences)
        == (noisy.spec.voice, noisy.spec.wpm, noisy.spec.sentences)
    )


# -- the syllable counter ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ipa", "count"),
    [
        ("", 0),
        ("k_ˈæ_t", 1),
        ("b_ˈʌ_ʔ_n̩", 2),  # syllabic n
        ("l_ˈɪ_ɾ_əl", 2),  # syllabic l, as espeak writes it
        ("f_ˈaɪɚ", 1),  # one triphthong phoneme
        ("ˈaʊ_ɚ", 2),  # a diphthong, then a vowel
        ("ɹ_ˈeɪ_d_ɪ__ˌoʊ", 3),  # "__": espeak's syllable break
        ("θ_ˈæ_ŋ_k j_uː\nh_ə_l_ˈoʊ", 4),  # words and clauses
    ],
)
def test_count_syllables_of_phonemes(ipa: str, count: int) -> None:
    assert count_syllables(ipa) == count


@pytest.mark.parametrize("voice", ["en-us+m3", "en+f2"])
def test_count_syllables_of_known_words(voice: str) -> None:
    for word, count in KNOWN_WORDS.items():
        _, ipa = espeak(word, voice, 160)
        assert count_syllables(ipa) == count, (word, ipa)


# -- the set ----------------------------------------------------------------------------------


def test_set_composition(clips: list[Clip]) -> None:
    names = [c.name for c in clips]
    assert len(names) == len(set(names)) == 37
    assert set(QUICK_NAMES) <= set(names)
    conditions = [c.spec.condition for c in clips]
    assert conditions.count("clean") == 20
    assert conditions.count("white") == conditions.count("pink") == 6
    assert conditions.count("noise") == 3 and conditions.count("hum") == 2
    clean = [c for c in clips if c.spec.condition == "clean"]
    assert {(c.spec.voice, c.spec.wpm) for c in clean} == {
        (v.name, w) for v in VOICES for w in RATES_WPM
    }
    noisy = [c for c in clips if c.spec.snr_db is not None]
    assert {(c.spec.noise, c.spec.snr_db) for c in noisy} == {
        (kind, snr) for kind in ("white", "pink") for snr in (20.0, 10.0, 5.0)
    }
    assert {c.spec.sex for c in noisy} == {"male", "female"}


def test_audio_format(clips: list[Clip]) -> None:
    for clip in clips:
        assert clip.audio.dtype == np.float32 and clip.audio.ndim == 1
        assert np.isfinite(clip.audio).all() and np.abs(clip.audio).max() < 1.0
        # Whole seconds, 5-15 s for speech, so every second has a speech-fraction truth.
        assert clip.audio.shape[0] % RATE == 0
        if clip.syllables:
            assert 5.0 <= clip.duration_s <= 15.0, clip.name
    live = clips[0].audio_48k()
    assert live.dtype == np.float32 and live.shape[0] == 3 * clips[0].audio.shape[0]
    assert LIVE_RATE == 3 * RATE
    assert np.sqrt(np.mean(live**2)) == pytest.approx(np.sqrt(np.mean(clips[0].audio ** 2)), 0.01)


def test_segments_bound_the_voice(clips: list[Clip]) -> None:
    """Outside the segments a clean clip is silent; each segment starts and ends in voice."""
    margin = round(0.003 * RATE)  # the resampling filter's reach
    for clip in speaking(clips):
        starts = [a for a, _ in clip.segments]
        assert starts == sorted(starts) and all(a < b for a, b in clip.segments)
        assert clip.segments[0][0] >= 0.2 and clip.segments[-1][1] <= clip.duration_s - 0.3
        assert all(b - a >= MIN_PAUSE_S for a, b in clip.pauses)
        if clip.spec.condition != "clean":
            continue
        x = np.abs(clip.audio.astype(np.float64))
        peak = x.max()
        outside = np.ones(x.shape[0], bool)
        for a, b in clip.segments:
            i, j = round(a * RATE), round(b * RATE)
            outside[max(0, i - margin) : j + margin] = False
            # Voice within 5 ms of both edges: within 45 dB of the peak, as espeak was cut.
            edge = round(0.005 * RATE)
            assert x[i : i + edge].max() >= peak * 10 ** (-45 / 20), (clip.name, a)
            assert x[j - edge : j].max() >= peak * 10 ** (-45 / 20), (clip.name, b)
        assert x[outside].max() <= peak * 10 ** (-38 / 20), clip.name


def test_truth_is_consistent(clips: list[Clip]) -> None:
    for clip in clips:
        spoken_s = sum(b - a for a, b in clip.segments)
        fraction = clip.speech_fraction_per_second()
        assert fraction.shape == (int(clip.duration_s),)
        assert ((fraction >= 0) & (fraction <= 1)).all()
        assert fraction.sum() == pytest.approx(spoken_s, abs=1e-9)
        # The per-hop truth agrees with the exact one to the hop.
        hops = clip.speech_hops()
        assert hops.shape == (int(clip.duration_s * 100),)
        assert (
            mae(list(fraction_per_second_of_hops(hops, fraction.shape[0])), list(fraction)) < 0.01
        )
        assert pauses_of_hops(hops) == len(clip.pauses)
        assert span_of_hops(hops) == pytest.approx(clip.speech_span_s, abs=0.02)
        assert clip.syllables == sum(clip.syllables_per_sentence)
        if clip.syllables:
            words = sum(len(s.split()) for s in clip.spec.sentences)
            assert words <= clip.syllables <= 3 * words, clip.name
            assert 1.5 <= clip.speech_rate <= 7.0, clip.name
        else:
            assert not clip.segments and clip.speech_rate == 0.0
    rates = {w: np.mean([c.speech_rate for c in clips if c.spec.wpm == w]) for w in RATES_WPM}
    assert rates[220] > 1.4 * rates[100]


def test_levels_and_snr(clips: list[Clip]) -> None:
    for clip in clips:
        spec = clip.spec
        x = clip.audio.astype(np.float64)
        if spec.condition in ("noise", "hum"):
            assert spec.noise_dbfs is not None
            assert 10 * np.log10(np.mean(x**2)) == pytest.approx(spec.noise_dbfs, abs=0.05)
            continue
        clean = twin(clips, clip).audio.astype(np.float64)
        in_speech = np.zeros(x.shape[0], bool)
        for a, b in clip.segments:
            in_speech[round(a * RATE) : round(b * RATE)] = True
        speech_db = 10 * np.log10(np.mean(clean[in_speech] ** 2))
        assert speech_db == pytest.approx(spec.speech_dbfs, abs=0.05)
        if spec.snr_db is not None:
            noise = x - clean
            snr = speech_db - 10 * np.log10(np.mean(noise[in_speech] ** 2))
            assert snr == pytest.approx(spec.snr_db, abs=0.01), clip.name
            assert clip.segments == twin(clips, clip).segments
            assert clip.syllables == twin(clips, clip).syllables


def test_noise_colours_and_hum(clips: list[Clip]) -> None:
    """White is flat, pink equal per octave, brown 6 dB/octave down; hum sits on the mains."""
    by_name = {c.name: c for c in clips}

    def octave_step_db(clip: Clip) -> float:
        """Power in 2-4 kHz over 250-500 Hz (three octaves up), dB."""
        f, p = welch(clip.audio, RATE, nperseg=4096)
        low = p[(f >= 250) & (f < 500)].sum()
        high = p[(f >= 2000) & (f < 4000)].sum()
        return float(10 * np.log10(high / low))

    assert octave_step_db(by_name["noise-white"]) == pytest.approx(9.0, abs=1.0)
    assert octave_step_db(by_name["noise-pink"]) == pytest.approx(0.0, abs=1.0)
    assert octave_step_db(by_name["noise-brown"]) == pytest.approx(-9.0, abs=1.5)
    for mains in (50, 60):
        f, p = welch(by_name[f"hum-{mains}"].audio, RATE, nperseg=RATE)
        assert f[np.argmax(p)] == mains
        assert p[f == 2 * mains] > 100 * np.median(p)


def test_generation_is_deterministic_and_cached(tmp_path: Path, clips: list[Clip]) -> None:
    quick = load_set(tmp_path, quick=True)
    assert [c.name for c in quick] == [c.name for c in clips if c.name in QUICK_NAMES]
    assert len(list(tmp_path.glob("*.npy"))) == len(QUICK_NAMES)
    full = {c.name: c for c in clips}
    for clip in quick:
        np.testing.assert_array_equal(clip.audio, full[clip.name].audio)
        assert clip.segments == full[clip.name].segments
    again = load_set(tmp_path, quick=True)
    for a, b in zip(quick, again, strict=True):
        np.testing.assert_array_equal(a.audio, b.audio)


# -- accuracy helpers -------------------------------------------------------------------------


def test_accuracy_helpers(clips: list[Clip]) -> None:
    assert mape([110, 90, 5], [100, 100, 0]) == pytest.approx(10.0)
    assert mape([], []) == 0.0
    assert mae([1.0, 3.0], [2.0, 2.0]) == 1.0
    perfect = evaluate(clips, [c.syllables for c in clips])
    assert perfect.syllable_mape == perfect.rate_mape == perfect.false_syllables == 0
    off = evaluate(clips, [round(c.syllables * 1.1) + 1 for c in clips])
    assert off.syllable_mape > 10.0 and off.false_syllables == 5 and off.syllable_bias > 0
    index = groups(clips)
    assert len(index["all"]) == len(clips)
    assert len(index["clean"]) == len(index["clean male"]) + len(index["clean female"]) == 20
    assert len(index["noisy"]) == 12 and len(index["no speech"]) == 5
    assert {"clean slow", "clean medium", "clean fast", "white 5 dB", "pink 20 dB"} <= set(index)

"""Tests for tts_history.host.espeak against the real eSpeak NG library (no mocks)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
import pytest

from tts_history.host.espeak import SAMPLE_RATE, SpeechError, list_languages, synthesize

ENGLISH = "The quick brown fox jumps over the lazy dog."
GERMAN = "Der schnelle braune Fuchs springt über den faulen Hund."


def _assert_speech(audio: npt.NDArray[np.int16], min_seconds: float = 0.3) -> None:
    assert audio.dtype == np.int16
    assert audio.ndim == 1
    assert len(audio) / SAMPLE_RATE > min_seconds
    # Widened first so that -32768 cannot overflow in abs().
    assert np.abs(audio.astype(np.int32)).max() > 1000, "audio is (nearly) silent"


def test_sample_rate_is_espeak_ng_native_rate() -> None:
    assert SAMPLE_RATE == 22050


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("en", ENGLISH),
        ("de", GERMAN),
        ("fr", "Le renard brun rapide saute par-dessus le chien paresseux."),
        ("ja", "今日はいい天気ですね。"),
    ],
)
def test_sentence_gives_audible_speech(language: str, text: str) -> None:
    _assert_speech(synthesize(text, language=language))


def test_language_code_is_case_insensitive() -> None:
    _assert_speech(synthesize(ENGLISH, language="EN-US"))


def test_faster_rate_gives_shorter_audio() -> None:
    slow = synthesize(ENGLISH, rate=100)
    fast = synthesize(ENGLISH, rate=300)
    assert len(fast) < 0.6 * len(slow)


@pytest.mark.parametrize(
    ("rate", "pitch", "named"),
    [(79, 50, "rate"), (451, 50, "rate"), (175, -1, "pitch"), (175, 101, "pitch")],
)
def test_out_of_range_setting_raises(rate: int, pitch: int, named: str) -> None:
    with pytest.raises(SpeechError, match=named):
        synthesize(ENGLISH, rate=rate, pitch=pitch)


def test_unknown_language_raises_naming_the_code() -> None:
    with pytest.raises(SpeechError, match="xx-nowhere"):
        synthesize(ENGLISH, language="xx-nowhere")


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", "\0"])
def test_empty_text_raises(text: str) -> None:
    with pytest.raises(SpeechError, match="empty"):
        synthesize(text)


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("ja", "こんにちは、世界！"),
        ("en", "日本語のテキスト"),
        ("en", "Party time 🎉😀👍🏽"),
        ("en", "😀"),
        ("en", "zero\u200bwidth and combining e\u0301"),
        ("en", "lone \ud800 surrogate"),
    ],
)
def test_any_unicode_text_is_spoken_without_crashing(language: str, text: str) -> None:
    audio = synthesize(text, language=language)
    assert audio.dtype == np.int16
    assert len(audio) > 0


def test_nul_character_does_not_cut_the_text_short() -> None:
    with_nul = synthesize("one two three\0four five six")
    first_half = synthesize("one two three")
    assert len(with_nul) > 1.5 * len(first_half)


def test_list_languages_is_sorted_unique_and_has_common_codes() -> None:
    languages = list_languages()
    assert languages == sorted(set(languages))
    assert {"en", "en-us", "de", "fr", "ja"} <= set(languages)


def test_every_listed_language_speaks() -> None:
    failures = []
    for language in list_languages():
        try:
            _assert_speech(synthesize("one two three", language=language))
        except (AssertionError, SpeechError) as exc:
            failures.append(f"{language}: {exc}")
    assert not failures


def test_concurrent_calls_do_not_interfere() -> None:
    jobs = [("en", ENGLISH, 120), ("de", GERMAN, 300)]
    expected = {
        language: len(synthesize(text, language=language, rate=rate))
        for language, text, rate in jobs
    }
    start = threading.Barrier(len(jobs))

    def run(language: str, text: str, rate: int) -> list[npt.NDArray[np.int16]]:
        start.wait()
        return [synthesize(text, language=language, rate=rate) for _ in range(10)]

    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(run, *job) for job in jobs]
        results = [future.result(timeout=60) for future in futures]

    for (language, _, _), outputs in zip(jobs, results, strict=True):
        for audio in outputs:
            _assert_speech(audio)
            # eSpeak NG varies a length by a few samples from call to call;
            # audio mixed between calls, or another call's voice or rate, would
            # be far off.
            assert abs(len(audio) - expected[language]) < 0.02 * expected[language]

"""Search text signatures: a text has every bit of each term it contains, so a search that
skips the texts lacking a term's bits finds everything `contains` finds; and they are sparse
enough to skip most texts that lack a word."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest
from helpers import record
from hypothesis import given, settings
from hypothesis import strategies as st

from tts_history import History
from tts_history.index import text
from tts_history.index.text import SIGNATURE_WORDS, normalize, search_terms, signatures, terms_signature


def has_bits(signature: np.ndarray, words: list[int]) -> bool:
    return all(int(have) & want == want for have, want in zip(signature, words))


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.text(), min_size=1, max_size=8), data=st.data())
def test_a_text_has_every_bit_of_each_of_its_substrings(texts, data):
    # Any text, empty ones and whitespace included, anywhere in a batch: a pair of bytes that
    # spans two texts must not count for either
    texts = [normalize(t) for t in texts]
    i = data.draw(st.integers(0, len(texts) - 1))
    start = data.draw(st.integers(0, len(texts[i])))
    term = texts[i][start : data.draw(st.integers(start, len(texts[i])))]
    found = signatures(pa.array(texts))
    assert found.shape == (len(texts), SIGNATURE_WORDS)
    assert has_bits(found[i], terms_signature([term]))
    assert has_bits(found[i], terms_signature([term, texts[i]]))


def test_signatures_of_a_slice_are_those_of_its_texts():
    texts = ["", "harbor lanterns", "x", "", "今日はいい天気ですね", "a b"]
    whole = pa.array(texts)
    chunked = pa.chunked_array([whole.slice(0, 2), whole.slice(2)])
    expected = np.array([terms_signature([t]) for t in texts], dtype=np.uint64)
    assert (signatures(whole.slice(2)) == expected[2:]).all()
    assert (signatures(chunked) == expected).all()
    assert signatures(pa.array([], pa.string())).shape == (0, SIGNATURE_WORDS)


def test_spaces_and_single_bytes_set_no_bits():
    assert terms_signature(["", "a", " \t\n ", "a b c"]) == [0] * SIGNATURE_WORDS
    assert sum(bin(w).count("1") for w in terms_signature(["ab"])) == 1


def test_a_signature_tells_most_texts_without_a_word_apart():
    rng = random.Random(7)
    vocabulary = (
        "the a of and to in is was he for it with as his on be at by had they this but from "
        "harbor lantern morning river quiet voice story light evening window garden"
    ).split()
    texts = [" ".join(rng.choice(vocabulary) for _ in range(rng.randint(5, 40))) for _ in range(3000)]
    found = signatures(pa.array(texts))
    assert np.unpackbits(found.view(np.uint8)).mean() < 0.25  # bits set: most are not
    for word, at_most in (("quetzalcoatl", 0), ("xylophone", 0), ("lanterns", 30), ("riverside", 30)):
        passed = sum(has_bits(s, terms_signature([word])) for s in found)
        assert passed <= at_most, (word, passed)
    assert sum(has_bits(s, terms_signature(["lantern"])) for s in found) == sum("lantern" in t for t in texts)


def test_signatures_worked_out_in_blocks_are_each_texts_own():
    # more text than one block (text._BLOCK bytes), and texts longer than a block, anywhere
    rng = random.Random(3)
    words = "harbor lantern 今日は straße quiet voice".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 60))) for _ in range(4000)]
    texts[5] = "lanterns" * 40_000
    texts[-1] = "é" * 150_000
    found = signatures(pa.array(texts))
    assert sum(len(t.encode()) for t in texts) > 4 * text._BLOCK
    for i in [0, 5, 6, 1234, len(texts) - 2, len(texts) - 1, *rng.sample(range(len(texts)), 200)]:
        assert list(found[i]) == terms_signature([texts[i]]), i


# -- letters Unicode does not decompose ------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "folded"),
    [
        ("Łódź", "lodz"),
        ("ŁÓDŹ", "lodz"),
        ("København", "kobenhavn"),
        ("KØBENHAVN", "kobenhavn"),
        ("Đakovo", "dakovo"),
        ("đakovo", "dakovo"),
        ("Þór Æsir", "thor aesir"),
        ("ÞÓR ÆSIR", "thor aesir"),
        ("Guðrún Ðóra", "gudrun dora"),
        ("Straße", "strasse"),
        ("STRAẞE", "strasse"),
        ("Œuvre cœur", "oeuvre coeur"),
        ("Diyarbakır", "diyarbakir"),
        ("Ħamrun Ŧ ŧ", "hamrun t t"),
        ("ǿ ǣ", "o ae"),  # a stroke or a ligature under an accent: both go
        ("Łódź 今日は ❤️", "lodz 今日は ❤"),
    ],
)
def test_letters_without_a_decomposition_are_spelt_out(written, folded):
    assert normalize(written) == folded
    assert normalize(folded) == folded  # folding twice changes nothing
    assert search_terms(written) == folded.split()


def test_every_spelt_letter_folds_upper_and_lower_case_to_ascii():
    for letter in "łŁøØđĐðÐþÞæÆœŒßẞıħĦŧŦ":
        assert normalize(letter).isascii() and normalize(letter).isalpha(), letter
        assert normalize(letter) == normalize(letter.lower()), letter


def test_a_search_without_the_letters_finds_texts_written_with_them(library, pm):
    # Through the real index: the stored search text and signature and the query's terms are
    # all folded alike, so each way of typing the word finds the same records
    texts = {
        "pl": "Pociąg do Łodzi, potem Łódź Kaliska",
        "dk": "Toget til København H kører nu",
        "hr": "Katedrala u Đakovu, Đakovo",
        "is": "Þór og Æsir í Ásgarði",
        "de": "Die Straße ist lang",
        "fr": "Une œuvre de cœur",
        "en": "Lodge near the harbor, Copenhagen",
    }
    for gid, words in texts.items():
        record(pm, 0.02, id=gid, text=words)
    history = History(library, plugin_manager=pm)
    for search, expected in [
        ("lodz", {"pl"}),
        ("Łódź", {"pl"}),
        ("ŁÓDŹ", {"pl"}),
        ("lodzi", {"pl"}),
        ("kobenhavn", {"dk"}),
        ("København", {"dk"}),
        ("KØBENHAVN kører", {"dk"}),
        ("dakovo", {"hr"}),
        ("Đakovo", {"hr"}),
        ("dakovu", {"hr"}),
        ("thor aesir", {"is"}),
        ("Þór Æsir", {"is"}),
        ("asgardi", {"is"}),
        ("strasse", {"de"}),
        ("Straße", {"de"}),
        ("oeuvre coeur", {"fr"}),
        ("œuvre", {"fr"}),
        ("lod", {"pl", "en"}),
        ("copenhagen", {"en"}),
    ]:
        result = history.list(limit=100, search=search)
        assert {item["id"] for item in result["items"]} == expected, search
        assert result["total"] == len(expected), search

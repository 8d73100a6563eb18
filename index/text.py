"""Search text normalisation, applied alike to indexed text and to queries, and the signatures
that let a search skip the texts that cannot match.

Case-insensitive (casefold: 'Straße' finds 'STRASSE') and accent-insensitive for the Latin,
Greek and Cyrillic combining accents only: Japanese voicing marks (が vs か) change the word, so
they are kept. Latin letters that Unicode does not decompose into a base letter and an accent
are spelt out too ('Łódź' is 'lodz', 'København' 'kobenhavn', 'Þór' 'thor'). Emoji variation
selectors are dropped so '❤' finds '❤️'.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import pyarrow as pa

_ACCENTS = re.compile("[\u0300-\u036f\ufe00-\ufe0f]")
# Latin letters with no decomposition (a stroke, a ligature, a letter of its own), spelt as a
# reader of them types them on a plain keyboard. Lowercase only: casefold has already lowered
# 'Ł' to 'ł', and turned 'ß' and 'ẞ' into 'ss' ('ß' is here only so the table says so too).
# Replaced after the accents go, so that a letter with both ('ǿ', ø with an acute) loses both.
# A regex rather than str.translate: translate looks every character of a non-ASCII text up in
# its table, 2.5x the time of the scan that finds the few letters to replace (100k texts).
_SPELT = {
    "ł": "l", "ø": "o", "đ": "d", "ð": "d", "þ": "th", "æ": "ae", "œ": "oe", "ß": "ss",
    "ı": "i", "ħ": "h", "ŧ": "t",
}
_LETTERS = re.compile(f"[{''.join(_SPELT)}]")

# A text's signature has one bit set for each pair of adjacent bytes of its UTF-8 search text
# (pairs with a space or control byte left out: no search term holds one). A text that contains
# a term has every bit of the term's signature, so a search runs `contains` only on the texts
# that have them. 256 bits; in the benchmark's 1M texts (~160 bytes) 14% of them are set, and
# of the texts that lack a word 'the' leaves 3.6% to be read, 'harbor' 1.2%, 'quetzalcoatl'
# none. Any change to these bits changes the index's layout (tables.INDEX_VERSION).
SIGNATURE_WORDS = 4  # 64-bit words
SIGNATURE_COLUMNS = tuple(f"search_sig{i}" for i in range(SIGNATURE_WORDS))  # generation_rows's
# each byte pair's bit, by Fibonacci hashing of the pair
_PAIR_BIT = (((np.arange(1 << 16, dtype=np.uint64) * 2654435761) & 0xFFFFFFFF) >> 24).astype(np.uint8)
# bytes of text whose pairs are worked out at a time: the temporaries, ~16 bytes for each byte
# of text, stay ~4 MB (a sync's batch of 5,000 texts at once cost 28 MB)
_BLOCK = 1 << 18


def _spelt(letter: re.Match[str]) -> str:
    return _SPELT[letter[0]]


def normalize(text: str) -> str:
    """A text's search text; queries go through it too (search_terms), so both sides fold alike."""
    folded = _ACCENTS.sub("", unicodedata.normalize("NFKD", text.casefold()))
    if not folded.isascii():  # O(1); most Latin text is ASCII by now, with none of _SPELT
        folded = _LETTERS.sub(_spelt, folded)
    return unicodedata.normalize("NFC", folded)


def search_terms(query: str) -> list[str]:
    """The words of a query, normalised; a generation matches when its text holds every one."""
    return [term for term in normalize(query).split() if term]


def signatures(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Each text's signature: an array of shape (len(texts), SIGNATURE_WORDS), uint64."""
    texts = pa.chunked_array([texts]) if isinstance(texts, pa.Array) else texts
    texts = texts.combine_chunks().cast(pa.large_string())  # one buffer, 64-bit offsets
    count = len(texts)
    if count == 0:
        return np.zeros((0, SIGNATURE_WORDS), dtype=np.uint64)
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int64)[texts.offset : texts.offset + count + 1]
    data = np.frombuffer(texts.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    offsets = offsets - offsets[0]
    bits = np.zeros((count, SIGNATURE_WORDS * 64), dtype=bool)
    start = 0
    while start < count:
        # the rows that begin within _BLOCK bytes of this one's start; at least this one
        end = int(np.searchsorted(offsets, offsets[start] + _BLOCK, side="right")) - 1
        end = max(end, start + 1)
        block = offsets[start : end + 1]
        _set_bits(bits[start:end], data[block[0] : block[-1]], block - block[0])
        start = end
    packed = np.packbits(bits, axis=1, bitorder="little")
    return packed.view("<u8").astype(np.uint64)


def _set_bits(bits: np.ndarray, data: np.ndarray, offsets: np.ndarray) -> None:
    """Set each row's bits of ``bits`` for the byte pairs of its text (``data``, from
    ``offsets[row]`` to ``offsets[row + 1]``)."""
    if len(data) < 2:
        return
    first, second = data[:-1], data[1:]
    keep = (first > 32) & (second > 32)
    across = offsets[1:-1] - 1  # pairs made of one text's last byte and the next one's first
    keep[across[(across >= 0) & (across < len(keep))]] = False
    row = np.repeat(np.arange(len(bits), dtype=np.int32), np.diff(offsets))[:-1]
    pair = (first.astype(np.uint16) << 8) | second
    bits[row[keep], _PAIR_BIT[pair[keep]]] = True


def terms_signature(terms: list[str]) -> list[int]:
    """The bits every text holding all of these terms has, as SIGNATURE_WORDS integers."""
    return [int(word) for word in np.bitwise_or.reduce(signatures(pa.array(terms, pa.string())), axis=0)]

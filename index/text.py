"""Search text normalisation, applied alike to indexed text and to queries.

Case-insensitive (casefold: 'Straße' finds 'STRASSE') and accent-insensitive for the Latin,
Greek and Cyrillic combining accents only: Japanese voicing marks (が vs か) change the word, so
they are kept. Emoji variation selectors are dropped so '❤' finds '❤️'.
"""

from __future__ import annotations

import re
import unicodedata

_ACCENTS = re.compile("[\u0300-\u036f\ufe00-\ufe0f]")


def normalize(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return unicodedata.normalize("NFC", _ACCENTS.sub("", decomposed))


def search_terms(query: str) -> list[str]:
    """The words of a query, normalised; a generation matches when its text holds every one."""
    return [term for term in normalize(query).split() if term]

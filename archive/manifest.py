"""Reading a manifest's JSON a chunk at a time, so that no archive's manifest is ever held whole.

A manifest is parsed as ``json.loads`` would (NaN and infinities refused), in passes: the first
checks the whole text and gives the manifest with an empty ``generations`` list and how many
there are; each later pass opens the entry again and yields the generations one at a time.
A 2 GB archive's manifest is ~8.5 MB of text; held whole, with its parsed pieces, it cost
~27 MB at the peak, and ten times the archive ten times that.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Iterator
from typing import IO, Any

CHUNK = 1 << 20  # bytes read from the entry at a time
# A number is the one value that can look whole when a chunk's end cuts it ("12|34", "1.|5"):
# what is cut ends within a few characters of the end, so a value ending this near it is read
# again with more text after it.
_NEAR_END = 8


def _reject_nan(value: str) -> float:
    raise ValueError(f"{value} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise ValueError(f"{text} is out of range")
    return value


_JSON = json.JSONDecoder(parse_constant=_reject_nan, parse_float=_finite)
_SPACE = re.compile(r"[ \t\n\r]*")


class Text:
    """The JSON text of a binary stream (UTF-8), read ``chunk`` bytes at a time; what has been
    parsed is let go. Errors are ``ValueError`` naming the character where the text fails."""

    def __init__(self, stream: IO[bytes], chunk: int = CHUNK) -> None:
        self._stream = stream
        self._chunk = chunk
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._text = ""
        self._pos = 0
        self._dropped = 0  # characters before self._text
        self._ended = False

    def _more(self, at_least: int) -> None:
        """Read on (at least ``at_least`` bytes, unless the stream ends first)."""
        self._text = self._text[self._pos :]
        self._dropped += self._pos
        self._pos = 0
        pieces = [self._text]
        wanted = max(at_least, self._chunk)
        while wanted > 0 and not self._ended:
            data = self._stream.read(wanted)
            wanted -= len(data)
            pieces.append(self._decoder.decode(data, final=not data))
            self._ended = not data
        self._text = "".join(pieces)

    def _fail(self, message: str, pos: int) -> ValueError:
        return ValueError(f"{message} at character {self._dropped + pos}")

    def peek(self) -> str:
        """The next character after any whitespace, or "" at the end."""
        while True:
            self._pos = _SPACE.match(self._text, self._pos).end()
            if self._pos < len(self._text) or self._ended:
                return self._text[self._pos : self._pos + 1]
            self._more(self._chunk)

    def take(self, char: str, expecting: str) -> None:
        if self.peek() != char:
            raise self._fail(f"Expecting {expecting}", self._pos)
        self._pos += 1

    def value(self) -> Any:
        """The next JSON value (after any whitespace)."""
        self.peek()
        while True:
            try:
                value, end = _JSON.raw_decode(self._text, self._pos)
            except json.JSONDecodeError as exc:
                if self._ended:
                    raise self._fail(exc.msg, exc.pos) from None
                # cut by the chunk's end, perhaps: read as much again (a long value is not
                # parsed over and over), then parse it again; a malformed text is thus read
                # on to its end (at most the manifest cap) before it is refused
                self._more(len(self._text))
                continue
            if end > len(self._text) - _NEAR_END and not self._ended:
                self._more(self._chunk)
                continue
            self._pos = end
            return value

    def end(self) -> None:
        if self.peek() != "":
            raise self._fail("Extra data", self._pos)


def _members(text: Text, opening: str, closing: str) -> Iterator[None]:
    """Step through the list or object that starts next: yields before each member, which the
    caller reads."""
    text.take(opening, f"'{opening}'")
    if text.peek() == closing:
        text.take(closing, f"'{closing}'")
        return
    while True:
        yield
        if text.peek() == closing:
            text.take(closing, f"'{closing}'")
            return
        text.take(",", "',' delimiter")


def _elements(text: Text) -> Iterator[Any]:
    """The elements of the list that starts next, one at a time."""
    for _ in _members(text, "[", "]"):
        yield text.value()


def _keys(text: Text) -> Iterator[str]:
    """The keys of the object that starts next; after each, the caller reads its value."""
    for _ in _members(text, "{", "}"):
        if text.peek() != '"':
            text.take('"', "property name enclosed in double quotes")
        key = text.value()
        text.take(":", "':' delimiter")
        yield key


class TwiceError(ValueError):
    """The manifest names its generations twice: which list counts would be a guess."""


def header(text: Text) -> tuple[Any, int | None]:
    """Check the whole manifest. Returns it with an empty list for ``generations`` (any other
    value as it is) and how many generations the list holds: None without one."""
    if text.peek() != "{":
        value = text.value()
        text.end()
        return value, None
    manifest: dict[str, Any] = {}
    count = None
    for key in _keys(text):
        if key == "generations" and key in manifest:
            raise TwiceError("'generations' appears twice in the manifest")
        if key == "generations" and text.peek() == "[":
            manifest[key] = []
            count = sum(1 for _ in _elements(text))
        else:
            manifest[key] = text.value()
    text.end()
    return manifest, count


def generations(text: Text) -> Iterator[Any]:
    """The generations of a manifest :func:`header` found a list of, one at a time."""
    for key in _keys(text):
        if key == "generations":
            yield from _elements(text)
            return
        text.value()

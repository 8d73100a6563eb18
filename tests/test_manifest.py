"""A manifest read a chunk at a time (archive/manifest.py) reads exactly what ``json.loads``
reads, wherever the chunks end: inside numbers, strings, multi-byte characters, whitespace.
Whole archives with broken manifests are covered by test_archive.py and test_archive_fuzz.py."""

from __future__ import annotations

import io
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tts_history.archive import manifest

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
MANIFESTS = st.fixed_dictionaries(
    {"generations": st.lists(VALUES, max_size=6)},
    optional={"format": st.text(max_size=8), "version": st.integers(), "extra": VALUES},
)


def _text(raw: bytes, chunk: int) -> manifest.Text:
    return manifest.Text(io.BytesIO(raw), chunk)


def _dump(value, indent) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=indent).encode()


def _reference(raw: bytes):
    """What json.loads makes of the text, refusing what the manifest reader refuses."""

    def refuse(constant):
        raise ValueError(constant)

    def finite(text):
        if not math.isfinite(float(text)):
            raise ValueError(text)
        return float(text)

    return json.loads(raw.decode("utf-8"), parse_constant=refuse, parse_float=finite)


@SETTINGS
@given(MANIFESTS, st.sampled_from([None, 0, 2]), st.integers(1, 40))
def test_any_chunk_size_reads_what_json_loads_reads(document, indent, chunk):
    raw = _dump(document, indent)
    header, count = manifest.header(_text(raw, chunk))
    assert header == {**document, "generations": []}
    assert count == len(document["generations"])
    assert list(manifest.generations(_text(raw, chunk))) == document["generations"]


@SETTINGS
@given(MANIFESTS, st.data(), st.integers(1, 40))
def test_a_broken_text_fails_where_json_loads_fails(document, data, chunk):
    raw = _dump(document, data.draw(st.sampled_from([None, 2])))
    edit = data.draw(st.sampled_from(["truncate", "insert", "delete", "number"]))
    at = data.draw(st.integers(0, len(raw)))
    if edit == "truncate":
        raw = raw[:at]
    elif edit == "insert":
        piece = data.draw(st.sampled_from([b'"', b",", b"{", b"]", b":", b"\\", b"NaN", b"1e999", b"\xff", b"-"]))
        raw = raw[:at] + piece + raw[at:]
    elif edit == "delete":
        raw = raw[:at] + raw[at + data.draw(st.integers(1, 4)) :]
    else:
        raw = raw[:at] + b"1.5e-3" + raw[at:]
    try:
        expected = _reference(raw)
    except (ValueError, RecursionError):
        expected = ValueError
    try:
        header, count = manifest.header(_text(raw, chunk))
        got = header
        if count is not None:
            got = {**header, "generations": list(manifest.generations(_text(raw, chunk)))}
    except ValueError:
        got = ValueError
    if isinstance(expected, dict) and raw.count(b'"generations"') > 1:
        assert got is ValueError or got == expected  # a list named twice is refused
    else:
        assert got == expected


@pytest.mark.parametrize("chunk", [1, 3, 1 << 20])
def test_numbers_cut_by_a_chunk_are_read_whole(chunk):
    numbers = [12345678901234567890, -0.5, 1.5e-7, 6.02e23, 0, -17, 3.0]
    raw = json.dumps({"generations": numbers}, separators=(",", ":")).encode()
    assert list(manifest.generations(_text(raw, chunk))) == numbers


def test_generations_named_twice_are_refused():
    raw = b'{"generations": [], "format": "x", "generations": [{"id": 1}]}'
    with pytest.raises(manifest.TwiceError, match="'generations' appears twice"):
        manifest.header(_text(raw, 4))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"generations": [1, 2', r"Expecting ',' delimiter at character 21"),
        (b'{"generations": [NaN]}', "NaN is not valid JSON"),
        (b'{"generations": []} x', "Extra data at character 20"),
        (b"\xef\xbb\xbf{}", "Expecting value"),
    ],
)
def test_errors_name_the_character(raw, message):
    with pytest.raises(ValueError, match=message):
        manifest.header(_text(raw, 5))


def test_a_list_or_a_number_is_returned_whole():
    assert manifest.header(_text(b" [1, 2] ", 2)) == ([1, 2], None)
    assert manifest.header(_text(b"12345", 2)) == (12345, None)

"""Finding one key/value in a Parquet file's footer metadata without decoding the footer.

pyarrow builds the whole Arrow schema to show a footer (~0.5 ms for a sidecar), and walking
the Thrift in Python costs more still; either would make index rebuilds several times slower.
In the footer's Thrift compact encoding, a ``KeyValue`` is the bytes ``0x18``, the key's
length as a varint, the key, ``0x18``, the value's length as a varint, the value (0x18: field
delta 1, type binary). Searching for that run, within the footer, finds the value at C speed.
Only a binary value that itself held the same run could fool it: our own footers hold column
names and JSON (which escapes control bytes such as 0x18); callers check what they find.
"""

from __future__ import annotations

import struct

_MAGIC = b"PAR1"


class FooterError(ValueError):
    """The bytes are not a Parquet file with a plausible footer."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def footer_value(data: bytes, key: bytes) -> bytes | None:
    """The value of ``key`` in the footer's key/value metadata, or None if it is not there."""
    if len(data) < 12 or data[:4] != _MAGIC or data[-4:] != _MAGIC:
        raise FooterError("not a Parquet file")
    (size,) = struct.unpack("<I", data[-8:-4])
    start = len(data) - 8 - size
    if start < 4:
        raise FooterError("its footer length is out of range")
    marker = b"\x18" + _varint(len(key)) + key + b"\x18"
    at = data.rfind(marker, start, len(data) - 8)
    if at < 0:
        return None
    pos = at + len(marker)
    length = shift = 0
    while True:
        if pos >= len(data) - 8:
            raise FooterError("its footer ends early")
        byte = data[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    if pos + length > len(data) - 8:
        raise FooterError("its footer ends early")
    return data[pos : pos + length]

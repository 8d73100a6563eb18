"""Opening an archive without trusting it: everything is checked before anything is kept.

An archive is refused, with the entry and the reason named, for: not a ZIP or truncated,
unsafe entry paths (``..``, absolute, drive letters), symlinks, duplicate or encrypted entries,
sizes or compression ratios over the caps (zip bombs), a missing, oversize or malformed
manifest, and audio that is missing, does not decode, or differs from what the manifest
records (size, sha256, duration, rate, channels).

:func:`open_archive` checks all but the audio itself, reading no audio entry; each entry is
then read once, by the importer, into a hidden temp file while it is measured, and checked
with :func:`check_audio` before any generation is written.
"""

from __future__ import annotations

import lzma
import stat
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from . import manifest, voicebox
from .format import (
    MANIFEST,
    ArchiveError,
    Limits,
    check_entry_name,
    check_value,
    validate_generation,
    validate_manifest,
)

_DURATION_TOLERANCE = 0.002  # seconds: one sample at 500 Hz, far below any real difference


@dataclass
class Plan:
    """A checked archive: its ``count`` records to import, which ``records()`` yields (audio
    paths in them name archive entries). A manifest is parsed again as its records are asked
    for, a generation at a time: a large archive's records need not all be held."""

    path: Path
    kind: str  # "tts-history" | "voicebox"
    count: int
    records: Callable[[], Iterator[dict[str, Any]]]


# what a damaged or unusual ZIP can raise while an entry is read
_DAMAGE = (zipfile.BadZipFile, OSError, EOFError, zlib.error, lzma.LZMAError, NotImplementedError)


def _check_entries(zf: zipfile.ZipFile, name: str, limits: Limits) -> dict[str, zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise ArchiveError(f"{name}: {len(infos)} entries, over the cap of {limits.max_entries}")
    entries: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        check_entry_name(info.filename[:-1] if info.filename.endswith("/") else info.filename, name)
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{name}: entry {info.filename!r} is encrypted")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ArchiveError(f"{name}: entry {info.filename!r} is a symlink")
        if info.filename in entries:
            raise ArchiveError(f"{name}: entry {info.filename!r} appears twice")
        if info.is_dir():
            continue
        total += info.file_size
        if total > limits.max_total_bytes:
            raise ArchiveError(
                f"{name}: more than {limits.max_total_bytes} bytes uncompressed (the cap)"
            )
        if info.file_size > 1 << 20 and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise ArchiveError(
                f"{name}: entry {info.filename!r} expands {info.file_size / max(info.compress_size, 1):.0f}"
                f" times, over the cap of {limits.max_ratio:.0f} (a zip bomb?)"
            )
        entries[info.filename] = info
    return entries


# ZipFile counts the entries open on its file without a lock of its own (it reads them under
# one): entries opened and closed from several threads take this one
_OPENING = threading.Lock()


@contextmanager
def _entry(zf: zipfile.ZipFile, entry: str | zipfile.ZipInfo, what: str) -> Iterator[IO[bytes]]:
    """An entry open for one pass, from any thread; ``what`` names it if it cannot be opened."""
    try:
        with _OPENING:
            stream = zf.open(entry)
    except _DAMAGE as exc:
        raise ArchiveError(f"{what} cannot be read ({exc})") from None
    try:
        yield stream
    finally:
        with _OPENING:
            stream.close()


def _manifest(
    zf: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo], name: str, limits: Limits
) -> tuple[Any, int | None]:
    """The manifest and its count of generations, as :func:`.manifest.header` gives them."""
    info = entries.get(MANIFEST)
    if info is None:
        raise ArchiveError(f"{name}: has no {MANIFEST}")
    if info.file_size > limits.max_manifest_bytes:
        raise ArchiveError(
            f"{name}: {MANIFEST} is {info.file_size} bytes, over the cap of {limits.max_manifest_bytes}"
        )
    with _reading_manifest(name):
        with _entry(zf, info, f"{name}: {MANIFEST}") as stream:
            return manifest.header(manifest.Text(stream))


@contextmanager
def _reading_manifest(name: str) -> Iterator[None]:
    """What reading the manifest raises, as an :class:`ArchiveError` naming it."""
    try:
        yield
    except ArchiveError:
        raise
    except manifest.TwiceError as exc:
        raise ArchiveError(f"{name}: {exc}") from None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ArchiveError(f"{name}: {MANIFEST} is not valid JSON ({exc})") from None
    except _DAMAGE as exc:
        raise ArchiveError(f"{name}: {MANIFEST} cannot be read ({exc})") from None


def _tts_history_plan(
    path: Path,
    header: Any,
    count: int,
    zf: zipfile.ZipFile,
    entries: dict[str, zipfile.ZipInfo],
) -> Plan:
    """Check every generation of a tts-history manifest; the plan reads them again."""
    name = path.name
    library_id = validate_manifest(header, name)

    def raw_generations() -> Iterator[Any]:
        with _reading_manifest(name), _entry(zf, entries[MANIFEST], f"{name}: {MANIFEST}") as stream:
            yield from manifest.generations(manifest.Text(stream))

    def records() -> Iterator[dict[str, Any]]:
        for i, raw in enumerate(raw_generations()):
            yield validate_generation(raw, f"{name}: generations[{i}]", library_id)

    ids = set()
    plan = Plan(path, "tts-history", count, records)
    for i, raw in enumerate(raw_generations()):
        raw = check_value(raw, f"{name}: manifest.generations[{i}]")
        record = validate_generation(raw, f"{name}: generations[{i}]", library_id)
        if record["id"] in ids:
            raise ArchiveError(f"{name}: a generation id appears twice in the manifest")
        ids.add(record["id"])
        _check_audio_entries(entries, plan, record)
    return plan


def where_of(plan: Plan, record: dict[str, Any], version: dict[str, Any]) -> str:
    """How errors name a version of an archive's generation."""
    return f"{plan.path.name}: generation {record['id']!r} version {version['id']!r}"


class _Entry:
    """An audio entry being read: what a damaged archive raises names the entry."""

    def __init__(self, stream: IO[bytes], entry: str, where: str) -> None:
        self._stream, self._entry, self._where = stream, entry, where

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except _DAMAGE as exc:
            raise ArchiveError(f"{self._where}: audio entry {self._entry!r} cannot be read ({exc})") from None


@contextmanager
def open_audio(zf: zipfile.ZipFile, entry: str, where: str) -> Iterator[_Entry]:
    """Open an audio entry (from any thread) for one pass; read errors are :class:`ArchiveError`."""
    with _entry(zf, entry, f"{where}: audio entry {entry!r}") as stream:
        yield _Entry(stream, entry, where)


def check_audio(plan: Plan, version: dict[str, Any], found: dict[str, Any], where: str) -> None:
    """Compare what an audio entry measured (``found``: audio_bytes, audio_sha256, duration,
    sample_rate, channels) with what the manifest says of its version."""
    entry = version["audio_path"]
    if plan.kind == "voicebox":  # its manifest records none of this: what was measured counts
        return
    for key in ("audio_bytes", "audio_sha256", "sample_rate", "channels"):
        if found[key] != version[key]:
            raise ArchiveError(
                f"{where}: audio entry {entry!r} has {key} {found[key]!r}, the manifest "
                f"says {version[key]!r}"
            )
    if abs(found["duration"] - version["duration"]) > _DURATION_TOLERANCE:
        raise ArchiveError(
            f"{where}: audio entry {entry!r} lasts {found['duration']:.3f} s, the manifest "
            f"says {version['duration']:.3f} s"
        )


def _check_audio_entries(
    entries: dict[str, zipfile.ZipInfo], plan: Plan, record: dict[str, Any]
) -> None:
    for version in record["versions"]:
        if version["audio_path"] not in entries:
            raise ArchiveError(
                f"{where_of(plan, record, version)}: audio entry {version['audio_path']!r} "
                "is not in the archive"
            )


@contextmanager
def open_archive(path: str | Path, limits: Limits = Limits()) -> Iterator[tuple[zipfile.ZipFile, Plan]]:
    """Check an archive completely but for what its audio entries hold (see
    :func:`check_audio`); yields the open ZIP and the plan of what to import."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise ArchiveError(f"{path}: no such file")
    try:
        zf = zipfile.ZipFile(path)
    except (*_DAMAGE, ValueError) as exc:
        raise ArchiveError(f"{name}: not a ZIP archive, or truncated ({exc})") from None
    with zf:
        try:
            entries = _check_entries(zf, name, limits)
            header, count = _manifest(zf, entries, name, limits)
            if voicebox.is_manifest(header):
                record = voicebox.record_from_manifest(header, name)
                plan = Plan(path, "voicebox", 1, lambda: iter([record]))
                _check_audio_entries(entries, plan, record)
            else:
                plan = _tts_history_plan(path, header, count, zf, entries)
        except ArchiveError:
            raise
        except (*_DAMAGE, ValueError, RecursionError) as exc:
            # anything else a damaged archive can raise while being read
            raise ArchiveError(f"{name}: damaged archive ({exc})") from None
        yield zf, plan

"""Opening an archive without trusting it: every check runs before anything is written.

An archive is refused, with the entry and the reason named, for: not a ZIP or truncated,
unsafe entry paths (``..``, absolute, drive letters), symlinks, duplicate or encrypted entries,
sizes or compression ratios over the caps (zip bombs), a missing, oversize or malformed
manifest, and audio that is missing, does not decode, or differs from what the manifest
records (size, sha256, duration, rate, channels).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import stat
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf

from . import voicebox
from .format import MANIFEST, ArchiveError, Limits, check_entry_name, validate_manifest

_CHUNK = 1 << 20
_DURATION_TOLERANCE = 0.002  # seconds: one sample at 500 Hz, far below any real difference


@dataclass
class Plan:
    """A checked archive: the records to import; audio paths in them name archive entries."""

    path: Path
    kind: str  # "tts-history" | "voicebox"
    records: list[dict[str, Any]] = field(default_factory=list)


def _reject_nan(value: str) -> float:
    raise ValueError(f"{value} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise ValueError(f"{text} is out of range")
    return value


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


def _manifest(zf: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo], name: str, limits: Limits) -> Any:
    info = entries.get(MANIFEST)
    if info is None:
        raise ArchiveError(f"{name}: has no {MANIFEST}")
    if info.file_size > limits.max_manifest_bytes:
        raise ArchiveError(
            f"{name}: {MANIFEST} is {info.file_size} bytes, over the cap of {limits.max_manifest_bytes}"
        )
    try:
        with zf.open(info) as f:
            data = f.read(limits.max_manifest_bytes + 1)
        return json.loads(data.decode("utf-8"), parse_constant=_reject_nan, parse_float=_finite)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ArchiveError(f"{name}: {MANIFEST} is not valid JSON ({exc})") from None
    except _DAMAGE as exc:
        raise ArchiveError(f"{name}: {MANIFEST} cannot be read ({exc})") from None


def measure(zf: zipfile.ZipFile, entry: str, where: str) -> dict[str, Any]:
    """Read an audio entry once: its size, sha256, and what it decodes to."""
    digest = hashlib.sha256()
    size = 0
    try:
        with zf.open(entry) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        with zf.open(entry) as f, sf.SoundFile(f) as audio:
            frames = sum(len(block) for block in audio.blocks(blocksize=65536))
            rate, channels = audio.samplerate, audio.channels
    except _DAMAGE as exc:
        raise ArchiveError(f"{where}: audio entry {entry!r} cannot be read ({exc})") from None
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise ArchiveError(f"{where}: audio entry {entry!r} does not decode as audio ({exc})") from None
    if frames == 0:
        raise ArchiveError(f"{where}: audio entry {entry!r} holds no samples")
    return {
        "audio_bytes": size,
        "audio_sha256": digest.hexdigest(),
        "duration": frames / rate,
        "sample_rate": rate,
        "channels": channels,
    }


def _check_audio(zf: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo], plan: Plan) -> None:
    for record in plan.records:
        for i, version in enumerate(record["versions"]):
            where = f"{plan.path.name}: generation {record['id']!r} version {version['id']!r}"
            entry = version["audio_path"]
            if entry not in entries:
                raise ArchiveError(f"{where}: audio entry {entry!r} is not in the archive")
            found = measure(zf, entry, where)
            if plan.kind == "voicebox":  # its manifest records none of this: take what we measured
                version.update(found)
                continue
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


@contextmanager
def open_archive(path: str | Path, limits: Limits = Limits()) -> Iterator[tuple[zipfile.ZipFile, Plan]]:
    """Check an archive completely; yields the open ZIP and the plan of what to import."""
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
            manifest = _manifest(zf, entries, name, limits)
            if voicebox.is_manifest(manifest):
                plan = Plan(path, "voicebox", [voicebox.record_from_manifest(manifest, name)])
            else:
                plan = Plan(path, "tts-history", validate_manifest(manifest, name))
            _check_audio(zf, entries, plan)
        except ArchiveError:
            raise
        except (*_DAMAGE, ValueError, RecursionError) as exc:
            # anything else a damaged archive can raise while being read
            raise ArchiveError(f"{name}: damaged archive ({exc})") from None
        yield zf, plan

"""Writing archives: streamed, so memory stays flat whatever their size, and atomic, so a
failed export leaves no partial file behind."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..library import Library, schema
from ..library.atomic import commit_temp, copy_hashed, temp_path
from .format import AUDIO_DIR, FORMAT_NAME, FORMAT_VERSION, MANIFEST, ArchiveError, iso

def _times(record: dict[str, Any]) -> dict[str, Any]:
    return {k: iso(v) if isinstance(v, datetime) else v for k, v in record.items()}


def _zip_time(when: datetime) -> tuple[int, int, int, int, int, int]:
    when = max(when.astimezone(timezone.utc), datetime(1980, 1, 1, tzinfo=timezone.utc))
    return when.timetuple()[:6]


def _add_audio(zf: zipfile.ZipFile, source: Path, entry: str, version: dict[str, Any], when: datetime) -> None:
    info = zipfile.ZipInfo(entry, date_time=_zip_time(when))
    info.compress_type = zipfile.ZIP_STORED  # audio does not deflate; stored streams at disk speed
    try:
        with open(source, "rb") as src, zf.open(info, "w", force_zip64=version["audio_bytes"] > 2**31) as dst:
            _, sha256 = copy_hashed(src, dst)
    except FileNotFoundError:
        raise ArchiveError(f"audio {source} is missing: the generation cannot be exported") from None
    if sha256 != version["audio_sha256"]:
        raise ArchiveError(f"audio {source} differs from what its sidecar records (sha256)")


def export_archive(
    library: Library,
    sidecars: list[Path],
    out: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Export the generations of these sidecars into ``out``. Returns a summary."""
    if not out.parent.is_dir():
        raise ArchiveError(f"{out.parent} is not a folder: the archive cannot be written there")
    tmp = temp_path(out)
    audio_bytes = 0
    try:
        with zipfile.ZipFile(tmp, "x", allowZip64=True) as zf:
            # the manifest first, as readers expect it; then the audio, read a second time from
            # the sidecars so that memory stays flat
            _write_manifest(zf, library, sidecars)
            for done, sidecar in enumerate(sidecars, 1):
                record = schema.read_generation(sidecar)
                for version in record["versions"]:
                    _add_audio(zf, library.absolute(version["audio_path"]), _entry(record, version),
                               version, record["created_at"])
                    audio_bytes += version["audio_bytes"]
                if progress is not None:
                    progress(done, len(sidecars))
        commit_temp(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"archive": str(out), "generations": len(sidecars), "audio_bytes": audio_bytes,
            "archive_bytes": out.stat().st_size}


def _entry(record: dict[str, Any], version: dict[str, Any]) -> str:
    return f"{AUDIO_DIR}/{record['id']}/{version['id']}{Path(version['audio_path']).suffix}"


def _manifest_entry(library: Library, sidecar: Path) -> bytes:
    """One generation of the manifest, as a line of JSON."""
    record = schema.read_generation(sidecar)
    for version in record["versions"]:
        entry = _entry(record, version)
        if version["id"] == record["active_version_id"]:
            record["audio_path"] = entry
        version["audio_path"] = entry
        chain = version["effects_chain"]
        version["effects_chain"] = None if chain is None else json.loads(chain)
    profile_path = library.profile_path(record["profile_id"])
    profile = schema.read_profile(profile_path) if profile_path.exists() else None
    if profile is not None:
        profile["extra"] = json.loads(profile["extra"] or "{}")
    entry = {
        **_times(record),
        "versions": [_times(v) for v in record["versions"]],
        "profile": None if profile is None else _times(profile),
    }
    try:
        return json.dumps(entry, ensure_ascii=False, allow_nan=False).encode()
    except ValueError as exc:
        raise ArchiveError(f"generation {record['id']!r} cannot be exported: {exc}") from None


def _write_manifest(zf: zipfile.ZipFile, library: Library, sidecars: list[Path]) -> None:
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "tool": "tts-history",
        "tool_version": _tool_version(),
        "exported_at": iso(schema.now()),
        "library_id": library.library_id(),
    }
    info = zipfile.ZipInfo(MANIFEST, _zip_time(schema.now()))
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as manifest:
        # streamed: one generation a line, never the whole list in memory
        manifest.write(json.dumps(header, indent=2, ensure_ascii=False)[:-2].encode())
        manifest.write(b',\n  "generations": [\n')
        for i, sidecar in enumerate(sidecars):
            manifest.write((b",\n" if i else b"") + b"    " + _manifest_entry(library, sidecar))
        manifest.write(b"\n  ]\n}\n")


def _tool_version() -> str:
    from .. import __version__

    return __version__

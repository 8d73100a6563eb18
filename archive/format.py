"""The archive format: a ZIP of ``manifest.json`` and the audio it names, and its validation.

``manifest.json``::

    {"format": "tts-history-archive", "version": 1,
     "tool": "tts-history", "tool_version": "...", "exported_at": "...Z",
     "library_id": "...",                       # the library it came from
     "generations": [
        {<every sidecar field, times as ISO 8601 UTC>,
         "profile": {"id", "name", "description", "language", "extra", "created_at",
                     "updated_at"} | null,
         "versions": [{<every version field>, "audio_path": "audio/<id>/<version>.wav"}],
         "audio_path": <the active version's archive entry>}
     ]}

Every version's audio is one entry, stored uncompressed (audio does not deflate, and stored
entries stream at disk speed); each version's ``audio_bytes`` and ``audio_sha256`` are checked
on import.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..library.schema import STATUSES

FORMAT_NAME = "tts-history-archive"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
AUDIO_DIR = "audio"


class ArchiveError(ValueError):
    """An archive cannot be exported or imported; the message names the archive, the entry or
    field, and the reason."""


@dataclass(frozen=True)
class Limits:
    """Caps that keep a hostile archive from exhausting disk or memory (configurable)."""

    max_total_bytes: int = 16 * 2**30  # uncompressed, all entries together
    max_ratio: float = 200.0  # uncompressed / compressed, per entry (zip bombs)
    max_manifest_bytes: int = 256 * 2**20
    max_entries: int = 1_000_000


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise ArchiveError(f"{where}: expected an ISO 8601 time, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ArchiveError(f"{where}: {value!r} is not an ISO 8601 time") from None
    # naive times are UTC (voicebox writes them so)
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed


_ENTRY = re.compile(r"[A-Za-z0-9._ ()'~-]+(/[A-Za-z0-9._ ()'~-]+)*")


def check_entry_name(name: str, archive: str) -> None:
    """Refuse names that could land outside the library or clash: absolute paths, drive
    letters, backslashes, ``..`` or ``.`` parts, empty parts, control characters."""
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or re.match(r"[A-Za-z]:", name)
        or any(part in ("", ".", "..") for part in parts)
        or not _ENTRY.fullmatch(name)
    ):
        raise ArchiveError(f"{archive}: entry {name!r} has an unsafe path")


# -- manifest validation -----------------------------------------------------------------------

_STR, _INT, _NUM, _BOOL = (str,), (int,), (int, float), (bool,)


def _field(obj: dict, key: str, kinds: tuple, where: str, *, required: bool = True) -> Any:
    if key not in obj or obj[key] is None:
        if required:
            raise ArchiveError(f"{where}: required field {key!r} is missing")
        return None
    value = obj[key]
    if isinstance(value, bool) and bool not in kinds:
        raise ArchiveError(f"{where}.{key}: expected {kinds[0].__name__}, got {value!r}")
    if not isinstance(value, kinds):
        raise ArchiveError(f"{where}.{key}: expected {kinds[0].__name__}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ArchiveError(f"{where}.{key}: {value!r} is not a finite number")
    return value


def _object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ArchiveError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _str_map(value: Any, where: str) -> dict[str, str]:
    value = _object(value, where)
    for key, item in value.items():
        if not isinstance(item, str):
            raise ArchiveError(f"{where}.{key}: expected a string, got {item!r}")
    return value


def validate_version(raw: Any, where: str) -> dict[str, Any]:
    raw = _object(raw, where)
    chain = _field(raw, "effects_chain", (list,), where, required=False)
    for i, effect in enumerate(chain or []):
        effect = _object(effect, f"{where}.effects_chain[{i}]")
        _field(effect, "type", _STR, f"{where}.effects_chain[{i}]")
        _field(effect, "enabled", _BOOL, f"{where}.effects_chain[{i}]", required=False)
        _object(effect.get("params", {}), f"{where}.effects_chain[{i}].params")
    version = {
        "id": _field(raw, "id", _STR, where),
        "label": _field(raw, "label", _STR, where, required=False),
        "audio_path": _field(raw, "audio_path", _STR, where),
        "effects_chain": chain,
        "is_default": _field(raw, "is_default", _BOOL, where),
        "created_at": parse_time(raw.get("created_at"), f"{where}.created_at"),
        "source_version_id": _field(raw, "source_version_id", _STR, where, required=False),
        "duration": _field(raw, "duration", _NUM, where),
        "sample_rate": _field(raw, "sample_rate", _INT, where),
        "channels": _field(raw, "channels", _INT, where),
        "audio_bytes": _field(raw, "audio_bytes", _INT, where),
        "audio_sha256": _field(raw, "audio_sha256", _STR, where),
    }
    if not re.fullmatch(r"[0-9a-f]{64}", version["audio_sha256"]):
        raise ArchiveError(f"{where}.audio_sha256: {version['audio_sha256']!r} is not a sha256")
    return version


def validate_profile(raw: Any, where: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    raw = _object(raw, where)
    return {
        "id": _field(raw, "id", _STR, where),
        "name": _field(raw, "name", _STR, where),
        "description": _field(raw, "description", _STR, where, required=False),
        "language": _field(raw, "language", _STR, where, required=False),
        "extra": _object(raw.get("extra") or {}, f"{where}.extra"),
        "created_at": parse_time(raw.get("created_at"), f"{where}.created_at"),
        "updated_at": parse_time(raw.get("updated_at"), f"{where}.updated_at"),
    }


def validate_generation(raw: Any, where: str) -> dict[str, Any]:
    """One manifest entry, as a sidecar record (audio paths are archive entry names)."""
    raw = _object(raw, where)
    record = {
        "id": _field(raw, "id", _STR, where),
        "profile_id": _field(raw, "profile_id", _STR, where),
        "text": _field(raw, "text", _STR, where),
        "status": _field(raw, "status", _STR, where),
        "is_favorited": _field(raw, "is_favorited", _BOOL, where),
        "created_at": parse_time(raw.get("created_at"), f"{where}.created_at"),
        "updated_at": parse_time(raw.get("updated_at"), f"{where}.updated_at"),
        "extra": _str_map(raw.get("extra") or {}, f"{where}.extra"),
    }
    for key in ("language", "instruct", "engine", "model_size", "error", "profile_name",
                "active_version_id", "origin_library_id", "origin_id"):
        record[key] = _field(raw, key, _STR, where, required=False)
    record["seed"] = _field(raw, "seed", _INT, where, required=False)
    record["host_duration"] = _field(raw, "host_duration", _NUM, where, required=False)
    if record["status"] not in STATUSES:
        raise ArchiveError(f"{where}.status: {record['status']!r} is not one of {', '.join(STATUSES)}")
    versions = _field(raw, "versions", (list,), where, required=False) or []
    record["versions"] = [validate_version(v, f"{where}.versions[{i}]") for i, v in enumerate(versions)]
    ids = [v["id"] for v in record["versions"]]
    if len(set(ids)) != len(ids):
        raise ArchiveError(f"{where}.versions: a version id appears twice")
    defaults = [v["id"] for v in record["versions"] if v["is_default"]]
    if record["versions"] and (len(defaults) != 1 or record["active_version_id"] != defaults[0]):
        raise ArchiveError(
            f"{where}: exactly one version must be the default, and it must be active_version_id"
        )
    if record["status"] == "completed" and not record["versions"]:
        raise ArchiveError(f"{where}: a completed generation needs its audio")
    record["profile"] = validate_profile(raw.get("profile"), f"{where}.profile")
    return record


def validate_manifest(raw: Any, archive: str) -> list[dict[str, Any]]:
    raw = _object(raw, f"{archive}: manifest")
    if raw.get("format") != FORMAT_NAME:
        raise ArchiveError(f"{archive}: manifest.format is {raw.get('format')!r}, not {FORMAT_NAME!r}")
    version = raw.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise ArchiveError(
            f"{archive}: manifest.version {version!r} is not one this tts-history reads (1 to "
            f"{FORMAT_VERSION})"
        )
    _field(raw, "library_id", _STR, f"{archive}: manifest")
    generations = _field(raw, "generations", (list,), f"{archive}: manifest")
    records = [
        validate_generation(g, f"{archive}: generations[{i}]") for i, g in enumerate(generations)
    ]
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise ArchiveError(f"{archive}: a generation id appears twice in the manifest")
    for record in records:
        # where it first came from: importing the same generation twice is then a no-op, even
        # through an export of an import
        if record["origin_id"] is None:
            record["origin_library_id"], record["origin_id"] = raw["library_id"], record["id"]
    return records

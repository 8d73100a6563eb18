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

from ..library import LibraryError, check_id
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
        # naive times are UTC (voicebox writes them so)
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise ArchiveError(f"{where}: {value!r} is not an ISO 8601 time in range") from None


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

_STR, _INT, _NUM, _BOOL = (str,), (int,), (float, int), (bool,)


_INT64 = 2**63
_KIND_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false",
               dict: "an object", list: "a list"}


def check_value(value: Any, where: str) -> Any:
    """Refuse what a sidecar cannot hold: non-finite numbers, integers beyond 64 bits, text
    that is not valid Unicode (lone surrogates); nested JSON data is checked throughout."""
    problem = _problem(value)
    if problem is not None:
        inside, reason = problem
        raise ArchiveError(f"{where}{inside}: {reason}")
    return value


def _problem(value: Any) -> tuple[str, str] | None:
    """What :func:`check_value` refuses in ``value``: (where inside it, why), or None. The
    place is spelled out only for a refusal: manifests are large, and almost always fine."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "", f"{value!r} is not valid Unicode text"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else ("", f"{value!r} is not a finite number")
    if isinstance(value, int):
        return None if -_INT64 <= value < _INT64 else ("", f"{value} does not fit in 64 bits")
    if isinstance(value, dict):
        for key, item in value.items():
            if (found := _problem(key)) is not None:
                return f" key{found[0]}", found[1]
            if (found := _problem(item)) is not None:
                return f".{key}{found[0]}", found[1]
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if (found := _problem(item)) is not None:
                return f"[{i}]{found[0]}", found[1]
    return None


def field(obj: dict, key: str, kinds: tuple, where: str, *, required: bool = True) -> Any:
    """``obj[key]``, which must be one of ``kinds`` (or missing/null unless ``required``)."""
    if not isinstance(obj, dict):
        raise ArchiveError(f"{where}: expected an object, got {type(obj).__name__}")
    if key not in obj or obj[key] is None:
        if required:
            raise ArchiveError(f"{where}: required field {key!r} is missing")
        return None
    value = obj[key]
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise ArchiveError(f"{where}.{key}: expected {_KIND_NAMES[kinds[0]]}, got {value!r}")
    return check_value(value, f"{where}.{key}")


def id_field(obj: dict, key: str, where: str, *, required: bool = True) -> str | None:
    """An id, which names files in the library: checked before anything is written."""
    value = field(obj, key, _STR, where, required=required)
    if value is not None:
        try:
            check_id(value, f"{where}.{key}")
        except LibraryError as exc:
            raise ArchiveError(str(exc)) from None
    return value


def effects_chain(raw: Any, where: str) -> list[dict[str, Any]] | None:
    """An effects chain as the hooks accept it: a list of ``{type, enabled, params}``."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ArchiveError(f"{where}: expected a list of effects, got {raw!r}")
    chain = []
    for i, effect in enumerate(raw):
        spot = f"{where}[{i}]"
        unknown = set(_object(effect, spot)) - {"type", "enabled", "params"}
        if unknown:
            raise ArchiveError(f"{spot}: unknown key(s) {sorted(unknown)}")
        kind = field(effect, "type", _STR, spot)
        if not kind:
            raise ArchiveError(f"{spot}.type: must not be empty")
        enabled = field(effect, "enabled", _BOOL, spot, required=False)
        params = field(effect, "params", (dict,), spot, required=False) or {}
        chain.append({"type": kind, "enabled": True if enabled is None else enabled, "params": params})
    return chain


def _object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ArchiveError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _str_map(value: Any, where: str) -> dict[str, str]:
    value = _object(value, where)
    for key, item in value.items():
        if not isinstance(item, str):
            raise ArchiveError(f"{where}.{key}: expected a string, got {item!r}")
    return check_value(value, where)


def validate_version(raw: Any, where: str) -> dict[str, Any]:
    raw = _object(raw, where)
    version = {
        "id": id_field(raw, "id", where),
        "label": field(raw, "label", _STR, where, required=False),
        "audio_path": field(raw, "audio_path", _STR, where),
        "effects_chain": effects_chain(raw.get("effects_chain"), f"{where}.effects_chain"),
        "is_default": field(raw, "is_default", _BOOL, where),
        "created_at": parse_time(raw.get("created_at"), f"{where}.created_at"),
        "source_version_id": id_field(raw, "source_version_id", where, required=False),
        "duration": field(raw, "duration", _NUM, where),
        "sample_rate": field(raw, "sample_rate", _INT, where),
        "channels": field(raw, "channels", _INT, where),
        "audio_bytes": field(raw, "audio_bytes", _INT, where),
        "audio_sha256": field(raw, "audio_sha256", _STR, where),
    }
    if not re.fullmatch(r"[0-9a-f]{64}", version["audio_sha256"]):
        raise ArchiveError(f"{where}.audio_sha256: {version['audio_sha256']!r} is not a sha256")
    return version


def validate_profile(raw: Any, where: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    raw = _object(raw, where)
    return {
        "id": id_field(raw, "id", where),
        "name": field(raw, "name", _STR, where),
        "description": field(raw, "description", _STR, where, required=False),
        "language": field(raw, "language", _STR, where, required=False),
        "extra": check_value(_object(raw.get("extra") or {}, f"{where}.extra"), f"{where}.extra"),
        "created_at": parse_time(raw.get("created_at"), f"{where}.created_at"),
        "updated_at": parse_time(raw.get("updated_at"), f"{where}.updated_at"),
    }


def validate_generation(raw: Any, where: str, library_id: str) -> dict[str, Any]:
    """One manifest entry, as a sidecar record (audio paths are archive entry names), from the
    library ``library_id``."""
    raw = _object(raw, where)
    record = {
        "id": field(raw, "id", _STR, where),
        "profile_id": id_field(raw, "profile_id", where),
        "text": field(raw, "text", _STR, where),
        "status": field(raw, "status", _STR, where),
        "is_favorited": field(raw, "is_favorited", _BOOL, where),
        "created_at": parse_time(raw.get("created_at"), f"{where}.created_at"),
        "updated_at": parse_time(raw.get("updated_at"), f"{where}.updated_at"),
        "extra": _str_map(raw.get("extra") or {}, f"{where}.extra"),
    }
    for key in ("language", "instruct", "engine", "model_size", "error", "profile_name",
                "active_version_id", "origin_library_id", "origin_id"):
        record[key] = field(raw, key, _STR, where, required=False)
    id_field(raw, "active_version_id", where, required=False)
    record["seed"] = field(raw, "seed", _INT, where, required=False)
    record["host_duration"] = field(raw, "host_duration", _NUM, where, required=False)
    if record["status"] not in STATUSES:
        raise ArchiveError(f"{where}.status: {record['status']!r} is not one of {', '.join(STATUSES)}")
    versions = field(raw, "versions", (list,), where, required=False) or []
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
    # where it first came from: importing the same generation twice is then a no-op, even
    # through an export of an import
    if record["origin_id"] is None:
        record["origin_library_id"], record["origin_id"] = library_id, record["id"]
    return record


def validate_manifest(raw: Any, archive: str) -> str:
    """The manifest's own fields, its generations aside (each is checked with
    :func:`validate_generation`); returns the id of the library they came from."""
    raw = _object(raw, f"{archive}: manifest")
    if raw.get("format") != FORMAT_NAME:
        raise ArchiveError(f"{archive}: manifest.format is {raw.get('format')!r}, not {FORMAT_NAME!r}")
    version = raw.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise ArchiveError(
            f"{archive}: manifest.version {version!r} is not one this tts-history reads (1 to "
            f"{FORMAT_VERSION})"
        )
    library_id = field(raw, "library_id", _STR, f"{archive}: manifest")
    field(raw, "generations", (list,), f"{archive}: manifest")
    return library_id

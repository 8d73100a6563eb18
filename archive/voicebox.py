"""Voicebox interoperability: its ``*.voicebox.zip`` archives and its data directory.

A voicebox archive holds ``manifest.json`` (``version`` "1.0"; ``generation``, ``profile``,
``versions`` with ``filename``) and ``audio/<filename>`` per version. Voicebox's own import keeps
only the first WAV; here every version is kept with its label and effects chain, and the one
marked ``is_default`` is the active one. Its manifest has no engine, model size, status or
favorite: an imported generation is completed, not a favorite, engine unknown.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from ..library.schema import STATUSES
from .format import AUDIO_DIR, ArchiveError, effects_chain, field, id_field, parse_time

ORIGIN = "voicebox"  # origin_library_id of everything that came from voicebox


def is_manifest(manifest: Any) -> bool:
    return isinstance(manifest, dict) and "generation" in manifest and manifest.get("version") == "1.0"


def _flag(obj: dict[str, Any], key: str, where: str) -> bool:
    """A true/false field; the database keeps them as 0 and 1."""
    value = obj.get(key)
    if value is None:
        return False
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise ArchiveError(f"{where}.{key}: expected true or false, got {value!r}")


def _no_constant(value: str) -> float:
    raise ValueError(f"{value} is not valid JSON")


def _chain(raw: Any, where: str) -> list[dict[str, Any]] | None:
    if isinstance(raw, str):  # the database keeps it as JSON text
        try:
            raw = json.loads(raw, parse_constant=_no_constant)
        except ValueError:
            raise ArchiveError(f"{where}: not valid JSON") from None
    return effects_chain(raw, where)


def make_record(
    generation: dict[str, Any],
    profile: dict[str, Any] | None,
    versions: list[dict[str, Any]],
    where: str,
) -> dict[str, Any]:
    """A sidecar record from voicebox's fields; versions carry ``audio_path`` (where the audio
    is: an archive entry or a file) and are measured later."""
    generation_id = field(generation, "id", (str,), where)
    created = parse_time(field(generation, "created_at", (str,), where), f"{where}.created_at")
    status = field(generation, "status", (str,), where, required=False) or "completed"
    status = "generating" if status == "pending" else status  # voicebox's word for it
    if status not in STATUSES:
        raise ArchiveError(f"{where}.status: {status!r} is not one voicebox writes")
    profile_id = id_field(generation, "profile_id", where, required=False)
    if profile is not None:
        profile_id = profile_id or id_field(profile, "id", f"{where}.profile")
    if profile_id is None:
        raise ArchiveError(f"{where}: no profile id")
    record: dict[str, Any] = {
        "id": generation_id,
        "profile_id": profile_id,
        "text": field(generation, "text", (str,), where),
        "language": field(generation, "language", (str,), where, required=False) or "en",
        "seed": field(generation, "seed", (int,), where, required=False),
        "instruct": field(generation, "instruct", (str,), where, required=False),
        "engine": field(generation, "engine", (str,), where, required=False),
        "model_size": field(generation, "model_size", (str,), where, required=False),
        "status": status,
        "error": field(generation, "error", (str,), where, required=False),
        "is_favorited": _flag(generation, "is_favorited", where),
        "created_at": created,
        "updated_at": created,
        "host_duration": field(generation, "duration", (float, int), where, required=False),
        "profile_name": None,
        "extra": {},
        "origin_library_id": ORIGIN,
        "origin_id": None,
        "profile": None,
        "versions": [],
    }
    record["origin_id"] = record["id"]
    if profile is not None:
        spot = f"{where}.profile"
        record["profile"] = {
            "id": id_field(profile, "id", spot),
            "name": field(profile, "name", (str,), spot),
            "description": field(profile, "description", (str,), spot, required=False),
            "language": field(profile, "language", (str,), spot, required=False),
            "extra": {},
            "created_at": created,
            "updated_at": created,
        }
        record["profile_name"] = record["profile"]["name"]
    for i, raw in enumerate(versions):
        spot = f"{where}.versions[{i}]"
        record["versions"].append(
            {
                "id": id_field(raw, "id", spot),
                "label": field(raw, "label", (str,), spot, required=False),
                "audio_path": raw["audio_path"],
                "effects_chain": _chain(raw.get("effects_chain"), f"{spot}.effects_chain"),
                "is_default": _flag(raw, "is_default", spot),
                "created_at": parse_time(raw["created_at"], f"{spot}.created_at")
                if raw.get("created_at")
                else created,
                "source_version_id": id_field(raw, "source_version_id", spot, required=False),
            }
        )
    ids = [v["id"] for v in record["versions"]]
    if len(set(ids)) != len(ids):
        raise ArchiveError(f"{where}: a version id appears twice")
    defaults = [v for v in record["versions"] if v["is_default"]] or record["versions"][:1]
    for version in record["versions"]:
        version["is_default"] = version is defaults[0]
    record["active_version_id"] = defaults[0]["id"] if defaults else None
    return record


def record_from_manifest(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    where = f"{name}: manifest"
    versions = field(manifest, "versions", (list,), where, required=False) or []
    for i, version in enumerate(versions):
        filename = field(version, "filename", (str,), f"{where}.versions[{i}]")
        version["audio_path"] = f"{AUDIO_DIR}/{filename}"
    profile = field(manifest, "profile", (dict,), where, required=False)
    generation = field(manifest, "generation", (dict,), where)
    record = make_record(generation, profile, versions, f"{where}.generation")
    if not record["versions"]:
        raise ArchiveError(f"{where}: has no versions, so no audio to import")
    return record


def read_data_dir(data_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Records from a voicebox data directory's SQLite database, opened read-only. Returns
    (records, problems); a record's version audio paths are absolute files, checked later."""
    candidates = sorted(data_dir.glob("*.db")) + sorted(data_dir.glob("*.sqlite"))
    if not candidates:
        raise ArchiveError(f"{data_dir}: no voicebox database (*.db) in this folder")
    database = candidates[0]
    uri = f"{database.resolve().as_uri()}?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise ArchiveError(f"{database}: cannot be opened ({exc})") from None
    con.row_factory = sqlite3.Row
    try:
        profiles = {row["id"]: dict(row) for row in con.execute("SELECT * FROM profiles")}
        generations = [dict(row) for row in con.execute("SELECT * FROM generations ORDER BY created_at, id")]
        versions: dict[str, list[dict[str, Any]]] = {}
        try:
            rows = con.execute("SELECT * FROM generation_versions ORDER BY created_at, id").fetchall()
        except sqlite3.OperationalError:  # older voicebox: no versions table
            rows = []
        for row in rows:
            versions.setdefault(row["generation_id"], []).append(dict(row))
    except sqlite3.Error as exc:
        raise ArchiveError(f"{database}: not a voicebox database ({exc})") from None
    finally:
        con.close()
    records, problems = [], []
    for generation in generations:
        where = f"{database.name}: generation {generation.get('id')!r}"
        raw_versions = versions.get(generation["id"]) or (
            [{"id": f"{generation['id']}-original", "label": "original", "is_default": True,
              "audio_path": generation["audio_path"], "effects_chain": None}]
            if generation.get("audio_path") else []
        )
        for version in raw_versions:
            version["audio_path"] = str(data_dir / version["audio_path"]) if version.get("audio_path") else None
        try:
            without_audio = generation.get("status") in ("failed", "pending")
            if without_audio:  # nothing was generated, whatever paths the row still holds
                raw_versions = []
            missing = [
                v["audio_path"] or "(none)"
                for v in raw_versions
                if not v["audio_path"] or not Path(v["audio_path"]).is_file()
            ]
            if missing:
                problems.append({"id": generation["id"], "reason": f"audio missing: {', '.join(missing)}"})
                continue
            if not without_audio and not raw_versions:
                problems.append({"id": generation["id"], "reason": "no audio recorded"})
                continue
            record = make_record(generation, profiles.get(generation.get("profile_id")), raw_versions, where)
        except ArchiveError as exc:
            problems.append({"id": str(generation.get("id")), "reason": str(exc)})
            continue
        records.append(record)
    return records, problems

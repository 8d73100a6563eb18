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
from .format import AUDIO_DIR, ArchiveError, parse_time

ORIGIN = "voicebox"  # origin_library_id of everything that came from voicebox


def is_manifest(manifest: Any) -> bool:
    return isinstance(manifest, dict) and "generation" in manifest and manifest.get("version") == "1.0"


def _get(obj: Any, key: str, kinds: tuple, where: str, *, required: bool = True) -> Any:
    if not isinstance(obj, dict):
        raise ArchiveError(f"{where}: expected an object")
    value = obj.get(key)
    if value is None:
        if required:
            raise ArchiveError(f"{where}: required field {key!r} is missing")
        return None
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise ArchiveError(f"{where}.{key}: expected {kinds[0].__name__}, got {value!r}")
    return value


def _effects(raw: Any, where: str) -> list[dict[str, Any]] | None:
    if raw is None:
        return None
    if isinstance(raw, str):  # the database keeps it as JSON text
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ArchiveError(f"{where}: effects_chain is not valid JSON") from None
        if raw is None:
            return None
    if not isinstance(raw, list):
        raise ArchiveError(f"{where}: effects_chain must be a list, got {raw!r}")
    chain = []
    for i, effect in enumerate(raw):
        spot = f"{where}.effects_chain[{i}]"
        enabled = effect.get("enabled", True) if isinstance(effect, dict) else True
        if not isinstance(enabled, bool):
            raise ArchiveError(f"{spot}.enabled: expected true or false, got {enabled!r}")
        chain.append(
            {
                "type": _get(effect, "type", (str,), spot),
                "enabled": enabled,
                "params": _get(effect, "params", (dict,), spot, required=False) or {},
            }
        )
    return chain


def make_record(
    generation: dict[str, Any],
    profile: dict[str, Any] | None,
    versions: list[dict[str, Any]],
    where: str,
) -> dict[str, Any]:
    """A sidecar record from voicebox's fields; versions carry ``audio_path`` (where the audio
    is: an archive entry or a file) and are measured later."""
    created = parse_time(_get(generation, "created_at", (str,), where), f"{where}.created_at")
    record: dict[str, Any] = {
        "id": _get(generation, "id", (str,), where),
        "profile_id": _get(generation, "profile_id", (str,), where, required=False)
        or (profile or {}).get("id"),
        "text": _get(generation, "text", (str,), where),
        "language": _get(generation, "language", (str,), where, required=False) or "en",
        "seed": _get(generation, "seed", (int,), where, required=False),
        "instruct": _get(generation, "instruct", (str,), where, required=False),
        "engine": _get(generation, "engine", (str,), where, required=False),
        "model_size": _get(generation, "model_size", (str,), where, required=False),
        # voicebox says 'pending' for what is still being generated
        "status": {"pending": "generating", None: "completed"}.get(
            generation.get("status"), generation.get("status")
        ),
        "error": _get(generation, "error", (str,), where, required=False),
        "is_favorited": bool(generation.get("is_favorited") or False),
        "created_at": created,
        "updated_at": created,
        "host_duration": _get(generation, "duration", (int, float), where, required=False),
        "profile_name": (profile or {}).get("name"),
        "extra": {},
        "origin_library_id": ORIGIN,
        "origin_id": generation["id"],
        "profile": None,
        "versions": [],
    }
    if record["profile_id"] is None:
        raise ArchiveError(f"{where}: no profile id")
    if record["status"] not in STATUSES:
        raise ArchiveError(f"{where}: status {record['status']!r} is not one voicebox writes")
    if profile is not None:
        record["profile"] = {
            "id": _get(profile, "id", (str,), f"{where}.profile"),
            "name": _get(profile, "name", (str,), f"{where}.profile"),
            "description": _get(profile, "description", (str,), f"{where}.profile", required=False),
            "language": _get(profile, "language", (str,), f"{where}.profile", required=False),
            "extra": {},
            "created_at": created,
            "updated_at": created,
        }
    for i, raw in enumerate(versions):
        spot = f"{where}.versions[{i}]"
        record["versions"].append(
            {
                "id": _get(raw, "id", (str,), spot),
                "label": _get(raw, "label", (str,), spot, required=False),
                "audio_path": raw["audio_path"],
                "effects_chain": _effects(raw.get("effects_chain"), spot),
                "is_default": bool(raw.get("is_default")),
                "created_at": parse_time(raw["created_at"], f"{spot}.created_at")
                if raw.get("created_at")
                else created,
                "source_version_id": raw.get("source_version_id"),
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
    versions = _get(manifest, "versions", (list,), where, required=False) or []
    for i, version in enumerate(versions):
        filename = _get(version, "filename", (str,), f"{where}.versions[{i}]")
        version["audio_path"] = f"{AUDIO_DIR}/{filename}"
    profile = _get(manifest, "profile", (dict,), where, required=False)
    record = make_record(_get(manifest, "generation", (dict,), where), profile, versions, where)
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
            version["is_default"] = bool(version.get("is_default"))
        try:
            if generation.get("status") == "failed":
                raw_versions = []
            missing = [v["audio_path"] or "(none)" for v in raw_versions if not v["audio_path"] or not Path(v["audio_path"]).is_file()]
            if missing:
                problems.append({"id": generation["id"], "reason": f"audio missing: {', '.join(missing)}"})
                continue
            if generation.get("status") not in ("failed",) and not raw_versions:
                problems.append({"id": generation["id"], "reason": "no audio recorded"})
                continue
            record = make_record(generation, profiles.get(generation.get("profile_id")), raw_versions, where)
        except ArchiveError as exc:
            problems.append({"id": str(generation.get("id")), "reason": str(exc)})
            continue
        records.append(record)
    return records, problems

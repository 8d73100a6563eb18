"""Importing archives and voicebox data into a library.

Everything is checked before anything is written (see ``reader``). A generation gets a new id
and keeps the rest as exported; where it came from (``origin_library_id``, ``origin_id``) is
recorded, so importing the same archive again changes nothing unless ``as_new`` is given.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ContextManager

from ..index import Index
from ..plugin import HistoryPlugin
from . import voicebox
from .format import ArchiveError, Limits
from .reader import open_archive


@dataclass
class ImportReport:
    imported: list[dict[str, str]] = field(default_factory=list)  # source, id, new_id
    skipped: list[dict[str, str]] = field(default_factory=list)  # source, id, reason

    def as_dict(self) -> dict[str, Any]:
        return {"imported": self.imported, "skipped": self.skipped}


class _Importer:
    def __init__(self, plugin: HistoryPlugin, index: Index, as_new: bool) -> None:
        self.plugin = plugin
        self.as_new = as_new
        index.sync()
        with index.reading() as con:
            self.seen = set(
                con.execute(
                    "SELECT origin_library_id, origin_id FROM generations WHERE origin_id IS NOT NULL "
                    "UNION SELECT ?, id FROM generations",
                    [plugin.library.library_id()],
                ).fetchall()
            )
        self.profiles = {p["id"]: p for p in plugin.store.profiles()}
        self.written: list[str] = []
        self.created_profiles: list[str] = []

    def already(self, record: dict[str, Any]) -> bool:
        return not self.as_new and (record["origin_library_id"], record["origin_id"]) in self.seen

    def _profile(self, record: dict[str, Any]) -> None:
        """Match the profile by id, then by name; else create it from the record."""
        if record["profile_id"] in self.profiles:
            return
        given = record.get("profile")
        name = (given or {}).get("name") or record.get("profile_name")
        by_name = [p for p in self.profiles.values() if name is not None and p["name"] == name]
        if by_name:
            record["profile_id"] = by_name[0]["id"]
        elif given is not None:
            profile = {**given, "extra": json.dumps(given.get("extra") or {}, ensure_ascii=False)}
            self.plugin.store.write_profile(profile)
            self.profiles[profile["id"]] = profile
            self.created_profiles.append(profile["id"])

    def write(
        self,
        record: dict[str, Any],
        open_audio: Callable[[dict[str, Any]], ContextManager[BinaryIO]],
    ) -> str:
        record = {**record, "versions": [dict(v) for v in record["versions"]]}
        self._profile(record)
        record.pop("profile", None)
        for version in record["versions"]:
            if version["effects_chain"] is not None and not isinstance(version["effects_chain"], str):
                version["effects_chain"] = json.dumps(version["effects_chain"], ensure_ascii=False)
        record["id"] = str(uuid.uuid4())
        self.plugin.import_record(record, open_audio)
        self.written.append(record["id"])
        self.seen.add((record["origin_library_id"], record["origin_id"]))
        return record["id"]

    def forget_profiles_since(self, count: int) -> None:
        """Remove the profiles created after the first ``count`` (their generation failed)."""
        for profile_id in self.created_profiles[count:]:
            self.plugin.store.remove_profile(profile_id)
            self.profiles.pop(profile_id, None)
        del self.created_profiles[count:]

    def roll_back(self) -> None:
        with self.plugin.store.transaction():
            for generation_id in self.written:
                self.plugin.store.remove(generation_id)
            for profile_id in self.created_profiles:
                self.plugin.store.remove_profile(profile_id)


def import_archives(
    plugin: HistoryPlugin,
    index: Index,
    paths: Iterable[str | Path],
    *,
    as_new: bool = False,
    limits: Limits = Limits(),
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import archives (tts-history's or voicebox's). Every archive is checked before the first
    is written; if any write fails, everything this call wrote is removed again."""
    report = ImportReport()
    importer = _Importer(plugin, index, as_new)
    with ExitStack() as stack:
        opened = [stack.enter_context(open_archive(path, limits)) for path in paths]
        total = sum(len(plan.records) for _, plan in opened)
        done = 0
        try:
            for zf, plan in opened:
                for record in plan.records:
                    done += 1
                    source = {"source": str(plan.path), "id": record["id"]}
                    if importer.already(record):
                        report.skipped.append({**source, "reason": "already imported"})
                    else:
                        new_id = importer.write(record, lambda v, zf=zf: zf.open(v["audio_path"]))
                        report.imported.append({**source, "new_id": new_id})
                    if progress is not None:
                        progress(done, total)
        except BaseException:
            importer.roll_back()
            raise
    return report


def import_voicebox_dir(
    plugin: HistoryPlugin,
    index: Index,
    data_dir: str | Path,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Migrate a voicebox data directory (read only). Idempotent; a generation whose audio is
    missing or broken is reported and skipped, and never stops the rest."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ArchiveError(f"{data_dir}: not a folder")
    records, problems = voicebox.read_data_dir(data_dir)
    report = ImportReport(skipped=[{"source": str(data_dir), **p} for p in problems])
    importer = _Importer(plugin, index, as_new=False)
    for done, record in enumerate(records, 1):
        source = {"source": str(data_dir), "id": record["origin_id"]}
        if importer.already(record):
            report.skipped.append({**source, "reason": "already imported"})
        else:
            created = len(importer.created_profiles)
            try:
                new_id = importer.write(record, lambda v: open(v["audio_path"], "rb"))
            except (ValueError, OSError) as exc:  # this generation only: its audio is broken
                importer.forget_profiles_since(created)
                report.skipped.append({**source, "reason": str(exc)})
            else:
                report.imported.append({**source, "new_id": new_id})
        if progress is not None:
            progress(done, len(records))
    return report

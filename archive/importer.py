"""Importing archives and voicebox data into a library.

Everything is checked before any generation is written (see ``reader``): each audio entry is
read once, into a hidden temp file beside its final place while it is measured, and checked
against the manifest, and each sidecar is written under a temp name; only when every entry of
every archive has checked out is everything moved into place, at once. A generation gets a new
id and keeps the rest as exported; where it came from (``origin_library_id``, ``origin_id``) is
recorded, so importing the same archive again changes nothing unless ``as_new`` is given.
"""

from __future__ import annotations

import json
import uuid
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from ..index import Index
from ..library import Library
from ..plugin import HistoryPlugin
from ..plugin.audio import InvalidAudioError, PreparedAudio, from_stream, measure_stream
from ..plugin.history import ImportItem
from . import voicebox
from .format import ArchiveError, Limits
from .reader import Plan, check_audio, open_archive, open_audio, where_of

# Threads reading generations: one thread's reading and hashing overlaps another's encoding.
# The syncs run on threads of their own (see ``import_records``), so two readers keep 2 cores
# busy and more only contend for the interpreter lock (a 2 GB archive on 2 cores: 2 readers
# 140-145 MB/s, 4 readers 130-135).
_READERS = 2
# Generations a reader takes at a time: their sidecars are encoded together, which saves
# ~0.1 ms of interpreter-locked time each (see ``library.schema.encode_generations``).
_CHUNK = 16

Add = Callable[[Sequence[ImportItem]], None]


@dataclass
class ImportReport:
    imported: list[dict[str, str]] = field(default_factory=list)  # source, id, new_id
    skipped: list[dict[str, str]] = field(default_factory=list)  # source, id, reason

    def as_dict(self) -> dict[str, Any]:
        return {"imported": self.imported, "skipped": self.skipped}


@dataclass
class _Job:
    """A generation of an archive, and ``record``, what is written of it (None: skipped)."""

    zf: zipfile.ZipFile
    plan: Plan
    original: dict[str, Any]
    record: dict[str, Any] | None


class _Importer:
    def __init__(self, plugin: HistoryPlugin, index: Index, as_new: bool) -> None:
        self.plugin = plugin
        self.as_new = as_new
        self.library_id = plugin.library.library_id()
        index.sync()
        with index.reading() as con:
            self.seen = set(
                con.execute(
                    "SELECT origin_library_id, origin_id FROM generations WHERE origin_id IS NOT NULL "
                    "UNION SELECT ?, id FROM generations",
                    [self.library_id],
                ).fetchall()
            )
        self.profiles = {p["id"]: p for p in plugin.store.profiles()}  # and those to create
        self.new_profiles: list[dict[str, Any]] = []  # to create, when the generations are written
        self.created_profiles: list[str] = []

    def already(self, record: dict[str, Any]) -> bool:
        return not self.as_new and (record["origin_library_id"], record["origin_id"]) in self.seen

    def fresh(self, record: dict[str, Any]) -> dict[str, Any]:
        """What is written of ``record``: a copy under a new id, one that no sidecar the index
        knows has, and with its profile matched or noted to be created."""
        given = record.get("profile")
        record = {**record, "versions": [dict(v) for v in record["versions"]]}
        record.pop("profile", None)
        self._profile(record, given)
        for version in record["versions"]:
            if version["effects_chain"] is not None and not isinstance(version["effects_chain"], str):
                version["effects_chain"] = json.dumps(version["effects_chain"], ensure_ascii=False)
        while (self.library_id, new_id := str(uuid.uuid4())) in self.seen:
            continue
        record["id"] = new_id
        self.seen.update({(self.library_id, new_id), (record["origin_library_id"], record["origin_id"])})
        return record

    def _profile(self, record: dict[str, Any], given: dict[str, Any] | None) -> None:
        """Match the profile by id, then by name; else note it to be created from ``given``."""
        if record["profile_id"] in self.profiles:
            return
        name = (given or {}).get("name") or record.get("profile_name")
        by_name = [p for p in self.profiles.values() if name is not None and p["name"] == name]
        if by_name:
            record["profile_id"] = by_name[0]["id"]
        elif given is not None:
            profile = {**given, "extra": json.dumps(given.get("extra") or {}, ensure_ascii=False)}
            self.profiles[profile["id"]] = profile
            self.new_profiles.append(profile)

    def write_profiles(self) -> None:
        for profile in self.new_profiles:
            self.plugin.store.write_profile(profile)
            self.created_profiles.append(profile["id"])
        self.new_profiles.clear()

    def forget_profiles_since(self, count: int) -> None:
        """Forget the profiles still to create, and remove those created after the first
        ``count`` (their generations were not written)."""
        for profile in self.new_profiles:
            self.profiles.pop(profile["id"], None)
        self.new_profiles.clear()
        with self.plugin.store.transaction():
            for profile_id in self.created_profiles[count:]:
                self.plugin.store.remove_profile(profile_id)
                self.profiles.pop(profile_id, None)
        del self.created_profiles[count:]


def _take(library: Library, jobs: list[_Job], add: Add) -> None:
    """Read each audio entry of a few generations once and check it: into a temp file beside
    its final place if the generation is imported (then all handed to ``add``), else into
    nothing kept."""
    items: list[ImportItem] = []
    try:
        for job in jobs:
            audio: dict[str, PreparedAudio] = {}
            if job.record is not None:
                items.append((job.record, audio))
            for version in job.original["versions"]:
                where = where_of(job.plan, job.original, version)
                entry = version["audio_path"]
                try:
                    with open_audio(job.zf, entry, where) as stream:
                        if job.record is None:
                            found = measure_stream(stream, entry)
                        else:
                            final = library.audio_path(
                                job.record["id"], job.record["created_at"], version["id"], ".wav"
                            )
                            prepared = audio[version["id"]] = from_stream(stream, final, entry, sync=False)
                            found = prepared.facts()
                except InvalidAudioError as exc:
                    raise ArchiveError(f"{where}: audio entry {entry!r} {exc.reason}") from None
                check_audio(job.plan, version, found, where)
    except BaseException:
        for _, audio in items:
            for prepared in audio.values():
                prepared.tmp.unlink(missing_ok=True)
        raise
    if items:
        add(items)


def _jobs(
    importer: _Importer, opened: list[tuple[zipfile.ZipFile, Plan]], report: ImportReport
) -> Iterator[_Job]:
    """Every generation of the archives in order, imported or skipped, as ``report`` says."""
    for zf, plan in opened:
        path = str(plan.path)
        for record in plan.records():
            if importer.already(record):
                report.skipped.append({"source": path, "id": record["id"], "reason": "already imported"})
                yield _Job(zf, plan, record, None)
            else:
                fresh = importer.fresh(record)
                report.imported.append({"source": path, "id": record["id"], "new_id": fresh["id"]})
                yield _Job(zf, plan, record, fresh)


def _take_all(library: Library, jobs: Iterable[_Job], add: Add, step: Callable[[int], None]) -> None:
    """:func:`_take` every job, a chunk at a time, in a window that keeps memory flat. The
    first failure in archive order is raised once the chunks under way have ended."""
    pool = ThreadPoolExecutor(max_workers=_READERS)
    window: deque[tuple[Future[None], int]] = deque()
    jobs = iter(jobs)
    try:
        while chunk := list(islice(jobs, _CHUNK)):
            window.append((pool.submit(_take, library, chunk, add), len(chunk)))
            if len(window) > 2 * _READERS:
                future, count = window.popleft()
                future.result()
                step(count)
        while window:
            future, count = window.popleft()
            future.result()
            step(count)
    finally:
        pool.shutdown(cancel_futures=True)


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
    generation is written; if any write fails, everything this call wrote is removed again."""
    report = ImportReport()
    importer = _Importer(plugin, index, as_new)
    with ExitStack() as stack:
        opened = [stack.enter_context(open_archive(path, limits)) for path in paths]
        total = sum(plan.count for _, plan in opened)
        done = 0

        def step(count: int) -> None:
            nonlocal done
            done += count
            if progress is not None:
                progress(done, total)

        try:
            with plugin.import_records() as add:
                _take_all(plugin.library, _jobs(importer, opened, report), add, step)
                importer.write_profiles()
        except BaseException:
            importer.forget_profiles_since(0)
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
            fresh = importer.fresh(record)
            audio: dict[str, PreparedAudio] = {}
            try:
                with plugin.import_records() as add:
                    for version in fresh["versions"]:
                        source_file = version["audio_path"]
                        final = plugin.library.audio_path(
                            fresh["id"], fresh["created_at"], version["id"], ".wav"
                        )
                        with open(source_file, "rb") as stream:
                            audio[version["id"]] = from_stream(stream, final, source_file, sync=False)
                    add([(fresh, audio)])
                    importer.write_profiles()
            except (ValueError, OSError) as exc:  # this generation only: its audio is broken
                importer.forget_profiles_since(created)
                report.skipped.append({**source, "reason": str(exc)})
            else:
                report.imported.append({**source, "new_id": fresh["id"]})
            finally:
                for prepared in audio.values():
                    prepared.tmp.unlink(missing_ok=True)  # left only if something failed
        if progress is not None:
            progress(done, len(records))
    return report

"""``History``: one library, from Python, the way the CLI uses it.

Changes go through the hook contract (so every plugin hears of them, exactly as when a host
makes them); reads come from the index, brought in step with the folder first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import pluggy

from .hooks import InvalidValueError, get_plugin_manager
from .index import Filters, Index, NotFoundError, SyncReport
from .index.watch import watcher_running
from .library import LibraryError
from .library.atomic import atomic_write, copy_hashed, stale_temp_files
from .plugin import HistoryPlugin

if TYPE_CHECKING:
    from .archive import ImportReport, Limits


class History:
    """A library and its index.

    :param library: the library folder (default: ``$TTS_HISTORY_LIBRARY``, else per user).
    :param index_path: where the index lives (default: per machine, outside the library).
    :param plugin_manager: a host's own manager (from ``get_plugin_manager``), if it has one.
    :param auto_sync: bring the index in step with the folder before every read.
    """

    def __init__(
        self,
        library: str | Path | None = None,
        *,
        index_path: str | Path | None = None,
        plugin_manager: pluggy.PluginManager | None = None,
        auto_sync: bool = True,
    ) -> None:
        self.pm = plugin_manager or get_plugin_manager(library)
        plugin = self.pm.get_plugin("tts_history.history")
        assert isinstance(plugin, HistoryPlugin)
        self.plugin = plugin
        self.library = plugin.library
        self.index = Index(self.library, index_path)
        self.auto_sync = auto_sync

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.pm.hook

    def sync(
        self, *, full: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> SyncReport:
        return self.index.sync(full=full, progress=progress)

    def _fresh(self) -> Index:
        # a running watcher keeps the index current; syncing too would only add contention
        if self.auto_sync and not watcher_running(self.index):
            self.index.sync()
        return self.index

    # -- reads -----------------------------------------------------------------------------

    def list(
        self, *, limit: int = 50, offset: int = 0, cursor: str | None = None, **filters: Any
    ) -> dict[str, Any]:
        """The seed's list: newest first, ``{"items", "total", "next_cursor"}``. Filters:
        profile_id, search, language, engine, status, favorites, since, until."""
        return self._fresh().list(Filters(**filters), limit=limit, offset=offset, cursor=cursor)

    def get(self, generation_id: str) -> dict[str, Any]:
        try:
            return self._fresh().get(generation_id)
        except NotFoundError:
            # written a moment ago, and the watcher has not caught up yet: look for ourselves
            path = self.plugin.store.sidecar_of(generation_id)
            if path is None:
                raise
            self._refresh([path])
            return self.index.get(generation_id)

    def stats(self) -> dict[str, Any]:
        return self._fresh().stats()

    def sql(self, query: str) -> tuple[list[str], list[tuple]]:
        return self._fresh().sql(query)

    # -- changes ---------------------------------------------------------------------------

    def _require(self, generation_id: str) -> dict[str, Any]:
        record = self.plugin.store.read(generation_id)
        if record is None:
            raise NotFoundError(f"generation {generation_id!r} not found")
        return record

    def delete(self, generation_ids: Iterable[str]) -> list[str]:
        """Delete generations (sidecar and every audio file). All ids are checked first: if one
        is unknown, nothing is deleted."""
        ids = list(dict.fromkeys(generation_ids))
        sidecars = {i: self.plugin.store.sidecars_of(i) for i in ids}
        missing = [i for i, paths in sidecars.items() if not paths]
        if missing:
            raise NotFoundError(f"generation(s) not found: {', '.join(missing)}")
        for generation_id in ids:
            self.hook.tts_history_generation_deleted(generation_id=generation_id)
        self._refresh(path for paths in sidecars.values() for path in paths)
        return ids

    def favorite(self, generation_id: str, value: bool | None = None) -> bool:
        """Set the favorite mark (``value``), or flip it (None). Returns the new state."""
        record = self._require(generation_id)
        new = (not record["is_favorited"]) if value is None else value
        self.hook.tts_history_favorite_set(generation_id=generation_id, is_favorited=new)
        self._refresh([self.plugin.store.sidecar_of(generation_id)])
        return new

    def _refresh(self, sidecars: Iterable[Path | None]) -> None:
        """Show a change made here at once: re-read just the folders it touched."""
        folders = {self.library.relative(p.parent) for p in sidecars if p is not None}
        self.index.sync(within=folders)

    def conflicts(self) -> list[dict[str, Any]]:
        """Open conflicts: generation ids held by more than one sidecar, profile copies."""
        return self._fresh().conflicts()

    def resolve(self, generation_ids: Iterable[str] | None = None) -> list[str]:
        """Merge the sidecars of these conflicting generations (None: every open conflict, and
        profile copies too) by the documented rule, and remove the copies. Returns what was
        resolved: generation ids, and the paths of profile copies."""
        open_conflicts = self.conflicts()
        wanted = None if generation_ids is None else set(generation_ids)
        known = {c["id"] for c in open_conflicts if c["kind"] == "generation"}
        if wanted is not None and wanted - known:
            raise NotFoundError(f"no open conflict for: {', '.join(sorted(wanted - known))}")
        done: list[str] = []
        for conflict in open_conflicts:
            if conflict["kind"] == "generation" and (wanted is None or conflict["id"] in wanted):
                paths = [Path(s["sidecar_path"]) for s in conflict["sidecars"]]
                self.plugin.resolve_copies(conflict["id"], paths)
                done.append(conflict["id"])
            elif conflict["kind"] == "profile" and wanted is None:
                self.plugin.resolve_profile_copy(Path(conflict["sidecar_path"]))
                done.append(conflict["sidecar_path"])
        self.index.sync()
        return done

    # -- archives --------------------------------------------------------------------------

    def export(
        self,
        out: str | Path,
        generation_ids: Iterable[str] | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
        **filters: Any,
    ) -> dict[str, Any]:
        """Export generations (these ids, or every one matching the list filters) into the ZIP
        archive ``out``. Returns a summary."""
        from .archive import export_archive

        index = self._fresh()
        if generation_ids is not None:
            ids = list(dict.fromkeys(generation_ids))
            found = index.sidecars(ids=ids)
            missing = [i for i in ids if i not in found]
            if missing:
                raise NotFoundError(f"generation(s) not found: {', '.join(missing)}")
            sidecars = [found[i] for i in ids]
        else:
            sidecars = list(index.sidecars(Filters(**filters)).values())
        return export_archive(self.library, sidecars, Path(out), progress=progress)

    def export_audio(self, generation_id: str, out: str | Path, version_id: str | None = None) -> Path:
        """Copy the active version's audio (or ``version_id``'s) to ``out``: a file, or a folder
        to write ``<id><suffix>`` in (``<id>.<version id><suffix>`` for a version asked for).
        The copy is checked against the sha256 its sidecar records; what fails is not kept."""
        item = self.get(generation_id)
        wanted = version_id or item["active_version_id"]
        if wanted is None:
            raise NotFoundError(f"generation {generation_id!r} has no audio (its status is {item['status']})")
        version = next((v for v in item["versions"] if v["id"] == wanted), None)
        if version is None:
            raise NotFoundError(f"generation {generation_id!r} has no version {wanted!r}")
        source = Path(version["audio_path"])
        out = Path(out)
        if out.is_dir():
            target = out / f"{generation_id}{'' if version_id is None else '.' + version_id}{source.suffix}"
        elif out.suffix and out.suffix.lower() != source.suffix.lower():
            raise InvalidValueError(
                f"{out}: the audio is {source.suffix} and is copied as it is, not converted; "
                f"name the file {out.stem}{source.suffix}"
            )
        else:
            target = out
        if not target.parent.is_dir():
            raise NotFoundError(f"{target.parent} is not a folder: the audio cannot be written there")

        def copy(dst: BinaryIO) -> None:
            _, sha256 = copy_hashed(src, dst)
            if sha256 != version["audio_sha256"]:
                raise LibraryError(f"audio {source} differs from what its sidecar records (sha256)")

        try:
            with open(source, "rb") as src:
                atomic_write(target, copy)
        except FileNotFoundError:
            raise NotFoundError(f"the audio of generation {generation_id!r} is missing: {source}") from None
        return target

    def import_archives(
        self,
        paths: Iterable[str | Path],
        *,
        as_new: bool = False,
        limits: Limits | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ImportReport:
        """Import tts-history or voicebox archives; see :mod:`tts_history.archive.importer`."""
        from .archive import Limits, import_archives

        report = import_archives(
            self.plugin, self.index, paths, as_new=as_new, limits=limits or Limits(), progress=progress
        )
        self.index.sync()
        return report

    def import_voicebox(
        self, data_dir: str | Path, *, progress: Callable[[int, int], None] | None = None
    ) -> ImportReport:
        """Migrate a voicebox data directory (its database and audio are only read)."""
        from .archive import import_voicebox_dir

        report = import_voicebox_dir(self.plugin, self.index, data_dir, progress=progress)
        self.index.sync()
        return report

    def cleanup(
        self,
        *,
        failed: bool = False,
        profile_id: str | None = None,
        older_than_days: float | None = None,
        keep_favorites: bool = True,
        dry_run: bool = False,
    ) -> dict[str, list[str]]:
        """Remove generations automatically: failures, one profile's, or the old ones.

        Conditions combine; favorites are kept unless ``keep_favorites`` is false, and so is
        any generation a plugin protects. Returns ``{"removed": [...], "kept": [...]}`` (with
        ``dry_run``, what would be removed).
        """
        if not (failed or profile_id or older_than_days is not None):
            raise ValueError("say what to clean up: failed, a profile, or older than some days")
        before = None
        if older_than_days is not None:
            if not math.isfinite(older_than_days) or older_than_days < 0:
                raise InvalidValueError(
                    f"older than: a number of days >= 0, got {older_than_days!r}"
                )
            try:
                before = datetime.now(timezone.utc) - timedelta(days=older_than_days)
            except OverflowError:  # before the year 1: nothing is that old
                before = datetime.min.replace(tzinfo=timezone.utc)
        ids = self._fresh().generation_ids(
            Filters(profile_id=profile_id, status="failed" if failed else None, until=before),
            keep_favorites=keep_favorites,
        )
        if dry_run:
            kept = [i for i in ids if self.plugin.is_protected(self._require(i))]
            return {"removed": [i for i in ids if i not in set(kept)], "kept": kept}
        removed, kept = self.plugin.remove_generations(ids)
        self.index.sync()
        return {"removed": removed, "kept": kept}

    def remove_orphans(self, *, older_than_hours: float = 1.0, dry_run: bool = False) -> list[str]:
        """Remove what interrupted writers leave behind: temp files, and audio files no sidecar
        names. Only files older than ``older_than_hours``, so nothing a writer is still working
        on is touched, and no audio in a folder that holds an unreadable sidecar (it might be
        that sidecar's). Returns their paths."""
        cutoff_ns = time.time_ns() - int(older_than_hours * 3600e9)
        found = [str(p) for p in stale_temp_files(self.library.root, cutoff_ns)]
        found += [str(p) for p in self._fresh().orphan_audio(cutoff_ns)]
        if not dry_run:
            for path in found:
                Path(path).unlink(missing_ok=True)
            self.index.sync()
        return found

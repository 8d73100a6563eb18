"""Generation and profile records in the library folder: find, read, write, remove.

Every change is a read-modify-write of one sidecar under a machine-wide lock; sidecars are
written atomically (see ``library.atomic``), audio always moved into place before the sidecar
that names it, and removal goes the other way: sidecar first, then its audio.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..library import Library, SidecarError, schema, sidecar_identity
from ..library.atomic import commit_temp, fsync_dir, write_temp
from ..library.locations import machine_dir
from ..library.lock import locked


def audio_files(record: dict[str, Any]) -> set[str]:
    """Relative paths of every audio file a record names."""
    return {v["audio_path"] for v in record["versions"] if v["audio_path"]}


class Store:
    def __init__(self, library: Library) -> None:
        self.library = library
        self._lock = machine_dir(library.root) / "sidecars.lock"
        self._paths: dict[str, Path] = {}  # saves the glob for ids this process wrote

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with locked(self._lock):
            yield

    def sidecar_of(self, generation_id: str) -> Path | None:
        path = self._paths.get(generation_id)
        if path is None or not path.exists():
            path = self.library.find_sidecar(generation_id)
            if path is None:
                self._paths.pop(generation_id, None)
                return None
            self._paths[generation_id] = path
        return path

    def read(self, generation_id: str) -> dict[str, Any] | None:
        path = self.sidecar_of(generation_id)
        return None if path is None else schema.read_generation(path)

    def read_recent(self, generation_id: str, created_at: datetime | None) -> dict[str, Any] | None:
        """Like :meth:`read`, for the host's generation path: a new id would cost a search of
        every day folder (~7 µs per folder), so look only where the record can be: this
        process's cache, the day of ``created_at``, or, without it, today and yesterday."""
        path = self._paths.get(generation_id)
        if path is None or not path.exists():
            now = schema.now()
            days = [created_at] if created_at is not None else [now, now - timedelta(days=1)]
            path = next(
                (p for d in days if (p := self.library.sidecar_path(generation_id, d)).exists()),
                None,
            )
            if path is None:
                return None
            self._paths[generation_id] = path
        return schema.read_generation(path)

    def write(self, record: dict[str, Any], before_commit: Callable[[], None] | None = None) -> Path:
        """Write ``record``'s sidecar durably. ``before_commit`` runs once the sidecar is durable
        under its temp name, before it is moved into place (to move the audio it names in
        first): only the renames need that order, so the two files' fsyncs can overlap."""
        [(tmp, path)] = self.stage([record])
        if before_commit is not None:
            try:
                before_commit()
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        commit_temp(tmp, path)
        self._paths[record["id"]] = path
        return path

    def stage(self, records: list[dict[str, Any]], *, sync: bool = True) -> list[tuple[Path, Path]]:
        """Write each record's sidecar under a temp name beside its place, durably unless
        ``sync=False`` (see ``library.atomic.write_temp``): returns the temp names and the
        places. On an error none of them is left."""
        staged: list[tuple[Path, Path]] = []
        try:
            for record, data in zip(records, schema.encode_generations(records)):
                path = self.library.sidecar_path(record["id"], record["created_at"])
                staged.append((write_temp(path, lambda f, data=data: f.write(data), sync=sync), path))
        except BaseException:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
        return staged

    def remove_unreferenced(self, before: dict[str, Any] | None, after: dict[str, Any]) -> None:
        """Remove audio that ``before`` named and ``after`` no longer does (after it is written)."""
        if before is not None:
            self._unlink(audio_files(before) - audio_files(after))

    def sidecars_of(self, generation_id: str) -> list[Path]:
        """Every sidecar of ``generation_id``: the original, and the conflict copies that sync
        tools left beside it (or, with the original gone, wherever they are)."""
        main = self.sidecar_of(generation_id)
        found = [] if main is None else [main]
        folders = {main.parent} if main else self.library.copy_folders(generation_id)
        for folder in folders:
            for entry in os.scandir(folder):
                if sidecar_identity(entry.name) == (generation_id, True):
                    found.append(Path(entry.path))
        return found

    def remove(self, generation_id: str) -> dict[str, Any] | None:
        """Remove every sidecar of ``generation_id``, then every audio file they name. Returns
        the record removed (the original's, else a copy's), or None if there was none."""
        paths = self.sidecars_of(generation_id)
        records = []
        for path in paths:
            try:
                records.append(schema.read_generation(path, generation_id))
            except SidecarError:
                continue  # unreadable: its audio cannot be known, the file still goes
        for path in paths:
            path.unlink(missing_ok=True)
        for folder in {p.parent for p in paths}:
            fsync_dir(folder)  # the sidecars are gone for good before their audio goes
        self._paths.pop(generation_id, None)
        for record in records:
            self._unlink(audio_files(record))
        return records[0] if records else None

    def _unlink(self, relatives: set[str]) -> None:
        for relative in relatives:
            self.library.absolute(relative).unlink(missing_ok=True)

    def write_profile(self, record: dict[str, Any]) -> None:
        schema.write_profile(self.library.profile_path(record["id"]), record)

    def read_profile(self, profile_id: str) -> dict[str, Any] | None:
        path = self.library.profile_path(profile_id)
        return schema.read_profile(path) if path.exists() else None

    def profiles(self) -> list[dict[str, Any]]:
        """Every profile record (a library has few; unreadable ones are left out)."""
        found = []
        for path in sorted(self.library.profiles.glob("*.parquet")):
            try:
                found.append(schema.read_profile(path))
            except SidecarError:
                continue
        return found

    def remove_profile(self, profile_id: str) -> bool:
        path = self.library.profile_path(profile_id)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(path.parent)
        return True


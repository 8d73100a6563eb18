"""The per-machine DuckDB index of a library folder: a cache that sync keeps in step with the
folder and that serves list, search, stats and SQL. Delete it, sync, and the answers are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from ..library import Library, LibraryError, open_library
from ..library.locations import library_path, machine_dir
from . import queries, tables
from .connection import Database, IndexBusyError, IndexCorruptError, is_damage, is_lock_error
from .queries import Filters, NotFoundError, QueryError
from .sync import SyncReport, sync

if TYPE_CHECKING:
    from .watch import Watcher

INDEX_ENV = "TTS_HISTORY_INDEX"
# seconds a watcher lets a burst of events gather: a host writes a generation's audio and its
# sidecar within about 10 ms
DEBOUNCE = 0.02

__all__ = [
    "Filters",
    "Index",
    "IndexBusyError",
    "IndexCorruptError",
    "IndexPathError",
    "NotFoundError",
    "QueryError",
    "SyncReport",
    "default_index_path",
]


def default_index_path(library: Library) -> Path:
    return machine_dir(library.root) / "index.duckdb"


class IndexPathError(LibraryError):
    """The index path names something that is not an index of ours: it is never replaced."""


# a DuckDB file's magic, after its header's checksum
_MAGIC_AT, _MAGIC = 8, b"DUCK"


def _check_duckdb_file(path: Path) -> None:
    """Refuse to open, and so perhaps to replace, an existing file that is no DuckDB database
    (a typo in --index must not cost a document, a sidecar or library.json). An empty file
    is a creation cut short."""
    try:
        with open(path, "rb") as f:
            head = f.read(_MAGIC_AT + len(_MAGIC))
    except IsADirectoryError:
        raise IndexPathError(f"{path}: is a folder, not an index file") from None
    except FileNotFoundError:
        return
    if head and head[_MAGIC_AT:] != _MAGIC:
        raise IndexPathError(
            f"{path}: is not a tts-history index (not a DuckDB database); it is left as it is: "
            "choose another index path, or remove it if it is an index that was damaged"
        )


class Index:
    """The index of one library. Safe to use from many threads and, by turns, many processes."""

    def __init__(self, library: Library | str | Path | None = None, path: str | Path | None = None):
        self.library = library if isinstance(library, Library) else open_library(library_path(library))
        own = default_index_path(self.library)
        self.path = Path(path).expanduser().resolve() if path else own
        # a file at a path someone chose may be anything: it is replaced only if it is an index
        self._chosen = self.path != own
        if self.path.is_relative_to(self.library.root.resolve()):
            # it would be synced between machines, and its files walked as the library's
            raise IndexPathError(
                f"{self.path}: is inside the library folder {self.library.root}; the index is "
                "per machine and lives outside it"
            )
        self.db = Database.for_path(self.path)
        self._ready = False
        self._empty = False  # tables made by this object and never filled yet

    # -- lifecycle -------------------------------------------------------------------------

    def _ensure(self) -> None:
        """Create the tables, or recreate them for an index of another version or library."""
        if self._ready:
            return
        if self.path.exists():
            if self._chosen:
                _check_duckdb_file(self.path)
            try:
                with self.db.read() as con:
                    if self._chosen:
                        self._check_ours(con)
                    self._ready = self._matches(con)
            except IndexCorruptError:
                self._delete_files()
            except duckdb.Error as exc:  # opens, but cannot be read: truncated or damaged
                if is_lock_error(exc):
                    raise
                self._delete_files()
        if not self._ready:
            with self.db.write() as con:
                if not self._matches(con):
                    tables.create(con, str(self.library.root), self.library.library_id())
                    self._empty = True
            self._ready = True

    def recheck(self) -> None:
        """Check the index against the library again at its next use: the folder was replaced,
        perhaps by another library's."""
        self._ready = False

    def _check_ours(self, con: duckdb.DuckDBPyConnection) -> None:
        """Refuse a DuckDB database with tables but none of an index (someone's own data)."""
        if tables.current_version(con) is None and tables.names(con):
            raise IndexPathError(
                f"{self.path}: is a DuckDB database but not a tts-history index; it is left as "
                "it is: choose another index path"
            )

    def _matches(self, con: duckdb.DuckDBPyConnection) -> bool:
        if tables.current_version(con) != tables.INDEX_VERSION:
            return False
        row = con.execute("SELECT value FROM meta WHERE key = 'library_id'").fetchone()
        return row is not None and row[0] == self.library.library_id()

    def _delete_files(self) -> None:
        self.db.forget()
        for suffix in ("", ".wal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def sync(
        self,
        *,
        full: bool = False,
        every_file: bool = False,
        within: Iterable[str] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> SyncReport:
        """Apply the difference between the folder and the index. Folders whose own stat has
        not changed are not listed again; ``every_file``: compare every file's stat (after files
        were rewritten in place); ``full``: re-read every sidecar; ``within``: only these
        relative paths, files or folders."""
        self._ensure()
        if self._empty:  # a new index: nothing to limit the work to
            within = None
        try:
            report = sync(
                self.library, self.db, full=full, every_file=every_file, within=within, progress=progress
            )
            self._empty = False
            return report
        except (IndexCorruptError, duckdb.Error) as exc:
            # damaged since it was opened: it is a cache, so rebuild it from the folder. Any
            # other error is raised: a rebuild would hide it, and takes minutes at 1M
            if isinstance(exc, duckdb.Error) and not is_damage(exc):
                raise
            self._delete_files()
            self._ready = False
            self._ensure()
            report = sync(self.library, self.db, progress=progress)
            self._empty = False
            return report

    def rebuild(self, *, progress: Callable[[int, int], None] | None = None) -> SyncReport:
        """Empty the index and build it again from the folder. Emptied in place, under the
        file's lock: other processes may have it open, or be about to, and wait their turn;
        a file deleted under them would leave them writing to one nobody reads."""
        self._ensure()  # a damaged file, which nobody can use, is deleted there
        with self.db.write() as con:
            tables.create(con, str(self.library.root), self.library.library_id())
        self._empty = True
        return self.sync(progress=progress)

    def watch(self, **options: Any) -> Watcher:
        """Start keeping this index current in the background; ``stop()`` the result when done.
        Options: see :class:`~tts_history.index.watch.Watcher`."""
        from .watch import Watcher

        return Watcher(self, **options).start()

    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self._ensure()
        if self._empty:  # just (re)created, e.g. after an upgrade: never answer from nothing
            self.sync()
        with self.db.read() as con:
            yield con

    # -- queries ---------------------------------------------------------------------------

    def list(
        self,
        filters: Filters = Filters(),
        *,
        limit: int = queries.DEFAULT_LIMIT,
        offset: int = 0,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        with self.reading() as con, queries.snapshot(con):
            return queries.list_generations(
                con, self.library, filters, limit=limit, offset=offset, cursor=cursor
            )

    def get(self, generation_id: str) -> dict[str, Any]:
        with self.reading() as con:
            return queries.get_generation(con, self.library, generation_id)

    def stats(self) -> dict[str, Any]:
        with self.reading() as con, queries.snapshot(con):
            return queries.stats(con)

    def sql(self, query: str) -> tuple[list[str], list[tuple]]:
        with self.reading() as con:
            return queries.read_only_sql(con, query)

    def generation_ids(self, filters: Filters = Filters(), *, keep_favorites: bool = False) -> list[str]:
        """Ids of every generation matching ``filters``, oldest first."""
        with self.reading() as con:
            return [i for i, _ in queries.generation_ids(con, filters, keep_favorites=keep_favorites)]

    def sidecars(self, filters: Filters = Filters(), ids: list[str] | None = None) -> dict[str, Path]:
        """Absolute sidecar paths by id: of ``ids`` (those the index knows), or of every
        generation matching ``filters``, oldest first."""
        with self.reading() as con:
            if ids is None:
                found = dict(queries.generation_ids(con, filters))
            else:
                found = queries.sidecars_of(con, ids)
        return {i: self.library.absolute(p) for i, p in found.items()}

    def orphan_audio(self, older_than_ns: int) -> list[Path]:
        """Audio files that no sidecar names (not even a conflict copy), last changed before
        ``older_than_ns``, in folders with no unreadable sidecar. Changed: by mtime or ctime,
        the later; a sync tool keeps a file's mtime, so audio it just delivered ahead of its
        sidecar has an old mtime, but its ctime is when it arrived."""
        with self.reading() as con:
            rows = con.execute(
                """
                SELECT f.path FROM files f
                WHERE f.kind = 'audio' AND greatest(f.mtime_ns, f.ctime_ns) < ?
                  AND f.path NOT IN (SELECT audio_path FROM version_rows WHERE audio_path IS NOT NULL)
                  AND NOT EXISTS (
                      SELECT 1 FROM files e WHERE e.error IS NOT NULL AND e.folder = f.folder)
                ORDER BY f.path
                """,
                [older_than_ns],
            ).fetchall()
        return [self.library.absolute(p) for (p,) in rows]

    def unreadable(self) -> list[dict[str, str]]:
        """Sidecars that could not be read: path and reason (retried when they change)."""
        with self.reading() as con:
            rows = con.execute(
                "SELECT path, error FROM files WHERE error IS NOT NULL ORDER BY path"
            ).fetchall()
        return [{"path": p, "reason": r} for p, r in rows]

    def conflicts(self) -> list[dict[str, Any]]:
        """Generation ids held by more than one sidecar (sync tools' conflict copies, or copies
        in another day folder), each with the copy that wins and the others; then profile
        conflict copies, which are never indexed."""
        with self.reading() as con:
            return queries.conflicts(con, self.library)

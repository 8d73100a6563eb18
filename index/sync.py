"""Reconciling the index with the library folder: scan, diff, load what changed, apply.

The folder is walked (cheap: names and stat only), the walk is compared with the ``files``
table inside DuckDB, only new or changed sidecars are read (each on its own, so one
bad file never fails the rest), and the difference is applied in batches, each in one short
write transaction so that readers in other processes get in between.
"""

from __future__ import annotations

import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..library import Library, is_audio_name, sidecar_identity
from ..library.atomic import TEMP_SUFFIX
from ..library.layout import GENERATIONS_DIR, PROFILES_DIR
from . import tables as tables_module
from .connection import Database
from .reading import HELPER_MIN, Reader

BATCH = 5000  # sidecars per write transaction: readers get in between
LOOKUP_MAX = 2048  # paths looked up one by one in an ART index rather than joined (DuckDB's own limit)
TALLY_ROWS = 1000  # ledger rows of the stats' tallies before they are summed into one per key
RACY_NS = 2_000_000_000  # a file system clock may be this coarse (FAT: 2 s)


@dataclass
class SyncReport:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def as_dict(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "errors": [{"path": p, "reason": r} for p, r in self.errors],
        }


def ignored(name: str) -> bool:
    """Files that are never part of the library: hidden files (our temp files, sync tools'
    markers and caches), temp files of any tool, Syncthing's Windows temp names."""
    return name.startswith((".", "~")) or name.endswith((TEMP_SUFFIX, "~"))


_KINDS = {GENERATIONS_DIR: "generation", PROFILES_DIR: "profile"}


# What a file's stat says, all of it compared: a sync tool can rewrite a file with the same
# size and reset its mtime, but a rename into place gives a new inode, and no tool can set ctime.
STAT_COLUMNS = {"size": "st_size", "mtime_ns": "st_mtime_ns", "ino": "st_ino", "ctime_ns": "st_ctime_ns"}
# A folder's own stat changes whenever an entry is added, removed or renamed in it (and its
# ctime whenever a tool sets its mtime back): an unchanged folder holds the files it held.
FOLDER_COLUMNS = {"mtime_ns": "st_mtime_ns", "ctime_ns": "st_ctime_ns", "ino": "st_ino"}
_CHUNK = 20_000  # files per Arrow batch while walking: a large walk holds no Python lists


@dataclass
class Scan:
    """What a walk of the library found."""

    files: pa.Table  # path, folder, kind and STAT_COLUMNS of every file looked at
    listed: pa.Table  # folders listed whole: path and FOLDER_COLUMNS
    gone: list[str] = field(default_factory=list)  # known folders that are no longer there
    whole: bool = False  # every folder was listed: a file not found is gone


class _Walk:
    def __init__(self, library: Library) -> None:
        self.root = library.root
        self.batches: list[pa.RecordBatch] = []
        self.columns: dict[str, list] = {}
        self.listed: dict[str, list] = {"path": [], **{name: [] for name in FOLDER_COLUMNS}}
        self._clear()

    def _clear(self) -> None:
        self.columns = {"path": [], "folder": [], "kind": [], **{name: [] for name in STAT_COLUMNS}}

    def _flush(self) -> None:
        if self.columns["path"]:
            self.batches.append(pa.RecordBatch.from_pydict(self.columns, schema=_SCAN_SCHEMA))
            self._clear()

    def add(self, relative: str, folder: str, name: str, sidecar_kind: str, st: os.stat_result) -> None:
        identity = sidecar_identity(name)
        if identity is None:
            if sidecar_kind != "generation" or not is_audio_name(name):
                return  # desktop.ini, Thumbs.db, an audio file's conflict copy: not ours
            kind = "audio"
        elif identity[1] and sidecar_kind == "profile":
            kind = "profile_copy"  # listed as a conflict, never indexed as a profile
        else:
            kind = sidecar_kind  # a generation's conflict copy is indexed beside its original
        columns = self.columns
        columns["path"].append(relative)
        columns["folder"].append(folder)
        columns["kind"].append(kind)
        for column, attribute in STAT_COLUMNS.items():
            columns[column].append(getattr(st, attribute))
        if len(columns["path"]) >= _CHUNK:
            self._flush()

    def list_folder(self, relative: str, sidecar_kind: str, st: os.stat_result) -> list[tuple[str, os.stat_result]]:
        """Record the folder's files (its stat, taken before listing, with it) and return its
        subfolders with their stats."""
        self.listed["path"].append(relative)
        for column, attribute in FOLDER_COLUMNS.items():
            self.listed[column].append(getattr(st, attribute))
        try:
            entries = list(os.scandir(self.root / relative))
        except (FileNotFoundError, NotADirectoryError):
            return []
        subfolders = []
        for entry in entries:
            if ignored(entry.name):
                continue
            child = f"{relative}/{entry.name}"
            try:
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append((child, entry.stat(follow_symlinks=False)))
                elif entry.is_file(follow_symlinks=False):
                    self.add(child, relative, entry.name, sidecar_kind, entry.stat(follow_symlinks=False))
            except FileNotFoundError:  # removed while we walked
                continue
        return subfolders

    def walk(self, relative: str, sidecar_kind: str, st: os.stat_result) -> None:
        """This folder and everything below it."""
        for child, child_st in self.list_folder(relative, sidecar_kind, st):
            self.walk(child, sidecar_kind, child_st)

    def result(self, gone: list[str], whole: bool) -> Scan:
        self._flush()
        files = pa.Table.from_batches(self.batches, schema=_SCAN_SCHEMA)
        listed = pa.table(
            {"path": pa.array(self.listed["path"], pa.string()),
             **{name: pa.array(self.listed[name], pa.int64()) for name in FOLDER_COLUMNS}}
        )
        return Scan(files, listed, gone, whole)


_SCAN_SCHEMA = pa.schema(
    [("path", pa.string()), ("folder", pa.string()), ("kind", pa.string())]
    + [(name, pa.int64()) for name in STAT_COLUMNS]
)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st


def scan(
    library: Library,
    within: Iterable[str] | None = None,
    known: dict[str, tuple[int, int, int, int]] | None = None,
) -> Scan:
    """Walk the library: every file the index tracks, with its stat.

    ``known``: the folders the last walk listed, as (FOLDER_COLUMNS..., checked_ns) by path. A
    folder whose stat is the same, and was not changing while it was listed, is not listed
    again: its files are the ones recorded. Its known subfolders are still looked at.

    ``within``: relative paths (files or folders, present or not) to look at instead, as a
    watcher's events name them; named folders are walked whole.
    """
    walk = _Walk(library)
    if within is not None:
        for relative in sorted(set(within)):
            parts = relative.split("/")
            kind = _KINDS.get(parts[0])
            if kind is None or any(ignored(part) for part in parts):
                continue
            st = _lstat(library.absolute(relative))
            if st is None:
                continue
            if stat.S_ISDIR(st.st_mode):
                walk.walk(relative, kind, st)
            elif stat.S_ISREG(st.st_mode) and len(parts) > 1:
                walk.add(relative, "/".join(parts[:-1]), parts[-1], kind, st)
        found = walk.result([], False)
        # a folder and a file inside it may both have been named; and the folders walked for
        # them are not recorded as listed: named paths say nothing of their folders' other files
        return Scan(_unique(found.files), found.listed.slice(0, 0))

    known = known or {}
    children: dict[str, list[str]] = {}
    for path in known:
        if "/" in path:
            children.setdefault(path.rsplit("/", 1)[0], []).append(path)
    gone: list[str] = []

    def visit(relative: str, kind: str, st: os.stat_result) -> None:
        recorded = known.get(relative)
        current = tuple(getattr(st, a) for a in FOLDER_COLUMNS.values())
        if recorded is not None and recorded[:3] == current and st.st_ctime_ns < recorded[3] - RACY_NS:
            for child in children.get(relative, []):
                child_st = _lstat(library.absolute(child))
                if child_st is None or not stat.S_ISDIR(child_st.st_mode):
                    gone.append(child)  # only while the walk runs: its parent changed too
                else:
                    visit(child, kind, child_st)
            return
        subfolders = walk.list_folder(relative, kind, st)
        found = {child for child, _ in subfolders}
        gone.extend(child for child in children.get(relative, []) if child not in found)
        for child, child_st in subfolders:
            visit(child, kind, child_st)

    for top, kind in _KINDS.items():
        st = _lstat(library.root / top)
        if st is not None and stat.S_ISDIR(st.st_mode):
            visit(top, kind, st)
        elif top in known:
            gone.append(top)
    return walk.result(gone, whole=not known)


def _unique(table: pa.Table) -> pa.Table:
    paths = table.column("path").to_pylist()
    if len(set(paths)) == len(paths):
        return table
    first = sorted({p: i for i, p in reversed(list(enumerate(paths)))}.values())
    return table.take(first)


# Every statement that touches existing rows filters on a list parameter ($paths, $ids, ...)
# of the column an ART index covers (tables.py): a watcher's batch of a few files then costs a
# few lookups, not a scan of every table, whatever the size of the library.
_DELETE = (
    "DELETE FROM generation_rows WHERE sidecar_path = ANY($paths)",
    "DELETE FROM version_rows WHERE sidecar_path = ANY($paths)",
    "DELETE FROM profiles WHERE sidecar_path = ANY($paths)",
    "DELETE FROM files WHERE path = ANY($paths)",
)
_INSERT = """
INSERT INTO files SELECT path, folder, kind, size, mtime_ns, ino, ctime_ns, checked_ns, error
    FROM batch_files WHERE present;
INSERT INTO generation_rows BY NAME
    SELECT g.* EXCLUDE (schema_version, versions), false AS shadowed, f.size AS sidecar_bytes,
           NULL AS audio_present
    FROM batch_generations g JOIN batch_files f ON f.path = g.sidecar_path;
INSERT INTO version_rows BY NAME
    SELECT sidecar_path, false AS shadowed, id AS generation_id, position,
           v.id AS id, v.label AS label, v.audio_path AS audio_path,
           v.effects_chain::JSON AS effects_chain, v.is_default AS is_default,
           v.created_at AS created_at, v.source_version_id AS source_version_id,
           v.duration AS duration, v.sample_rate AS sample_rate, v.channels AS channels,
           v.audio_bytes AS audio_bytes, v.audio_sha256 AS audio_sha256, false AS audio_present
    FROM (
        SELECT sidecar_path, id, unnest(versions) AS v, generate_subscripts(versions, 1) AS position
        FROM batch_generations
    );
INSERT INTO profiles BY NAME
    SELECT * EXCLUDE (schema_version, extra), extra::JSON AS extra FROM batch_profiles;
"""

# Which copy of a generation id counts (see tables.py): ranked for the ids a batch touched.
_RANKS = """
SELECT sidecar_path, shadowed,
       row_number() OVER (PARTITION BY id ORDER BY updated_at DESC, conflict_copy, sidecar_path) > 1
FROM generation_rows WHERE id = ANY($ids)
"""


def _set_column(con: Any, table: str, column: str, values: dict[Any, bool], key: tuple[str, ...] = ()) -> None:
    """Set boolean ``column`` of the rows of ``table`` whose sidecar_path (and ``key`` column)
    are the keys of ``values``: one statement per value, each a lookup of its paths in the index
    (an UPDATE joined with a table of values scanned every row instead)."""
    for value in (True, False):
        keys = sorted(k for k, v in values.items() if v is value)
        if not keys:
            continue
        if not key:
            con.execute(
                f"UPDATE {table} SET {column} = $value WHERE sidecar_path = ANY($paths)",
                {"value": value, "paths": keys},
            )
            continue
        # the pair in one string; a NUL is in neither a path nor an id
        con.execute(
            f"UPDATE {table} SET {column} = $value WHERE sidecar_path = ANY($paths) "
            f"AND sidecar_path || chr(0) || {key[0]} = ANY($pairs)",
            {"value": value, "paths": sorted({p for p, _ in keys}), "pairs": [f"{p}\0{k}" for p, k in keys]},
        )


def _apply_statements(con: Any, files: pa.Table, tables: dict[str, pa.Table], new: bool) -> dict[str, Any]:
    """Replace the rows of the batch's files (in the caller's transaction); returns the
    updated_at their sidecars had. ``new``: the index surely holds none of these files (a
    first build), so no old rows are looked for."""
    paths = files["path"].to_pylist()
    audio = [p for p, kind in zip(paths, files["kind"].to_pylist()) if kind == "audio"]
    before: dict[str, Any] = {} if new else dict(
        con.execute(
            "SELECT sidecar_path, updated_at FROM generation_rows WHERE sidecar_path = ANY($paths) "
            "UNION ALL SELECT sidecar_path, updated_at FROM profiles WHERE sidecar_path = ANY($paths)",
            {"paths": paths},
        ).fetchall()
    )
    # ids whose rows change: their old rows (about to go) and their new ones
    old_ids = [] if new else con.execute(
        "SELECT DISTINCT id FROM generation_rows WHERE sidecar_path = ANY($paths)", {"paths": paths}
    ).fetchall()
    ids = sorted({i for (i,) in old_ids} | set(tables["generation"]["id"].to_pylist()))
    # the stats' tallies change by what the rows of these ids and paths counted before and after
    counted = _count(con, ids, paths) if len(ids) <= LOOKUP_MAX and len(paths) <= LOOKUP_MAX else None
    if not new:
        for statement in _DELETE:
            con.execute(statement, {"paths": paths})
    con.execute(_INSERT)
    if new and len(paths) > LOOKUP_MAX:
        # A first build: looking up each batch's rows would join every row so far, batch after
        # batch. The flags of every row are set at once by the sync's last batch instead.
        con.execute("UPDATE meta SET value = 'stale' WHERE key IN ('flags', 'tallies')")
        return before

    ranks = con.execute(_RANKS, {"ids": ids}).fetchall()
    inserted = set(tables["generation"]["sidecar_path"].to_pylist())
    flipped = {path: shadowed for path, was, shadowed in ranks if was != shadowed}
    _set_column(con, "generation_rows", "shadowed", flipped)
    # new version rows come in unshadowed, whatever their generation's rank
    _set_column(con, "version_rows", "shadowed", {
        path: shadowed for path, was, shadowed in ranks if path in flipped or (path in inserted and shadowed)
    })

    # Audio is present when the file named is there with the size the sidecar recorded: a file
    # a sync tool is still copying, or truncated, counts as missing until it is whole.
    touched = con.execute(
        "SELECT sidecar_path, id, audio_path, audio_bytes FROM version_rows WHERE audio_path = ANY($audio) "
        "UNION SELECT sidecar_path, id, audio_path, audio_bytes FROM version_rows WHERE sidecar_path = ANY($paths)",
        {"audio": audio, "paths": paths},
    ).fetchall()
    sizes = {
        path: size
        for path, kind, size in con.execute(
            "SELECT path, kind, size FROM files WHERE path = ANY($audio)",
            {"audio": sorted({t[2] for t in touched if t[2] is not None})},
        ).fetchall()
        if kind == "audio"
    }
    _set_column(con, "version_rows", "audio_present", {
        (path, vid): audio_path in sizes and (expected is None or sizes[audio_path] == expected)
        for path, vid, audio_path, expected in touched
    }, key=("id",))
    sidecars = sorted({t[0] for t in touched})
    present = {
        (path, vid): value
        for path, vid, value in con.execute(
            "SELECT sidecar_path, id, audio_present FROM version_rows WHERE sidecar_path = ANY($paths)",
            {"paths": sidecars},
        ).fetchall()
    }
    active = con.execute(
        "SELECT sidecar_path, active_version_id FROM generation_rows WHERE sidecar_path = ANY($paths)",
        {"paths": sidecars},
    ).fetchall()
    _set_column(con, "generation_rows", "audio_present", {
        path: present[(path, vid)] for path, vid in active if (path, vid) in present
    })
    if counted is None:  # too many to look up: counted again from every row at the end
        con.execute("UPDATE meta SET value = 'stale' WHERE key = 'tallies'")
    else:
        _add_tallies(con, counted, _count(con, ids, paths))
    return before


# What the rows of some ids and paths count, in one round trip: generations by their four
# keys, then bytes by file kind (profile_id NULL marks those rows: a generation has one).
_COUNT = """
SELECT profile_id, engine, language, status, count(*), coalesce(sum(TRY_CAST(duration AS DECIMAL(38, 12))), 0),
       count(*) FILTER (is_favorited)
FROM (SELECT profile_id, engine, language, status, duration, is_favorited, shadowed
      FROM generation_rows WHERE id = ANY($ids))
WHERE NOT shadowed GROUP BY ALL
UNION ALL
SELECT NULL, kind, NULL, NULL, sum(size), 0, 0 FROM files WHERE path = ANY($paths) GROUP BY kind
"""


def _count(con: Any, ids: list[str], paths: list[str]) -> dict[tuple[str, str | None], list]:
    """What the rows of these generation ids and file paths add to each tally."""
    out: dict[tuple[str, str | None], list] = {}

    def add(key: tuple[str, str | None], n: Any, duration: Any = 0, favorites: Any = 0) -> None:
        tally = out.setdefault(key, [0, 0, 0])
        tally[0] += n
        tally[1] += duration
        tally[2] += favorites

    for profile, engine, language, status, n, duration, favorites in con.execute(
        _COUNT, {"ids": ids, "paths": paths}
    ).fetchall():
        if profile is None:
            add(("bytes", engine), n)
            continue
        add(("total", None), n, duration, favorites)
        for breakdown, key in (("profile", profile), ("engine", engine), ("language", language), ("status", status)):
            add((breakdown, key), n)
    return out


def _add_tallies(con: Any, before: dict, after: dict) -> None:
    """Append what changed to the tallies, a ledger that readers sum: one small insert, where
    rewriting the table cost a watcher's batch 30 ms."""
    change = {}
    for key in before.keys() | after.keys():
        was, now = before.get(key, (0, 0, 0)), after.get(key, (0, 0, 0))
        if was != now:
            change[key] = [b - a for a, b in zip(was, now)]
    if not change:
        return
    con.register("tally_change", pa.table({
        "breakdown": [b for b, _ in change], "key": pa.array([k for _, k in change], pa.string()),
        "n": [c[0] for c in change.values()],
        "duration": pa.array([c[1] for c in change.values()], pa.decimal128(38, 12)),
        "favorites": [c[2] for c in change.values()],
    }))
    try:
        con.execute("INSERT INTO tallies SELECT * FROM tally_change")
    finally:
        con.unregister("tally_change")
    if con.execute("SELECT count(*) FROM tallies").fetchall()[0][0] > TALLY_ROWS:
        _replace_tallies(con, tables_module.KEPT_TALLIES)


# Files in or below the folders of table ``below`` (paths ending in '/'): matched among the few
# distinct folders first, since a prefix test joined with every file row materializes them all.
# The folders of recorded files at or below each prefix ("a/b/" for a/b): a scan of the folder
# column alone, which holds a few distinct values
_FOLDERS_BELOW = (
    "SELECT k.folder FROM (SELECT DISTINCT folder FROM files) k, unnest($prefixes) d(p) "
    "WHERE starts_with(k.folder || '/', d.p)"
)


def sync(
    library: Library,
    db: Database,
    *,
    full: bool = False,
    every_file: bool = False,
    within: Iterable[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SyncReport:
    """Bring the index in step with the folder.

    Folders whose own stat has not changed since the last sync are not listed again (see
    ``scan``): a file rewritten in place, without a rename, is seen by a watcher's events or
    by ``every_file``, which lists every folder and compares every file's stat. ``full`` also
    reads every sidecar again. ``within`` limits the work to these relative paths (files or
    folders, present or gone), read again whatever their stat says when ``full``.
    ``progress(done, total)`` is called as sidecars are read.
    """
    checked_ns = time.time_ns()
    known = None
    if within is None and not (full or every_file):
        with db.read() as con:
            known = {
                path: tuple(rest)
                for path, *rest in con.execute(
                    f"SELECT path, {', '.join(FOLDER_COLUMNS)}, checked_ns FROM folders"
                ).fetchall()
            }
    found = scan(library, within, known)
    with db.read() as con:
        # before the difference is taken: a batch committed meanwhile (by a thread sharing this
        # connection) then shows as a newer revision, never as a file wrongly thought missing
        revision = _revision(con)
        con.register("scan", found.files)
        # The recorded files the scan covered: each kind of lookup alone, as a filter on one
        # column (an OR of them, or a join, made DuckDB read every path: +90 MB and 80 ms at 1M)
        recorded_sql, params = "SELECT path, kind, folder FROM files", {}
        if within is not None or not found.whole:
            if within is not None:
                # Named paths that are gone, and everything below named folders that are gone.
                # Library folders have no dot in their names; files always do.
                named = sorted(set(within))
                prefixes = [p.rstrip("/") + "/" for p in named if "." not in p.rsplit("/", 1)[-1]]
                folders = []
            else:  # files of the folders listed, and everything below gone ones
                named, prefixes = [], [g + "/" for g in found.gone]
                folders = found.listed["path"].to_pylist()
            if prefixes:
                folders += [f for (f,) in con.execute(_FOLDERS_BELOW, {"prefixes": prefixes}).fetchall()]
            recorded_sql = (
                f"{recorded_sql} WHERE path = ANY($named) UNION "
                f"{recorded_sql} WHERE folder = ANY($folders)"
            )
            params = {"named": named, "folders": folders}
        removed_sql = f"SELECT f.path, f.kind, f.folder FROM ({recorded_sql}) f ANTI JOIN scan s ON s.path = f.path"
        # Size and mtime alone are not trusted: a sync tool can replace a file with one of the
        # same size and reset the mtime, and coarse clocks (FAT, network drives) repeat it.
        # So a file whose mtime was within RACY_NS of the scan that recorded it is read again
        # (and counted as updated only if its updated_at differs), as git does with its index.
        condition = "true" if full else (
            "f.path IS NULL OR "
            + " OR ".join(f"f.{name} <> s.{name}" for name in STAT_COLUMNS)
            + f" OR s.ctime_ns >= f.checked_ns - {RACY_NS}"
        )
        # A few files (a watcher's batch) are looked up in the index; the files of some folders
        # are those recorded in the same folders (the folder column alone is read: joining
        # every row read every path, +120 MB at 1M for one day folder); a whole walk joins all.
        if found.files.num_rows <= LOOKUP_MAX:
            recorded = "(SELECT * FROM files WHERE path = ANY($keys))"
            keys = found.files["path"].to_pylist()
        elif not found.whole:
            recorded = "(SELECT * FROM files WHERE folder = ANY($keys))"
            keys = pc.unique(found.files["folder"]).to_pylist()
        else:
            recorded, keys = "files", None
        changed = con.sql(
            f"SELECT s.*, f.path IS NOT NULL AS known, f.error IS NOT NULL AS had_error "
            f"FROM scan s LEFT JOIN {recorded} f ON f.path = s.path WHERE {condition} ORDER BY s.path",
            params=None if keys is None else {"keys": keys},
        ).to_arrow_table()
        removed = con.execute(removed_sql, params).fetchall()
        con.unregister("scan")

    report = SyncReport(removed=sum(1 for _, kind, _ in removed if kind in _SIDECAR_KINDS))
    is_sidecar = pc.is_in(changed["kind"], value_set=pa.array(_SIDECAR_KINDS))
    sidecars = changed.filter(is_sidecar)
    others = changed.filter(pc.invert(is_sidecar))  # audio files, profile conflict copies
    folders = found if within is None and (found.listed.num_rows or found.gone) else None
    if not sidecars.num_rows and not removed and not others.num_rows and folders is None:
        return report

    total = sidecars.num_rows
    with Reader(str(library.root), helper=total >= HELPER_MIN) as reader:
        _apply_batches(db, reader, report, sidecars, others, removed, folders, checked_ns, revision, progress)
    return report


def _apply_batches(
    db: Database,
    reader: Reader,
    report: SyncReport,
    sidecars: pa.Table,
    others: pa.Table,
    removed: list[tuple[str, str, str]],
    folders: Scan | None,
    checked_ns: int,
    revision: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Read the changed sidecars and apply them, batch by batch, counting into ``report``.
    ``revision``: the index's when the changes were found."""
    total = sidecars.num_rows
    starts = range(0, max(total, 1), BATCH)

    def load(start: int) -> tuple[dict[str, pa.Table], list[tuple[str, str]]]:
        part = sidecars.slice(start, BATCH)
        return reader.load(part["path"].to_pylist(), part["kind"].to_pylist())

    # the next batch is read while this one is applied: DuckDB lets go of the GIL meanwhile
    with ThreadPoolExecutor(1, thread_name_prefix="tts-history-read") as pool:
        loading = pool.submit(load, starts[0])
        for start in starts:
            part = sidecars.slice(start, BATCH)
            paths = part["path"].to_pylist()
            tables, errors = loading.result()
            if start != starts[-1]:
                loading = pool.submit(load, start + BATCH)
            report.errors.extend(errors)
            failed = dict(errors)
            files = _file_rows(part, checked_ns, [failed.get(p) for p in paths], present=True)
            if start == 0:  # removals and audio changes go with the first batch
                gone = pa.table(
                    {
                        "path": pa.array([r[0] for r in removed], pa.string()),
                        "folder": pa.array([r[2] for r in removed], pa.string()),
                        "kind": pa.array([r[1] for r in removed], pa.string()),
                        **{name: pa.array([0] * len(removed), pa.int64()) for name in STAT_COLUMNS},
                    }
                )
                files = pa.concat_tables(
                    [files, _file_rows(others, checked_ns, [None] * others.num_rows, present=True),
                     _file_rows(gone, checked_ns, [None] * len(removed), present=False)]
                )
            last = start == starts[-1]
            unknown = not any(part["known"].to_pylist()) and (
                start > 0 or (not removed and not any(others["known"].to_pylist()))
            )
            before, revision = _apply(
                db, files, tables, (folders, checked_ns) if last and folders else None, last,
                revision if unknown else None,
            )
            updated_at = {
                path: when
                for table in tables.values()
                for path, when in zip(
                    table.column("sidecar_path").to_pylist(), table.column("updated_at").to_pylist()
                )
            }
            for path, was_known, had_error in zip(paths, part["known"].to_pylist(), part["had_error"].to_pylist()):
                if path in failed:
                    continue
                if not was_known:
                    report.added += 1
                elif had_error or before.get(path) != updated_at.get(path):
                    report.updated += 1
                else:
                    report.unchanged += 1
            if progress is not None:
                progress(start + part.num_rows, total)


_SIDECAR_KINDS = ["generation", "profile"]


def _file_rows(found: pa.Table, checked_ns: int, errors: list[str | None], *, present: bool) -> pa.Table:
    """Rows for the ``files`` table from walk rows; ``present`` false: rows to remove."""
    n = found.num_rows
    return pa.table(
        {
            "path": found["path"],
            "folder": found["folder"],
            "kind": found["kind"],
            **{name: found[name] for name in STAT_COLUMNS},
            "checked_ns": pa.array([checked_ns] * n, pa.int64()),
            "error": pa.array(errors, pa.string()),
            "present": pa.array([present] * n, pa.bool_()),
        }
    )


def _apply(
    db: Database,
    files: pa.Table,
    tables: dict[str, pa.Table],
    folders: tuple[Scan, int] | None,
    last: bool,
    new_since: int | None,
) -> tuple[dict[str, Any], int]:
    """Apply one batch in one transaction; returns the updated_at the batch's sidecars had, and
    the index's revision after it. ``new_since``: none of the batch's files was in the index at
    this revision; if nobody else has written since, they are not in it now either."""
    with db.write() as con:
        con.register("batch_files", files)
        con.register("batch_generations", tables["generation"])
        con.register("batch_profiles", tables["profile"])
        con.execute("BEGIN")
        try:
            revision = _revision(con)
            before = _apply_statements(con, files, tables, new=new_since == revision)
            con.execute("UPDATE meta SET value = $v WHERE key = 'revision'", {"v": str(revision + 1)})
            if last:
                _finish(con)
            if folders is not None:  # last: a sync that dies before this lists them again
                _record_folders(con, *folders)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            for name in ("batch_files", "batch_generations", "batch_profiles", "batch_listed", "batch_gone"):
                con.unregister(name)
    return before, revision + 1


def _revision(con: Any) -> int:
    """How many batches the index has taken: a sync that finds it where it left it knows that
    what it found missing is still missing."""
    return int(con.execute("SELECT value FROM meta WHERE key = 'revision'").fetchall()[0][0])


# Every row's flags at once, as the batches set them row by row: the copy of an id that wins
# (see tables.py) and its versions unshadowed, the rest shadowed; audio present when the file
# named is there with the size recorded; a generation's audio that of its active version.
_REFLAG = (
    """UPDATE generation_rows SET shadowed = r.shadowed FROM (
        SELECT rowid AS r, row_number() OVER (
            PARTITION BY id ORDER BY updated_at DESC, conflict_copy, sidecar_path) > 1 AS shadowed
        FROM generation_rows) r
    WHERE generation_rows.rowid = r.r AND generation_rows.shadowed <> r.shadowed""",
    """UPDATE version_rows SET shadowed = g.shadowed FROM generation_rows g
    WHERE version_rows.sidecar_path = g.sidecar_path AND version_rows.shadowed <> g.shadowed""",
    """UPDATE version_rows SET audio_present = p.present FROM (
        SELECT v.rowid AS r, f.path IS NOT NULL AND (v.audio_bytes IS NULL OR f.size = v.audio_bytes) AS present
        FROM version_rows v LEFT JOIN (SELECT path, size FROM files WHERE kind = 'audio') f
            ON f.path = v.audio_path) p
    WHERE version_rows.rowid = p.r AND version_rows.audio_present <> p.present""",
    """UPDATE generation_rows SET audio_present = v.audio_present FROM version_rows v
    WHERE v.sidecar_path = generation_rows.sidecar_path AND v.id = generation_rows.active_version_id
      AND generation_rows.audio_present IS DISTINCT FROM v.audio_present""",
)


def _finish(con: Any) -> None:
    """What the last batch of a sync owes: the lookup indexes if they are missing (a first
    sync, or one cut short), and every row's flags and the tallies if batches too large to set
    them row by row left them stale. One read of their state: a watcher pays it every batch."""
    state = dict(con.execute("SELECT key, value FROM meta WHERE key IN ('indexes', 'flags', 'tallies')").fetchall())
    if state.get("indexes") != "built":
        tables_module.build_indexes(con)
    if state.get("flags") == "stale":
        for statement in _REFLAG:
            con.execute(statement)
    if state.get("tallies") == "stale":
        _replace_tallies(con, tables_module.TALLIES)
    if "stale" in state.values():
        con.execute("UPDATE meta SET value = 'current' WHERE key IN ('flags', 'tallies')")


def _replace_tallies(con: Any, query: str) -> None:
    """The tallies become the rows of ``query`` (which may read them)."""
    rows = con.execute(query).fetchall()
    con.execute("DELETE FROM tallies")
    con.executemany("INSERT INTO tallies VALUES (?, ?, ?, ?, ?)", rows)


def _record_folders(con: Any, found: Scan, checked_ns: int) -> None:
    con.register("batch_listed", found.listed)
    con.register("batch_gone", pa.table({"p": pa.array(found.gone, pa.string())}))
    if found.whole:
        con.execute("DELETE FROM folders")
    else:
        con.execute(
            "DELETE FROM folders WHERE path IN (SELECT path FROM batch_listed) "
            "OR EXISTS (SELECT 1 FROM batch_gone g WHERE path = g.p OR starts_with(path, g.p || '/'))"
        )
    con.execute(
        f"INSERT INTO folders SELECT path, {', '.join(FOLDER_COLUMNS)}, ? FROM batch_listed", [checked_ns]
    )

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..library import Library, SidecarError, is_audio_name, schema, sidecar_identity
from ..library.atomic import TEMP_SUFFIX
from ..library.layout import GENERATIONS_DIR, PROFILES_DIR
from .connection import Database
from .text import normalize

BATCH = 5000  # sidecars per write transaction: readers get in between
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


def scan(library: Library, within: Iterable[str] | None = None) -> pa.Table:
    """Every file of the library that the index tracks: path, kind, and STAT_COLUMNS.

    ``within``: relative paths (files or folders, present or not) to look at instead of the
    whole library, as a watcher's events name them.
    """
    columns: dict[str, list] = {"path": [], "kind": [], **{name: [] for name in STAT_COLUMNS}}

    def add(relative: str, name: str, sidecar_kind: str, st: os.stat_result) -> None:
        identity = sidecar_identity(name)
        if identity is None:
            if sidecar_kind != "generation" or not is_audio_name(name):
                return  # desktop.ini, Thumbs.db, an audio file's conflict copy: not ours
            kind = "audio"
        elif identity[1] and sidecar_kind == "profile":
            kind = "profile_copy"  # listed as a conflict, never indexed as a profile
        else:
            kind = sidecar_kind  # a generation's conflict copy is indexed beside its original
        columns["path"].append(relative)
        columns["kind"].append(kind)
        for column, attribute in STAT_COLUMNS.items():
            columns[column].append(getattr(st, attribute))

    def walk(folder: Path, prefix: str, sidecar_kind: str) -> None:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if ignored(entry.name):
                continue
            relative = f"{prefix}/{entry.name}"
            try:
                if entry.is_dir(follow_symlinks=False):
                    walk(Path(entry.path), relative, sidecar_kind)
                elif entry.is_file(follow_symlinks=False):
                    add(relative, entry.name, sidecar_kind, entry.stat(follow_symlinks=False))
            except FileNotFoundError:  # removed while we walked
                continue

    if within is None:
        for top, kind in _KINDS.items():
            walk(library.root / top, top, kind)
    else:
        for relative in sorted(set(within)):
            parts = relative.split("/")
            kind = _KINDS.get(parts[0])
            if kind is None or any(ignored(part) for part in parts):
                continue
            path = library.absolute(relative)
            try:
                st = path.lstat()
            except (FileNotFoundError, NotADirectoryError):
                continue
            if stat.S_ISDIR(st.st_mode):
                walk(path, relative, kind)
            elif stat.S_ISREG(st.st_mode) and len(parts) > 1:
                add(relative, parts[-1], kind, st)
    table = pa.table(
        {
            "path": pa.array(columns["path"], pa.string()),
            "kind": pa.array(columns["kind"], pa.string()),
            **{name: pa.array(columns[name], pa.int64()) for name in STAT_COLUMNS},
        }
    )
    return _unique(table)  # a folder and a file inside it may both have been named


def _unique(table: pa.Table) -> pa.Table:
    paths = table.column("path").to_pylist()
    if len(set(paths)) == len(paths):
        return table
    first = sorted({p: i for i, p in reversed(list(enumerate(paths)))}.values())
    return table.take(first)


def _read_one(library: Library, path: str, kind: str) -> dict[str, Any] | SidecarError:
    identity = sidecar_identity(path.rsplit("/", 1)[-1])
    try:
        row = schema.read_row(library.absolute(path), kind, identity and identity[0])
    except SidecarError as exc:
        return SidecarError(path, exc.reason)
    row["sidecar_path"] = path
    if kind == "generation":
        row["search_text"] = normalize(row["text"])
        row["conflict_copy"] = bool(identity and identity[1])
    return row


_EXTRA_COLUMNS = {
    "generation": [("sidecar_path", pa.string()), ("search_text", pa.string()), ("conflict_copy", pa.bool_())],
    "profile": [("sidecar_path", pa.string())],
}
_BATCH_SCHEMAS = {
    "generation": schema.GENERATION_SCHEMA,
    "profile": schema.PROFILE_SCHEMA,
}


def _load(
    library: Library, paths: list[str], kinds: list[str]
) -> tuple[dict[str, pa.Table], list[tuple[str, str]]]:
    """Read sidecars into one table per kind, with their paths; errors as (path, reason).

    One by one: a sidecar's footer record costs ~0.1 ms of Python, which threads would only
    slow down (the GIL) and processes could not repay at these sizes."""
    rows: dict[str, list[dict[str, Any]]] = {"generation": [], "profile": []}
    errors: list[tuple[str, str]] = []
    for path, kind, result in zip(
        paths, kinds, (_read_one(library, path, kind) for path, kind in zip(paths, kinds))
    ):
        if isinstance(result, SidecarError):
            errors.append((path, result.reason))
        else:
            rows[kind].append(result)
    tables = {}
    for kind, found in rows.items():
        batch_schema = _BATCH_SCHEMAS[kind]
        for name, kind_type in _EXTRA_COLUMNS[kind]:
            batch_schema = batch_schema.append(pa.field(name, kind_type))
        tables[kind] = pa.Table.from_pylist(found, schema=batch_schema)
    return tables, errors


_APPLY = """
DELETE FROM generation_rows WHERE sidecar_path IN (SELECT path FROM batch_files);
DELETE FROM version_rows WHERE sidecar_path IN (SELECT path FROM batch_files);
DELETE FROM profiles WHERE sidecar_path IN (SELECT path FROM batch_files);
DELETE FROM files WHERE path IN (SELECT path FROM batch_files);
INSERT INTO files SELECT path, kind, size, mtime_ns, ino, ctime_ns, checked_ns, error
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

# Which copy of a generation id counts (see tables.py), for the ids this batch touched.
_SHADOW = """
UPDATE generation_rows g SET shadowed = r.rank > 1
FROM (
    SELECT sidecar_path,
           row_number() OVER (
               PARTITION BY id ORDER BY updated_at DESC, conflict_copy, sidecar_path
           ) AS rank
    FROM generation_rows WHERE id IN (SELECT id FROM batch_ids)
) r
WHERE g.sidecar_path = r.sidecar_path AND g.shadowed <> (r.rank > 1);
UPDATE version_rows v SET shadowed = g.shadowed
FROM generation_rows g
WHERE v.sidecar_path = g.sidecar_path AND g.id IN (SELECT id FROM batch_ids)
  AND v.shadowed <> g.shadowed;
"""

# Audio is present when the file named is there with the size the sidecar recorded: a file a
# sync tool is still copying, or truncated, counts as missing until it is whole.
_AUDIO = """
UPDATE version_rows v SET audio_present = (f.path IS NOT NULL)
FROM (
    SELECT v2.sidecar_path, v2.id, f2.path
    FROM version_rows v2
    LEFT JOIN files f2 ON f2.path = v2.audio_path AND f2.kind = 'audio'
        AND (v2.audio_bytes IS NULL OR f2.size = v2.audio_bytes)
    WHERE v2.audio_path IN (SELECT path FROM batch_audio)
       OR v2.sidecar_path IN (SELECT path FROM batch_files)
) f
WHERE v.sidecar_path = f.sidecar_path AND v.id = f.id;
UPDATE generation_rows g SET audio_present = v.audio_present
FROM version_rows v
WHERE v.sidecar_path = g.sidecar_path AND v.id = g.active_version_id
  AND (v.audio_path IN (SELECT path FROM batch_audio)
       OR g.sidecar_path IN (SELECT path FROM batch_files));
"""


def sync(
    library: Library,
    db: Database,
    *,
    full: bool = False,
    within: Iterable[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SyncReport:
    """Bring the index in step with the folder; ``full`` re-reads every sidecar.

    ``within`` limits the work to these relative paths (files or folders, present or gone);
    ``progress(done, total)`` is called as sidecars are read.
    """
    checked_ns = time.time_ns()
    found = scan(library, within)
    with db.read() as con:
        con.register("scan", found)
        removed_sql = "SELECT f.path, f.kind FROM files f ANTI JOIN scan s ON s.path = f.path"
        if within is not None:
            # Named paths that are gone, and everything below named folders that are gone.
            # Library folders have no dot in their names; files always do.
            named = sorted(set(within))
            folders = [p.rstrip("/") + "/" for p in named if "." not in p.rsplit("/", 1)[-1]]
            con.register("named", pa.table({"p": pa.array(named, pa.string())}))
            con.register("folders", pa.table({"p": pa.array(folders, pa.string())}))
            removed_sql += (
                " WHERE f.path IN (SELECT p FROM named)"
                " OR EXISTS (SELECT 1 FROM folders d WHERE starts_with(f.path, d.p))"
            )
        # Size and mtime alone are not trusted: a sync tool can replace a file with one of the
        # same size and reset the mtime, and coarse clocks (FAT, network drives) repeat it.
        # So a file whose mtime was within RACY_NS of the scan that recorded it is read again
        # (and counted as updated only if its updated_at differs), as git does with its index.
        condition = "true" if full else (
            "f.path IS NULL OR "
            + " OR ".join(f"f.{name} <> s.{name}" for name in STAT_COLUMNS)
            + f" OR s.ctime_ns >= f.checked_ns - {RACY_NS}"
        )
        changed = con.execute(
            f"SELECT s.path, s.kind, f.path IS NOT NULL, f.error IS NOT NULL "
            f"FROM scan s LEFT JOIN files f ON f.path = s.path WHERE {condition} ORDER BY s.path"
        ).fetchall()
        removed = con.execute(removed_sql).fetchall()
        known_updated = dict(
            con.execute(
                "SELECT sidecar_path, updated_at FROM generation_rows "
                "WHERE sidecar_path IN (SELECT path FROM scan) "
                "UNION ALL SELECT sidecar_path, updated_at FROM profiles "
                "WHERE sidecar_path IN (SELECT path FROM scan)"
            ).fetchall()
        ) if changed else {}
        for name in ("scan", "named", "folders"):
            con.unregister(name)

    report = SyncReport(removed=sum(1 for _, kind in removed if kind in ("generation", "profile")))
    stats = dict(zip(found["path"].to_pylist(), zip(*(found[n].to_pylist() for n in STAT_COLUMNS))))
    kinds = dict(zip(found["path"].to_pylist(), found["kind"].to_pylist()))
    sidecars = [row for row in changed if row[1] in ("generation", "profile")]
    others = [row[0] for row in changed if row[1] not in ("generation", "profile")]

    if not sidecars and not removed and not others:
        return report

    total = len(sidecars)
    done = 0
    first = True
    for start in range(0, max(total, 1), BATCH):
        part = sidecars[start : start + BATCH]
        tables, errors = _load(library, [p for p, *_ in part], [k for _, k, *_ in part])
        report.errors.extend(errors)
        failed = dict(errors)
        updated_at = {
            path: when
            for table in tables.values()
            for path, when in zip(
                table.column("sidecar_path").to_pylist(), table.column("updated_at").to_pylist()
            )
        }
        for path, kind, was_known, had_error in part:
            if path in failed:
                continue
            if not was_known:
                report.added += 1
            elif had_error or known_updated.get(path) != updated_at.get(path):
                report.updated += 1
            else:
                report.unchanged += 1
        rows = [
            (path, kind, *stats[path], checked_ns, failed.get(path), True)
            for path, kind, *_ in part
        ]
        if first:  # removals and audio changes go with the first batch
            rows += [(path, kind, 0, 0, 0, 0, 0, None, False) for path, kind in removed]
            rows += [(path, kinds[path], *stats[path], checked_ns, None, True) for path in others]
            first = False
        _apply(db, rows, tables)
        done += len(part)
        if progress is not None:
            progress(done, total)
    return report


def _apply(db: Database, rows: Iterable[tuple], tables: dict[str, pa.Table]) -> None:
    rows = list(rows)
    files = pa.table(
        {
            "path": pa.array([r[0] for r in rows], pa.string()),
            "kind": pa.array([r[1] for r in rows], pa.string()),
            **{name: pa.array([r[2 + i] for r in rows], pa.int64()) for i, name in enumerate(STAT_COLUMNS)},
            "checked_ns": pa.array([r[6] for r in rows], pa.int64()),
            "error": pa.array([r[7] for r in rows], pa.string()),
            "present": pa.array([r[8] for r in rows], pa.bool_()),
        }
    )
    with db.write() as con:
        con.register("batch_files", files)
        con.register("batch_generations", tables["generation"])
        con.register("batch_profiles", tables["profile"])
        con.execute("BEGIN")
        try:
            # ids whose rows change: their old rows (about to go) and their new ones
            con.execute(
                "CREATE OR REPLACE TEMP TABLE batch_ids AS "
                "SELECT DISTINCT id FROM generation_rows WHERE sidecar_path IN (SELECT path FROM batch_files) "
                "UNION SELECT DISTINCT id FROM batch_generations"
            )
            con.execute(
                "CREATE OR REPLACE TEMP TABLE batch_audio AS "
                "SELECT path FROM batch_files WHERE kind = 'audio'"
            )
            con.execute(_APPLY)
            con.execute(_SHADOW)
            con.execute(_AUDIO)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            for name in ("batch_files", "batch_generations", "batch_profiles"):
                con.unregister(name)

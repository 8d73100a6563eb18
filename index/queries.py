"""The history queries: list (filters, paging, search), get, stats, read-only SQL.

Every value reaches DuckDB as a parameter; search terms are matched with ``contains``, so
``%``, ``_`` and quotes are ordinary characters. Answers follow the seed's response schema,
with audio paths made absolute on this machine.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime, timedelta, timezone
from typing import Any

import duckdb

from ..library import Library, LibraryError, SidecarError, schema
from ..library.schema import STATUSES
from . import tables
from .text import SIGNATURE_COLUMNS, search_terms, terms_signature

DEFAULT_LIMIT = 50
MAX_LIMIT = 10_000

# the seed's GenerationResponse, in its order
ITEM_FIELDS = (
    "id",
    "profile_id",
    "profile_name",
    "text",
    "language",
    "audio_path",
    "duration",
    "seed",
    "instruct",
    "engine",
    "model_size",
    "status",
    "error",
    "is_favorited",
    "created_at",
)
_DETAIL_FIELDS = (
    "updated_at",
    "host_duration",
    "sample_rate",
    "channels",
    "audio_bytes",
    "audio_sha256",
    "audio_present",
    "active_version_id",
    "extra",
    "origin_library_id",
    "origin_id",
    "sidecar_path",
)
_VERSION_FIELDS = (
    "id",
    "label",
    "audio_path",
    "effects_chain",
    "is_default",
    "created_at",
    "source_version_id",
    "duration",
    "sample_rate",
    "channels",
    "audio_bytes",
    "audio_sha256",
    "audio_present",
)


class QueryError(ValueError):
    """A query's arguments are not valid; the message names the argument and the value."""


class NotFoundError(LookupError):
    """No generation has the id asked for."""


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, as the seed's responses give it."""
    if value is None:
        return None
    text = value.astimezone(timezone.utc).replace(tzinfo=None).isoformat()
    return text + "Z"


def parse_time(value: str | datetime, name: str) -> datetime:
    """A date or date-time given by a person or a script; naive means UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif not isinstance(value, str):
        raise QueryError(f"{name} {value!r} is not a date or time")
    else:
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise QueryError(
                f"{name} {value!r} is not a date or time (use ISO 8601, e.g. 2026-04-18 "
                "or 2026-04-18T10:30:00Z)"
            ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Filters:
    profile_id: str | None = None
    search: str | None = None
    language: str | None = None
    engine: str | None = None
    status: str | None = None
    favorites: bool = False
    since: datetime | str | None = None
    until: datetime | str | None = None

    def sql(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for name in ("profile_id", "language", "engine", "status", "search"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise QueryError(f"{name} {value!r} must be a string")
        for name in ("profile_id", "language", "engine", "status"):
            value = getattr(self, name)
            if value is not None:
                clauses.append(f"g.{name} = ?")
                params.append(value)
        if self.status is not None and self.status not in STATUSES:
            raise QueryError(f"status {self.status!r} is not one of {', '.join(STATUSES)}")
        if not isinstance(self.favorites, bool):
            raise QueryError(f"favorites {self.favorites!r} must be true or false")
        if self.favorites:
            clauses.append("g.is_favorited")
        if self.since is not None:
            clauses.append("g.created_at >= ?")
            params.append(parse_time(self.since, "since"))
        if self.until is not None:
            clauses.append("g.created_at < ?")
            params.append(parse_time(self.until, "until"))
        if self.terms:
            # CASE, so that DuckDB runs `contains` only on the texts whose signature passes: as
            # a conjunction it may run it first (the count of a search at 1M: 14-22 ms, was 24-43)
            tests = []
            for column, word in zip(SIGNATURE_COLUMNS, terms_signature(self.terms)):
                if word:
                    tests.append(f"(g.{column} & ?::UBIGINT) = ?::UBIGINT")
                    params += [word, word]
            matches = " AND ".join("contains(g.search_text, ?)" for _ in self.terms)
            clauses.append(f"CASE WHEN {' AND '.join(tests)} THEN {matches} ELSE false END" if tests else matches)
            params += self.terms
        return (" AND ".join(clauses) or "true"), params

    @cached_property
    def terms(self) -> list[str]:
        """The search's words, normalised (none: no search)."""
        return search_terms(self.search) if isinstance(self.search, str) else []


def _encode_cursor(created_at: datetime, generation_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), generation_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, generation_id = json.loads(raw)
        return datetime.fromisoformat(created), str(generation_id)
    except (ValueError, TypeError, binascii.Error):
        raise QueryError(f"cursor {cursor!r} is not one this tool gave out") from None


# the profile's current name when it still exists, else the name it had at generation time
_ITEM_COLUMNS = ", ".join(
    "coalesce(p.name, g.profile_name)" if f == "profile_name" else f"g.{f}" for f in ITEM_FIELDS
)


def _item(library: Library, row: tuple) -> dict[str, Any]:
    item = dict(zip(ITEM_FIELDS, row))
    item["audio_path"] = _absolute(library, item["audio_path"])
    item["created_at"] = iso(item["created_at"])
    return item


def _absolute(library: Library, relative: str | None) -> str | None:
    return None if relative is None else str(library.absolute(relative))


def list_generations(
    con: duckdb.DuckDBPyConnection,
    library: Library,
    filters: Filters = Filters(),
    *,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Newest first: ``{"items": [...], "total": N, "next_cursor": str | None}``.

    ``total`` counts every match; ``next_cursor`` continues after this page (stable while
    generations are added, unlike ``offset``).
    """
    for name, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise QueryError(f"{name} {value!r} is not a whole number")
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit {limit} is out of range (1 to {MAX_LIMIT})")
    if offset < 0:
        raise QueryError(f"offset {offset} must not be negative")
    if cursor is not None and offset:
        raise QueryError("give a cursor or an offset, not both")
    where, params = filters.sql()
    where = f"NOT g.shadowed AND {where}"
    page_where, page_params = "true", []
    if cursor is not None:
        created, last_id = _decode_cursor(cursor)
        # the first term alone lets DuckDB skip row groups by their created_at range
        page_where = "g.created_at <= ? AND (g.created_at < ? OR g.id < ?)"
        page_params = [created, created, last_id]
    order = "ORDER BY g.created_at DESC, g.id DESC"
    page_filter, page_filter_params = f"{where} AND {page_where}", params + page_params
    # The page's rows are bounded by the created_at of the last one it can reach (the row past
    # its end included): DuckDB then skips the row groups below it, both where it sorts the
    # page's keys on two columns and where it fetches the page's rows.
    reach = offset + limit + 1
    total, times = None, None
    upper, skip = None, offset  # the page's range: open towards the newest, its first `offset` rows skipped
    if filters.terms:
        # A search reads every text: one scan finds both the count and the bound.
        total, newest = con.execute(
            f"SELECT count(*), max(g.created_at, ?) FILTER (WHERE {page_where}) "
            f"FROM generation_rows g WHERE {where}",
            [reach] + page_params + params,
        ).fetchone()
        found = newest[-1] if newest is not None and len(newest) == reach else None
        times = newest if reach <= _DEEP else None  # the times of the page's rows among them
        nothing = newest is None  # no match on or past the page: the texts are not read again
        total_sql, total_params = "?", [total]
    else:
        window = _deep_window(con, page_filter, page_filter_params, offset, reach) if offset >= _DEEP else None
        if window is not None:
            found, upper, skip, total = window
            nothing = offset >= total
            total_sql, total_params = "?", [total]
        else:
            # Sorted on created_at alone, the top-N skips row groups by their created_at range.
            last = con.execute(
                f"SELECT g.created_at FROM generation_rows g WHERE {page_filter} "
                "ORDER BY g.created_at DESC LIMIT 1 OFFSET ?",
                page_filter_params + [reach - 1],
            ).fetchall()
            found, nothing = (last[0][0] if last else None), False
            total_sql, total_params = f"SELECT count(*) FROM generation_rows g WHERE {where}", params
    # constants, so that the scan itself skips row groups
    bound = "g.created_at BETWEEN coalesce(?, '-infinity'::TIMESTAMPTZ) AND coalesce(?, 'infinity'::TIMESTAMPTZ)"
    bound_params = [found, upper]
    if times:
        # Rare matches are spread over the whole range: the times of the page's rows let the
        # scans read the other columns of those rows only (a rare word's search at 100k, 18
        # matches: 15.6 ms, was 19.8; at 1M, 238: 29.2, was 33.2)
        bound += " AND g.created_at = ANY(?)"
        bound_params.append(times)
    # The page's keys are sorted alone and its rows fetched after: sorting whole rows costs
    # ten times more on a deep page.
    rows = [] if nothing else con.execute(
        f"WITH page AS (SELECT g.rowid AS r FROM generation_rows g WHERE {page_filter} "
        f"AND {bound} {order} LIMIT ? OFFSET ?) "
        f"SELECT {_ITEM_COLUMNS}, ({total_sql}) FROM generation_rows g SEMI JOIN page ON g.rowid = page.r "
        f"LEFT JOIN profiles p ON p.id = g.profile_id WHERE {bound} {order}",
        page_filter_params + bound_params + [limit + 1, skip] + total_params + bound_params,
    ).fetchall()
    if rows:
        total = rows[0][-1]
        rows = [row[:-1] for row in rows]
    elif total is None:  # past the end: nothing to carry the count
        total = con.execute(f"SELECT count(*) FROM generation_rows g WHERE {where}", params).fetchone()[0]
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [_item(library, row) for row in rows],
        "total": total,
        "next_cursor": _encode_cursor(rows[-1][14], rows[-1][0]) if more else None,
    }


# From this offset on, a page is found inside a created_at range narrowed by counting, instead
# of by a top-N that keeps every row before it: at 1M rows, offset 500,000, 5 ms, not 60.
_DEEP = 1_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NARROWING = 8  # counts tried before the range, if still wide, is used as it is
_SLACK = 200  # rows the range may reach past the page at either end (more in a large index)


def _deep_window(
    con: duckdb.DuckDBPyConnection, page_filter: str, params: list[Any], offset: int, reach: int
) -> tuple[datetime | None, datetime | None, int, int] | None:
    """For a page of rows ``offset`` to ``reach - 1`` (newest first): a created_at range that
    holds it, how many newer rows come before that range, and the count of every match
    (past the end: no range, nothing to skip). None where no range was found (created_at
    values tied across the page): the caller then finds the page the slow way.

    A count of the rows newer than a time costs one scan of created_at. Times are guessed by
    interpolating between the counts known so far (rows are spread in time), so a few counts
    bring both ends of the range within ``slack`` rows of the page."""
    total, oldest, newest = con.execute(
        f"SELECT count(*), epoch_us(min(g.created_at)), epoch_us(max(g.created_at)) "
        f"FROM generation_rows g WHERE {page_filter}",
        params,
    ).fetchone()
    if offset >= total:
        return None, None, offset, total
    slack = max(_SLACK, total // 2000)
    # (time in µs, rows at or newer than it), from newest to oldest
    known = [(newest + 1, 0), (oldest, total)]

    def time_at(position: int) -> int | None:
        if position <= 0 or position >= total:
            return None  # the range is open at that end
        # rows added between two counts can leave no pair around the position: leave it open
        pair = next(((a, b) for a, b in zip(known, known[1:]) if a[1] <= position <= b[1]), None)
        if pair is None:
            return None
        (t1, n1), (t2, n2) = pair
        return t1 if n2 == n1 else t1 - (t1 - t2) * (position - n1) // (n2 - n1)

    def as_time(us: int | None) -> datetime | None:
        return None if us is None else _EPOCH + timedelta(microseconds=us)

    found = None
    for _ in range(_NARROWING):
        upper, lower = time_at(offset - slack), time_at(reach - 1 + slack)
        newer, within = con.execute(
            "SELECT count(*) FILTER (WHERE g.created_at > coalesce(?, 'infinity'::TIMESTAMPTZ)), count(*) "
            f"FROM generation_rows g WHERE {page_filter} "
            "AND g.created_at >= coalesce(?, '-infinity'::TIMESTAMPTZ)",  # a constant: row groups skipped
            [as_time(upper)] + params + [as_time(lower)],
        ).fetchone()
        if newer <= offset and within >= min(reach, total):
            found = (as_time(lower), as_time(upper), offset - newer, total)
            if within - newer <= reach - offset + 4 * slack:
                break
        if upper is not None:
            known.append((upper + 1, newer))  # rows newer than upper: those at upper + 1 µs or later
        if lower is not None:
            known.append((lower, within))
        known = sorted(set(known), key=lambda k: (-k[0], k[1]))
    return found


# The index finds the copy of the id that counts, through its ART index; the record is then
# read from that sidecar, the folder's record as it is now. Reading the row's 27 columns and its
# versions' 13 from the index instead cost 6-8 ms at 1M for a row a process had not read yet
# (each column's block is loaded for it), and 3-4 ms after; this costs ~1.2 and ~0.5 ms.
_GET = "SELECT sidecar_path, profile_id FROM generation_rows WHERE id = $id AND NOT shadowed"
# a sidecar of that name the last sync could not read (its id is only in its name)
_UNREADABLE = "SELECT path, error FROM files WHERE error IS NOT NULL AND ends_with(path, $name) LIMIT 1"


def get_generation(
    con: duckdb.DuckDBPyConnection, library: Library, generation_id: str
) -> dict[str, Any]:
    """One generation with every recorded field, its versions, and which one is active: the
    record of the sidecar the index finds for the id, as the folder holds it now. Raises
    :class:`NotFoundError` for an id the index does not know or whose sidecar is gone, and
    :class:`SidecarError` (naming the file) for one that can no longer be read."""
    row = con.execute(_GET, {"id": generation_id}).fetchone()
    if row is None:
        unreadable = con.execute(_UNREADABLE, {"name": f"/{generation_id}.parquet"}).fetchone()
        if unreadable is not None:
            raise NotFoundError(
                f"generation {generation_id!r} cannot be read: its sidecar "
                f"{_absolute(library, unreadable[0])}: {unreadable[1]}"
            )
        raise NotFoundError(f"generation {generation_id!r} not found")
    sidecar_path, profile_id = row
    try:
        record = schema.read_generation(library.absolute(sidecar_path), generation_id)
    except SidecarError as exc:
        if exc.reason != schema.MISSING:
            raise
        raise NotFoundError(
            f"generation {generation_id!r} not found: its sidecar {exc.path} was removed "
            "after the index last synced"
        ) from None
    item = _item(library, tuple(record[f] for f in ITEM_FIELDS))
    try:  # the profile's current name, as list gives it; else the name at generation time
        item["profile_name"] = schema.read_profile(library.profile_path(profile_id), profile_id)["name"]
    except LibraryError:
        pass
    versions = [_version(library, v) for v in record["versions"]]
    item.update({f: record.get(f) for f in _DETAIL_FIELDS})
    item.update(
        updated_at=iso(record["updated_at"]),
        # the active version's, as the index keeps it; none when no version is active
        audio_present=next(
            (v["audio_present"] for v in versions if v["id"] == record["active_version_id"]), None
        ),
        sidecar_path=_absolute(library, sidecar_path),
        versions=versions,
    )
    return item


def _version(library: Library, version: dict[str, Any]) -> dict[str, Any]:
    shown = {f: version.get(f) for f in _VERSION_FIELDS}
    chain = version["effects_chain"]
    shown.update(
        audio_present=library.audio_present(version["audio_path"], version["audio_bytes"]),
        audio_path=_absolute(library, version["audio_path"]),
        created_at=iso(version["created_at"]),
        effects_chain=None if chain is None else json.loads(chain),
    )
    return shown


def stats(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """The seed's statistics, plus counts by engine, language and status and bytes on disk."""
    rows = tables.tallies(con)
    by: dict[str, dict] = {"profile": {}, "engine": {}, "language": {}, "status": {}, "bytes": {}}
    total = duration = favorites = 0
    for breakdown, key, count, seconds, favorite in rows:
        if breakdown == "total":
            total, duration, favorites = int(count), seconds, int(favorite)
        elif count:  # a key whose last generation went
            by[breakdown][key] = int(count)
    audio_bytes = by["bytes"].get("audio", 0)
    sidecar_bytes = by["bytes"].get("generation", 0) + by["bytes"].get("profile", 0)
    ordered = {k: dict(sorted(v.items(), key=lambda kv: (kv[0] is None, kv[0]))) for k, v in by.items()}
    return {
        "total_generations": total,
        "total_duration_seconds": float(duration),
        "generations_by_profile": ordered["profile"],
        "generations_by_engine": ordered["engine"],
        "generations_by_language": ordered["language"],
        "generations_by_status": ordered["status"],
        "favorites": favorites,
        "audio_bytes": audio_bytes,
        "sidecar_bytes": sidecar_bytes,
        "bytes_on_disk": audio_bytes + sidecar_bytes,
    }


def generation_ids(
    con: duckdb.DuckDBPyConnection, filters: Filters = Filters(), *, keep_favorites: bool = False
) -> list[tuple[str, str]]:
    """(id, sidecar path) of every generation matching ``filters``, oldest first."""
    where, params = filters.sql()
    if keep_favorites:
        where += " AND NOT g.is_favorited"
    return con.execute(
        f"SELECT g.id, g.sidecar_path FROM generation_rows g WHERE NOT g.shadowed AND {where} "
        "ORDER BY g.created_at, g.id",
        params,
    ).fetchall()


def sidecars_of(con: duckdb.DuckDBPyConnection, ids: list[str]) -> dict[str, str]:
    """The sidecar path of each of these ids that the index knows."""
    return dict(
        con.execute(
            "SELECT id, sidecar_path FROM generation_rows WHERE NOT shadowed AND id IN "
            "(SELECT unnest(?::VARCHAR[]))",
            [ids],
        ).fetchall()
    )


@contextmanager
def snapshot(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One state of the index for several statements (a writer sharing this process's
    connection may commit between them); whatever they did is rolled back."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    finally:
        con.execute("ROLLBACK")


# string literals, quoted names and comments, which may say anything
_LITERALS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.S)
_MODIFYING = re.compile(
    r"\b(insert|update|delete|merge|create|drop|alter|truncate|copy|attach|detach|install|load|"
    r"checkpoint|vacuum|export|import|set|reset|pragma|call)\b",
    re.I,
)


def read_only_sql(con: duckdb.DuckDBPyConnection, query: str) -> tuple[list[str], list[tuple]]:
    """Run one SELECT (or WITH ... SELECT) and return (column names, rows)."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise QueryError(f"SQL does not parse: {exc}") from None
    if len(statements) != 1:
        raise QueryError(f"give exactly one SQL statement, got {len(statements)}")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise QueryError(
            f"only SELECT queries are allowed here, not {statements[0].type.name}: "
            "the index is rebuilt from the library folder, change that instead"
        )
    # A SELECT can still hold a data-modifying CTE: refuse it by name, and roll back whatever
    # a query does in any case.
    words = _MODIFYING.search(_LITERALS.sub(" ", query))
    if words:
        raise QueryError(f"only reading is allowed here; this query would {words[0].upper()}")
    with snapshot(con):
        try:
            result = con.execute(query)
            columns = [d[0] for d in result.description]
            return columns, result.fetchall()
        except duckdb.Error as exc:
            raise QueryError(f"SQL failed: {exc}") from None


def conflicts(con: duckdb.DuckDBPyConnection, library: Library) -> list[dict[str, Any]]:
    rows = con.execute(
        """
        SELECT g.id, g.sidecar_path, g.conflict_copy, NOT g.shadowed, g.updated_at,
               g.is_favorited, g.status, (SELECT count(*) FROM version_rows v
                                          WHERE v.sidecar_path = g.sidecar_path)
        FROM generation_rows g
        WHERE g.id IN (SELECT id FROM generation_rows GROUP BY id HAVING count(*) > 1)
        ORDER BY g.id, g.shadowed, g.sidecar_path
        """
    ).fetchall()
    out: dict[str, dict[str, Any]] = {}
    for gid, path, copy, wins, updated, favorite, status, versions in rows:
        entry = out.setdefault(gid, {"kind": "generation", "id": gid, "sidecars": []})
        entry["sidecars"].append(
            {
                "sidecar_path": _absolute(library, path),
                "conflict_copy": copy,
                "wins": wins,
                "updated_at": iso(updated),
                "is_favorited": favorite,
                "status": status,
                "versions": versions,
            }
        )
    profiles = con.execute(
        "SELECT path FROM files WHERE kind = 'profile_copy' ORDER BY path"
    ).fetchall()
    return list(out.values()) + [
        {"kind": "profile", "sidecar_path": _absolute(library, p)} for (p,) in profiles
    ]

"""The index's tables. Analysts query the views ``generations``, ``versions`` and ``profiles``;
the ``*_rows`` tables and ``files`` are the sync machinery behind them.

The index is a cache of the library folder: when this layout changes, INDEX_VERSION goes up and
an older index file is simply rebuilt from the sidecars.
"""

from __future__ import annotations

import secrets

import duckdb

from .text import SIGNATURE_COLUMNS

INDEX_VERSION = "14"

_SIGNATURE_DDL = " ".join(f"{column} UBIGINT NOT NULL," for column in SIGNATURE_COLUMNS)
_SIGNATURE_NAMES = ", ".join(SIGNATURE_COLUMNS)

# One row per sidecar file. Several sidecars can carry the same generation id: a sync tool's
# conflict copy, or a copy left in another day folder. The newest updated_at wins (on a tie the
# original over a conflict copy, then the first path), the rest are 'shadowed': every machine
# picks the same one, whatever order it read them in. `tts-history conflicts` lists them.
_DDL = f"""
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE files (
    path VARCHAR NOT NULL,          -- sidecar path, relative to the library root
    folder VARCHAR NOT NULL,        -- the folder it is in
    kind VARCHAR NOT NULL,          -- 'generation' | 'profile' | 'audio' | 'profile_copy'
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    ino BIGINT NOT NULL,
    ctime_ns BIGINT NOT NULL,
    checked_ns BIGINT NOT NULL,     -- wall clock when the scan that recorded it began
    error VARCHAR                   -- why it could not be read; retried when it changes
);
-- Folders as the last sync listed them: one whose stat is the same holds the same files.
CREATE TABLE folders (
    path VARCHAR NOT NULL,
    mtime_ns BIGINT NOT NULL,
    ctime_ns BIGINT NOT NULL,
    ino BIGINT NOT NULL,
    checked_ns BIGINT NOT NULL
);
CREATE TABLE generation_rows (
    sidecar_path VARCHAR NOT NULL,
    shadowed BOOLEAN NOT NULL DEFAULT false,
    conflict_copy BOOLEAN NOT NULL DEFAULT false,
    id VARCHAR NOT NULL,
    profile_id VARCHAR NOT NULL,
    profile_name VARCHAR,
    text VARCHAR NOT NULL,
    language VARCHAR,
    -- uncompressed: a search's page reads it from rows far apart, and DuckDB decodes a whole
    -- vector of compressed (DICT_FSST) paths for each: 18 rows of 100k, 6.0 ms, not 1.9
    audio_path VARCHAR USING COMPRESSION uncompressed,
    duration DOUBLE,
    seed BIGINT,
    instruct VARCHAR,
    engine VARCHAR,
    model_size VARCHAR,
    status VARCHAR NOT NULL,
    error VARCHAR,
    is_favorited BOOLEAN NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    host_duration DOUBLE,
    sample_rate INTEGER,
    channels SMALLINT,
    audio_bytes BIGINT,
    audio_sha256 VARCHAR,
    active_version_id VARCHAR,
    extra MAP(VARCHAR, VARCHAR),
    origin_library_id VARCHAR,
    origin_id VARCHAR,
    sidecar_bytes BIGINT NOT NULL,
    -- scanned whole by every search: uncompressed, since decompressing it costs more than the scan
    search_text VARCHAR NOT NULL USING COMPRESSION uncompressed,
    -- its signature (text.py): a search runs `contains` only where it has the terms' bits
    {_SIGNATURE_DDL}
    audio_present BOOLEAN
);
CREATE TABLE version_rows (
    sidecar_path VARCHAR NOT NULL,
    shadowed BOOLEAN NOT NULL DEFAULT false,
    generation_id VARCHAR NOT NULL,
    position INTEGER NOT NULL,
    id VARCHAR NOT NULL,
    label VARCHAR,
    audio_path VARCHAR,
    effects_chain JSON,
    is_default BOOLEAN,
    created_at TIMESTAMPTZ,
    source_version_id VARCHAR,
    duration DOUBLE,
    sample_rate INTEGER,
    channels SMALLINT,
    audio_bytes BIGINT,
    audio_sha256 VARCHAR,
    audio_present BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE profiles (
    id VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    description VARCHAR,
    language VARCHAR,
    extra JSON,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    sidecar_path VARCHAR NOT NULL
);
-- What `stats` answers, kept current by each sync batch in its own transaction. A ledger: each
-- batch appends its changes, and a key's figures are the sums of its rows. Count, summed
-- duration (an exact decimal, so the order rows came in cannot change it; a duration that is
-- not finite counts as none) and favorites, in total and by profile, engine, language and
-- status; and bytes by file kind. meta 'tallies' is 'stale' while a large sync is under way:
-- stats then counts from the rows.
CREATE TABLE tallies (
    breakdown VARCHAR NOT NULL,     -- 'total' | 'profile' | 'engine' | 'language' | 'status' | 'bytes'
    key VARCHAR,
    n HUGEINT NOT NULL,             -- generations, or bytes for 'bytes'
    duration DECIMAL(38, 12) NOT NULL,
    favorites HUGEINT NOT NULL
);
CREATE VIEW generations AS
    SELECT * EXCLUDE (shadowed, conflict_copy, search_text, {_SIGNATURE_NAMES})
    FROM generation_rows WHERE NOT shadowed;
CREATE VIEW versions AS
    SELECT * EXCLUDE (shadowed, sidecar_path) FROM version_rows WHERE NOT shadowed;
"""


# Point lookups instead of scans of every row: get and a generation's versions, and the rows a
# sync batch replaces (a watcher's batch touches a few files of a library of millions). Zone
# maps cannot stand in for the path indexes: DuckDB keeps only a short prefix of a string's
# min/max, and every path starts with "generations/". Made once the first sync has filled the
# tables: kept up to date row by row while a library is read from nothing, they made the build
# about a quarter slower than building them at the end does.
_INDEXES = """
CREATE INDEX IF NOT EXISTS generation_rows_id ON generation_rows (id);
CREATE INDEX IF NOT EXISTS generation_rows_sidecar ON generation_rows (sidecar_path);
CREATE INDEX IF NOT EXISTS version_rows_generation ON version_rows (generation_id);
CREATE INDEX IF NOT EXISTS version_rows_sidecar ON version_rows (sidecar_path);
CREATE INDEX IF NOT EXISTS version_rows_audio ON version_rows (audio_path);
CREATE INDEX IF NOT EXISTS files_path ON files (path);
"""


def build_indexes(con: duckdb.DuckDBPyConnection) -> None:
    """Build the lookup indexes that are missing, and record in meta that they are built
    (finding them there cost a watcher's batch 2 ms)."""
    con.execute(_INDEXES)
    con.execute("INSERT OR REPLACE INTO meta VALUES ('indexes', 'built')")


def current_version(con: duckdb.DuckDBPyConnection) -> str | None:
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'index_version'").fetchone()
    except duckdb.CatalogException:
        return None
    return row[0] if row else None


def names(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """The index database's tables and views, with their kinds."""
    return con.execute(
        "SELECT table_name, table_type FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_schema = 'main'"
    ).fetchall()


def create(con: duckdb.DuckDBPyConnection, library_root: str, library_id: str) -> None:
    """(Re)create every table, empty; the caller then syncs from the folder."""
    for (name, kind) in names(con):
        con.execute(f'DROP {"VIEW" if kind == "VIEW" else "TABLE"} IF EXISTS "{name}" CASCADE')
    con.execute(_DDL)
    con.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [
            ("index_version", INDEX_VERSION),
            ("library_root", library_root),
            ("library_id", library_id),
            ("tallies", "current"),  # of no rows: none
            ("flags", "current"),  # 'stale': a first build under way has not set them yet (sync.py)
            # batches applied (see sync.py), from a random start: an index made again must not
            # come back to a revision a sync saw before
            ("revision", str(secrets.randbits(62))),
        ],
    )


# Every figure of `stats`, from the rows: the tallies' contents when they are current.
TALLIES = """
SELECT 'total', NULL, count(*), coalesce(sum(TRY_CAST(duration AS DECIMAL(38, 12))), 0),
       count(*) FILTER (is_favorited)
FROM generations
UNION ALL SELECT 'profile', profile_id, count(*), 0, 0 FROM generations GROUP BY 2
UNION ALL SELECT 'engine', engine, count(*), 0, 0 FROM generations GROUP BY 2
UNION ALL SELECT 'language', language, count(*), 0, 0 FROM generations GROUP BY 2
UNION ALL SELECT 'status', status, count(*), 0, 0 FROM generations GROUP BY 2
UNION ALL SELECT 'bytes', kind, sum(size), 0, 0 FROM files GROUP BY 2
"""


# The tallies kept: each sync batch appends what it changed, so a key's figures are its sums.
KEPT_TALLIES = """
SELECT breakdown, key, sum(n), sum(duration), sum(favorites) FROM tallies GROUP BY ALL
HAVING sum(n) <> 0 OR sum(duration) <> 0 OR sum(favorites) <> 0
"""


def tallies(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """(breakdown, key, n, duration, favorites) rows: kept ones when current, else counted."""
    state = con.execute("SELECT value FROM meta WHERE key = 'tallies'").fetchall()
    return con.execute(KEPT_TALLIES if state == [("current",)] else TALLIES).fetchall()

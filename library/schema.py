"""The sidecar format: explicit, versioned Arrow schemas for generation and profile sidecars.

A sidecar is a one-row Parquet file. Every sidecar carries ``schema_version``; a reader accepts
every older version by running it through ``_UPGRADES`` and refuses newer ones by name.
Records in Python are plain dicts keyed by the schema's field names, datetimes timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_write
from .errors import SidecarError

SCHEMA_VERSION = 1

STATUSES = ("generating", "completed", "failed")

_TS = pa.timestamp("us", tz="UTC")

VERSION_TYPE = pa.struct(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("audio_path", pa.string()),  # relative to the library root, POSIX separators
        pa.field("effects_chain", pa.string()),  # JSON list of {type, enabled, params}, or null
        pa.field("is_default", pa.bool_()),
        pa.field("created_at", _TS),
        pa.field("source_version_id", pa.string()),
        pa.field("duration", pa.float64()),
        pa.field("sample_rate", pa.int32()),
        pa.field("channels", pa.int16()),
        pa.field("audio_bytes", pa.int64()),
        pa.field("audio_sha256", pa.string()),
    ]
)

GENERATION_SCHEMA = pa.schema(
    [
        pa.field("schema_version", pa.int16(), nullable=False),
        # the seed's Generation, field for field
        pa.field("id", pa.string(), nullable=False),
        pa.field("profile_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("language", pa.string()),
        pa.field("audio_path", pa.string()),  # the active version's audio, relative
        pa.field("duration", pa.float64()),  # measured from the active version's audio
        pa.field("seed", pa.int64()),
        pa.field("instruct", pa.string()),
        pa.field("engine", pa.string()),
        pa.field("model_size", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("is_favorited", pa.bool_(), nullable=False),
        pa.field("created_at", _TS, nullable=False),
        # what a portable, self-describing record needs besides
        pa.field("updated_at", _TS, nullable=False),
        pa.field("profile_name", pa.string()),  # snapshot at generation time
        pa.field("host_duration", pa.float64()),  # what the host reported, kept when it differs
        pa.field("sample_rate", pa.int32()),
        pa.field("channels", pa.int16()),
        pa.field("audio_bytes", pa.int64()),
        pa.field("audio_sha256", pa.string()),
        pa.field("active_version_id", pa.string()),
        pa.field("versions", pa.list_(VERSION_TYPE)),
        pa.field("extra", pa.map_(pa.string(), pa.string())),
        pa.field("origin_library_id", pa.string()),  # set on import: where it came from
        pa.field("origin_id", pa.string()),
    ]
)

PROFILE_SCHEMA = pa.schema(
    [
        pa.field("schema_version", pa.int16(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("description", pa.string()),
        pa.field("language", pa.string()),
        pa.field("extra", pa.string()),  # JSON object: whatever else the host keeps
        pa.field("created_at", _TS, nullable=False),
        pa.field("updated_at", _TS, nullable=False),
    ]
)

# schema_version n -> n + 1, for each sidecar kind. Empty while only version 1 exists; a new
# version adds its step here and never edits an old one.
_UPGRADES: dict[str, dict[int, Callable[[pa.Table], pa.Table]]] = {"generation": {}, "profile": {}}
_SCHEMAS = {"generation": GENERATION_SCHEMA, "profile": PROFILE_SCHEMA}


def now() -> datetime:
    return datetime.now(timezone.utc)


def _write(path: Path, table: pa.Table) -> None:
    def write(f: BinaryIO) -> None:
        # statistics are useless on one row and make every sidecar larger
        # One row: statistics and dictionaries only cost time and bytes; snappy is as small as
        # zstd here and twice as fast to write.
        pq.write_table(
            table, f, compression="snappy", write_statistics=False, use_dictionary=False
        )

    atomic_write(path, write)


def generation_table(records: list[dict[str, Any]]) -> pa.Table:
    rows = [{**r, "schema_version": SCHEMA_VERSION} for r in records]
    return pa.Table.from_pylist(rows, schema=GENERATION_SCHEMA)


def write_generation(path: Path, record: dict[str, Any]) -> None:
    _write(path, generation_table([record]))


def write_profile(path: Path, record: dict[str, Any]) -> None:
    row = {**record, "schema_version": SCHEMA_VERSION}
    _write(path, pa.Table.from_pylist([row], schema=PROFILE_SCHEMA))


def read_table(path: Path | str, kind: str, expected_id: str | None = None) -> pa.Table:
    """Read one sidecar as a table of the current schema, upgrading older versions.

    ``expected_id``: the id the record must carry (default: the file name's stem; a sync
    tool's conflict copy carries its original's id). Raises :class:`SidecarError` naming the
    path and the reason for anything unreadable.
    """
    schema = _SCHEMAS[kind]
    try:
        table = pq.ParquetFile(path).read()  # read_table's dataset layer costs more than the read
    except FileNotFoundError:
        raise SidecarError(path, "file not found") from None
    except (OSError, pa.ArrowException) as exc:
        raise SidecarError(path, f"not a readable Parquet file ({exc})") from None
    if table.num_rows != 1:
        raise SidecarError(path, f"holds {table.num_rows} rows, a sidecar holds one")
    names = set(table.schema.names)
    if "schema_version" not in names:
        raise SidecarError(path, "has no schema_version column")
    version = table.column("schema_version")[0].as_py()
    if not isinstance(version, int) or version < 1:
        raise SidecarError(path, f"schema_version {version!r} is not valid")
    if version > SCHEMA_VERSION:
        raise SidecarError(
            path,
            f"schema_version {version} is newer than this tts-history reads "
            f"({SCHEMA_VERSION}): upgrade tts-history",
        )
    for step in range(version, SCHEMA_VERSION):
        table = _UPGRADES[kind][step](table)
    names = set(table.schema.names)
    missing = [f.name for f in schema if f.name not in names and not f.nullable]
    if missing:
        raise SidecarError(path, f"missing required field(s): {', '.join(missing)}")
    if table.schema.equals(schema):
        _check(path, table.to_pylist()[0], kind, expected_id)
        return table
    try:
        columns = [
            table.column(f.name).cast(f.type)
            if f.name in names
            else pa.nulls(1, f.type)
            for f in schema
        ]
        table = pa.Table.from_arrays(columns, schema=schema)
    except (pa.ArrowException, ValueError) as exc:
        raise SidecarError(path, f"a field has the wrong type ({exc})") from None
    _check(path, table.to_pylist()[0], kind, expected_id)
    return table


def _check(path: Path | str, row: dict[str, Any], kind: str, expected_id: str | None) -> None:
    for name in ("id", "created_at", "updated_at") + (
        ("profile_id", "text", "status", "is_favorited") if kind == "generation" else ("name",)
    ):
        if row[name] is None:
            raise SidecarError(path, f"required field {name} is null")
    expected = expected_id or Path(path).name.removesuffix(".parquet")
    if row["id"] != expected:
        raise SidecarError(path, f"id {row['id']!r} does not match the file name")
    if kind == "generation" and row["status"] not in STATUSES:
        raise SidecarError(path, f"status {row['status']!r} is not one of {', '.join(STATUSES)}")


def read_generation(path: Path | str, expected_id: str | None = None) -> dict[str, Any]:
    row = read_table(path, "generation", expected_id).to_pylist()[0]
    row["extra"] = dict(row["extra"] or ())
    row["versions"] = row["versions"] or []
    del row["schema_version"]
    return row


def read_profile(path: Path | str, expected_id: str | None = None) -> dict[str, Any]:
    row = read_table(path, "profile", expected_id).to_pylist()[0]
    del row["schema_version"]
    return row

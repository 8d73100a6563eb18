"""The sidecar format: explicit, versioned Arrow schemas for generation and profile sidecars.

A sidecar is a one-row Parquet file. Every sidecar carries ``schema_version``; a reader accepts
every older version by running it through ``_UPGRADES`` and refuses newer ones by name.
Records in Python are plain dicts keyed by the schema's field names, datetimes timezone-aware UTC.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_write_bytes
from .errors import SidecarError
from .footer import FooterError, footer_value

SCHEMA_VERSION = 1
# The footer's key-value metadata carries the record again, as JSON: readers of this package
# take it from there, a tenth of the cost of decoding the row (see read_row).
RECORD_KEY = b"tts_history.record"

STATUSES = ("generating", "completed", "failed")
MISSING = "file not found"  # a SidecarError's reason when there is no file at the path

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
# a sidecar's row as one struct, converted from a dict in one call
_GENERATION_ROW = pa.struct(list(GENERATION_SCHEMA))
_PROFILE_ROW = pa.struct(list(PROFILE_SCHEMA))


def now() -> datetime:
    return datetime.now(timezone.utc)


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{value!r} cannot go into a sidecar record")


def _encode(rows: list[dict[str, Any]], row_type: pa.StructType) -> list[pa.Buffer]:
    # One conversion of all the rows, each written from its slice: converting a row takes
    # ten times longer alone than among many (0.05 ms and 0.005), and a slice's file is byte
    # for byte the file of the row alone.
    batch = pa.RecordBatch.from_struct_array(pa.array(rows, row_type))
    return [_encode_row(batch.slice(i, 1), row) for i, row in enumerate(rows)]


def _encode_row(batch: pa.RecordBatch, row: dict[str, Any]) -> pa.Buffer:
    record = json.dumps(row, default=_json_default, ensure_ascii=False, separators=(",", ":"))
    # One row: statistics and dictionaries only cost time and bytes; snappy is as small as
    # zstd here and twice as fast to write. No copy of the Arrow schema (5.6 KB, 43% of the
    # file): the Parquet types alone read back as exactly the schema. Encoded into an Arrow
    # buffer, not a Python file, whose call per small write costs a third of the time.
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(
        sink, batch.schema, compression="snappy", write_statistics=False, use_dictionary=False,
        store_schema=False,
    ) as writer:
        writer.write_batch(batch)
        writer.add_key_value_metadata({RECORD_KEY: record.encode()})
    return sink.getvalue()


def encode_generations(records: list[dict[str, Any]]) -> list[pa.Buffer]:
    """The bytes of each record's sidecar: the same as :func:`encode_generation`'s, in less time."""
    return _encode([{**record, "schema_version": SCHEMA_VERSION} for record in records], _GENERATION_ROW)


def encode_generation(record: dict[str, Any]) -> pa.Buffer:
    """The bytes of ``record``'s sidecar."""
    return encode_generations([record])[0]


def write_generation(path: Path, record: dict[str, Any]) -> None:
    atomic_write_bytes(path, encode_generation(record))


def write_profile(path: Path, record: dict[str, Any]) -> None:
    atomic_write_bytes(path, _encode([{**record, "schema_version": SCHEMA_VERSION}], _PROFILE_ROW)[0])


def read_row(path: Path | str, kind: str, expected_id: str | None = None) -> dict[str, Any]:
    """Read one sidecar's record as a dict of the current schema (with ``schema_version``).

    The footer's JSON copy of the record is read when the sidecar has one of the current
    version (a tenth of the cost of decoding the Parquet row); otherwise the row itself, with
    older versions upgraded. ``expected_id``: the id the record must carry (default: the file
    name's stem; a conflict copy carries its original's). Raises :class:`SidecarError` naming
    the path and the reason for anything unreadable.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise SidecarError(path, MISSING) from None
    except OSError as exc:
        raise SidecarError(path, f"cannot be read ({exc})") from None
    try:
        copy = footer_value(data, RECORD_KEY)
    except FooterError as exc:
        raise SidecarError(path, f"not a readable Parquet file ({exc})") from None
    row = _from_json(path, copy, kind) if copy is not None else None
    if row is None:
        row = _from_row(path, pa.BufferReader(data), kind).to_pylist()[0]
    _check(path, row, kind, expected_id)
    return row


def _from_json(path: Path | str, data: bytes, kind: str) -> dict[str, Any] | None:
    """The footer's record, checked against the schema; None if it is of another version."""
    try:
        row = json.loads(data)
    except ValueError:
        raise SidecarError(path, "its footer record is not valid JSON") from None
    if not isinstance(row, dict) or row.get("schema_version") != SCHEMA_VERSION:
        return None
    for name, convert in _CONVERTERS[kind]:
        row[name] = convert(path, row.get(name), name)
    return row


_Convert = Callable[[Any, Any, str], Any]  # (path, value, where) -> the typed value


def _wrong(path: Path | str, where: str, value: Any) -> SidecarError:
    return SidecarError(path, f"field {where} has the wrong type ({value!r})")


def _converter(field: pa.Field) -> _Convert:
    """A function giving a JSON value as the Python value of ``field``'s type, or raising
    SidecarError naming it. Built once per field: a rebuild converts millions of values."""
    kind = field.type
    nullable = field.nullable
    check: _Convert
    if pa.types.is_timestamp(kind):

        def check(path: Any, value: Any, where: str) -> Any:
            if isinstance(value, str):
                try:
                    return datetime.fromisoformat(value).astimezone(timezone.utc)
                except ValueError:
                    pass
            raise _wrong(path, where, value)

    elif pa.types.is_string(kind) or pa.types.is_boolean(kind):
        expected = str if pa.types.is_string(kind) else bool

        def check(path: Any, value: Any, where: str) -> Any:
            if isinstance(value, expected):
                return value
            raise _wrong(path, where, value)

    elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
        accepted = int if pa.types.is_integer(kind) else (int, float)
        cast = int if pa.types.is_integer(kind) else float

        def check(path: Any, value: Any, where: str) -> Any:
            if isinstance(value, accepted) and not isinstance(value, bool):
                return cast(value)
            raise _wrong(path, where, value)

    elif pa.types.is_map(kind):

        def check(path: Any, value: Any, where: str) -> Any:
            if isinstance(value, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                return value
            raise _wrong(path, where, value)

    elif pa.types.is_list(kind):
        item = _converter(kind.value_field)

        def check(path: Any, value: Any, where: str) -> Any:
            if isinstance(value, list):
                return [item(path, v, f"{where}[{i}]") for i, v in enumerate(value)]
            raise _wrong(path, where, value)

    elif pa.types.is_struct(kind):
        members = [(f.name, _converter(f)) for f in kind]

        def check(path: Any, value: Any, where: str) -> Any:
            if isinstance(value, dict):
                return {name: convert(path, value.get(name), f"{where}.{name}") for name, convert in members}
            raise _wrong(path, where, value)

    else:  # pragma: no cover - a schema change without a converter
        raise TypeError(f"no JSON conversion for {field}")

    def convert(path: Any, value: Any, where: str) -> Any:
        if value is None:
            if not nullable:
                raise SidecarError(path, f"required field {where} is null")
            return None
        return check(path, value, where)

    return convert


_CONVERTERS = {kind: [(f.name, _converter(f)) for f in schema] for kind, schema in _SCHEMAS.items()}


def _from_row(path: Path | str, buffer: pa.BufferReader, kind: str) -> pa.Table:
    """The Parquet row itself, as a table of the current schema, upgrading older versions."""
    schema = _SCHEMAS[kind]
    try:
        table = pq.ParquetFile(buffer).read()
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
    row = read_row(path, "generation", expected_id)
    row["extra"] = dict(row["extra"] or ())
    row["versions"] = row["versions"] or []
    del row["schema_version"]
    return row


def read_profile(path: Path | str, expected_id: str | None = None) -> dict[str, Any]:
    row = read_row(path, "profile", expected_id)
    del row["schema_version"]
    return row

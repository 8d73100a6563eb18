"""The sidecar format is explicit and versioned: a reader accepts every older version (through
its upgrade steps) and refuses newer ones, and a bad sidecar is reported by path and reason."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tts_history.library import SidecarError, schema

NOW = datetime(2026, 4, 18, 10, 30, tzinfo=timezone.utc)


def minimal(**overrides) -> dict:
    row = {
        "schema_version": 1,
        "id": "g1",
        "profile_id": "p1",
        "text": "Hello",
        "status": "completed",
        "is_favorited": False,
        "created_at": NOW,
        "updated_at": NOW,
    }
    row.update(overrides)
    return row


def write_raw(path, row: dict) -> None:
    pq.write_table(pa.Table.from_pylist([row]), path)


def test_a_sidecar_with_only_the_required_fields_reads_with_the_rest_empty(tmp_path):
    # what an older or a foreign writer may leave: only the required columns, plain types
    path = tmp_path / "g1.parquet"
    write_raw(path, minimal())
    record = schema.read_generation(path)
    assert record["text"] == "Hello" and record["created_at"] == NOW
    assert record["versions"] == [] and record["extra"] == {}
    assert record["audio_path"] is None and record["duration"] is None


def test_a_written_record_reads_back_equal(tmp_path):
    record = {f.name: None for f in schema.GENERATION_SCHEMA if f.name != "schema_version"}
    record.update(minimal(), versions=[], extra={"k": "v"}, text="日本語 ❤️ Café")
    del record["schema_version"]
    path = tmp_path / "g1.parquet"
    schema.write_generation(path, record)
    assert schema.read_generation(path) == record


def test_records_encoded_together_are_byte_for_byte_the_sidecars_encoded_alone(tmp_path):
    blank = {f.name: None for f in schema.GENERATION_SCHEMA if f.name != "schema_version"}
    version = {
        "id": "v1", "label": "original", "audio_path": "generations/2026/04/18/g2.v1.wav",
        "effects_chain": '[{"type":"reverb"}]', "is_default": True, "created_at": NOW,
        "source_version_id": None, "duration": 2.5, "sample_rate": 24000, "channels": 1,
        "audio_bytes": 120044, "audio_sha256": "ab" * 32,
    }
    records = [
        {**blank, **minimal(), "versions": [], "extra": {}},
        {**blank, **minimal(id="g2", text="日本語 ❤️ Café", seed=7, duration=2.5),
         "versions": [version, {**version, "id": "v2", "effects_chain": None}], "extra": {"k": "v"}},
        {**blank, **minimal(id="g3", status="failed", error="out of memory", is_favorited=True),
         "versions": [], "extra": {"a": "1", "b": "2"}},
    ]
    for record in records:
        del record["schema_version"]
    together = schema.encode_generations(records)
    assert [bytes(data) for data in together] == [bytes(schema.encode_generation(r)) for r in records]
    for record, data in zip(records, together):
        path = tmp_path / f"{record['id']}.parquet"
        path.write_bytes(data)
        assert schema.read_generation(path) == record


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (minimal(schema_version=99), "newer than this tts-history reads"),
        (minimal(schema_version=0), "schema_version 0 is not valid"),
        ({k: v for k, v in minimal().items() if k != "text"}, "missing required field(s): text"),
        ({k: v for k, v in minimal().items() if k != "schema_version"}, "no schema_version"),
        (minimal(status="pending"), "status 'pending' is not one of"),
        (minimal(id="other"), "does not match the file name"),
        (minimal(seed="forty-two"), "wrong type"),
        (minimal(text=None), "required field text is null"),
    ],
)
def test_bad_sidecars_are_refused_naming_the_path_and_reason(tmp_path, row, reason):
    path = tmp_path / "g1.parquet"
    write_raw(path, row)
    with pytest.raises(SidecarError) as caught:
        schema.read_generation(path)
    assert reason in str(caught.value) and str(path) in str(caught.value)


def test_not_parquet_and_two_rows_are_refused(tmp_path):
    junk = tmp_path / "g1.parquet"
    junk.write_bytes(b"PAR1 but not really")
    with pytest.raises(SidecarError, match="not a readable Parquet file"):
        schema.read_generation(junk)
    pq.write_table(pa.Table.from_pylist([minimal(), minimal()]), junk)
    with pytest.raises(SidecarError, match="holds 2 rows"):
        schema.read_generation(junk)


def test_older_versions_are_upgraded_step_by_step(tmp_path, monkeypatch):
    """A future version 2 adds a column and renames a value; a version 1 file still reads,
    through the upgrade step registered for it, and a version 2 file reads as it is."""
    v2 = schema.GENERATION_SCHEMA.append(pa.field("rating", pa.int8()))

    def one_to_two(table: pa.Table) -> pa.Table:
        engine = ["espeak-ng" if e == "espeak" else e for e in table.column("engine").to_pylist()]
        table = table.set_column(table.schema.get_field_index("engine"), "engine", pa.array(engine))
        return table.append_column("rating", pa.array([3], pa.int8()))

    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(schema, "GENERATION_SCHEMA", v2)
    monkeypatch.setitem(schema._SCHEMAS, "generation", v2)
    monkeypatch.setitem(schema._UPGRADES["generation"], 1, one_to_two)

    old = tmp_path / "g1.parquet"
    write_raw(old, minimal(engine="espeak"))
    record = schema.read_generation(old)
    assert record["engine"] == "espeak-ng" and record["rating"] == 3

    new = tmp_path / "g2.parquet"
    write_raw(new, minimal(id="g2", schema_version=2, engine="espeak", rating=5))
    record = schema.read_generation(new)
    assert record["engine"] == "espeak" and record["rating"] == 5


def full_record(**overrides) -> dict:
    record = {f.name: None for f in schema.GENERATION_SCHEMA if f.name != "schema_version"}
    record.update({k: v for k, v in minimal().items() if k != "schema_version"}, versions=[], extra={})
    record.update(overrides)
    return record


def test_the_parquet_types_alone_read_back_as_the_schemas(tmp_path):
    """Sidecars carry no copy of the Arrow schema: what any Parquet reader sees of their
    columns (types, time zones, nullability) must be the schema itself."""
    generation = tmp_path / "g1.parquet"
    schema.write_generation(generation, full_record(extra={"k": "v"}))
    profile = tmp_path / "p1.parquet"
    schema.write_profile(profile, {"id": "p1", "name": "Ada", "description": None, "language": "en",
                                   "extra": "{}", "created_at": NOW, "updated_at": NOW})
    for path, expected in ((generation, schema.GENERATION_SCHEMA), (profile, schema.PROFILE_SCHEMA)):
        assert b"ARROW:schema" not in (pq.read_metadata(path).metadata or {})
        assert pq.read_table(path).schema.remove_metadata().equals(expected)


def test_the_footer_carries_the_record_and_both_copies_agree(tmp_path):
    path = tmp_path / "g1.parquet"
    record = full_record(text="Grüße 日本語 ❤️", extra={"k": "v"}, seed=7)
    schema.write_generation(path, record)
    footer = pq.read_metadata(path).metadata[schema.RECORD_KEY]
    assert b"Gr\xc3\xbc\xc3\x9fe" in footer
    row = pq.read_table(path).to_pylist()[0]
    row["extra"] = dict(row["extra"])
    del row["schema_version"]
    assert row == record == schema.read_generation(path)


def test_without_its_footer_record_a_sidecar_is_read_from_its_row(tmp_path):
    # what a tool that rewrites the file (DuckDB COPY, pandas) leaves: the row, no footer copy
    path = tmp_path / "g1.parquet"
    schema.write_generation(path, full_record(text="from the row"))
    table = pq.read_table(path).replace_schema_metadata(None)
    pq.write_table(table, path)
    assert schema.RECORD_KEY not in (pq.read_metadata(path).metadata or {})
    assert schema.read_generation(path)["text"] == "from the row"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda r: r.update(seed="seven"), "field seed has the wrong type"),
        (lambda r: r.update(created_at="yesterday"), "field created_at has the wrong type"),
        (lambda r: r.update(text=None), "required field text is null"),
        (lambda r: r["versions"].append({"id": None}), "required field versions[0].id is null"),
        (lambda r: r.update(extra={"k": 1}), "field extra has the wrong type"),
    ],
)
def test_a_bad_footer_record_is_refused_like_a_bad_row(tmp_path, change, reason):
    import json

    path = tmp_path / "g1.parquet"
    schema.write_generation(path, full_record())
    row = json.loads(pq.read_metadata(path).metadata[schema.RECORD_KEY])
    change(row)
    table = pq.read_table(path).replace_schema_metadata({schema.RECORD_KEY: json.dumps(row)})
    pq.write_table(table, path)
    with pytest.raises(SidecarError) as caught:
        schema.read_generation(path)
    assert reason in str(caught.value)

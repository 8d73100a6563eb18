"""The tts-history command as a person and a script use it: real subprocesses, real speech."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from helpers import cli
from tts_history.index.queries import ITEM_FIELDS


def ok(*args: str) -> str:
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def js(*args: str):
    return json.loads(ok(*args, "--json"))


def cli_lib_root(lib: list[str]) -> Path:
    return Path(lib[1])


@pytest.fixture
def lib(tmp_path):
    path = tmp_path / "lib"
    ok("init", str(path))
    return ["--library", str(path)]


def test_no_configuration_at_all_uses_the_per_user_library(isolated_dirs):
    spoken = js("speak", "Hello from nowhere in particular")
    assert spoken["status"] == "completed"
    info = js("info")
    data_home = isolated_dirs / "xdg_data_home"
    assert info["library"].startswith(str(data_home))
    assert info["index"].startswith(str(isolated_dirs / "xdg_cache_home"))
    assert not info["index"].startswith(info["library"])
    assert info["generations"] == 1


def test_speak_list_show_search_stats(lib):
    first = js(*lib, "speak", "Bonjour, café crème", "--language", "fr", "--profile", "Émile", "--seed", "3")
    js(*lib, "speak", "Hello world", "--profile", "Ada")
    audio = sf.info(first["audio_path"])
    assert audio.samplerate == 22050 and audio.frames > 0
    assert first["duration"] == pytest.approx(audio.frames / audio.samplerate)

    listed = js(*lib, "list")
    assert listed["total"] == 2
    assert [list(item) for item in listed["items"]] == [list(ITEM_FIELDS)] * 2
    assert listed["items"][0]["text"] == "Hello world"  # newest first
    assert listed["items"][1]["profile_name"] == "Émile"
    assert listed["items"][1]["created_at"].endswith("Z")

    found = js(*lib, "search", "CAFE creme")
    assert [item["id"] for item in found["items"]] == [first["id"]]
    assert js(*lib, "search", "café", "--language", "en")["total"] == 0

    shown = js(*lib, "show", first["id"])
    assert shown["seed"] == 3 and shown["engine"] == "espeak-ng"
    assert [v["label"] for v in shown["versions"]] == ["original"]
    assert shown["versions"][0]["is_default"]

    stats = js(*lib, "stats")
    assert stats["total_generations"] == 2
    assert sorted(stats["generations_by_language"].items()) == [("en", 1), ("fr", 1)]
    assert stats["bytes_on_disk"] > 0

    human = ok(*lib, "list")
    assert "Hello world" in human and first["id"] in human


def test_favorite_delete_and_exit_codes(lib):
    gen = js(*lib, "speak", "Keep me")
    assert js(*lib, "favorite", gen["id"]) == {"id": gen["id"], "is_favorited": True}
    assert js(*lib, "list", "--favorites")["total"] == 1
    assert js(*lib, "favorite", gen["id"], "--off")["is_favorited"] is False

    missing = cli(*lib, "delete", gen["id"], "no-such-id")
    assert missing.returncode == 1 and "no-such-id" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert js(*lib, "list")["total"] == 1  # nothing was deleted

    assert js(*lib, "delete", gen["id"]) == {"deleted": [gen["id"]]}
    assert js(*lib, "list")["total"] == 0
    assert not list((cli_lib_root(lib)).rglob("*.wav"))

    unknown = cli(*lib, "show", gen["id"])
    assert unknown.returncode == 1 and "not found" in unknown.stderr

    assert cli(*lib, "list", "--limit", "0").returncode == 2  # usage error
    assert cli(*lib, "list", "--since", "yesterday").returncode == 1
    assert cli("--library", str(cli_lib_root(lib) / "nope"), "list").returncode == 1


def test_failure_is_recorded_and_cleaned_up(lib):
    failed = cli(*lib, "speak", "No such voice", "--language", "xx-nowhere")
    assert failed.returncode == 1 and "xx-nowhere" in failed.stderr
    items = js(*lib, "list", "--status", "failed")["items"]
    assert len(items) == 1 and "xx-nowhere" in items[0]["error"]
    assert js(*lib, "cleanup", "--failed", "--dry-run")["removed"] == [items[0]["id"]]
    assert js(*lib, "list", "--status", "failed")["total"] == 1
    assert js(*lib, "cleanup", "--failed")["removed"] == [items[0]["id"]]
    assert js(*lib, "list")["total"] == 0
    assert cli(*lib, "cleanup").returncode == 2


def test_sql_is_read_only(lib):
    js(*lib, "speak", "One")
    rows = js(*lib, "sql", "SELECT engine, count(*) AS n FROM generations GROUP BY engine")
    assert rows == [{"engine": "espeak-ng", "n": 1}]
    for statement in ("DELETE FROM generation_rows", "DROP VIEW generations", "SELECT 1; SELECT 2"):
        result = cli(*lib, "sql", statement)
        assert result.returncode == 1, statement
        assert "Error:" in result.stderr and "Traceback" not in result.stderr
    assert js(*lib, "list")["total"] == 1


def test_sync_reports_and_rebuild_gives_the_same_answers(lib):
    js(*lib, "speak", "Alpha")
    js(*lib, "speak", "Beta")
    before = js(*lib, "list")
    again = js(*lib, "sync")
    assert (again["added"], again["updated"], again["removed"], again["errors"]) == (0, 0, 0, [])
    broken = cli_lib_root(lib) / "generations" / "2020" / "01" / "01"
    broken.mkdir(parents=True)
    (broken / "bad-sidecar.parquet").write_bytes(b"not parquet at all")
    result = cli(*lib, "sync", "--json")
    assert result.returncode == 1  # a sidecar could not be read: a script learns of it
    report = json.loads(result.stdout)
    assert report["errors"] and report["errors"][0]["path"].endswith("bad-sidecar.parquet")
    result = cli(*lib, "sync")
    assert result.returncode == 1 and "bad-sidecar.parquet" in result.stderr
    assert "errors 1" in result.stdout
    assert "unreadable" in ok(*lib, "info")
    result = cli(*lib, "sync", "--rebuild", "--json")
    rebuilt = json.loads(result.stdout)
    # two generation sidecars and the profile sidecar of "Default"
    assert result.returncode == 1 and rebuilt["added"] == 3 and len(rebuilt["errors"]) == 1
    with pytest.raises(AssertionError):
        js(*lib, "show", "bad-sidecar")
    shown = cli(*lib, "show", "bad-sidecar")
    assert shown.returncode == 1 and "cannot be read" in shown.stderr and "bad-sidecar.parquet" in shown.stderr
    assert js(*lib, "list") == before


def test_demo_runs(lib):
    out = ok(*lib, "demo")
    assert "generations" in out
    stats = js(*lib, "stats")
    assert stats["generations_by_status"]["failed"] == 1
    assert stats["total_generations"] == 6
    versions = js(*lib, "sql", "SELECT count(*) AS n FROM versions WHERE effects_chain IS NOT NULL")
    assert versions == [{"n": 1}]


def test_cleanup_orphans_removes_only_old_leftovers(lib):
    import time

    from tts_history import History

    spoken = js(*lib, "speak", "Keep my audio")
    folder = Path(spoken["audio_path"]).parent
    orphan = folder / "gone-generation.0123.wav"
    orphan.write_bytes(Path(spoken["audio_path"]).read_bytes())
    temp = folder / ".gone-generation.parquet.0123456789ab.tmp"
    temp.write_bytes(b"half a sidecar")
    time.sleep(1.5)  # ctime cannot be set back: these two age for real
    fresh = folder / "in-flight.4567.wav"  # a writer may still be about to name it
    fresh.write_bytes(b"RIFF")
    history = History(cli_lib_root(lib))
    second = 1 / 3600

    dry = history.remove_orphans(older_than_hours=second, dry_run=True)
    assert sorted(dry) == sorted([str(orphan), str(temp)])
    assert orphan.exists() and temp.exists()

    done = history.remove_orphans(older_than_hours=second)
    assert sorted(done) == sorted([str(orphan), str(temp)])
    assert not orphan.exists() and not temp.exists() and fresh.exists()
    assert Path(spoken["audio_path"]).exists()
    assert js(*lib, "show", spoken["id"])["audio_present"] is True
    assert js(*lib, "cleanup", "--orphans") == {"removed": [], "kept": [], "orphan_files": [], "dry_run": False}


def test_cleanup_orphans_keeps_audio_a_sync_tool_just_delivered_with_an_old_mtime(lib, tmp_path):
    """A sync tool keeps a file's mtime: audio made yesterday on another machine that arrives
    ahead of its sidecar is new here (its ctime says so), and must survive until the sidecar
    lands."""
    import os
    import time

    spoken = js(*lib, "speak", "Made on the other machine")
    audio, sidecar = Path(spoken["audio_path"]), Path(spoken["sidecar_path"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for path in (audio, sidecar):
        os.replace(path, elsewhere / path.name)  # as if this machine had not received it yet
    assert js(*lib, "sync")
    yesterday = time.time() - 24 * 3600
    os.utime(elsewhere / audio.name, (yesterday, yesterday))
    os.link(elsewhere / audio.name, audio)  # delivered now, mtime kept; the sidecar follows
    left = js(*lib, "cleanup", "--orphans")
    assert left["orphan_files"] == [] and audio.exists()
    os.link(elsewhere / sidecar.name, sidecar)
    assert js(*lib, "show", spoken["id"])["audio_present"] is True


@pytest.mark.parametrize(("chosen", "expected"), [(None, "system"), ("jemalloc", "jemalloc")])
def test_the_command_uses_the_system_allocator_unless_told_otherwise(chosen, expected):
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if chosen:
        env["ARROW_DEFAULT_MEMORY_POOL"] = chosen
    code = (
        "import pyarrow as pa; from tts_history.cli import use_system_allocator; "
        "use_system_allocator(); print(pa.default_memory_pool().backend_name)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_sql_json_gives_null_for_nan_and_infinities(lib):
    def strict(constant):
        raise ValueError(f"{constant} is not JSON")

    out = ok(*lib, "sql", "SELECT 'nan'::DOUBLE AS x, '-inf'::DOUBLE AS y, 1.5 AS z, [1.0, 'inf'::DOUBLE] AS l", "--json")
    assert json.loads(out, parse_constant=strict) == [{"x": None, "y": None, "z": 1.5, "l": [1.0, None]}]


@pytest.mark.parametrize("days", ["nan", "inf", "-1"])
def test_cleanup_older_than_refuses_what_is_no_number_of_days(lib, days):
    result = cli(*lib, "cleanup", "--older-than", days)
    assert result.returncode == 2 and "--older-than" in result.stderr and "Traceback" not in result.stderr


def test_cleanup_older_than_more_days_than_the_calendar_removes_nothing(lib):
    spoken = js(*lib, "speak", "Still here")
    for days in ("1000000", "1e300"):
        assert js(*lib, "cleanup", "--older-than", days) == {
            "removed": [], "kept": [], "orphan_files": [], "dry_run": False}
    assert js(*lib, "show", spoken["id"])["text"] == "Still here"


def test_history_cleanup_refuses_what_is_no_number_of_days(lib):
    from tts_history import History, InvalidValueError

    history = History(cli_lib_root(lib))
    for days in (float("nan"), float("inf"), -1):
        with pytest.raises(InvalidValueError, match="number of days"):
            history.cleanup(older_than_days=days, dry_run=True)


def test_list_pages_by_offset_and_by_cursor_say_where_they_are(lib):
    for word in ("one", "two", "three", "four", "five"):
        js(*lib, "speak", word)
    first = cli(*lib, "list", "--limit", "2")
    assert first.returncode == 0 and "1-2 of 5" in first.stderr
    cursor = js(*lib, "list", "--limit", "2")["next_cursor"]
    assert f"--cursor {cursor}" in first.stderr
    by_offset = cli(*lib, "list", "--limit", "2", "--offset", "2")
    by_cursor = cli(*lib, "list", "--limit", "2", "--cursor", cursor)
    assert by_offset.stdout == by_cursor.stdout  # the same rows
    assert "3-4 of 5" in by_offset.stderr
    assert "2 after the cursor, of 5" in by_cursor.stderr and "1-2" not in by_cursor.stderr

"""The index is a cache: every answer it gives can be rebuilt, identically, from the folder.

One library of ~3,000 generations is recorded through the hooks, the way a host records them
(several profiles, one of them deleted with some of its generations protected; several
languages and engines; months of history; failures and work in progress; processed versions,
some of them active; favorites; deletions; Unicode text). An index kept up to date by
incremental syncs while the library grew must answer exactly as an index built from nothing.
"""

from __future__ import annotations

import importlib
import os
import time
import random
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import RATE, indexed, record, tone

from tts_history import Audio, Effect, Generation, Profile, Version, get_plugin_manager, hookimpl
from tts_history.index import reading
from tts_history.index.sync import LOOKUP_MAX, RACY_NS
from tts_history.index import Filters, Index
from tts_history.library import schema

N_GENERATIONS = 3000
PHASE_ONE = 1000  # the next 2,000 reach the index incrementally: more than one sync batch

PROFILES = {
    "narrator": "Narrator",
    "alice": "Alice",  # renamed to "Alicia" later
    "bob": "Bob",
    "yuki": "ユキ",
    "gone": "Gone Voice",  # deleted later; the generations a plugin protects stay
}
LANGUAGES = ["en", "de", "fr", "ja", "es"]
ENGINES = ["qwen", "espeak", "kokoro"]
MODEL_SIZES = ["1.7B", "0.6B", None]
TEXTS = [
    "Hello world number {i}",
    "Café au lait, s'il vous plaît {i}",
    "Die Straße Nummer {i} ist lang",
    "今日はいい天気ですね {i}",
    "I ❤️ text to speech {i}",
    "Naïve résumé of the façade {i}",
    "50% off_sale \"today\" {i}",
    "Back\\slash and 'quotes' {i}",
    "Ελληνικά και Кириллица {i}",
    "がぎぐげご カタカナ {i}",
]


class Protector:
    """A plugin that protects the generations whose ids it was given (e.g. used by a story)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    @hookimpl
    def tts_history_protect_generation(self, generation):
        return generation["id"] in self.ids


@dataclass
class Built:
    library: Path
    now: datetime
    live: dict[str, dict] = field(default_factory=dict)  # id -> what the builder expects
    deleted: set[str] = field(default_factory=set)
    sidecars: int = 0


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _build(library: Path, rng: random.Random) -> tuple[Built, Index]:
    """Record the library in three phases, syncing one index incrementally in between."""
    pm = get_plugin_manager(library, entrypoints=False)
    protector = Protector()
    pm.register(protector, name="protector")
    hook = pm.hook
    now = datetime.now(timezone.utc).replace(microsecond=0)
    built = Built(library=library, now=now)
    # the index at its default place: profile_deleted syncs this same index to find the
    # profile's generations, so it too is kept up to date incrementally
    incremental = Index(library)

    for pid, name in PROFILES.items():
        hook.tts_history_profile_saved(profile=Profile(id=pid, name=name, language="en"))

    completed: list[str] = []
    version_ids: dict[str, list[str]] = {}

    def record_one(i: int) -> None:
        gid = _uuid(rng)
        profile_id = rng.choice(list(PROFILES))
        generation = Generation(
            id=gid,
            profile_id=profile_id,
            text=TEXTS[i % len(TEXTS)].format(i=i),
            language=rng.choice(LANGUAGES),
            seed=rng.choice([None, rng.randrange(1, 2**31)]),
            instruct=rng.choice([None, None, "speak slowly", "whisper — quietly"]),
            engine=rng.choice(ENGINES),
            model_size=rng.choice(MODEL_SIZES),
            created_at=now - timedelta(seconds=rng.randrange(0, 240 * 86400)),
            extra={"take": str(i)} if i % 7 == 0 else {},
        )
        roll = rng.random()
        if roll < 0.05:
            hook.tts_history_generation_failed(generation=generation, error=f"CUDA out of memory ({i})")
            status = "failed"
        elif roll < 0.08:
            hook.tts_history_generation_started(generation=generation)
            status = "generating"
        else:
            if roll < 0.12:
                hook.tts_history_generation_started(generation=generation)
            frames = rng.randrange(300, 520)  # 37.5 ms to 65 ms at 8 kHz
            audio = Audio.from_samples(tone(frames / RATE, freq=rng.choice([220.0, 440.0, 660.0])), RATE)
            hook.tts_history_generation_completed(generation=generation, audio=audio)
            status = "completed"
            completed.append(gid)
        built.live[gid] = {"profile_id": profile_id, "status": status, "favorite": False}

    def add_versions(gid: str) -> None:
        for n in range(rng.choice([1, 1, 2])):
            vid = f"fx{n}"
            version = Version(
                id=vid,
                label=f"reverb {n}",
                effects_chain=[
                    Effect("reverb", params={"room": 0.3 + n / 10}),
                    {"type": "gain", "enabled": n == 0, "params": {"db": -3}},
                ],
                source_version_id=None if n == 0 else "fx0",  # None: made from the original
                is_default=rng.random() < 0.5,
            )
            audio = Audio.from_samples(tone(rng.randrange(300, 700) / RATE, freq=330.0), RATE)
            hook.tts_history_version_added(generation_id=gid, version=version, audio=audio)
            version_ids.setdefault(gid, []).append(vid)

    # phase 1: the oldest part of the work, then a first sync of an empty index
    for i in range(PHASE_ONE):
        record_one(i)
    incremental.sync()

    # phase 2: the rest, processed versions, favorites; the index catches up incrementally
    for i in range(PHASE_ONE, N_GENERATIONS):
        record_one(i)
    with_versions = rng.sample(completed, len(completed) // 10)
    for gid in with_versions:
        add_versions(gid)
    for gid in rng.sample(sorted(built.live), 180):
        hook.tts_history_favorite_set(generation_id=gid, is_favorited=True)
        built.live[gid]["favorite"] = True
    incremental.sync()

    # phase 3: changes to what the index already holds
    for gid in with_versions[::3]:  # active version back and forth
        hook.tts_history_default_version_changed(
            generation_id=gid, version_id=rng.choice(version_ids[gid])
        )
    for gid in with_versions[1::7]:  # the host re-records the original audio
        generation = Generation(id=gid, profile_id=built.live[gid]["profile_id"], text=f"re-recorded {gid[:8]}")
        hook.tts_history_generation_completed(
            generation=generation, audio=Audio.from_samples(tone(0.05, freq=550.0), RATE)
        )
    for gid in [g for g in built.live if built.live[g]["favorite"]][::5]:
        hook.tts_history_favorite_set(generation_id=gid, is_favorited=False)
        built.live[gid]["favorite"] = False
    for gid in rng.sample(sorted(built.live), 90):
        hook.tts_history_generation_deleted(generation_id=gid)
        del built.live[gid]
        built.deleted.add(gid)
    hook.tts_history_profile_saved(profile=Profile(id="alice", name="Alicia", language="en"))
    gone = sorted(g for g, v in built.live.items() if v["profile_id"] == "gone")
    protector.ids.update(gone[::4])
    hook.tts_history_profile_deleted(profile_id="gone")
    for gid in gone:
        if gid not in protector.ids:
            del built.live[gid]
            built.deleted.add(gid)
    incremental.sync()

    built.sidecars = len(built.live) + len(PROFILES) - 1
    return built, incremental


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The library, built once for this module in its own per-user folders, and the answers
    of the index that incremental syncs kept up to date while it grew."""
    # In memory when the machine has a tmpfs: the same files and fsyncs, without waiting for a
    # disk that other processes share (thousands of small durable writes).
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        base = Path(tempfile.mkdtemp(prefix="tts-history-rebuild-", dir=shm))
    else:
        base = tmp_path_factory.mktemp("rebuild")
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
                mp.setenv(name, str(base / "home" / name.lower()))
            mp.delenv("TTS_HISTORY_LIBRARY", raising=False)
            mp.delenv("TTS_HISTORY_INDEX", raising=False)
            library = base / "library"
            result, incremental = _build(library, random.Random(20260418))
            answers = collect(incremental, result)
            yield result, incremental, answers
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def rebuilt(built):
    """The incremental index's file deleted entirely, and a new Index synced at its place:
    (its path, the sync's report, its answers). Other tests start from copies of it."""
    result, incremental, _ = built
    path = incremental.path
    assert path.exists()
    incremental.db.forget()
    for suffix in ("", ".wal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    assert not path.exists()
    fresh = Index(result.library, path)
    report = fresh.sync()
    answers = collect(fresh, result)
    fresh.db.forget()
    return path, report, answers


def _copy_index(source: Path, path: Path) -> Path:
    for suffix in ("", ".wal"):
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{path}{suffix}")
    return path


def _filter_combos(built: Built) -> list[dict]:
    month = built.now - timedelta(days=30)
    return [
        {},
        {"profile_id": "alice"},
        {"profile_id": "gone"},
        {"language": "ja"},
        {"engine": "espeak", "status": "completed"},
        {"status": "failed"},
        {"status": "generating"},
        {"favorites": True},
        {"favorites": True, "language": "de"},
        {"search": "cafe"},
        {"search": "STRASSE nummer"},
        {"search": "❤"},
        {"search": "今日"},
        {"search": "%"},
        {"search": "re-recorded"},
        {"since": month.isoformat()},
        {"since": (built.now - timedelta(days=120)).isoformat(), "until": month},
        {"profile_id": "bob", "engine": "qwen", "language": "en", "search": "hello"},
    ]


def collect(index: Index, built: Built) -> dict:
    """Every kind of answer the index gives, from list pages to SQL."""
    answers: dict = {}
    with index.reading():  # one connection for the whole collection
        for n, combo in enumerate(_filter_combos(built)):
            answers[f"list {n} {combo}"] = index.list(Filters(**combo), limit=40)
        answers["offset page"] = index.list(Filters(), limit=100, offset=1000)
        pages, cursor = [], None
        while True:
            page = index.list(Filters(), limit=200, cursor=cursor)
            pages.append(page)
            cursor = page["next_cursor"]
            if cursor is None:
                break
        answers["cursor pages"] = pages
        sample = random.Random(7).sample(sorted(built.live), 150)
        answers["get"] = {gid: index.get(gid) for gid in sample}
        answers["stats"] = index.stats()
        for query in (
            "SELECT id, profile_id, profile_name, status, error, duration, host_duration, "
            "is_favorited, created_at, updated_at, active_version_id, audio_sha256, audio_present, "
            "extra FROM generations ORDER BY id",
            "SELECT generation_id, position, id, label, effects_chain, is_default, "
            "source_version_id, duration, audio_bytes, audio_present FROM versions "
            "ORDER BY generation_id, position",
            "SELECT id, name, description, language, extra, created_at, updated_at FROM profiles ORDER BY id",
            "SELECT language, engine, status, count(*), sum(audio_bytes) FROM generations "
            "GROUP BY ALL ORDER BY ALL",
            "WITH t AS (SELECT profile_id, count(*) AS n FROM generations GROUP BY 1) "
            "SELECT * FROM t ORDER BY n DESC, profile_id",
        ):
            answers[f"sql {query}"] = index.sql(query)
    return answers


def _assert_same(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    for key in expected:
        assert actual[key] == expected[key], key


# -- the library is what the builder made -------------------------------------------------


def test_built_library_is_what_the_hooks_recorded(built):
    result, incremental, answers = built
    items = [item for page in answers["cursor pages"] for item in page["items"]]
    assert len(answers["cursor pages"]) > 10
    assert {i["id"] for i in items} == set(result.live)
    assert len(items) == len(result.live) == answers["stats"]["total_generations"] > 2000
    assert not result.deleted & {i["id"] for i in items}
    by_status = answers["stats"]["generations_by_status"]
    assert by_status == {
        s: n
        for s in ("completed", "failed", "generating")
        if (n := sum(1 for v in result.live.values() if v["status"] == s))
    }
    assert set(by_status) == {"completed", "failed", "generating"}
    assert answers["stats"]["favorites"] == sum(v["favorite"] for v in result.live.values()) > 0
    # every filter combination selects something, so comparing them compares real answers
    for key, value in answers.items():
        if key.startswith("list"):
            assert value["items"], key
    order = [(i["created_at"], i["id"]) for i in items]  # newest first, ties by id
    assert order == sorted(order, reverse=True)
    kept_gone = [i for i in items if i["profile_id"] == "gone"]
    assert kept_gone and all(i["profile_name"] == "Gone Voice" for i in kept_gone)
    assert {i["profile_name"] for i in items if i["profile_id"] == "alice"} == {"Alicia"}
    with_versions = [g for g in answers["get"].values() if len(g["versions"]) > 1]
    assert with_versions
    assert any(g["active_version_id"] != g["versions"][0]["id"] for g in with_versions)


# -- the core principle --------------------------------------------------------------------


def test_deleted_index_is_rebuilt_with_identical_answers(built, rebuilt):
    result, _, expected = built
    path, report, answers = rebuilt
    assert path.exists()
    assert report.added == result.sidecars
    assert (report.updated, report.removed, report.unchanged, report.errors) == (0, 0, 0, [])
    _assert_same(expected, answers)


def test_full_sync_and_rebuild_give_identical_answers(built, rebuilt, tmp_path):
    result, _, expected = built
    # a copy of the index just built from nothing, whose answers are the expected ones
    index = Index(result.library, _copy_index(rebuilt[0], tmp_path / "index.duckdb"))

    full = index.sync(full=True)
    assert (full.added, full.removed, full.errors) == (0, 0, [])
    assert full.updated + full.unchanged == result.sidecars
    _assert_same(expected, collect(index, result))

    report = index.rebuild()
    assert report.added == result.sidecars
    assert (report.updated, report.removed, report.errors) == (0, 0, [])
    _assert_same(expected, collect(index, result))


def test_rebuild_with_a_helper_process_gives_identical_answers(built, tmp_path, monkeypatch):
    result, _, expected = built
    started = []
    real_popen = reading.subprocess.Popen

    def popen(*args, **kwargs):
        started.append(args)
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(reading.subprocess, "Popen", popen)
    # the module, which the package's sync function hides
    monkeypatch.setattr(importlib.import_module("tts_history.index.sync"), "HELPER_MIN", 1)
    index = Index(result.library, tmp_path / "index.duckdb")
    report = index.sync()
    assert len(started) == 1
    assert report.added == result.sidecars
    assert (report.updated, report.removed, report.errors) == (0, 0, [])
    _assert_same(expected, collect(index, result))


def test_second_sync_reports_nothing_changed(built, rebuilt, tmp_path):
    result, _, expected = built
    # a copy of an index that a first sync just built from nothing. Files written within a
    # few seconds of a scan are read again by the next one (racy mtimes), and count as
    # unchanged: nothing is added, updated or removed.
    index = Index(result.library, _copy_index(rebuilt[0], tmp_path / "index.duckdb"))
    for _ in range(2):
        report = index.sync()
        assert (report.added, report.updated, report.removed, report.errors) == (0, 0, 0, [])
    _assert_same(expected, collect(index, result))


def _settle(library: Path) -> None:
    """Give every file of the library an mtime long past, as a sync tool may leave it, and let
    its change time (ctime, which nothing can set back) age past the racy window, so that no
    sync reads a file again only because it changed moments before the scan."""
    for path in library.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    time.sleep(RACY_NS / 1e9 + 0.1)


OLD_MTIME_NS = 1_600_000_000 * 10**9  # 2020-09-13


def _small_library(pm) -> None:
    pm.hook.tts_history_profile_saved(profile=Profile(id="bob", name="Bob"))
    for gid in ("g1", "g2"):
        pm.hook.tts_history_generation_completed(
            generation=Generation(id=gid, profile_id="bob", text=f"hi {gid}"),
            audio=Audio.from_samples(tone(0.05), RATE),
        )


def test_second_sync_of_settled_library_reads_nothing(pm, library, tmp_path):
    _small_library(pm)
    _settle(library)
    index = Index(library, tmp_path / "index.duckdb")
    assert index.sync().as_dict() == {
        "added": 3, "updated": 0, "removed": 0, "unchanged": 0, "errors": []
    }
    # the lookup indexes are built once the first sync has filled the tables
    assert index.sql("SELECT count(*) FROM duckdb_indexes()")[1] == [(6,)]
    assert index.sync().as_dict() == {
        "added": 0, "updated": 0, "removed": 0, "unchanged": 0, "errors": []
    }


@pytest.mark.parametrize("kind", ["generation", "profile"])
def test_touched_sidecar_counts_as_unchanged(pm, library, tmp_path, kind):
    index = _settled_index(pm, library, tmp_path)
    before = index.list()
    sidecar = (
        Path(index.get("g1")["sidecar_path"]) if kind == "generation" else library / "profiles" / "bob.parquet"
    )
    content = sidecar.read_bytes()
    touched_ns = OLD_MTIME_NS + 86_400 * 10**9
    os.utime(sidecar, ns=(touched_ns, touched_ns))

    # its folder did not change, so a sync does not list it again
    assert index.sync().as_dict() == {"added": 0, "updated": 0, "removed": 0, "unchanged": 0, "errors": []}
    report = index.sync(every_file=True)
    assert sidecar.read_bytes() == content
    assert report.as_dict() == {"added": 0, "updated": 0, "removed": 0, "unchanged": 1, "errors": []}
    # the new mtime is remembered: once the change is past the racy window and has been read
    # once more outside it (as git re-checks its racily clean entries), syncs look at nothing
    time.sleep(RACY_NS / 1e9 + 0.1)
    assert index.sync(every_file=True).as_dict()["unchanged"] <= 1
    assert index.sync(every_file=True).as_dict()["unchanged"] == 0
    assert index.list() == before
    # a full sync reads everything again, and nothing of it changed either
    full = index.sync(full=True)
    assert (full.added, full.updated, full.removed, full.unchanged) == (0, 0, 0, 3)


def _settled_index(pm, library: Path, tmp_path: Path) -> Index:
    """The small library, settled, and an index synced with it."""
    _small_library(pm)
    _settle(library)
    index = Index(library, tmp_path / "index.duckdb")
    index.sync()
    return index


def _rewrite_in_place(sidecar: Path, scratch: Path, **changes) -> None:
    """What a tool that opens the file and writes over it does: same inode, same folder."""
    record = schema.read_row(sidecar, "generation")
    record.update(changes)
    fresh = scratch / "fresh.parquet"
    schema.write_generation(fresh, record)
    data = fresh.read_bytes()
    fresh.unlink()
    with open(sidecar, "r+b") as f:
        f.write(data)
        f.truncate()


def test_sync_lists_only_changed_folders_and_every_file_sees_writes_in_place(pm, library, tmp_path):
    index = _settled_index(pm, library, tmp_path)
    sidecar = Path(index.get("g1")["sidecar_path"])
    ino = sidecar.stat().st_ino
    _rewrite_in_place(sidecar, tmp_path, is_favorited=True, updated_at=datetime.now(timezone.utc))
    assert sidecar.stat().st_ino == ino

    # a write in place leaves the folder as it was: a sync trusts it, as documented
    assert index.sync().as_dict() == {"added": 0, "updated": 0, "removed": 0, "unchanged": 0, "errors": []}
    assert indexed(index, "g1")["is_favorited"] is False
    assert index.get("g1")["is_favorited"] is True  # read from the sidecar: the folder's record
    report = index.sync(every_file=True)
    assert (report.added, report.updated, report.removed) == (0, 1, 0)
    assert indexed(index, "g1")["is_favorited"] is True

    # the plugin (and every sync tool) replaces files by renaming: the folder changes
    pm.hook.tts_history_favorite_set(generation_id="g2", is_favorited=True)
    report = index.sync()
    assert (report.added, report.updated, report.removed) == (0, 1, 0)
    assert indexed(index, "g2")["is_favorited"] is True


def test_sync_notices_a_folder_whose_time_was_set_back(pm, library, tmp_path):
    index = _settled_index(pm, library, tmp_path)
    sidecar = Path(index.get("g1")["sidecar_path"])
    folder = sidecar.parent
    before = folder.stat()
    shutil.copy(sidecar, folder / f"{sidecar.stem}.sync-conflict-20260101-000000-ABCDEFG.parquet")
    os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))  # as rsync -t leaves it
    assert folder.stat().st_mtime_ns == before.st_mtime_ns
    index.sync()
    assert len(index.conflicts()) == 1


def test_sync_follows_folders_added_moved_and_removed(pm, library, tmp_path):
    _small_library(pm)
    old_day = datetime(2025, 1, 2, tzinfo=timezone.utc)
    pm.hook.tts_history_generation_completed(
        generation=Generation(id="g3", profile_id="bob", text="old one", created_at=old_day),
        audio=Audio.from_samples(tone(0.05), RATE),
    )
    _settle(library)
    index = Index(library, tmp_path / "index.duckdb")
    index.sync()
    assert index.list()["total"] == 3
    old_folder = Path(index.get("g3")["sidecar_path"]).parent
    today_folder = Path(index.get("g1")["sidecar_path"]).parent

    # a whole day folder moved elsewhere in the tree: gone from one place, found in the other
    moved = library / "generations" / "2024" / "12" / "31"
    moved.parent.mkdir(parents=True)
    old_folder.rename(moved)
    report = index.sync()
    assert (report.added, report.removed) == (1, 1)
    assert index.get("g3")["sidecar_path"].startswith(str(moved))

    # a year removed whole
    shutil.rmtree(library / "generations" / "2024")
    report = index.sync()
    assert report.removed == 1
    assert index.list()["total"] == 2
    # and the day folder of today emptied
    for path in today_folder.iterdir():
        path.unlink()
    report = index.sync()
    assert report.removed == 2
    assert index.list()["total"] == 0
    assert index.sql("SELECT count(*) FROM files WHERE kind = 'audio'")[1] == [(0,)]
    # an index built from nothing agrees
    fresh = Index(library, tmp_path / "fresh.duckdb")
    assert fresh.list() == index.list() and fresh.stats() == index.stats()



def test_sync_within_named_paths_removes_what_is_gone_below_them(pm, library, tmp_path):
    # as a watcher syncs: named files and folders, present or gone, and nothing else
    _small_library(pm)
    for i, day in enumerate((datetime(2024, 3, 1, tzinfo=timezone.utc), datetime(2024, 7, 9, tzinfo=timezone.utc))):
        pm.hook.tts_history_generation_completed(
            generation=Generation(id=f"old{i}", profile_id="bob", text="old one", created_at=day),
            audio=Audio.from_samples(tone(0.05), RATE),
        )
    _settle(library)
    index = Index(library, tmp_path / "index.duckdb")
    index.sync()
    assert index.list()["total"] == 4
    g1 = index.get("g1")
    sidecar, audio = Path(g1["sidecar_path"]), Path(g1["audio_path"])
    folder = sidecar.parent.relative_to(library).as_posix()

    def recorded_in_folder() -> set[str]:
        return {p for (p,) in index.sql(f"SELECT path FROM files WHERE folder = '{folder}'")[1]}

    # a named sidecar that is gone; its audio, not named, stays recorded
    sidecar.unlink()
    report = index.sync(within=[f"{folder}/{sidecar.name}"])
    assert report.removed == 1 and index.list()["total"] == 3
    assert f"{folder}/{audio.name}" in recorded_in_folder()
    # a named folder still there: the file gone from it is found, the others stay
    audio.unlink()
    index.sync(within=[folder])
    assert recorded_in_folder() == {f"{folder}/{p.name}" for p in sidecar.parent.iterdir()}
    assert len(recorded_in_folder()) == 2  # g2's sidecar and audio
    # a year removed whole, named by its folder: everything below it goes, the rest stays
    shutil.rmtree(library / "generations" / "2024")
    report = index.sync(within=["generations/2024"])
    assert report.removed == 2
    assert sorted(i["id"] for i in index.list()["items"]) == ["g2"]
    assert index.sql("SELECT count(*) FROM files WHERE starts_with(path, 'generations/2024/')")[1] == [(0,)]
    fresh = Index(library, tmp_path / "fresh.duckdb")
    assert fresh.list() == index.list() and fresh.stats() == index.stats()


def test_folders_with_more_files_than_are_looked_up_one_by_one_sync_exactly(pm, library, tmp_path, monkeypatch):
    # the files of listed folders are then compared with those recorded in the same folders
    sync_module = importlib.import_module("tts_history.index.sync")
    monkeypatch.setattr(sync_module, "LOOKUP_MAX", 1)
    _small_library(pm)
    old_day = datetime(2025, 5, 6, tzinfo=timezone.utc)
    for gid in ("o1", "o2"):
        pm.hook.tts_history_generation_completed(
            generation=Generation(id=gid, profile_id="bob", text=f"old {gid}", created_at=old_day),
            audio=Audio.from_samples(tone(0.05), RATE),
        )
    _settle(library)
    index = Index(library, tmp_path / "index.duckdb")
    index.sync()
    # in one folder: a generation added, one removed, one changed; the other folder untouched
    pm.hook.tts_history_generation_completed(
        generation=Generation(id="o3", profile_id="bob", text="old o3", created_at=old_day),
        audio=Audio.from_samples(tone(0.05), RATE),
    )
    pm.hook.tts_history_generation_deleted(generation_id="o1")
    pm.hook.tts_history_favorite_set(generation_id="o2", is_favorited=True)
    report = index.sync()
    assert (report.added, report.updated, report.removed, report.errors) == (1, 1, 1, [])
    assert sorted(i["id"] for i in index.list()["items"]) == ["g1", "g2", "o2", "o3"]
    assert indexed(index, "o2")["is_favorited"] is True
    fresh = Index(library, tmp_path / "fresh.duckdb")
    assert fresh.list() == index.list() and fresh.stats() == index.stats()

def test_touched_sidecar_in_large_library_counts_as_unchanged(built, rebuilt, tmp_path):
    result, _, expected = built
    index = Index(result.library, _copy_index(rebuilt[0], tmp_path / "index.duckdb"))
    gid = sorted(result.live)[0]
    sidecar = Path(index.get(gid)["sidecar_path"])
    relative = sidecar.relative_to(result.library).as_posix()
    content = sidecar.read_bytes()
    stat = sidecar.stat()
    os.utime(sidecar, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    try:
        report = index.sync(every_file=True)
        assert sidecar.read_bytes() == content
        assert (report.added, report.updated, report.removed, report.errors) == (0, 0, 0, [])
        assert report.unchanged >= 1
        # the index now knows the new mtime
        assert index.sql(f"SELECT mtime_ns FROM files WHERE path = '{relative}'")[1] == [(OLD_MTIME_NS,)]
        _assert_same(expected, collect(index, result))
    finally:
        os.utime(sidecar, ns=(stat.st_atime_ns, stat.st_mtime_ns))


# -- the summed duration, whatever order the rows sit in ------------------------------------


def test_total_duration_does_not_depend_on_sync_history(pm, library, tmp_path):
    when = datetime.now(timezone.utc) - timedelta(days=1)

    def add(gid: str, seconds: float) -> None:
        generation = Generation(id=gid, profile_id="p1", text=gid, created_at=when)
        audio = Audio.from_samples(tone(seconds), RATE)
        pm.hook.tts_history_generation_completed(generation=generation, audio=audio)
        _settle(library)

    # 0.2 + 0.3 + 0.1 == 0.6, but 0.1 + 0.2 + 0.3 == 0.6000000000000001
    add("b", 0.2)
    add("c", 0.3)
    incremental = Index(library, tmp_path / "incremental.duckdb")
    incremental.sync()
    add("a", 0.1)
    assert incremental.sync().added == 1
    fresh = Index(library, tmp_path / "fresh.duckdb")
    fresh.sync()
    durations = "SELECT id, duration FROM generations ORDER BY id"
    assert incremental.sql(durations) == fresh.sql(durations)
    assert incremental.stats()["total_duration_seconds"] == fresh.stats()["total_duration_seconds"]


def test_an_index_made_again_starts_from_another_revision(pm, library, tmp_path):
    """A sync that took its difference at some revision skips looking for old rows only if the
    index is still at that revision: an index deleted and made again must not come back to it."""
    record(pm, text="one")
    index = Index(library, tmp_path / "index.duckdb")
    revision = "SELECT value FROM meta WHERE key = 'revision'"
    index.sync()
    first = index.sql(revision)[1]
    record(pm, text="two")
    index.sync()
    assert int(index.sql(revision)[1][0][0]) == int(first[0][0]) + 1  # one batch
    index.rebuild()
    assert index.sql(revision)[1] not in (first, [(str(int(first[0][0]) + 1),)])


def test_a_large_first_build_ranks_conflict_copies_at_its_end(built, rebuilt, tmp_path):
    """A first build too large to set each batch's flags row by row sets them for every row at
    its end: a copy as old as its original loses to it, a newer copy wins, and each id is
    listed once."""
    result, _, _ = built
    known = Index(result.library, _copy_index(rebuilt[0], tmp_path / "known.duckdb"))
    tied, newer = sorted(result.live)[:2]
    copies = []
    for gid in (tied, newer):
        sidecar = Path(known.get(gid)["sidecar_path"])
        copies.append(sidecar.with_name(f"{sidecar.stem}.sync-conflict-20260101-000000-ABCDEFG.parquet"))
    shutil.copy(Path(known.get(tied)["sidecar_path"]), copies[0])
    record = schema.read_row(known.get(newer)["sidecar_path"], "generation")
    favorited = record["is_favorited"]
    record.update(is_favorited=not favorited, updated_at=datetime.now(timezone.utc))
    schema.write_generation(copies[1], record)
    try:
        fresh = Index(result.library, tmp_path / "fresh.duckdb")
        report = fresh.sync()
        assert report.added > LOOKUP_MAX and report.errors == []
        winners = {
            c["id"]: [s["conflict_copy"] for s in c["sidecars"] if s["wins"]]
            for c in fresh.conflicts() if c["kind"] == "generation"
        }
        assert winners == {tied: [False], newer: [True]}
        assert fresh.get(newer)["is_favorited"] is (not favorited)
        assert fresh.list(limit=1)["total"] == len(result.live)
        shadowed = "SELECT count(*) FROM version_rows v JOIN generation_rows g USING (sidecar_path) WHERE v.shadowed <> g.shadowed"
        assert fresh.sql(shadowed)[1] == [(0,)]
    finally:
        for copy in copies:
            copy.unlink(missing_ok=True)

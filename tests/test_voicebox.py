"""Voicebox interoperability: its ``*.voicebox.zip`` archives and its data directory, built here
exactly as voicebox writes them (a DEFLATE ZIP, ``manifest.json`` from ``json.dumps(indent=2)``
so non-ASCII as \\uXXXX and emoji as surrogate pairs, 16-bit PCM mono 24 kHz WAVs; a SQLite
``voicebox.db`` with the seed's columns and audio under ``generations/``), imported for real.

Proven: every version is kept with its label and effects chain, the one marked ``is_default``
is the active one (not the newest), text is kept exactly, the profile is created or matched by
id, then by name; a migration is idempotent, reports what it migrated, what had missing or
broken audio and what it skipped and why, and never changes the voicebox data (hashed before
and after).
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import uuid
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import cli, history_with_own_work, make_history, record
from tts_history import History, Profile
from tts_history.archive import ArchiveError
from tts_history.library import schema

VB_RATE = 24000

TEXT = "日本語のテキストです。❤️ 👍🏽 👨‍👩‍👧 ☺︎ cafe\u0301 — “quotes” \\ back\\slash"


# -- helpers -----------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def sidecar(history: History, generation_id: str) -> dict:
    path = history.plugin.store.sidecar_of(generation_id)
    assert path is not None, f"no sidecar for {generation_id}"
    return schema.read_generation(path)


def vb_wav(seconds: float = 0.02, freq: float = 440.0) -> bytes:
    """What voicebox writes: 16-bit PCM, mono, 24 kHz."""
    t = np.arange(int(seconds * VB_RATE)) / VB_RATE
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(2 * np.pi * freq * t), VB_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def new_id() -> str:
    return str(uuid.uuid4())


def voicebox_archive(path: Path, manifest: dict, audio: dict[str, bytes]) -> Path:
    """Write a ``*.voicebox.zip`` as voicebox's export does."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=2))
        for filename, data in audio.items():
            zf.writestr(f"audio/{filename}", data)
    return path


def sample_manifest() -> tuple[dict, dict[str, bytes]]:
    """A generation with three versions; the middle one is the default (not the newest)."""
    gid, pid = new_id(), new_id()
    ids = [new_id() for _ in range(3)]
    files = {
        f"{gid}.wav": vb_wav(0.02, 440.0),
        f"{gid}_{ids[1][:8]}.wav": vb_wav(0.03, 550.0),
        f"{gid}_{ids[2][:8]}.wav": vb_wav(0.025, 660.0),
    }
    names = list(files)
    manifest = {
        "version": "1.0",
        "generation": {
            "id": gid,
            "text": TEXT,
            "language": "ja",
            "duration": 0.0213,  # what voicebox measured: kept beside what is measured here
            "seed": 42,
            "instruct": "ささやくように",
            "created_at": "2025-03-04T05:06:07.123456",  # naive UTC, microseconds
        },
        "profile": {"id": pid, "name": "Émilie 🎙️", "description": "warm, close", "language": "ja"},
        "versions": [
            {"id": ids[0], "label": "original", "is_default": False, "effects_chain": None, "filename": names[0]},
            {
                "id": ids[1],
                "label": "Reverb ✨",
                "is_default": True,
                "effects_chain": [{"type": "reverb", "enabled": True, "params": {"room_size": 0.8, "wet_level": 0.33}}],
                "filename": names[1],
            },
            {
                "id": ids[2],
                "label": "Pitch ↑ + gain",
                "is_default": False,
                "effects_chain": [
                    {"type": "pitch_shift", "enabled": False, "params": {"semitones": 2}},
                    {"type": "gain", "enabled": True, "params": {}},
                ],
                "filename": names[2],
            },
        ],
    }
    return manifest, files


@pytest.fixture
def target(tmp_path) -> History:
    return history_with_own_work(tmp_path / "target")


@pytest.fixture
def vb_archive(tmp_path) -> tuple[Path, dict, dict[str, bytes]]:
    manifest, files = sample_manifest()
    return voicebox_archive(tmp_path / "take.voicebox.zip", manifest, files), manifest, files


# -- archives --------------------------------------------------------------------------------


def test_the_archives_here_are_written_as_voicebox_writes_them(vb_archive):
    path, manifest, files = vb_archive
    with zipfile.ZipFile(path) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
        raw = zf.read("manifest.json").decode("ascii")  # ensure_ascii: pure ASCII
        assert '\n  "generation": {\n    "id"' in raw  # 2-space indent
        assert "\\u65e5\\u672c\\u8a9e" in raw  # 日本語 as \uXXXX
        assert "\\ud83d\\udc4d\\ud83c\\udffd" in raw  # 👍🏽 as surrogate pairs
        assert "\\u2764\\ufe0f" in raw  # ❤️ with its variation selector
        assert json.loads(raw) == manifest
        for filename, data in files.items():
            info = sf.info(io.BytesIO(zf.read(f"audio/{filename}")))
            assert (info.samplerate, info.channels, info.subtype) == (VB_RATE, 1, "PCM_16")


def test_voicebox_archive_keeps_every_version_the_default_the_text_and_the_profile(vb_archive, target):
    path, manifest, files = vb_archive
    report = target.import_archives([path])
    assert report.skipped == []
    [item] = report.imported
    gen = manifest["generation"]
    assert item["id"] == gen["id"] and item["new_id"] != gen["id"]

    stored = sidecar(target, item["new_id"])
    assert stored["text"] == TEXT  # exactly: the surrogate pairs became the emoji again
    assert (stored["language"], stored["seed"], stored["instruct"]) == ("ja", 42, "ささやくように")
    assert stored["created_at"] == datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=timezone.utc)
    assert stored["host_duration"] == pytest.approx(0.0213)
    assert (stored["status"], stored["error"], stored["is_favorited"]) == ("completed", None, False)
    assert (stored["origin_library_id"], stored["origin_id"]) == ("voicebox", gen["id"])
    assert stored["profile_id"] == manifest["profile"]["id"]
    assert stored["profile_name"] == "Émilie 🎙️"

    versions = manifest["versions"]
    assert [v["id"] for v in stored["versions"]] == [v["id"] for v in versions]
    assert [v["label"] for v in stored["versions"]] == ["original", "Reverb ✨", "Pitch ↑ + gain"]
    assert [None if v["effects_chain"] is None else json.loads(v["effects_chain"]) for v in stored["versions"]] == [
        v["effects_chain"] for v in versions
    ]
    assert [v["is_default"] for v in stored["versions"]] == [False, True, False]
    assert stored["active_version_id"] == versions[1]["id"]
    for version, given in zip(stored["versions"], versions):
        data = target.library.absolute(version["audio_path"]).read_bytes()
        assert data == files[given["filename"]]  # byte for byte
        assert version["audio_sha256"] == hashlib.sha256(data).hexdigest()
        assert (version["sample_rate"], version["channels"]) == (VB_RATE, 1)
        assert version["duration"] == pytest.approx(sf.info(io.BytesIO(data)).frames / VB_RATE)
    assert stored["audio_path"] == stored["versions"][1]["audio_path"]
    assert stored["duration"] == stored["versions"][1]["duration"]

    profile = target.plugin.store.read_profile(manifest["profile"]["id"])
    assert (profile["name"], profile["description"], profile["language"]) == ("Émilie 🎙️", "warm, close", "ja")

    shown = target.get(item["new_id"])
    assert shown["text"] == TEXT and shown["profile_name"] == "Émilie 🎙️"
    assert Path(shown["audio_path"]).read_bytes() == files[versions[1]["filename"]]


def test_voicebox_archive_twice_is_a_no_op_and_as_new_copies(vb_archive, target):
    path, manifest, _ = vb_archive
    first = target.import_archives([path])
    before = snapshot(target.library.root)
    again = target.import_archives([path])
    assert again.imported == [] and again.skipped[0]["reason"] == "already imported"
    assert snapshot(target.library.root) == before
    copy = target.import_archives([path], as_new=True)
    assert len(copy.imported) == 1 and copy.imported[0]["new_id"] != first.imported[0]["new_id"]
    assert target.list(limit=10)["total"] == 3


def test_voicebox_profile_is_matched_by_id_then_by_name(tmp_path):
    manifest, files = sample_manifest()
    pid = manifest["profile"]["id"]
    path = voicebox_archive(tmp_path / "a.voicebox.zip", manifest, files)

    by_id = make_history(tmp_path / "by-id")
    by_id.hook.tts_history_profile_saved(profile=Profile(id=pid, name="Renamed here", language="fr"))
    mine = by_id.plugin.store.read_profile(pid)
    [item] = by_id.import_archives([path]).imported
    assert sidecar(by_id, item["new_id"])["profile_id"] == pid
    assert by_id.plugin.store.read_profile(pid) == mine  # matched, left as it was

    by_name = make_history(tmp_path / "by-name")
    by_name.hook.tts_history_profile_saved(profile=Profile(id="local-emilie", name="Émilie 🎙️"))
    [item] = by_name.import_archives([path]).imported
    assert sidecar(by_name, item["new_id"])["profile_id"] == "local-emilie"
    assert by_name.plugin.store.read_profile(pid) is None
    assert by_name.get(item["new_id"])["profile_name"] == "Émilie 🎙️"


def test_voicebox_nulls_and_a_single_unmarked_version(tmp_path, target):
    manifest, files = sample_manifest()
    manifest["generation"].update(seed=None, instruct=None)
    first = manifest["versions"][0]
    first["is_default"] = False
    manifest["versions"] = [first]
    files = {first["filename"]: files[first["filename"]]}
    path = voicebox_archive(tmp_path / "one.voicebox.zip", manifest, files)
    [item] = target.import_archives([path]).imported
    stored = sidecar(target, item["new_id"])
    assert (stored["seed"], stored["instruct"]) == (None, None)
    [version] = stored["versions"]
    # none marked: the only one is the active one, as voicebox itself falls back to the first
    assert version["is_default"] is True and stored["active_version_id"] == first["id"]
    assert version["effects_chain"] is None


def test_voicebox_and_tts_history_archives_in_one_call(vb_archive, target, tmp_path):
    path, _, _ = vb_archive
    other = make_history(tmp_path / "other")
    record(other.pm, 0.02, text="from tts-history")
    other.export(tmp_path / "th.zip", status="completed")
    report = target.import_archives([tmp_path / "th.zip", path])
    assert len(report.imported) == 2
    texts = {target.get(i["new_id"])["text"] for i in report.imported}
    assert texts == {"from tts-history", TEXT}


def test_voicebox_archive_through_the_cli(vb_archive, tmp_path):
    path, manifest, _ = vb_archive
    lib = ["--library", str(tmp_path / "cli-lib")]
    assert cli("init", lib[1]).returncode == 0
    result = cli(*lib, "import", str(path), "--json")
    assert result.returncode == 0, result.stderr
    [item] = json.loads(result.stdout)["imported"]
    shown = json.loads(cli(*lib, "show", item["new_id"], "--json").stdout)
    assert shown["text"] == TEXT
    assert [v["label"] for v in shown["versions"]] == ["original", "Reverb ✨", "Pitch ↑ + gain"]
    assert shown["active_version_id"] == manifest["versions"][1]["id"]
    again = cli(*lib, "import", str(path))
    assert again.returncode == 0 and again.stdout.strip() == "imported 0, skipped 1"


def _vb_case(change):
    def build(tmp_path: Path) -> Path:
        manifest, files = sample_manifest()
        changed = change(manifest, files)
        if isinstance(changed, dict):  # the audio files, changed
            files = changed
        return voicebox_archive(tmp_path / "bad.voicebox.zip", manifest, files)

    return build


def _drop_audio(manifest, files):
    return {k: v for k, v in files.items() if k != manifest["versions"][1]["filename"]}


def _garbage_audio(manifest, files):
    return {**files, manifest["versions"][2]["filename"]: b"RIFF\x00\x00\x00\x00WAVE" + bytes(300)}


INVALID_VOICEBOX = [
    pytest.param(_vb_case(_drop_audio), "is not in the archive", id="audio-missing"),
    pytest.param(_vb_case(_garbage_audio), "does not decode as audio", id="broken-wav"),
    pytest.param(_vb_case(lambda m, f: m.update(versions=[])), "has no versions", id="no-versions"),
    pytest.param(_vb_case(lambda m, f: m["versions"][0].update(filename="../../escape.wav")),
                 "is not in the archive|unsafe", id="filename-escapes"),
    pytest.param(_vb_case(lambda m, f: m["versions"][0].pop("filename")), "required field 'filename'", id="no-filename"),
    pytest.param(_vb_case(lambda m, f: m["generation"].pop("text")), "required field 'text'", id="no-text"),
    pytest.param(_vb_case(lambda m, f: m["generation"].update(text=["x"])), "text: expected a string", id="text-list"),
    pytest.param(_vb_case(lambda m, f: m["generation"].update(seed="42")), "seed: expected a whole number", id="seed-string"),
    pytest.param(_vb_case(lambda m, f: m["generation"].update(created_at="03/04/2025")), "not an ISO 8601 time", id="bad-time"),
    pytest.param(_vb_case(lambda m, f: m["generation"].pop("created_at")), "required field 'created_at'", id="no-time"),
    pytest.param(_vb_case(lambda m, f: m["versions"][1].update(effects_chain={"type": "reverb"})),
                 "effects_chain: expected a list", id="chain-object"),
    pytest.param(_vb_case(lambda m, f: m["versions"][1].update(effects_chain=[{"enabled": True}])),
                 r"effects_chain\[0\]: required field 'type'", id="effect-without-type"),
    pytest.param(_vb_case(lambda m, f: m["versions"][1].update(effects_chain=[{"type": "x", "enabled": "yes"}])),
                 "expected true or false", id="effect-enabled-string"),
    pytest.param(_vb_case(lambda m, f: m["versions"][2].update(id=m["versions"][0]["id"])),
                 "a version id appears twice", id="duplicate-version"),
    pytest.param(_vb_case(lambda m, f: (m.pop("profile"), m["generation"].pop("id"))), "required field 'id'", id="no-ids"),
    pytest.param(_vb_case(lambda m, f: m.pop("profile")), "no profile id", id="no-profile"),
    pytest.param(_vb_case(lambda m, f: m["profile"].pop("name")), "required field 'name'", id="profile-without-name"),
]


@pytest.mark.parametrize("build, message", INVALID_VOICEBOX)
def test_invalid_voicebox_archives_are_refused_and_nothing_is_written(build, message, target, tmp_path):
    bad = build(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ArchiveError, match=message) as caught:
        target.import_archives([bad])
    assert str(caught.value).startswith(bad.name)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("change", [
    pytest.param(lambda m: m["generation"].update(status=["completed"]), id="status-list"),
    pytest.param(lambda m: m["versions"][1].update(source_version_id=7), id="source-version-int"),
    pytest.param(lambda m: m["versions"][1].update(id="not.an.id"), id="version-id-with-dots"),
    pytest.param(lambda m: m["generation"].update(seed=2**64), id="seed-over-int64"),
])
def test_voicebox_values_of_the_wrong_type_are_refused(change, tmp_path):
    target = make_history(tmp_path / "t")
    manifest, files = sample_manifest()
    change(manifest)
    bad = voicebox_archive(tmp_path / "bad.voicebox.zip", manifest, files)
    before = snapshot(tmp_path)
    with pytest.raises(ArchiveError):
        target.import_archives([bad])
    assert snapshot(tmp_path) == before


def test_voicebox_profile_id_cannot_escape_the_library(tmp_path):
    target = make_history(tmp_path / "deep" / "t")
    manifest, files = sample_manifest()
    manifest["profile"]["id"] = "../../../escaped"
    bad = voicebox_archive(tmp_path / "bad.voicebox.zip", manifest, files)
    before = snapshot(tmp_path)
    with pytest.raises(ArchiveError):
        target.import_archives([bad])
    assert snapshot(tmp_path) == before


# -- data directory --------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE profiles (
    id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL UNIQUE, description TEXT, language VARCHAR,
    avatar_path VARCHAR, created_at DATETIME, updated_at DATETIME
);
CREATE TABLE generations (
    id VARCHAR PRIMARY KEY, profile_id VARCHAR NOT NULL REFERENCES profiles(id), text TEXT NOT NULL,
    language VARCHAR, audio_path VARCHAR, duration FLOAT, seed INTEGER, instruct TEXT,
    engine VARCHAR, model_size VARCHAR, status VARCHAR, error TEXT, is_favorited BOOLEAN,
    created_at DATETIME, source VARCHAR
);
CREATE TABLE generation_versions (
    id VARCHAR PRIMARY KEY, generation_id VARCHAR NOT NULL REFERENCES generations(id),
    label VARCHAR NOT NULL, audio_path VARCHAR NOT NULL, effects_chain TEXT,
    source_version_id VARCHAR, is_default BOOLEAN, created_at DATETIME
);
"""

GEN_COLUMNS = ("id", "profile_id", "text", "language", "audio_path", "duration", "seed", "instruct", "engine",
               "model_size", "status", "error", "is_favorited", "created_at", "source")


def make_data_dir(root: Path) -> dict:
    """A voicebox data directory with one of everything a migration meets."""
    (root / "generations").mkdir(parents=True)
    (root / "profiles").mkdir()
    ada, bob = new_id(), new_id()
    g = {name: new_id() for name in ("multi", "plain", "failed", "pending", "missing", "broken", "half", "bobs")}
    audio: dict[str, bytes] = {}

    def wav(name: str, seconds: float, freq: float) -> str:
        relative = f"generations/{name}.wav"
        audio[relative] = vb_wav(seconds, freq)
        (root / relative).write_bytes(audio[relative])
        return relative

    v = [new_id() for _ in range(5)]
    multi_files = [wav(g["multi"], 0.02, 300), wav(f"{g['multi']}_{v[1][:8]}", 0.03, 400), wav(f"{g['multi']}_{v[2][:8]}", 0.025, 500)]
    chains = [None, json.dumps([{"type": "reverb", "enabled": True, "params": {"room_size": 0.7}}]),
              json.dumps([{"type": "chorus", "enabled": False, "params": {"depth": 0.2, "label": "ünï"}},
                          {"type": "gain", "enabled": True, "params": {"db": -1.5}}])]
    plain = wav(g["plain"], 0.02, 600)
    bobs = wav(g["bobs"], 0.02, 700)
    (root / "generations" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    half_ok = wav(g["half"], 0.02, 800)

    def at(day: int) -> str:  # as SQLAlchemy stores DateTime in SQLite: naive UTC, a space
        return f"2025-01-{day:02d} 10:20:30.{day:06d}"

    generations = [
        (g["multi"], ada, TEXT, "ja", multi_files[1], 0.03, 7, "calm", "qwen", "1.7B", "completed", None, 1, at(1), "manual"),
        (g["plain"], ada, "Plain words", "en", plain, 0.02, None, None, "luxtts", None, "completed", None, 0, at(2), "manual"),
        (g["failed"], ada, "This failed", "en", None, None, 3, None, "qwen", "0.6B", "failed", "CUDA out of memory", 0, at(3), "manual"),
        (g["pending"], ada, "Still going", "en", None, None, None, None, "qwen", "0.6B", "pending", None, 0, at(4), "manual"),
        (g["missing"], ada, "Audio gone", "en", "generations/gone.wav", 1.0, 1, None, "qwen", None, "completed", None, 1, at(5), "manual"),
        (g["broken"], ada, "Audio broken", "en", "generations/broken.wav", 1.0, 1, None, "qwen", None, "completed", None, 0, at(6), "manual"),
        (g["half"], ada, "One version gone", "en", half_ok, 0.02, 1, None, "qwen", None, "completed", None, 0, at(7), "manual"),
        (g["bobs"], bob, "Bob speaks", "en", bobs, 0.02, 9, None, "qwen", None, "completed", None, 1, at(8), "story"),
    ]
    versions = [
        (v[0], g["multi"], "original", multi_files[0], chains[0], None, 0, at(1)),
        (v[1], g["multi"], "Reverb", multi_files[1], chains[1], v[0], 1, at(11)),
        (v[2], g["multi"], "Chorus + gain ✨", multi_files[2], chains[2], v[0], 0, at(12)),
        (v[3], g["half"], "original", half_ok, None, None, 1, at(7)),
        (v[4], g["half"], "Echo", "generations/half-echo-gone.wav", chains[1], v[3], 0, at(13)),
    ]
    con = sqlite3.connect(root / "voicebox.db")
    with con:
        con.executescript(SCHEMA)
        con.executemany("INSERT INTO profiles VALUES (?, ?, ?, ?, ?, ?, ?)", [
            (ada, "Ada ✨", "narrator", "ja", None, at(1), at(1)),
            (bob, "Bob", None, "en", None, at(1), at(1)),
        ])
        con.executemany(f"INSERT INTO generations ({', '.join(GEN_COLUMNS)}) VALUES ({', '.join('?' * len(GEN_COLUMNS))})", generations)
        con.executemany("INSERT INTO generation_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", versions)
    con.close()
    return {"g": g, "v": v, "profiles": {"ada": ada, "bob": bob}, "audio": audio, "chains": chains,
            "multi_files": multi_files}


@pytest.fixture
def data_dir(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "voicebox-data"
    return root, make_data_dir(root)


@pytest.fixture
def migration_target(tmp_path) -> History:
    history = make_history(tmp_path / "target")
    # Bob already has a profile here, under another id: matched by name
    history.hook.tts_history_profile_saved(profile=Profile(id="local-bob", name="Bob"))
    return history


def test_migrate_a_voicebox_data_directory(data_dir, migration_target):
    root, made = data_dir
    g, v = made["g"], made["v"]
    target = migration_target
    before = snapshot(root)

    report = target.import_voicebox(root)
    new = {item["id"]: item["new_id"] for item in report.imported}
    # a pending row comes in as generating, with no audio, as a failed one comes in failed
    assert set(new) == {g["multi"], g["plain"], g["failed"], g["pending"], g["bobs"]}
    skipped = {item["id"]: item["reason"] for item in report.skipped}
    assert set(skipped) == {g["missing"], g["broken"], g["half"]}
    assert "audio missing" in skipped[g["missing"]] and "gone.wav" in skipped[g["missing"]]
    assert "audio missing" in skipped[g["half"]] and "half-echo-gone.wav" in skipped[g["half"]]
    assert "broken.wav" in skipped[g["broken"]] and "does not decode" in skipped[g["broken"]]
    assert target.get(new[g["pending"]])["status"] == "generating"
    assert all(item["source"] == str(root) for item in report.imported + report.skipped)

    # the voicebox data is only read
    assert snapshot(root) == before

    multi = sidecar(target, new[g["multi"]])
    assert multi["text"] == TEXT and multi["language"] == "ja"
    assert (multi["seed"], multi["instruct"], multi["engine"], multi["model_size"]) == (7, "calm", "qwen", "1.7B")
    assert (multi["status"], multi["is_favorited"]) == ("completed", True)
    assert multi["created_at"] == datetime(2025, 1, 1, 10, 20, 30, 1, tzinfo=timezone.utc)
    assert multi["host_duration"] == pytest.approx(0.03)
    assert (multi["origin_library_id"], multi["origin_id"]) == ("voicebox", g["multi"])
    assert [x["id"] for x in multi["versions"]] == v[:3]
    assert [x["label"] for x in multi["versions"]] == ["original", "Reverb", "Chorus + gain ✨"]
    assert [None if x["effects_chain"] is None else json.loads(x["effects_chain"]) for x in multi["versions"]] == [
        None if c is None else json.loads(c) for c in made["chains"]
    ]
    assert [x["source_version_id"] for x in multi["versions"]] == [None, v[0], v[0]]
    assert [x["is_default"] for x in multi["versions"]] == [False, True, False]  # not the newest
    assert multi["active_version_id"] == v[1]
    assert [x["created_at"] for x in multi["versions"]] == [
        datetime(2025, 1, d, 10, 20, 30, d, tzinfo=timezone.utc) for d in (1, 11, 12)
    ]
    for version, relative in zip(multi["versions"], made["multi_files"]):
        assert target.library.absolute(version["audio_path"]).read_bytes() == made["audio"][relative]
    profile = target.plugin.store.read_profile(made["profiles"]["ada"])
    assert (profile["name"], profile["description"], profile["language"]) == ("Ada ✨", "narrator", "ja")

    plain = sidecar(target, new[g["plain"]])
    [original] = plain["versions"]  # no versions table rows: its audio_path is the original
    assert original["label"] == "original" and original["effects_chain"] is None and original["is_default"]
    assert target.library.absolute(original["audio_path"]).read_bytes() == made["audio"][f"generations/{g['plain']}.wav"]
    assert (plain["seed"], plain["engine"], plain["is_favorited"]) == (None, "luxtts", False)

    failed = sidecar(target, new[g["failed"]])
    assert (failed["status"], failed["error"], failed["versions"], failed["audio_path"]) == (
        "failed", "CUDA out of memory", [], None
    )

    bobs = sidecar(target, new[g["bobs"]])
    assert bobs["profile_id"] == "local-bob" and bobs["is_favorited"] is True
    assert target.plugin.store.read_profile(made["profiles"]["bob"]) is None

    assert target.list(limit=50)["total"] == 5
    assert target.list(favorites=True, limit=50)["total"] == 2

    # again: nothing new, nothing changed, the same problems reported
    library_before = snapshot(target.library.root)
    again = target.import_voicebox(root)
    assert again.imported == []
    reasons = {item["id"]: item["reason"] for item in again.skipped}
    assert {reasons[i] for i in new} == {"already imported"}
    assert {i: reasons[i] for i in skipped if i != g["broken"]} == {i: r for i, r in skipped.items() if i != g["broken"]}
    assert "broken.wav" in reasons[g["broken"]] and "does not decode" in reasons[g["broken"]]
    assert snapshot(target.library.root) == library_before
    assert snapshot(root) == before


def test_migrate_through_the_cli_twice(data_dir, tmp_path):
    root, made = data_dir
    lib = ["--library", str(tmp_path / "cli-lib")]
    assert cli("init", lib[1]).returncode == 0
    before = snapshot(root)
    first = cli(*lib, "import-voicebox", str(root))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "imported 5, skipped 3"
    lines = first.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("skipped ") for line in lines)
    assert any(made["g"]["missing"] in line and "gone.wav" in line for line in lines)

    second = cli(*lib, "import-voicebox", str(root), "--json")
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["imported"] == [] and len(report["skipped"]) == 8
    assert sum(item["reason"] == "already imported" for item in report["skipped"]) == 5
    assert snapshot(root) == before
    assert json.loads(cli(*lib, "list", "--json").stdout)["total"] == 5


def test_migration_refuses_what_is_not_a_voicebox_data_directory(tmp_path, migration_target):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArchiveError, match="no voicebox database"):
        migration_target.import_voicebox(empty)
    with pytest.raises(ArchiveError, match="not a folder"):
        migration_target.import_voicebox(tmp_path / "nowhere")
    other = tmp_path / "other"
    other.mkdir()
    sqlite3.connect(other / "voicebox.db").executescript("CREATE TABLE unrelated (x); ").close()
    with pytest.raises(ArchiveError, match="not a voicebox database"):
        migration_target.import_voicebox(other)
    assert migration_target.list()["total"] == 0

    lib = ["--library", str(migration_target.library.root)]
    result = cli(*lib, "import-voicebox", str(other))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("Error:") and len(result.stderr.strip().splitlines()) == 1


def test_voicebox_non_finite_duration_is_refused(tmp_path):
    target = make_history(tmp_path / "t")
    manifest, files = sample_manifest()
    text = json.dumps(manifest, indent=2).replace('"duration": 0.0213', '"duration": 1e999')
    path = tmp_path / "inf.voicebox.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", text)
        for filename, data in files.items():
            zf.writestr(f"audio/{filename}", data)
    try:
        report = target.import_archives([path])
    except ArchiveError:
        return  # refused: the fix
    target.export(tmp_path / "again.zip", [i["new_id"] for i in report.imported])
    make_history(tmp_path / "u").import_archives([tmp_path / "again.zip"])

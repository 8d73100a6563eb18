"""Export and import of archives, as a person and a script use them: real libraries recorded
through the hooks, real ZIP files, real audio (soundfile), the CLI in real subprocesses.

What is proven here:

* export writes a versioned manifest with every sidecar field, every version (effects chain,
  default flag, sha256 and byte size of its audio), the profile, the format and tool versions,
  then the audio; by ids or by the list filters; ``export-audio`` writes the active version's
  audio or the one asked for; a failed export leaves no file (nor temp file) behind;
* import checks everything before it writes anything, and refuses, naming the entry and the
  reason: unsafe paths, symlinks, duplicate and encrypted entries, zip bombs (size and ratio
  caps), truncated archives, non-audio posing as WAV, audio differing from the manifest, and
  malformed or oversize metadata; after any failure the library is byte for byte as before,
  also when the second of two archives is the bad one;
* identity: a new id, the origin recorded, importing again is a no-op unless ``as_new``;
  everything else is kept (times, versions, the default even when it is not the newest,
  favorites, status failed/generating, extra, the profile created or matched by id, then name);
* round trip: export then import into an empty library gives byte-identical audio and equal
  metadata for every field but the id, the origin and the paths, for hand-made and for random
  generations (hypothesis).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import warnings
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from helpers import RATE, cli, days_ago, history_with_own_work, make_generation, make_history, record, tone
from tts_history import Audio, Effect, History, Profile, Version, __version__
from tts_history.archive import ArchiveError, Limits, importer
from tts_history.archive.format import FORMAT_NAME, FORMAT_VERSION, MANIFEST
from tts_history.index import NotFoundError
from tts_history.library import LibraryError, schema

# Hypothesis keeps caches in ./.hypothesis unless told otherwise: keep the repository clean
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "tts-history-hypothesis")

# -- helpers -----------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (hidden and temp files included), by relative path."""
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


def sidecar(history: History, generation_id: str) -> dict:
    path = history.plugin.store.sidecar_of(generation_id)
    assert path is not None, f"no sidecar for {generation_id}"
    return schema.read_generation(path)


def comparable(record_: dict) -> dict:
    """A sidecar record without what an import changes on purpose (id, origin, paths), effects
    chains parsed (their JSON text may differ in escaping only)."""
    out = {k: v for k, v in record_.items() if k not in ("id", "audio_path", "origin_library_id", "origin_id")}
    out["versions"] = [
        {
            **{k: v for k, v in version.items() if k != "audio_path"},
            "effects_chain": None if version["effects_chain"] is None else json.loads(version["effects_chain"]),
        }
        for version in record_["versions"]
    ]
    return out


def comparable_profile(profile: dict) -> dict:
    return {**profile, "extra": json.loads(profile["extra"] or "{}")}


def imported_ids(report) -> dict[str, str]:
    """origin id -> new id."""
    return {item["id"]: item["new_id"] for item in report.imported}


def audio(seconds: float = 0.05, freq: float = 440.0, rate: int = RATE) -> Audio:
    return Audio.from_samples(tone(seconds, rate=rate, freq=freq), rate)


def wav_bytes(seconds: float = 0.05, freq: float = 440.0, rate: int = RATE, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, tone(seconds, rate=rate, freq=freq), rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def flac_bytes(seconds: float = 0.05) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, tone(seconds), RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def read_entries(path: Path) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(path) as zf:
        return [(info, zf.read(info)) for info in zf.infolist()]


def write_entries(
    path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]], *, after=None
) -> Path:
    """Write a ZIP of these entries (a ZipInfo keeps its name, compression and attributes);
    ``after(zf)`` may change the central directory's records before it is written."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names, on purpose
        with zipfile.ZipFile(path, "w") as zf:
            for info, data in entries:
                if isinstance(info, zipfile.ZipInfo):
                    fresh = zipfile.ZipInfo(info.filename, info.date_time)
                    fresh.compress_type = info.compress_type
                    fresh.external_attr = info.external_attr
                    info = fresh
                zf.writestr(info, data)
            if after is not None:
                after(zf)
    return path


def manifest_of(path: Path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read(MANIFEST))


def with_manifest(src: Path, dst: Path, manifest) -> Path:
    """``src`` with another manifest: JSON data, or the exact text or bytes."""
    if not isinstance(manifest, (bytes, str)):
        manifest = json.dumps(manifest)
    if isinstance(manifest, str):
        manifest = manifest.encode()
    entries = [(info, manifest if info.filename == MANIFEST else data) for info, data in read_entries(src)]
    return write_entries(dst, entries)


# -- a library with one of everything ------------------------------------------------------------

TEXT = "こんにちは、世界 👍🏽 ❤️ 👨‍👩‍👧 cafe\u0301 Ångström"


def build_library(pm) -> dict[str, str]:
    """Generations of every kind, recorded through the hooks as a host records them."""
    pm.hook.tts_history_profile_saved(
        profile=Profile(
            id="p-ada",
            name="Ada Lovelace",
            description="narrator, calm",
            language="en",
            extra={"avatar": "ada.png", "tags": ["calm", "低い"], "rate": 1.25, "nested": {"a": None}},
        )
    )
    multi = record(
        pm,
        0.05,
        profile_id="p-ada",
        text=TEXT,
        language="ja",
        seed=1234,
        instruct="speak calmly",
        engine="qwen",
        model_size="1.7B",
        created_at=days_ago(3),
        duration=0.05,
        extra={"host": "voicebox", "note": "ノート ✨"},
    )
    original = sidecar_version_ids(pm, multi.id)[0]
    pm.hook.tts_history_version_added(
        generation_id=multi.id,
        version=Version(
            id="v-reverb",
            label="Reverb (hall) ✨",
            effects_chain=[Effect("reverb", params={"room_size": 0.75, "wet": 0.3, "name": "Salle é"})],
            source_version_id=original,
            created_at=days_ago(2.5),
        ),
        audio=audio(0.04, 550.0),
    )
    pm.hook.tts_history_version_added(
        generation_id=multi.id,
        version=Version(
            id="v-gain",
            label="gain + eq",
            effects_chain=[
                {"type": "gain", "params": {"db": -3.0}},
                {"type": "eq", "enabled": False, "params": {"bands": [100, 1000, 8000], "q": None}},
            ],
            source_version_id="v-reverb",
            created_at=days_ago(2),
        ),
        audio=Audio.from_samples(np.stack([tone(0.03), tone(0.03, freq=660.0)], axis=1), RATE, "FLOAT"),
    )
    # the default is the middle version: neither the original nor the newest
    pm.hook.tts_history_default_version_changed(generation_id=multi.id, version_id="v-reverb")
    pm.hook.tts_history_favorite_set(generation_id=multi.id, is_favorited=True)

    failed = make_generation(profile_id="p-ada", text="too long to say", created_at=days_ago(2), seed=7)
    pm.hook.tts_history_generation_started(generation=failed)
    pm.hook.tts_history_generation_failed(generation=failed, error="CUDA out of memory ⚠")

    generating = make_generation(profile_id="p-ada", text="still speaking…", created_at=days_ago(1))
    pm.hook.tts_history_generation_started(generation=generating)

    # a profile the host never saved: only its id and the name at generation time
    plain = record(
        pm, 0.03, profile_id="p-bob", profile_name="Bob", text="Bonjour", language="fr",
        created_at=days_ago(10),
    )
    return {"multi": multi.id, "failed": failed.id, "generating": generating.id, "plain": plain.id}


def sidecar_version_ids(pm, generation_id: str) -> list[str]:
    plugin = pm.get_plugin("tts_history.history")
    return [v["id"] for v in plugin.store.read(generation_id)["versions"]]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Built once per module (recording through the hooks and opening indexes is what costs):
    the source library, its archive, and a target library with a generation and a profile of
    its own, so that "unchanged" means something. Tests only read these; a test that changes a
    library works on a copy or a fresh one."""
    home = tmp_path_factory.mktemp("world")
    with pytest.MonkeyPatch.context() as mp:
        # per-machine state (index, locks) of these libraries lives here, never in the user's
        # folders; the objects keep these paths after the context ends
        for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
            mp.setenv(name, str(home / "xdg" / name.lower()))
        source = make_history(home / "source")
        ids = build_library(source.pm)
        archive = home / "archives" / "all.zip"
        archive.parent.mkdir()
        source.export(archive, list(ids.values()))
        target = make_history(home / "sandbox" / "target")
        target.hook.tts_history_profile_saved(profile=Profile(id="p-own", name="Own"))
        record(target.pm, 0.02, profile_id="p-own", text="already here")
        target.sync()
        with source.index.db.pinned(), target.index.db.pinned():
            original = archive.read_bytes()
            yield {"source": source, "ids": ids, "archive": archive, "target": target, "sandbox": home / "sandbox"}
    assert archive.read_bytes() == original, "a test changed the shared archive"


@pytest.fixture
def archive(world) -> Path:
    return world["archive"]


@pytest.fixture
def source(world, tmp_path):
    """A copy of the source library (same library id), for tests that read or change it."""
    root = tmp_path / "library"
    shutil.copytree(world["source"].library.root, root)
    return make_history(root), world["ids"]


@pytest.fixture
def target(world) -> History:
    """The shared target: only for tests that leave it unchanged (refused imports)."""
    return world["target"]


@pytest.fixture
def fresh_target(tmp_path) -> History:
    return history_with_own_work(tmp_path / "target")


# -- export ------------------------------------------------------------------------------------


def test_export_manifest_holds_every_field_version_profile_and_checksum(world, archive):
    history, ids = world["source"], world["ids"]
    library = history.library.root
    manifest = manifest_of(archive)
    assert manifest["format"] == FORMAT_NAME and manifest["version"] == FORMAT_VERSION == 1
    assert manifest["tool"] == "tts-history" and manifest["tool_version"] == __version__
    assert manifest["library_id"] == json.loads((library / "library.json").read_text())["library_id"]
    assert datetime.fromisoformat(manifest["exported_at"].replace("Z", "+00:00")) <= datetime.now(timezone.utc)
    assert [g["id"] for g in manifest["generations"]] == list(ids.values())  # in the order asked

    sidecar_fields = [f.name for f in schema.GENERATION_SCHEMA if f.name != "schema_version"]
    version_fields = [f.name for f in schema.VERSION_TYPE]
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        assert len(names) == len(set(names))
        for entry in manifest["generations"]:
            stored = sidecar(history, entry["id"])
            assert set(entry) == set(sidecar_fields) | {"profile"}
            for name in sidecar_fields:
                if name in ("versions", "audio_path"):
                    continue
                value = stored[name]
                if isinstance(value, datetime):
                    value = value.isoformat().replace("+00:00", "Z")
                assert entry[name] == value, name
            assert len(entry["versions"]) == len(stored["versions"])
            for exported, version in zip(entry["versions"], stored["versions"]):
                assert set(exported) == set(version_fields)
                assert exported["id"] == version["id"]
                assert exported["label"] == version["label"]
                assert exported["is_default"] == version["is_default"]
                assert exported["effects_chain"] == (
                    None if version["effects_chain"] is None else json.loads(version["effects_chain"])
                )
                data = zf.read(exported["audio_path"])
                assert zf.getinfo(exported["audio_path"]).compress_type == zipfile.ZIP_STORED
                assert data == (library / version["audio_path"]).read_bytes()
                assert exported["audio_sha256"] == hashlib.sha256(data).hexdigest() == version["audio_sha256"]
                assert exported["audio_bytes"] == len(data) == version["audio_bytes"]
                assert exported["duration"] == version["duration"]
            defaults = [v["id"] for v in entry["versions"] if v["is_default"]]
            if entry["versions"]:
                assert defaults == [entry["active_version_id"]]
                active = next(v for v in entry["versions"] if v["is_default"])
                assert entry["audio_path"] == active["audio_path"]
            else:
                assert defaults == [] and entry["audio_path"] is None

    by_id = {g["id"]: g for g in manifest["generations"]}
    multi = by_id[ids["multi"]]
    assert multi["text"] == TEXT and multi["active_version_id"] == "v-reverb"
    assert [v["label"] for v in multi["versions"]] == ["original", "Reverb (hall) ✨", "gain + eq"]
    assert multi["versions"][2]["effects_chain"][1] == {
        "type": "eq", "enabled": False, "params": {"bands": [100, 1000, 8000], "q": None}
    }
    assert multi["profile"] == {
        "id": "p-ada",
        "name": "Ada Lovelace",
        "description": "narrator, calm",
        "language": "en",
        "extra": {"avatar": "ada.png", "tags": ["calm", "低い"], "rate": 1.25, "nested": {"a": None}},
        "created_at": multi["profile"]["created_at"],
        "updated_at": multi["profile"]["updated_at"],
    }
    assert by_id[ids["failed"]]["status"] == "failed" and by_id[ids["failed"]]["error"] == "CUDA out of memory ⚠"
    assert by_id[ids["generating"]]["status"] == "generating"
    assert by_id[ids["plain"]]["profile"] is None and by_id[ids["plain"]]["profile_name"] == "Bob"


def test_export_manifest_is_strict_json(archive):
    def refuse(value):
        raise AssertionError(f"{value} in the manifest")

    with zipfile.ZipFile(archive) as zf:
        json.loads(zf.read(MANIFEST).decode("utf-8"), parse_constant=refuse)


@pytest.fixture
def cli_library(pm, library):
    """Generations to filter: two profiles, favorites, statuses, days, words."""
    pm.hook.tts_history_profile_saved(profile=Profile(id="p-a", name="A"))
    made = {
        "old": record(pm, 0.02, profile_id="p-a", text="the quick brown fox", created_at=days_ago(30)).id,
        "mid": record(pm, 0.02, profile_id="p-b", text="a quick reply", created_at=days_ago(10)).id,
        "new": record(pm, 0.02, profile_id="p-a", text="slow and steady", created_at=days_ago(1)).id,
    }
    pm.hook.tts_history_favorite_set(generation_id=made["mid"], is_favorited=True)
    failed = make_generation(profile_id="p-b", text="quick failure", created_at=days_ago(5))
    pm.hook.tts_history_generation_started(generation=failed)
    pm.hook.tts_history_generation_failed(generation=failed, error="boom")
    made["failed"] = failed.id
    return ["--library", str(library)], made


def exported_ids(path: Path) -> set[str]:
    return {g["id"] for g in manifest_of(path)["generations"]}


def test_export_cli_by_ids_and_by_every_list_filter(cli_library, tmp_path):
    lib, made = cli_library
    out = tmp_path / "by-ids.zip"
    result = cli(*lib, "export", made["old"], made["new"], "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["generations"] == 2 and summary["archive"] == str(out)
    assert summary["archive_bytes"] == out.stat().st_size and summary["audio_bytes"] > 0
    assert [g["id"] for g in manifest_of(out)["generations"]] == [made["old"], made["new"]]

    since, until = (days_ago(15).isoformat(), days_ago(3).isoformat())
    cases = {
        ("--profile-id", "p-a"): {made["old"], made["new"]},
        ("--search", "QUICK"): {made["old"], made["mid"], made["failed"]},
        ("--since", since): {made["mid"], made["new"], made["failed"]},
        ("--until", until): {made["old"], made["mid"], made["failed"]},
        ("--since", since, "--until", until): {made["mid"], made["failed"]},
        ("--favorites",): {made["mid"]},
        ("--status", "failed"): {made["failed"]},
        ("--status", "completed", "--search", "quick"): {made["old"], made["mid"]},
    }
    for i, (options, expected) in enumerate(cases.items()):
        out = tmp_path / f"filtered-{i}.zip"
        result = cli(*lib, "export", *options, "-o", str(out))
        assert result.returncode == 0, (options, result.stderr)
        assert f"exported {len(expected)} generation(s)" in result.stdout
        assert exported_ids(out) == expected, options

    both = cli(*lib, "export", made["old"], "--favorites", "-o", str(tmp_path / "both.zip"))
    assert both.returncode == 2 and not (tmp_path / "both.zip").exists()


def test_export_audio_active_version_or_the_one_asked_for(world, tmp_path):
    history, ids = world["source"], world["ids"]
    library = history.library.root
    lib = ["--library", str(library)]
    stored = sidecar(history, ids["multi"])
    files = {v["id"]: (library / v["audio_path"]).read_bytes() for v in stored["versions"]}

    out = tmp_path / "active.wav"
    result = cli(*lib, "export-audio", ids["multi"], "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert out.read_bytes() == files["v-reverb"]  # the default, not the newest

    out = tmp_path / "gain.wav"
    result = cli(*lib, "export-audio", ids["multi"], "--version", "v-gain", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == files["v-gain"]
    assert sf.info(str(out)).channels == 2

    folder = tmp_path / "folder"
    folder.mkdir()
    result = cli(*lib, "export-audio", ids["multi"], "--version", stored["versions"][0]["id"], "-o", str(folder))
    assert result.returncode == 0, result.stderr
    first = stored["versions"][0]["id"]
    assert (folder / f"{ids['multi']}.{first}.wav").read_bytes() == files[first]
    result = cli(*lib, "export-audio", ids["multi"], "-o", str(folder))  # the active one, beside it
    assert result.returncode == 0, result.stderr
    assert (folder / f"{ids['multi']}.wav").read_bytes() == files["v-reverb"]
    assert (folder / f"{ids['multi']}.{first}.wav").read_bytes() == files[first]

    result = cli(*lib, "export-audio", ids["multi"], "-o", str(tmp_path / "as.mp3"))
    assert result.returncode == 1 and "is .wav and is copied as it is" in result.stderr
    assert not (tmp_path / "as.mp3").exists()

    for args, word in (((ids["multi"], "--version", "nope"), "nope"), (("unknown-id",), "unknown-id")):
        target = tmp_path / "never.wav"
        result = cli(*lib, "export-audio", *args, "-o", str(target))
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith("Error:") and word in result.stderr
        assert not target.exists()


def test_export_audio_in_python(world, tmp_path):
    history, ids = world["source"], world["ids"]
    out = history.export_audio(ids["plain"], tmp_path)
    assert out == tmp_path / f"{ids['plain']}.wav"
    assert out.read_bytes() == Path(history.get(ids["plain"])["audio_path"]).read_bytes()
    with pytest.raises(NotFoundError, match="has no audio .its status is generating"):
        history.export_audio(ids["generating"], tmp_path / "x.wav")  # no audio at all
    assert not (tmp_path / "x.wav").exists()


def test_export_audio_refuses_audio_that_differs_from_its_sidecar(world, tmp_path):
    history, ids = world["source"], world["ids"]
    audio = Path(history.get(ids["plain"])["audio_path"])
    whole = audio.read_bytes()
    try:
        audio.write_bytes(whole[: len(whole) // 2])  # cut short, as by an interrupted copy
        out = tmp_path / "cut.wav"
        with pytest.raises(LibraryError, match=r"differs from what its sidecar records \(sha256\)"):
            history.export_audio(ids["plain"], out)
        assert not out.exists() and list(tmp_path.iterdir()) == []
        shown = cli("--library", str(history.library.root), "show", ids["plain"])
        assert "(wrong size)" in shown.stdout
    finally:
        audio.write_bytes(whole)


def test_failed_export_leaves_no_file_behind(source, tmp_path):
    history, ids = source
    library = history.library.root
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    missing = library / sidecar(history, ids["multi"])["versions"][2]["audio_path"]
    missing.unlink()

    with pytest.raises(ArchiveError) as caught:
        history.export(out_dir / "x.zip", [ids["plain"], ids["multi"]])
    assert str(missing) in str(caught.value) and "missing" in str(caught.value)
    assert list(out_dir.iterdir()) == []  # no archive, no temp file

    # an archive already there stays as it was
    (out_dir / "x.zip").write_bytes(b"previous export")
    result = cli("--library", str(library), "export", ids["multi"], "-o", str(out_dir / "x.zip"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("Error:") and str(missing) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert [p.name for p in out_dir.iterdir()] == ["x.zip"]
    assert (out_dir / "x.zip").read_bytes() == b"previous export"

    # audio changed behind the library's back: refused too, nothing written
    changed = library / sidecar(history, ids["plain"])["audio_path"]
    changed.write_bytes(wav_bytes(0.03, 880.0))
    with pytest.raises(ArchiveError, match="sha256"):
        history.export(out_dir / "y.zip", [ids["plain"]])
    assert [p.name for p in out_dir.iterdir()] == ["x.zip"]

    with pytest.raises(NotFoundError, match="nope"):
        history.export(out_dir / "z.zip", [ids["failed"], "nope"])
    assert [p.name for p in out_dir.iterdir()] == ["x.zip"]


def test_export_cli_errors_are_one_line(source, tmp_path):
    history, ids = source
    library = history.library.root
    lib = ["--library", str(library)]
    result = cli(*lib, "export", ids["plain"], "-o", str(tmp_path / "no" / "such" / "dir" / "x.zip"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (library / sidecar(history, ids["plain"])["audio_path"]).unlink()
    result = cli(*lib, "export-audio", ids["plain"], "-o", str(tmp_path / "a.wav"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr


# -- import: identity and what is kept -----------------------------------------------------------


def test_import_keeps_everything_but_the_id_and_records_the_origin(world, archive, fresh_target):
    history, ids, target = world["source"], world["ids"], fresh_target
    library = history.library.root
    report = target.import_archives([archive])
    assert report.skipped == []
    new = imported_ids(report)
    assert set(new) == set(ids.values())
    assert not set(new.values()) & set(ids.values())  # every generation has a new id
    origin_library = json.loads((library / "library.json").read_text())["library_id"]

    for old_id, new_id in new.items():
        before, after = sidecar(history, old_id), sidecar(target, new_id)
        assert after["id"] == new_id
        assert (after["origin_library_id"], after["origin_id"]) == (origin_library, old_id)
        assert comparable(after) == comparable(before)
        for old_v, new_v in zip(before["versions"], after["versions"]):
            assert (target.library.root / new_v["audio_path"]).read_bytes() == (library / old_v["audio_path"]).read_bytes()
            assert new_v["audio_path"].startswith("generations/") and new_id in new_v["audio_path"]

    multi = sidecar(target, new[ids["multi"]])
    assert multi["active_version_id"] == "v-reverb" and multi["is_favorited"] is True
    assert [v["is_default"] for v in multi["versions"]] == [False, True, False]
    assert multi["audio_sha256"] == multi["versions"][1]["audio_sha256"]
    assert multi["text"] == TEXT
    assert multi["created_at"] == sidecar(history, ids["multi"])["created_at"]
    failed = sidecar(target, new[ids["failed"]])
    assert (failed["status"], failed["error"], failed["versions"]) == ("failed", "CUDA out of memory ⚠", [])
    assert sidecar(target, new[ids["generating"]])["status"] == "generating"

    # the profile is created in the target with what the host gave
    created = target.plugin.store.read_profile("p-ada")
    assert comparable_profile(created) == comparable_profile(history.plugin.store.read_profile("p-ada"))
    assert target.plugin.store.read_profile("p-bob") is None  # never saved by the host: not invented

    # and the index shows it all
    shown = target.get(new[ids["multi"]])
    assert shown["profile_name"] == "Ada Lovelace" and shown["origin_id"] == ids["multi"]
    assert Path(shown["audio_path"]).read_bytes() == (library / sidecar(history, ids["multi"])["audio_path"]).read_bytes()
    assert target.list(limit=100)["total"] == 1 + len(ids)


def test_import_twice_is_a_no_op_and_as_new_makes_copies(world, archive, fresh_target):
    ids, target = world["ids"], fresh_target
    first = target.import_archives([archive])
    after_first = snapshot(target.library.root)

    again = target.import_archives([archive])
    assert again.imported == []
    assert sorted(s["id"] for s in again.skipped) == sorted(ids.values())
    assert {s["reason"] for s in again.skipped} == {"already imported"}
    assert snapshot(target.library.root) == after_first

    # the same archive twice in one call: imported once
    other = make_history(target.library.root.parent / "other")
    both = other.import_archives([archive, archive])
    assert len(both.imported) == len(ids) and len(both.skipped) == len(ids)

    copies = target.import_archives([archive], as_new=True)
    assert len(copies.imported) == len(ids)
    assert not set(imported_ids(copies).values()) & set(imported_ids(first).values())
    for item in copies.imported:
        assert sidecar(target, item["new_id"])["origin_id"] == item["id"]
    assert target.list(limit=100)["total"] == 1 + 2 * len(ids)


def test_import_of_an_export_of_an_import_is_still_recognised(source, archive, tmp_path):
    history, ids = source  # a copy: the same library id as the archive's
    middle = make_history(tmp_path / "middle")
    middle.import_archives([archive])
    back = tmp_path / "back.zip"
    middle.export(back, status="completed")
    # back home: every generation there came from this library
    report = history.import_archives([back])
    assert report.imported == []
    assert {s["reason"] for s in report.skipped} == {"already imported"}
    # and into a third library, once only, whichever archive comes first
    third = make_history(tmp_path / "third")
    assert len(third.import_archives([back]).imported) == 2
    assert {item["id"] for item in third.import_archives([archive]).imported} == {ids["failed"], ids["generating"]}


def test_profile_is_matched_by_id_then_by_name(archive, tmp_path):
    by_id = make_history(tmp_path / "by-id")
    by_id.hook.tts_history_profile_saved(profile=Profile(id="p-ada", name="Ada (mine)", language="fr"))
    mine = by_id.plugin.store.read_profile("p-ada")
    report = by_id.import_archives([archive])
    assert by_id.plugin.store.read_profile("p-ada") == mine  # matched: not overwritten
    assert {sidecar(by_id, i["new_id"])["profile_id"] for i in report.imported} == {"p-ada", "p-bob"}

    by_name = make_history(tmp_path / "by-name")
    by_name.hook.tts_history_profile_saved(profile=Profile(id="local-ada", name="Ada Lovelace"))
    by_name.hook.tts_history_profile_saved(profile=Profile(id="local-bob", name="Bob"))
    report = by_name.import_archives([archive])
    profiles = {sidecar(by_name, i["new_id"])["text"]: sidecar(by_name, i["new_id"])["profile_id"] for i in report.imported}
    assert profiles == {TEXT: "local-ada", "too long to say": "local-ada", "still speaking…": "local-ada",
                        "Bonjour": "local-bob"}
    assert by_name.plugin.store.read_profile("p-ada") is None  # no duplicate profile


def test_import_cli_twice_and_as_new(archive, tmp_path):
    lib = ["--library", str(tmp_path / "cli-lib")]
    assert cli("init", lib[1]).returncode == 0
    first = cli(*lib, "import", str(archive), "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert len(report["imported"]) == 4 and report["skipped"] == []
    again = cli(*lib, "import", str(archive))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "imported 0, skipped 4"
    assert again.stderr.count("already imported") == 4
    copies = cli(*lib, "import", "--as-new", str(archive), "--json")
    assert len(json.loads(copies.stdout)["imported"]) == 4
    listed = json.loads(cli(*lib, "list", "--json").stdout)
    assert listed["total"] == 8


# -- round trip --------------------------------------------------------------------------------


def assert_round_trip(source_history: History, target_history: History, report) -> None:
    new = imported_ids(report)
    for old_id, new_id in new.items():
        before, after = sidecar(source_history, old_id), sidecar(target_history, new_id)
        assert comparable(after) == comparable(before)
        for old_v, new_v in zip(before["versions"], after["versions"]):
            old_bytes = source_history.library.absolute(old_v["audio_path"]).read_bytes()
            assert target_history.library.absolute(new_v["audio_path"]).read_bytes() == old_bytes
        profile = source_history.plugin.store.read_profile(before["profile_id"])
        if profile is not None:
            assert comparable_profile(target_history.plugin.store.read_profile(before["profile_id"])) == (
                comparable_profile(profile)
            )


def test_round_trip_into_an_empty_library(world, archive, tmp_path):
    history, ids = world["source"], world["ids"]
    empty = make_history(tmp_path / "empty")
    report = empty.import_archives([archive])
    assert len(report.imported) == len(ids)
    assert_round_trip(history, empty, report)


# random generations, built through the hooks

_SPECIAL_TEXT = st.sampled_from([
    "こんにちは世界、今日は良い天気ですね。",
    "❤️ ☺️ ✌🏽 👍🏿",  # variation selectors, skin tones
    "👩‍💻 👨‍👩‍👧‍👦 🏳️‍🌈",  # ZWJ sequences
    "e\u0301 a\u0308 n\u0303 Z\u0335\u0321a\u0336lgo",  # combining marks
    "",
    " ",
    "line\nbreak\ttab",
    "\"quotes\" and \\backslashes\\",
])
_TEXT = st.one_of(_SPECIAL_TEXT, st.text(max_size=40), st.lists(_SPECIAL_TEXT | st.text(max_size=5), max_size=4).map("".join))
_JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10),
)
_JSON = st.recursive(_JSON_LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
_EFFECT = st.builds(
    Effect,
    type=st.sampled_from(["reverb", "gain", "eq", "pitch_shift"]) | st.text(min_size=1, max_size=10),
    enabled=st.booleans(),
    params=st.dictionaries(st.text(max_size=8), _JSON, max_size=3),
)
_TIME = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(timezone.utc)
)


@st.composite
def generation_plans(draw):
    profile = draw(st.none() | st.builds(
        Profile,
        id=st.just("p-random"),
        name=_TEXT,
        description=st.none() | _TEXT,
        language=st.none() | st.sampled_from(["en", "ja", "fr"]),
        extra=st.dictionaries(st.text(max_size=6), _JSON, max_size=3),
    ))
    status = draw(st.sampled_from(["completed", "completed", "failed", "generating"]))
    generation = make_generation(
        profile_id="p-random",
        text=draw(_TEXT),
        language=draw(st.sampled_from(["en", "ja", "fr", "zh-Hans"])),
        seed=draw(st.none() | st.integers(-(2**63), 2**63 - 1)),
        instruct=draw(st.none() | _TEXT),
        model_size=draw(st.none() | st.sampled_from(["0.6B", "1.7B"])),
        profile_name=draw(st.none() | _TEXT),
        created_at=draw(_TIME),
        duration=draw(st.none() | st.floats(0, 100)),
        extra=draw(st.dictionaries(_TEXT, _TEXT, max_size=3)),
    )
    versions = []
    if status == "completed":
        for i in range(draw(st.integers(0, 3))):
            versions.append(Version(
                id=f"v{i}",
                label=draw(_TEXT),
                effects_chain=draw(st.lists(_EFFECT, max_size=3)),
                created_at=draw(st.none() | _TIME),
            ))
    return {
        "profile": profile,
        "status": status,
        "generation": generation,
        "error": draw(_TEXT),
        "versions": versions,
        "audio": [
            (draw(st.integers(8, 160)), draw(st.sampled_from([8000, 16000, 24000])),
             draw(st.sampled_from([1, 2])), draw(st.sampled_from(["PCM_16", "PCM_24", "FLOAT"])))
            for _ in range(len(versions) + 1)
        ],
        "default": draw(st.integers(0, len(versions))),
        "favorite": draw(st.booleans()),
    }


def _tiny(frames: int, rate: int, channels: int, subtype: str, seed: int) -> Audio:
    samples = np.random.default_rng(seed).uniform(-0.5, 0.5, (frames, channels)).astype(np.float32)
    return Audio.from_samples(samples[:, 0] if channels == 1 else samples, rate, subtype)


def _record_plan(pm, plan) -> str:
    if plan["profile"] is not None:
        pm.hook.tts_history_profile_saved(profile=plan["profile"])
    generation = plan["generation"]
    if plan["status"] != "completed":
        pm.hook.tts_history_generation_started(generation=generation)
        if plan["status"] == "failed":
            pm.hook.tts_history_generation_failed(generation=generation, error=plan["error"])
        return generation.id
    pm.hook.tts_history_generation_completed(generation=generation, audio=_tiny(*plan["audio"][0], seed=0))
    for i, version in enumerate(plan["versions"], 1):
        pm.hook.tts_history_version_added(
            generation_id=generation.id, version=version, audio=_tiny(*plan["audio"][i], seed=i)
        )
    plugin = pm.get_plugin("tts_history.history")
    ids = [v["id"] for v in plugin.store.read(generation.id)["versions"]]
    pm.hook.tts_history_default_version_changed(generation_id=generation.id, version_id=ids[plan["default"]])
    if plan["favorite"]:
        pm.hook.tts_history_favorite_set(generation_id=generation.id, is_favorited=True)
    return generation.id


def test_round_trip_property(tmp_path_factory):
    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(plans=st.lists(generation_plans(), min_size=1, max_size=3))
    def round_trip(plans):
        root = tmp_path_factory.mktemp("rt")
        source_history = make_history(root / "source")
        target_history = make_history(root / "target")
        # each index keeps its connection open for the example (opening one is what costs)
        with source_history.index.db.pinned(), target_history.index.db.pinned():
            check_round_trip(root, plans, source_history, target_history)

    def check_round_trip(root, plans, source_history, target_history):
        ids = [_record_plan(source_history.pm, plan) for plan in plans]
        source_history.export(root / "a.zip", ids)
        report = target_history.import_archives([root / "a.zip"])
        assert sorted(imported_ids(report)) == sorted(ids)
        assert_round_trip(source_history, target_history, report)
        for old_id, new_id in imported_ids(report).items():
            assert target_history.get(new_id)["text"] == source_history.get(old_id)["text"]
        # importing again: nothing changes
        before = snapshot(target_history.library.root)
        assert target_history.import_archives([root / "a.zip"]).imported == []
        assert snapshot(target_history.library.root) == before

    round_trip()


# -- import: validation before anything is written -----------------------------------------------


def _flag(name: str, bits: int):
    def after(zf: zipfile.ZipFile) -> None:
        zf.getinfo(name).flag_bits |= bits

    return after


def _audio_entry(manifest: dict, g: int = 0, v: int = 0) -> str:
    return manifest["generations"][g]["versions"][v]["audio_path"]


def _multi_index(manifest: dict) -> int:
    return next(i for i, g in enumerate(manifest["generations"]) if len(g["versions"]) == 3)


def _mutate(change):
    """A case that edits the manifest (a deep copy) with ``change(manifest, multi)``."""

    def build(src: Path, dst: Path) -> Path:
        manifest = manifest_of(src)
        change(manifest, manifest["generations"][_multi_index(manifest)])
        return with_manifest(src, dst, manifest)

    return build


def _entries(change):
    """A case that rewrites the entries: ``change(entries, manifest)`` returns the new list."""

    def build(src: Path, dst: Path) -> Path:
        return write_entries(dst, change(read_entries(src), manifest_of(src)))

    return build


def _rename_audio(new_name: str):
    def change(entries, manifest):
        old = _audio_entry(manifest, _multi_index(manifest))
        manifest["generations"][_multi_index(manifest)]["versions"][0]["audio_path"] = new_name
        if manifest["generations"][_multi_index(manifest)]["audio_path"] == old:
            manifest["generations"][_multi_index(manifest)]["audio_path"] = new_name
        out = []
        for info, data in entries:
            if info.filename == old:
                info = zipfile.ZipInfo(new_name, info.date_time)
            if info.filename == MANIFEST:
                data = json.dumps(manifest).encode()
            out.append((info, data))
        return out

    return _entries(change)


def _replace_audio(make_data, *, fix_manifest: bool):
    """Swap the first audio entry's bytes; with ``fix_manifest`` its size and sha256 too, so
    that only decoding (or the duration) can tell."""

    def change(entries, manifest):
        multi = manifest["generations"][_multi_index(manifest)]
        name = multi["versions"][0]["audio_path"]
        old = next(data for info, data in entries if info.filename == name)
        new = make_data(old)
        if fix_manifest:
            multi["versions"][0]["audio_bytes"] = len(new)
            multi["versions"][0]["audio_sha256"] = hashlib.sha256(new).hexdigest()
        return [
            (info, new if info.filename == name else json.dumps(manifest).encode() if info.filename == MANIFEST else data)
            for info, data in entries
        ]

    return _entries(change)


def _truncate(fraction: float):
    def build(src: Path, dst: Path) -> Path:
        data = src.read_bytes()
        dst.write_bytes(data[: int(len(data) * fraction)])
        return dst

    return build


def _raw(data: bytes):
    def build(src: Path, dst: Path) -> Path:
        dst.write_bytes(data)
        return dst

    return build


def _bomb(src: Path, dst: Path) -> Path:
    entries = read_entries(src)
    info = zipfile.ZipInfo("audio/padding.bin")
    info.compress_type = zipfile.ZIP_DEFLATED
    return write_entries(dst, entries + [(info, bytes(8 * 2**20))])


def _set(path: str, value):
    """Set (or, with ``...``, delete) a field of the multi-version generation: 'text',
    'versions.1.is_default', 'profile.name'."""

    def change(manifest, multi):
        *parents, last = path.split(".")
        node = multi
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        key = int(last) if last.isdigit() else last
        if value is ...:
            del node[key]
        else:
            node[key] = value

    return _mutate(change)


def _raw_manifest(edit):
    def build(src: Path, dst: Path) -> Path:
        with zipfile.ZipFile(src) as zf:
            text = zf.read(MANIFEST).decode()
        return with_manifest(src, dst, edit(text))

    return build


SYMLINK = (stat.S_IFLNK | 0o777) << 16

INVALID = [
    # entry names
    pytest.param(_rename_audio("../escape.wav"), None, r"'\.\./escape\.wav' has an unsafe path", id="dotdot"),
    pytest.param(_rename_audio("audio/../../escape.wav"), None, "unsafe path", id="dotdot-inside"),
    pytest.param(_rename_audio("/etc/escape.wav"), None, r"'/etc/escape\.wav' has an unsafe path", id="absolute"),
    pytest.param(_rename_audio("C:/escape.wav"), None, "'C:/escape.wav' has an unsafe path", id="drive-letter"),
    pytest.param(_rename_audio("c:escape.wav"), None, "unsafe path", id="drive-relative"),
    pytest.param(_rename_audio("audio\\..\\escape.wav"), None, "unsafe path", id="backslashes"),
    pytest.param(_rename_audio("audio//x.wav"), None, "unsafe path", id="empty-part"),
    pytest.param(_rename_audio("audio/./x.wav"), None, "unsafe path", id="dot-part"),
    pytest.param(_rename_audio("audio/x\x01.wav"), None, "unsafe path", id="control-char"),
    pytest.param(_rename_audio(""), None, "unsafe path", id="empty-entry-name"),
    # entry kinds
    pytest.param(_entries(lambda e, m: e + [(_symlink_info("audio/link.wav"), b"/etc/passwd")]), None,
                 "'audio/link.wav' is a symlink", id="symlink"),
    pytest.param(_entries(lambda e, m: e + [(e[0][0], e[0][1])]), None, "appears twice", id="duplicate-entry"),
    pytest.param(_entries(lambda e, m: e + [(zipfile.ZipInfo(MANIFEST), b"{}")]), None,
                 "'manifest.json' appears twice", id="duplicate-manifest"),
    pytest.param(
        lambda src, dst: write_entries(dst, read_entries(src), after=_flag(_audio_entry(manifest_of(src)), 0x1)),
        None, "is encrypted", id="encrypted-audio"),
    pytest.param(lambda src, dst: write_entries(dst, read_entries(src), after=_flag(MANIFEST, 0x1)),
                 None, "'manifest.json' is encrypted", id="encrypted-manifest"),
    # caps
    pytest.param(_bomb, Limits(max_ratio=50), r"'audio/padding\.bin' expands \d+ times, over the cap of 50", id="zip-bomb-ratio"),
    pytest.param(_bomb, Limits(max_total_bytes=4 * 2**20), "more than 4194304 bytes uncompressed", id="zip-bomb-size"),
    pytest.param(lambda s, d: s, Limits(max_total_bytes=1000), "more than 1000 bytes uncompressed", id="total-cap"),
    pytest.param(lambda s, d: s, Limits(max_manifest_bytes=200), r"manifest\.json is \d+ bytes, over the cap of 200", id="manifest-cap"),
    pytest.param(lambda s, d: s, Limits(max_entries=3), "entries, over the cap of 3", id="entries-cap"),
    # not a (whole) ZIP
    pytest.param(_truncate(0.5), None, "not a ZIP archive, or truncated", id="truncated-half"),
    pytest.param(_truncate(0.999), None, "not a ZIP archive, or truncated", id="truncated-end"),
    pytest.param(_raw(b""), None, "not a ZIP archive", id="empty-file"),
    pytest.param(_raw(b"RIFF....WAVEfmt not a zip at all"), None, "not a ZIP archive", id="not-a-zip"),
    pytest.param(_entries(lambda e, m: [(i, d) for i, d in e if i.filename != MANIFEST]), None,
                 "has no manifest.json", id="no-manifest"),
    pytest.param(_entries(lambda e, m: [(i, d) for i, d in e if i.filename != _audio_entry(m, _multi_index(m), 1)]),
                 None, "audio entry 'audio/.*/v-reverb.wav' is not in the archive", id="audio-missing"),
    # audio that is not what the manifest says
    pytest.param(_replace_audio(lambda old: bytes(range(256)) * 8, fix_manifest=True), None,
                 "does not decode as audio", id="random-bytes-as-wav"),
    pytest.param(_replace_audio(lambda old: b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(200), fix_manifest=True), None,
                 "does not decode as audio", id="wav-header-garbage"),
    pytest.param(_replace_audio(lambda old: old[:44], fix_manifest=True), None,
                 "holds no samples|does not decode", id="wav-header-only"),
    pytest.param(_replace_audio(lambda old: wav_bytes(0.5), fix_manifest=True), None,
                 r"lasts 0\.500 s, the manifest says 0\.050 s", id="duration-differs"),
    # the header claims more samples than the file holds: what is there counts
    pytest.param(_replace_audio(lambda old: old[:-100], fix_manifest=True), None,
                 r"lasts 0\.044 s, the manifest says 0\.050 s", id="wav-data-cut"),
    # compressed audio is decoded in full: its header alone looks fine
    pytest.param(_replace_audio(lambda old: flac_bytes()[:-10], fix_manifest=True), None,
                 "does not decode as audio", id="flac-frames-cut"),
    pytest.param(_replace_audio(lambda old: old[:-2] + bytes([old[-2] ^ 1, old[-1]]), fix_manifest=False), None,
                 "has audio_sha256 '[0-9a-f]{64}', the manifest says", id="checksum-differs"),
    pytest.param(_replace_audio(lambda old: old + b"\x00\x00", fix_manifest=False), None,
                 "has audio_bytes", id="size-differs"),
    pytest.param(_replace_audio(lambda old: wav_bytes(0.05, rate=16000), fix_manifest=True), None,
                 "has sample_rate 16000", id="rate-differs"),
    # malformed metadata
    pytest.param(_raw_manifest(lambda t: t[:-10]), None, r"manifest\.json is not valid JSON", id="json-truncated"),
    pytest.param(lambda s, d: with_manifest(s, d, b"\xff\xfe{}"), None, "not valid JSON", id="json-not-utf8"),
    pytest.param(_raw_manifest(lambda t: t.replace('"seed": 1234', '"seed": NaN')), None, "NaN is not valid JSON", id="nan"),
    pytest.param(_raw_manifest(lambda t: t.replace('"seed": 1234', '"seed": -Infinity')), None, "Infinity is not valid JSON", id="infinity"),
    pytest.param(_raw_manifest(lambda t: "[" * 100_000 + "]" * 100_000), None, "not valid JSON", id="json-deep"),
    pytest.param(lambda s, d: with_manifest(s, d, []), None, "manifest: expected an object, got list", id="manifest-list"),
    pytest.param(_mutate(lambda m, g: m.update(format="voicebox")), None, "manifest.format is 'voicebox'", id="format"),
    pytest.param(_mutate(lambda m, g: m.update(version=2)), None, r"manifest\.version 2 is not one this tts-history reads", id="future-version"),
    pytest.param(_mutate(lambda m, g: m.update(version="1")), None, "manifest.version '1'", id="version-string"),
    pytest.param(_mutate(lambda m, g: m.pop("library_id")), None, "required field 'library_id' is missing", id="no-library-id"),
    pytest.param(_mutate(lambda m, g: m.update(generations={})), None, "generations: expected a list", id="generations-object"),
    pytest.param(_mutate(lambda m, g: m["generations"].append(dict(g))), None, "a generation id appears twice", id="duplicate-generation"),
    pytest.param(_set("text", ...), None, r"generations\[\d\]: required field 'text' is missing", id="missing-text"),
    pytest.param(_set("text", 5), None, r"generations\[\d\]\.text: expected a string, got 5", id="text-int"),
    pytest.param(_set("seed", "1234"), None, r"\.seed: expected a whole number, got '1234'", id="seed-string"),
    pytest.param(_set("seed", 12.5), None, r"\.seed: expected a whole number, got 12\.5", id="seed-float"),
    pytest.param(_set("seed", True), None, r"\.seed: expected a whole number, got True", id="seed-bool"),
    pytest.param(_set("is_favorited", "yes"), None, r"\.is_favorited: expected true or false", id="favorite-string"),
    pytest.param(_set("is_favorited", 1), None, r"\.is_favorited: expected true or false", id="favorite-int"),
    pytest.param(_set("status", "done"), None, r"\.status: 'done' is not one of generating, completed, failed", id="unknown-status"),
    pytest.param(_set("created_at", "yesterday"), None, r"\.created_at: 'yesterday' is not an ISO 8601 time", id="bad-time"),
    pytest.param(_set("created_at", 1700000000), None, r"\.created_at: expected an ISO 8601 time", id="time-number"),
    pytest.param(_set("extra", {"k": 1}), None, r"\.extra\.k: expected a string, got 1", id="extra-not-strings"),
    pytest.param(_set("extra", ["k"]), None, r"\.extra: expected an object, got list", id="extra-list"),
    pytest.param(_set("versions", "v1"), None, r"\.versions: expected a list", id="versions-string"),
    pytest.param(_set("versions", []), None, "a completed generation needs its audio", id="completed-without-audio"),
    pytest.param(_set("versions.0.is_default", True), None, "exactly one version must be the default", id="two-defaults"),
    pytest.param(_set("versions.1.is_default", False), None, "exactly one version must be the default", id="no-default"),
    pytest.param(_set("active_version_id", "v-gain"), None, "exactly one version must be the default", id="default-not-active"),
    pytest.param(_set("versions.2.id", "v-reverb"), None, "a version id appears twice", id="duplicate-version"),
    pytest.param(_set("versions.1.audio_sha256", "abc"), None, r"audio_sha256: 'abc' is not a sha256", id="sha-malformed"),
    pytest.param(_set("versions.1.audio_sha256", ...), None, "required field 'audio_sha256' is missing", id="sha-missing"),
    pytest.param(_set("versions.1.audio_bytes", "4044"), None, r"audio_bytes: expected a whole number", id="size-string"),
    pytest.param(_set("versions.1.duration", "0.04"), None, r"duration: expected a number", id="duration-string"),
    pytest.param(_set("versions.1.effects_chain", {"type": "x"}), None, r"effects_chain: expected a list", id="chain-object"),
    pytest.param(_set("versions.1.effects_chain", [{"enabled": True}]), None,
                 r"effects_chain\[0\]: required field 'type' is missing", id="effect-without-type"),
    pytest.param(_set("versions.1.effects_chain", [{"type": "gain", "enabled": "yes"}]), None,
                 r"effects_chain\[0\]\.enabled: expected true or false", id="effect-enabled-string"),
    pytest.param(_set("versions.1.effects_chain", [{"type": "gain", "params": [1]}]), None,
                 r"effects_chain\[0\]\.params: expected an object", id="effect-params-list"),
    pytest.param(_set("versions.1", "v-reverb"), None, r"versions\[1\]: expected an object, got str", id="version-string"),
    pytest.param(_set("profile", "Ada"), None, r"\.profile: expected an object, got str", id="profile-string"),
    pytest.param(_set("profile.name", ...), None, r"\.profile: required field 'name' is missing", id="profile-without-name"),
    pytest.param(_set("profile.extra", [1]), None, r"\.profile\.extra: expected an object", id="profile-extra-list"),
]


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = SYMLINK
    return info


@pytest.mark.parametrize("build, limits, message", INVALID)
def test_invalid_archives_are_refused_and_nothing_is_written(build, limits, message, world, tmp_path):
    archive, target = world["archive"], world["target"]
    bad = build(archive, tmp_path / "bad.zip")
    # the target library, and anything around it an escaping path could reach
    before = snapshot(world["sandbox"]), snapshot(tmp_path)
    with pytest.raises(ArchiveError, match=message) as caught:
        target.import_archives([bad], limits=limits)
    assert str(caught.value).startswith(bad.name)  # names the archive
    assert "\n" not in str(caught.value)
    assert (snapshot(world["sandbox"]), snapshot(tmp_path)) == before
    assert target.list(limit=100)["total"] == 1


def test_a_bad_second_archive_means_the_first_is_not_imported_either(archive, fresh_target, tmp_path):
    target = fresh_target
    good_too = make_history(tmp_path / "elsewhere")
    record(good_too.pm, 0.02, text="also good")
    good_too.export(tmp_path / "good2.zip", status="completed")
    bad = _set("status", "done")(archive, tmp_path / "bad.zip")
    before = snapshot(tmp_path)
    for order in ([archive, bad], [archive, tmp_path / "good2.zip", bad], [archive, tmp_path / "missing.zip"]):
        with pytest.raises(ArchiveError):
            target.import_archives(order)
        assert snapshot(tmp_path) == before
    assert target.list(limit=100)["total"] == 1
    # and the good ones import fine afterwards
    assert len(target.import_archives([archive, tmp_path / "good2.zip"]).imported) == 5


def test_a_bad_entry_among_many_leaves_nothing_behind(tmp_path):
    """Entries are read several at a time: one in the middle that differs from the manifest
    stops the import, and every temp file the others wrote is removed again."""
    source = make_history(tmp_path / "many")
    for i in range(40):
        record(source.pm, 0.02, text=f"take {i}")
    source.export(tmp_path / "many.zip", status="completed")
    entries = read_entries(tmp_path / "many.zip")
    manifest = json.loads(next(data for info, data in entries if info.filename == MANIFEST))
    bad = manifest["generations"][20]["versions"][0]["audio_path"]
    flipped = [(info, data[:-1] + bytes([data[-1] ^ 1]) if info.filename == bad else data) for info, data in entries]
    write_entries(tmp_path / "bad.zip", flipped)
    target = make_history(tmp_path / "target")
    before = snapshot(target.library.root)
    with pytest.raises(ArchiveError, match=re.escape(bad) + ".* has audio_sha256"):
        target.import_archives([tmp_path / "bad.zip"])
    assert snapshot(target.library.root) == before
    steps = []
    report = target.import_archives([tmp_path / "many.zip"], progress=lambda done, total: steps.append((done, total)))
    assert len(report.imported) == 40
    # told in order, a few generations at a time (those read together), up to the last
    done = [d for d, _ in steps]
    assert {total for _, total in steps} == {40} and done == sorted(set(done)) and done[-1] == 40
    assert all(0 < after - before <= importer._CHUNK for before, after in zip([0, *done], done))


def test_compressed_audio_keeps_its_format_and_bytes(tmp_path):
    source = make_history(tmp_path / "flac-source")
    take = tmp_path / "take.flac"
    take.write_bytes(flac_bytes(0.3))
    generation = make_generation(text="a FLAC take")
    source.hook.tts_history_generation_completed(generation=generation, audio=Audio.from_file(take))
    source.export(tmp_path / "flac.zip", [generation.id])
    target = make_history(tmp_path / "flac-target")
    [item] = target.import_archives([tmp_path / "flac.zip"]).imported
    stored = Path(target.get(item["new_id"])["audio_path"])
    assert stored.suffix == ".flac" and stored.read_bytes() == take.read_bytes()
    assert target.get(item["new_id"])["duration"] == pytest.approx(0.3)


def test_a_write_that_fails_midway_takes_back_every_generation_of_the_call(archive, tmp_path):
    """The second archive's day folder is blocked by a file, so writing its audio fails: what
    the first archive wrote is removed again."""
    target = make_history(tmp_path / "target")
    target.hook.tts_history_profile_saved(profile=Profile(id="p-ada", name="Ada Lovelace"))
    other = make_history(tmp_path / "other")
    when = datetime(2001, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    other.hook.tts_history_profile_saved(profile=Profile(id="p-ada", name="Ada Lovelace"))
    record(other.pm, 0.02, profile_id="p-ada", text="blocked", created_at=when)
    other.export(tmp_path / "second.zip", status="completed")
    blocker = target.library.day_dir(when)
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"not a folder")
    before = snapshot(target.library.root)
    with pytest.raises(OSError):
        target.import_archives([archive, tmp_path / "second.zip"])
    assert snapshot(target.library.root) == before
    assert target.list(limit=100)["total"] == 0


def test_a_failure_while_moving_into_place_takes_back_what_was_moved(archive, tmp_path, monkeypatch):
    """Everything checked and written under temp names, the move into place fails at the third
    generation: the two moved, their audio, every temp file and the profile are removed."""
    import tts_history.plugin.history as plugin_history

    target = make_history(tmp_path / "target")
    before = snapshot(target.library.root)
    moves = []

    def third_fails(*args, **kwargs):
        moves.append(args)
        if len(moves) == 3:
            raise OSError("the disk went away")
        return commit_temp(*args, **kwargs)

    commit_temp = plugin_history.commit_temp
    monkeypatch.setattr(plugin_history, "commit_temp", third_fails)
    with pytest.raises(OSError, match="the disk went away"):
        target.import_archives([archive])
    assert len(moves) == 3
    assert snapshot(target.library.root) == before
    assert target.list(limit=100)["total"] == 0


# how an import makes its files durable: by syncfs of the library's file system where Linux
# has it, else (and always, elsewhere) by an fsync per file
SYNCS = ["syncfs", "fsync per file"]


def _sync_by(how, monkeypatch):
    import tts_history.library.atomic as atomic

    if how == "syncfs" and atomic._SYNCFS is None:
        pytest.skip("no syncfs here (Linux 5.8 and later)")
    if how == "fsync per file":
        monkeypatch.setattr(atomic, "_SYNCFS", None)
    return atomic


@pytest.mark.parametrize("how", SYNCS)
def test_every_file_is_durable_before_it_is_moved_into_place(archive, tmp_path, monkeypatch, how):
    """The syncs of an import run on threads of their own while it reads on: still, every
    audio file and sidecar is made durable under its temp name before the move that shows it."""
    import tts_history.plugin.history as plugin_history

    atomic = _sync_by(how, monkeypatch)
    synced: set[Path] = set()
    fsync_file, syncfs, commit_temp = atomic.fsync_file, atomic._SYNCFS, plugin_history.commit_temp
    root = tmp_path / "target"

    def recorded_fsync(path):
        fsync_file(path)
        synced.add(Path(path))

    def recorded_syncfs(fd):
        # every file closed before the call is durable once it returns
        written = {Path(folder) / name for folder, _, names in os.walk(root) for name in names}
        result = syncfs(fd)
        synced.update(written)
        return result

    moved, unsynced = [], []

    def checked_commit(tmp, path, **kwargs):
        moved.append(tmp)
        if Path(tmp) not in synced:
            unsynced.append(tmp)
        return commit_temp(tmp, path, **kwargs)

    monkeypatch.setattr(atomic, "fsync_file", recorded_fsync)
    if syncfs is not None:
        monkeypatch.setattr(atomic, "_SYNCFS", recorded_syncfs)
    monkeypatch.setattr(plugin_history, "commit_temp", checked_commit)
    report = make_history(root).import_archives([archive])
    assert report.imported
    assert len(moved) > len(report.imported)  # the audio and the sidecars
    assert unsynced == []


@pytest.mark.parametrize("how", SYNCS)
def test_a_failed_sync_takes_back_every_generation_of_the_call(archive, tmp_path, monkeypatch, how):
    """The disk reports a write-back error (on the fifth file's fsync, or on the syncfs of the
    library's file system): the import raises it, and leaves nothing behind."""
    atomic = _sync_by(how, monkeypatch)
    fsync_file, syncfs = atomic.fsync_file, atomic._SYNCFS
    calls = []

    def failing_fsync(path):
        calls.append(path)
        if len(calls) == 5:
            raise OSError(errno.EIO, "Input/output error", str(path))
        fsync_file(path)

    def failing_syncfs(fd):
        calls.append(fd)
        syncfs(fd)
        ctypes.set_errno(errno.EIO)
        return -1

    if syncfs is None:
        monkeypatch.setattr(atomic, "fsync_file", failing_fsync)
    else:
        monkeypatch.setattr(atomic, "_SYNCFS", failing_syncfs)
    target = make_history(tmp_path / "target")
    before = snapshot(target.library.root)
    words = "Input/output error"
    if syncfs is not None:  # the error names the library whose files it could not make durable
        words = re.escape(f"below {target.library.root} durable: {words}")
    with pytest.raises(OSError, match=words):
        target.import_archives([archive])
    assert len(calls) >= (5 if syncfs is None else 1)
    assert snapshot(target.library.root) == before
    monkeypatch.undo()
    assert target.list(limit=100)["total"] == 0
    assert target.import_archives([archive]).imported


def test_import_cli_refusals_are_one_line_errors(archive, tmp_path):
    lib = ["--library", str(tmp_path / "cli-lib")]
    assert cli("init", lib[1]).returncode == 0
    before = snapshot(tmp_path / "cli-lib")
    cases = [
        (_rename_audio("../escape.wav")(archive, tmp_path / "escape.zip"), [], "unsafe path"),
        (_bomb(archive, tmp_path / "bomb.zip"), ["--max-ratio", "50"], "zip bomb"),
        (_bomb(archive, tmp_path / "big.zip"), ["--max-bytes", "1000000"], "more than 1000000 bytes"),
        (_truncate(0.5)(archive, tmp_path / "cut.zip"), [], "truncated"),
        (tmp_path / "nothing-here.zip", [], "no such file"),
    ]
    for path, options, words in cases:
        result = cli(*lib, "import", *options, str(path))
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:") and words in lines[0], lines
        assert path.name in lines[0]
    assert snapshot(tmp_path / "cli-lib") == before


# -- known bugs, each pinned with a minimal archive ----------------------------------------------


def _import_refuses(target: History, bad: Path, sandbox: Path) -> None:
    before = snapshot(sandbox)
    with pytest.raises(ArchiveError):
        target.import_archives([bad])
    assert snapshot(sandbox) == before


def test_profile_id_cannot_escape_the_library(archive, tmp_path):
    sandbox = tmp_path / "sandbox"
    target = make_history(sandbox / "deep" / "target")
    bad = _set("profile.id", "../../../escaped")(archive, tmp_path / "bad.zip")
    _import_refuses(target, bad, sandbox)


@pytest.mark.parametrize("field, value", [("versions.0.id", "a.b"), ("profile_id", "no spaces")])
def test_invalid_ids_are_refused_before_writing(field, value, archive, tmp_path):
    bad = _set(field, value)(archive, tmp_path / "bad.zip")
    _import_refuses(make_history(tmp_path / "t"), bad, tmp_path / "t")


@pytest.mark.parametrize("raw_edit", [
    pytest.param(lambda t: t.replace('"seed": 1234', '"seed": 18446744073709551616'), id="seed-over-int64"),
    pytest.param(lambda t: t.replace('"speak calmly"', '"\\ud800"'), id="lone-surrogate"),
    pytest.param(lambda t: re.sub(r'"created_at": "[^"]*"', '"created_at": "0001-01-01T00:00:00+01:00"', t, count=1),
                 id="time-before-year-1-in-utc"),
])
def test_values_the_library_cannot_store_are_refused(raw_edit, archive, tmp_path):
    bad = _raw_manifest(raw_edit)(archive, tmp_path / "bad.zip")
    _import_refuses(make_history(tmp_path / "t"), bad, tmp_path / "t")


@pytest.mark.parametrize("raw_edit", [
    pytest.param(lambda t: t.replace('"room_size": 0.75', '"room_size": 1e999'), id="effect-param"),
    pytest.param(lambda t: t.replace('"rate": 1.25', '"rate": -1e999'), id="profile-extra"),
])
def test_non_finite_numbers_are_refused(raw_edit, archive, tmp_path):
    with zipfile.ZipFile(archive) as zf:
        assert raw_edit(zf.read(MANIFEST).decode()) != zf.read(MANIFEST).decode()
    bad = _raw_manifest(raw_edit)(archive, tmp_path / "bad.zip")
    target = make_history(tmp_path / "t")
    try:
        report = target.import_archives([bad])
    except ArchiveError:
        return  # refused: the fix
    # imported: then it must at least survive its own round trip
    target.export(tmp_path / "again.zip", [i["new_id"] for i in report.imported])
    make_history(tmp_path / "u").import_archives([tmp_path / "again.zip"])

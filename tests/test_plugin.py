"""The history plugin through the hook contract, as a host and other plugins use it: real
files in a real library folder, real audio, the sidecars read back as they are on disk."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import io
import json
import logging
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import RATE, days_ago, make_generation, record, tone

from tts_history import Audio, Effect, Generation, History, Profile, Version, hookimpl
from tts_history.hooks import InvalidValueError, load_entrypoint_plugins
from tts_history.hooks.manager import get_plugin_manager
from tts_history.index import NotFoundError
from tts_history.library import LibraryError, schema
from tts_history.plugin.audio import InvalidAudioError

# -- helpers ---------------------------------------------------------------------------------


def sidecar_path(library: Path, generation_id: str) -> Path | None:
    hits = list((library / "generations").glob(f"*/*/*/{generation_id}.parquet"))
    assert len(hits) <= 1
    return hits[0] if hits else None


def read(library: Path, generation_id: str) -> dict:
    path = sidecar_path(library, generation_id)
    assert path is not None, f"no sidecar for {generation_id}"
    return schema.read_generation(path)


def audio_files(library: Path) -> set[Path]:
    """Every file in the generation folders that is not a sidecar (temp files included)."""
    return {p for p in (library / "generations").rglob("*") if p.is_file() and p.suffix != ".parquet"}


def all_files(library: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in library.rglob("*") if p.is_file()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def samples(seconds: float = 0.25, freq: float = 440.0) -> Audio:
    return Audio.from_samples(tone(seconds, freq=freq), RATE)


class Keep:
    """Protects the generations whose ids it holds (as a stories plugin would)."""

    def __init__(self, *ids: str) -> None:
        self.ids = set(ids)
        self.asked: list[dict] = []

    @hookimpl
    def tts_history_protect_generation(self, generation):
        self.asked.append(dict(generation))
        return generation["id"] in self.ids


class RaiseFor:
    """A protect plugin with a bug: it raises for the ids it holds."""

    def __init__(self, *ids: str) -> None:
        self.ids = set(ids)

    @hookimpl
    def tts_history_protect_generation(self, generation):
        if generation["id"] in self.ids:
            raise RuntimeError("story database unavailable")
        return None


# -- lifecycle -------------------------------------------------------------------------------


def test_started_completed_failed_lifecycle(pm, library):
    generation = make_generation(id="g1", text="Bonjour", language="fr", seed=7, instruct="calm",
                                 engine="qwen", model_size="1.7B", created_at=days_ago(1))
    pm.hook.tts_history_generation_started(generation=generation)
    started = read(library, "g1")
    assert started["status"] == "generating"
    assert (started["audio_path"], started["duration"], started["error"]) == (None, None, None)
    assert started["versions"] == [] and started["active_version_id"] is None
    assert (started["text"], started["language"], started["seed"], started["instruct"]) == ("Bonjour", "fr", 7, "calm")
    assert (started["engine"], started["model_size"]) == ("qwen", "1.7B")
    assert audio_files(library) == set()

    pm.hook.tts_history_generation_completed(generation=generation, audio=samples(0.25))
    done = read(library, "g1")
    assert done["status"] == "completed" and done["error"] is None
    assert done["created_at"] == started["created_at"]
    assert done["updated_at"] >= started["updated_at"]
    assert done["duration"] == pytest.approx(0.25)
    assert (done["sample_rate"], done["channels"]) == (RATE, 1)
    [original] = done["versions"]
    assert original["label"] == "original" and original["is_default"] is True
    assert done["active_version_id"] == original["id"]
    audio = library / done["audio_path"]
    assert audio.is_file() and audio.suffix == ".wav"
    assert done["audio_bytes"] == audio.stat().st_size
    assert done["audio_sha256"] == sha256(audio)
    assert sf.info(str(audio)).frames == int(0.25 * RATE)

    other = make_generation(id="g2", text="too long")
    pm.hook.tts_history_generation_started(generation=other)
    pm.hook.tts_history_generation_failed(generation=other, error="CUDA out of memory")
    failed = read(library, "g2")
    assert (failed["status"], failed["error"], failed["audio_path"]) == ("failed", "CUDA out of memory", None)

    # failed directly, without started, creates the record too
    pm.hook.tts_history_generation_failed(generation=make_generation(id="g3"), error="boom")
    assert read(library, "g3")["status"] == "failed"

    # a retry that completes clears the error
    pm.hook.tts_history_generation_completed(generation=other, audio=samples(0.1))
    retried = read(library, "g2")
    assert (retried["status"], retried["error"]) == ("completed", None)

    history = History(library, plugin_manager=pm)
    assert {i["id"]: i["status"] for i in history.list()["items"]} == {
        "g1": "completed", "g2": "completed", "g3": "failed"
    }


def test_failed_error_must_be_a_string(pm, library):
    with pytest.raises(InvalidValueError, match="error"):
        pm.hook.tts_history_generation_failed(generation=make_generation(id="g1"), error=None)
    assert sidecar_path(library, "g1") is None


def test_completed_with_a_wav_file(pm, library, tmp_path):
    stereo = np.stack([tone(0.5, 16000), tone(0.5, 16000, freq=220.0)], axis=1)
    source = tmp_path / "take.wav"
    sf.write(str(source), stereo, 16000, subtype="PCM_24")
    pm.hook.tts_history_generation_completed(
        generation=make_generation(id="w1"), audio=Audio.from_file(source)
    )
    rec = read(library, "w1")
    stored = library / rec["audio_path"]
    assert stored.suffix == ".wav"
    assert stored.read_bytes() == source.read_bytes()  # copied as it is
    assert source.exists()  # the host's file is left alone
    assert (rec["sample_rate"], rec["channels"], rec["duration"]) == (16000, 2, 0.5)
    assert rec["audio_sha256"] == sha256(source)
    assert rec["audio_bytes"] == source.stat().st_size


def test_completed_with_a_flac_file_keeps_flac(pm, library, tmp_path):
    source = tmp_path / "take.flac"
    sf.write(str(source), tone(0.75, 22050), 22050, format="FLAC", subtype="PCM_16")
    pm.hook.tts_history_generation_completed(
        generation=make_generation(id="f1"), audio=Audio.from_file(source)
    )
    rec = read(library, "f1")
    stored = library / rec["audio_path"]
    assert stored.suffix == ".flac"
    assert stored.read_bytes() == source.read_bytes()
    assert sf.info(str(stored)).format == "FLAC"
    assert (rec["sample_rate"], rec["channels"]) == (22050, 1)
    assert rec["duration"] == pytest.approx(0.75, abs=1 / 22050)
    item = History(library, plugin_manager=pm).get("f1")
    assert item["audio_path"].endswith(".flac") and Path(item["audio_path"]).is_file()


def test_completed_with_samples(pm, library):
    pm.hook.tts_history_generation_completed(
        generation=make_generation(id="s1"), audio=Audio.from_samples(tone(0.2), RATE, subtype="FLOAT")
    )
    rec = read(library, "s1")
    info = sf.info(str(library / rec["audio_path"]))
    assert (info.format, info.subtype, info.samplerate, info.frames) == ("WAV", "FLOAT", RATE, int(0.2 * RATE))
    assert rec["duration"] == pytest.approx(0.2)
    # the samples round-trip
    data, _ = sf.read(str(library / rec["audio_path"]), dtype="float32")
    np.testing.assert_array_equal(data, tone(0.2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
@pytest.mark.parametrize("channels", [1, 2])
def test_samples_stored_as_pcm16_are_the_bytes_libsndfile_writes(pm, library, dtype, channels):
    # float32 is converted to int16 before libsndfile sees it: the bytes must not change,
    # at the edges (full scale, beyond it, a sample's width around zero) nor anywhere else
    rng = np.random.default_rng(7)
    samples = rng.uniform(-1.3, 1.3, (24_000, channels))
    samples[:8, 0] = [1.0, -1.0, 0.5 / 32768, -0.5 / 32768, 1.5 / 32768, -1.5 / 32768, 0.0, 2.0]
    if dtype is np.int16:
        samples = np.clip(samples * 32767, -32768, 32767)
    samples = samples.astype(dtype)
    if channels == 1:
        samples = samples[:, 0]
    pm.hook.tts_history_generation_completed(
        generation=make_generation(id="p16"), audio=Audio.from_samples(samples, RATE)
    )
    expected = io.BytesIO()
    sf.write(expected, samples, RATE, format="WAV", subtype="PCM_16")
    stored = library / read(library, "p16")["audio_path"]
    assert stored.read_bytes() == expected.getvalue()


@pytest.mark.parametrize(
    "make_audio",
    [
        lambda tmp: Audio.from_file(tmp / "missing.wav"),
        lambda tmp: Audio.from_file(_write(tmp / "text.wav", b"this is not audio")),
        lambda tmp: Audio.from_file(_write(tmp / "empty.wav", b"")),
        lambda tmp: Audio.from_samples(np.zeros(0, dtype=np.float32), RATE),
        lambda tmp: Audio.from_samples(np.array([0.1, np.nan], dtype=np.float32), RATE),
        lambda tmp: Audio.from_samples(np.array(["a", "b"]), RATE),
    ],
    ids=["missing", "not-audio", "empty-file", "no-samples", "nan", "strings"],
)
def test_audio_that_does_not_decode_writes_nothing(pm, library, tmp_path, make_audio):
    pm.hook.tts_history_generation_completed(generation=make_generation(id="ok"), audio=samples())
    before = all_files(library)
    with pytest.raises(InvalidAudioError):
        pm.hook.tts_history_generation_completed(
            generation=make_generation(id="bad"), audio=make_audio(tmp_path)
        )
    assert all_files(library) == before  # no sidecar, no audio, no temp file left
    # a bad replacement of existing audio leaves the record as it was
    with pytest.raises(InvalidAudioError):
        pm.hook.tts_history_generation_completed(
            generation=make_generation(id="ok"), audio=make_audio(tmp_path)
        )
    assert all_files(library) == before


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_host_duration_is_kept_beside_the_measured_one(pm, library, caplog):
    caplog.set_level(logging.WARNING, logger="tts_history")
    record(pm, seconds=0.25, id="same", duration=0.25)
    assert not [r for r in caplog.records if "same" in r.getMessage()]
    record(pm, seconds=0.25, id="off", duration=1.5)
    rec = read(library, "off")
    assert rec["duration"] == pytest.approx(0.25)
    assert rec["host_duration"] == 1.5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "off" in r.getMessage()]
    assert len(warnings) == 1
    assert read(library, "same")["host_duration"] == 0.25
    item = History(library, plugin_manager=pm).get("off")
    assert (item["duration"], item["host_duration"]) == (pytest.approx(0.25), 1.5)


def test_completed_again_replaces_the_original_audio(pm, library):
    record(pm, seconds=0.25, id="g1")
    first = read(library, "g1")
    old_audio = library / first["audio_path"]
    pm.hook.tts_history_version_added(
        generation_id="g1",
        version=Version(id="fx", label="fx", source_version_id=first["versions"][0]["id"]),
        audio=samples(0.3),
    )
    record(pm, seconds=0.5, id="g1", text="take two")
    second = read(library, "g1")
    assert second["text"] == "take two"
    assert not old_audio.exists()
    original, processed = second["versions"]
    assert original["id"] != first["versions"][0]["id"]
    assert second["active_version_id"] == original["id"]
    assert second["duration"] == pytest.approx(0.5)
    assert processed["source_version_id"] == original["id"]  # re-pointed to the new original
    assert audio_files(library) == {library / original["audio_path"], library / processed["audio_path"]}


# -- versions --------------------------------------------------------------------------------


def test_version_added_stores_the_effects_chain_and_may_become_default(pm, library):
    record(pm, seconds=0.25, id="g1")
    original_id = read(library, "g1")["versions"][0]["id"]
    chain = [Effect("reverb", params={"room": 0.7, "wet": [0.1, 0.2]}), {"type": "gain", "enabled": False, "params": {"db": -6}}, {"type": "eq"}]
    pm.hook.tts_history_version_added(
        generation_id="g1",
        version=Version(id="warm", label="Warm", effects_chain=chain, source_version_id=original_id),
        audio=samples(0.4, freq=330.0),
    )
    rec = read(library, "g1")
    assert rec["active_version_id"] == original_id  # not default: the original stays active
    assert rec["duration"] == pytest.approx(0.25)
    warm = rec["versions"][1]
    assert (warm["id"], warm["label"], warm["is_default"], warm["source_version_id"]) == ("warm", "Warm", False, original_id)
    expected_chain = [
        {"type": "reverb", "enabled": True, "params": {"room": 0.7, "wet": [0.1, 0.2]}},
        {"type": "gain", "enabled": False, "params": {"db": -6}},
        {"type": "eq", "enabled": True, "params": {}},
    ]
    assert json.loads(warm["effects_chain"]) == expected_chain
    assert warm["duration"] == pytest.approx(0.4)
    assert (library / warm["audio_path"]).is_file()

    pm.hook.tts_history_version_added(
        generation_id="g1",
        version=Version(id="bright", label="Bright", effects_chain=[{"type": "eq", "params": {"high": 3}}],
                        source_version_id="warm", is_default=True),
        audio=samples(0.6, freq=880.0),
    )
    rec = read(library, "g1")
    bright = rec["versions"][2]
    assert rec["active_version_id"] == "bright"
    assert [v["is_default"] for v in rec["versions"]] == [False, False, True]
    assert rec["audio_path"] == bright["audio_path"]
    assert rec["duration"] == pytest.approx(0.6)
    assert (rec["audio_sha256"], rec["audio_bytes"]) == (bright["audio_sha256"], bright["audio_bytes"])

    item = History(library, plugin_manager=pm).get("g1")
    assert [v["id"] for v in item["versions"]] == [original_id, "warm", "bright"]
    assert item["versions"][1]["effects_chain"] == expected_chain
    assert item["active_version_id"] == "bright"


def test_version_added_is_validated_and_a_refused_one_writes_nothing(pm, library):
    record(pm, id="g1")
    pm.hook.tts_history_version_added(generation_id="g1", version=Version(id="fx", label="fx"), audio=samples())
    original_id = read(library, "g1")["versions"][0]["id"]
    before = all_files(library)

    with pytest.raises(InvalidValueError, match="version.source_version_id 'nope'"):
        pm.hook.tts_history_version_added(
            generation_id="g1", version=Version(id="v2", label="x", source_version_id="nope"), audio=samples()
        )
    for duplicate in ("fx", original_id):
        with pytest.raises(InvalidValueError, match=f"version.id '{duplicate}' already exists"):
            pm.hook.tts_history_version_added(
                generation_id="g1", version=Version(id=duplicate, label="again"), audio=samples()
            )
    with pytest.raises(LookupError, match="unknown"):
        pm.hook.tts_history_version_added(generation_id="unknown", version=Version(id="v", label="v"), audio=samples())
    with pytest.raises(InvalidValueError, match="version.id"):
        pm.hook.tts_history_version_added(generation_id="g1", version=Version(id="v.1", label="v"), audio=samples())
    with pytest.raises(InvalidAudioError):
        pm.hook.tts_history_version_added(
            generation_id="g1", version=Version(id="v3", label="v"),
            audio=Audio.from_samples(np.zeros(0, dtype=np.float32), RATE),
        )
    assert all_files(library) == before


@pytest.mark.parametrize(
    "make",
    [
        lambda: Effect(""),
        lambda: Effect("eq", enabled="yes"),
        lambda: Effect("eq", params={"f": object()}),
        lambda: Version(id="v", label="v", effects_chain="reverb"),
        lambda: Version(id="v", label="v", effects_chain=[{"type": "eq", "colour": "red"}]),
        lambda: Version(id="v", label="v", is_default=1),
    ],
)
def test_invalid_version_values_are_refused_on_creation(make):
    with pytest.raises(InvalidValueError):
        make()


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: Generation(id="g 1", profile_id="p1", text="t"), "generation.id 'g 1' is not a valid id"),
        (lambda: Generation(id="g1", profile_id="p.1", text="t"), "generation.profile_id"),
        (lambda: Generation(id="g1", profile_id="p1", text="t", seed=2**63), "generation.seed"),
        (lambda: Generation(id="g1", profile_id="p1", text="t", seed=-(2**63) - 1), "generation.seed"),
        (lambda: Generation(id="g1", profile_id="p1", text="t", duration=float("inf")), "finite"),
        (lambda: Generation(id="g1", profile_id="p1", text="t", duration=float("nan")), "finite"),
        (lambda: Generation(id="g1", profile_id="p1", text="bad \udc80 decode"), "generation.text .*surrogate"),
        (lambda: Generation(id="g1", profile_id="p1", text="t", extra={"k": "\ud800"}), "generation.extra"),
        (lambda: Version(id="v 1", label="v"), "version.id"),
        (lambda: Profile(id="p/1", name="x"), "profile.id"),
        (lambda: Profile(id="p1", name="x", extra={"note": "\udfff"}), "profile.extra"),
    ],
)
def test_invalid_generation_and_profile_values_are_refused_on_creation(make, words):
    """Before the hook is called: the host's own line raises, naming the field and the value."""
    with pytest.raises(InvalidValueError, match=words):
        make()


def test_the_errors_a_host_catches_come_from_the_package():
    import tts_history
    from tts_history.plugin.audio import InvalidAudioError

    assert tts_history.InvalidValueError is InvalidValueError
    assert tts_history.InvalidAudioError is InvalidAudioError
    assert issubclass(InvalidValueError, ValueError) and issubclass(InvalidAudioError, ValueError)


def test_the_extremes_of_a_seed_are_recorded(pm, library):
    for i, seed in enumerate((2**63 - 1, -(2**63))):
        pm.hook.tts_history_generation_completed(
            generation=make_generation(id=f"g{i}", seed=seed), audio=samples()
        )
        assert read(library, f"g{i}")["seed"] == seed


def test_default_version_changed_updates_audio_path_and_duration(pm, library):
    record(pm, seconds=0.25, id="g1")
    pm.hook.tts_history_version_added(generation_id="g1", version=Version(id="fx", label="fx"), audio=samples(0.5))
    rec = read(library, "g1")
    original = rec["versions"][0]
    assert rec["active_version_id"] == original["id"]

    pm.hook.tts_history_default_version_changed(generation_id="g1", version_id="fx")
    rec = read(library, "g1")
    fx = rec["versions"][1]
    assert rec["active_version_id"] == "fx"
    assert (rec["audio_path"], rec["duration"]) == (fx["audio_path"], pytest.approx(0.5))
    assert [v["is_default"] for v in rec["versions"]] == [False, True]
    history = History(library, plugin_manager=pm)
    assert history.get("g1")["duration"] == pytest.approx(0.5)

    pm.hook.tts_history_default_version_changed(generation_id="g1", version_id=original["id"])
    rec = read(library, "g1")
    assert (rec["audio_path"], rec["duration"]) == (original["audio_path"], pytest.approx(0.25))
    assert history.get("g1")["audio_path"].endswith(original["audio_path"].rsplit("/", 1)[1])
    # both audio files stay: versions are kept, only the active one changes
    assert len(audio_files(library)) == 2

    with pytest.raises(LookupError, match="nope"):
        pm.hook.tts_history_default_version_changed(generation_id="g1", version_id="nope")
    with pytest.raises(LookupError, match="ghost"):
        pm.hook.tts_history_default_version_changed(generation_id="ghost", version_id="fx")


# -- favorites and deletion ------------------------------------------------------------------


def test_favorite_set(pm, library):
    record(pm, id="g1")
    pm.hook.tts_history_favorite_set(generation_id="g1", is_favorited=True)
    assert read(library, "g1")["is_favorited"] is True
    history = History(library, plugin_manager=pm)
    assert [i["id"] for i in history.list(favorites=True)["items"]] == ["g1"]
    pm.hook.tts_history_favorite_set(generation_id="g1", is_favorited=False)
    assert read(library, "g1")["is_favorited"] is False
    assert history.list(favorites=True)["items"] == []
    with pytest.raises(InvalidValueError, match="is_favorited"):
        pm.hook.tts_history_favorite_set(generation_id="g1", is_favorited="yes")
    with pytest.raises(LookupError, match="ghost"):
        pm.hook.tts_history_favorite_set(generation_id="ghost", is_favorited=True)
    assert history.favorite("g1") is True  # flips
    assert read(library, "g1")["is_favorited"] is True


def test_generation_deleted_removes_sidecar_and_every_audio_file(pm, library):
    record(pm, id="g1")
    record(pm, id="keep")
    pm.hook.tts_history_version_added(generation_id="g1", version=Version(id="a", label="a"), audio=samples())
    pm.hook.tts_history_version_added(generation_id="g1", version=Version(id="b", label="b", is_default=True), audio=samples())
    g1_files = {library / v["audio_path"] for v in read(library, "g1")["versions"]}
    assert len(g1_files) == 3
    keep = all_files(library)
    keep = {p: b for p, b in keep.items() if p not in g1_files and p != sidecar_path(library, "g1")}

    pm.hook.tts_history_generation_deleted(generation_id="g1")
    assert sidecar_path(library, "g1") is None
    assert not any(p.exists() for p in g1_files)
    assert all_files(library) == keep  # nothing else touched

    # deleting what is not recorded does nothing
    pm.hook.tts_history_generation_deleted(generation_id="g1")
    pm.hook.tts_history_generation_deleted(generation_id="never-recorded")
    assert all_files(library) == keep
    assert [i["id"] for i in History(library, plugin_manager=pm).list()["items"]] == ["keep"]


def test_history_delete_with_an_unknown_id_deletes_nothing(pm, library):
    record(pm, id="g1")
    record(pm, id="g2")
    history = History(library, plugin_manager=pm)
    before = all_files(library)
    with pytest.raises(NotFoundError, match="nope"):
        history.delete(["g1", "nope", "g2"])
    assert all_files(library) == before
    assert history.list()["total"] == 2
    assert history.delete(["g1", "g1"]) == ["g1"]
    assert [i["id"] for i in history.list()["items"]] == ["g2"]
    with pytest.raises(NotFoundError):
        history.delete(["g1"])


# -- invalid ids -----------------------------------------------------------------------------


BAD_IDS = ["", "a/b", "../x", "..", ".", "a.b", ".hidden", "a b", "x" * 129, "-lead", "a\\b", "é"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_invalid_generation_id_is_rejected_naming_the_field(pm, library, bad):
    for call in (
        lambda: pm.hook.tts_history_generation_started(generation=make_generation(id=bad)),
        lambda: pm.hook.tts_history_generation_completed(generation=make_generation(id=bad), audio=samples()),
        lambda: pm.hook.tts_history_generation_failed(generation=make_generation(id=bad), error="x"),
    ):
        with pytest.raises(InvalidValueError, match=r"generation\.id"):
            call()
    with pytest.raises(InvalidValueError, match=r"generation\.profile_id"):
        pm.hook.tts_history_generation_completed(generation=make_generation(profile_id=bad), audio=samples())
    with pytest.raises(InvalidValueError, match=r"profile\.id"):
        pm.hook.tts_history_profile_saved(profile=Profile(id=bad, name="x"))
    record(pm, id="g1")
    before = all_files(library)
    with pytest.raises(InvalidValueError, match=r"version\.id"):
        pm.hook.tts_history_version_added(generation_id="g1", version=Version(id=bad, label="x"), audio=samples())
    assert all_files(library) == before
    assert not (library.parent / "x.parquet").exists()
    assert [p.name for p in (library / "generations").rglob("*.parquet")] == ["g1.parquet"]


@pytest.mark.parametrize(
    "act",
    [
        lambda pm, h: pm.hook.tts_history_generation_deleted(generation_id="v*"),
        lambda pm, h: pm.hook.tts_history_favorite_set(generation_id="*", is_favorited=True),
        lambda pm, h: pm.hook.tts_history_default_version_changed(generation_id="v?ctim", version_id="fx"),
        lambda pm, h: h.delete(["v[i]ctim"]),
        lambda pm, h: h.favorite("*"),
    ],
    ids=["deleted", "favorite_set", "default_version_changed", "History.delete", "History.favorite"],
)
def test_lookup_by_an_id_with_glob_characters_touches_no_other_generation(pm, library, act):
    record(pm, id="victim")
    pm.hook.tts_history_version_added(generation_id="victim", version=Version(id="fx", label="fx"), audio=samples())
    history = History(library, plugin_manager=pm)
    before = all_files(library)
    try:
        act(pm, history)
    except (LookupError, LibraryError, ValueError):
        pass  # refusing is fine; changing the victim is not
    assert all_files(library) == before


def test_profile_deleted_with_an_invalid_id_removes_nothing(pm, library):
    pm.hook.tts_history_profile_saved(profile=Profile(id="p1", name="One"))
    outside = library / "notes.parquet"
    outside.write_bytes(b"someone's file")
    before = all_files(library)
    try:
        pm.hook.tts_history_profile_deleted(profile_id="../notes")
    except (LookupError, LibraryError, ValueError):
        pass
    assert all_files(library) == before


# -- profiles --------------------------------------------------------------------------------


def test_profile_saved_stores_the_profile(pm, library):
    created = days_ago(30)
    pm.hook.tts_history_profile_saved(
        profile=Profile(id="p1", name="Narrator", description="deep", language="en",
                        created_at=created, extra={"voice": {"pitch": -2}, "tags": ["a"]})
    )
    path = library / "profiles" / "p1.parquet"
    first = schema.read_profile(path)
    assert (first["name"], first["description"], first["language"]) == ("Narrator", "deep", "en")
    assert first["created_at"] == created
    assert json.loads(first["extra"]) == {"voice": {"pitch": -2}, "tags": ["a"]}
    pm.hook.tts_history_profile_saved(profile=Profile(id="p1", name="Narrator II"))
    second = schema.read_profile(path)
    assert second["name"] == "Narrator II"
    assert second["created_at"] == created  # kept when the profile changes
    assert second["updated_at"] >= first["updated_at"]
    # generations made now snapshot the current name
    record(pm, id="g1", profile_id="p1")
    assert read(library, "g1")["profile_name"] == "Narrator II"


def test_profile_deleted_cascades_except_protected_generations(pm, library, caplog):
    pm.hook.tts_history_profile_saved(profile=Profile(id="p", name="Doomed"))
    pm.hook.tts_history_profile_saved(profile=Profile(id="q", name="Other"))
    for gid in ("p1", "p2", "p3", "p4"):
        record(pm, id=gid, profile_id="p")
    pm.hook.tts_history_generation_failed(generation=make_generation(id="p5", profile_id="p"), error="x")
    record(pm, id="q1", profile_id="q")
    keep = Keep("p2")
    pm.register(keep)
    pm.register(RaiseFor("p3"))
    p_audio = {gid: library / read(library, gid)["audio_path"] for gid in ("p1", "p2", "p3", "p4")}
    q_before = {p: b for p, b in all_files(library).items() if p.name.startswith("q")}
    assert len(q_before) == 3  # profile sidecar, generation sidecar, its audio

    caplog.set_level(logging.ERROR, logger="tts_history")
    pm.hook.tts_history_profile_deleted(profile_id="p")

    assert not (library / "profiles" / "p.parquet").exists()
    for gid in ("p1", "p4", "p5"):
        assert sidecar_path(library, gid) is None, gid
    assert not p_audio["p1"].exists() and not p_audio["p4"].exists()
    # protected by a plugin, or by a plugin that raised: kept, with their audio
    for gid in ("p2", "p3"):
        assert read(library, gid)["profile_name"] == "Doomed"
        assert p_audio[gid].exists()
    assert any("tts_history_protect_generation" in r.getMessage() for r in caplog.records)
    # the other profile is untouched
    assert {p: b for p, b in all_files(library).items() if p.name.startswith("q")} == q_before
    # every generation of the profile was asked about, with its recorded fields
    assert {g["id"] for g in keep.asked} == {"p1", "p2", "p3", "p4", "p5"}
    asked = next(g for g in keep.asked if g["id"] == "p1")
    assert asked["profile_id"] == "p" and asked["text"] == "Hello world"
    assert asked["audio_path"] == p_audio["p1"].relative_to(library).as_posix()

    history = History(library, plugin_manager=pm)
    assert {i["id"]: i["profile_name"] for i in history.list()["items"]} == {
        "p2": "Doomed", "p3": "Doomed", "q1": "Other"
    }
    # deleting a profile that does not exist changes nothing
    before = all_files(library)
    pm.hook.tts_history_profile_deleted(profile_id="never")
    assert all_files(library) == before


def test_generation_deleted_is_not_subject_to_protection(pm, library):
    record(pm, id="g1")
    pm.register(Keep("g1"))
    pm.hook.tts_history_generation_deleted(generation_id="g1")
    assert sidecar_path(library, "g1") is None


# -- hooks for other plugins -----------------------------------------------------------------


class Extra:
    def __init__(self, answer) -> None:
        self.answer = answer
        self.calls: list[str] = []

    @hookimpl
    def tts_history_extra_metadata(self, generation):
        self.calls.append(generation.id)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_extra_metadata_from_plugins_later_wins_broken_ones_skipped(pm, library, caplog):
    first = Extra({"shared": "first", "from_first": "1"})
    broken_raise = Extra(RuntimeError("metadata service down"))
    broken_value = Extra({"shared": "bad", "count": 3})
    broken_type = Extra(["not", "a", "mapping"])
    silent = Extra(None)
    second = Extra({"shared": "second", "from_second": "2"})
    for plugin in (first, broken_raise, broken_value, broken_type, silent, second):
        pm.register(plugin)
    caplog.set_level(logging.ERROR, logger="tts_history")

    generation = make_generation(id="g1", extra={"shared": "host", "host_key": "h"})
    pm.hook.tts_history_generation_started(generation=generation)
    pm.hook.tts_history_generation_completed(generation=generation, audio=samples())
    rec = read(library, "g1")
    assert rec["status"] == "completed"  # recorded despite the broken plugins
    assert rec["extra"] == {"shared": "second", "from_first": "1", "from_second": "2", "host_key": "h"}
    assert len(caplog.records) >= 3 * 2  # each broken plugin logged, each time
    # asked on started, completed and failed
    pm.hook.tts_history_generation_failed(generation=make_generation(id="g2"), error="x")
    assert first.calls == second.calls == broken_raise.calls == ["g1", "g1", "g2"]
    assert read(library, "g2")["extra"]["from_second"] == "2"
    assert History(library, plugin_manager=pm).get("g1")["extra"] == rec["extra"]


def test_extra_metadata_is_kept_across_calls(pm, library):
    pm.hook.tts_history_generation_started(generation=make_generation(id="g1", extra={"a": "1"}))
    pm.hook.tts_history_generation_completed(generation=make_generation(id="g1", extra={"b": "2"}), audio=samples())
    assert read(library, "g1")["extra"] == {"a": "1", "b": "2"}


class Recorded:
    def __init__(self, library: Path) -> None:
        self.library = library
        self.calls: list[tuple[dict, Path, dict]] = []

    @hookimpl
    def tts_history_generation_recorded(self, generation, sidecar_path):
        # the change is on disk by the time the hook is called
        self.calls.append((dict(generation), sidecar_path, schema.read_generation(sidecar_path)))


def test_generation_recorded_is_called_after_each_write(pm, library):
    recorded = Recorded(library)
    pm.register(recorded)

    class Broken:
        @hookimpl
        def tts_history_generation_recorded(self, generation, sidecar_path):
            raise RuntimeError("listener crashed")

    pm.register(Broken())
    generation = make_generation(id="g1")
    steps = [
        lambda: pm.hook.tts_history_generation_started(generation=generation),
        lambda: pm.hook.tts_history_generation_completed(generation=generation, audio=samples()),
        lambda: pm.hook.tts_history_version_added(generation_id="g1", version=Version(id="fx", label="fx"), audio=samples(0.3)),
        lambda: pm.hook.tts_history_default_version_changed(generation_id="g1", version_id="fx"),
        lambda: pm.hook.tts_history_favorite_set(generation_id="g1", is_favorited=True),
        lambda: pm.hook.tts_history_generation_failed(generation=generation, error="re-run failed"),
    ]
    for n, step in enumerate(steps, start=1):
        step()
        assert len(recorded.calls) == n
        record_, path, on_disk = recorded.calls[-1]
        assert path.is_absolute() and path == sidecar_path(library, "g1")
        assert record_["id"] == "g1"
        assert on_disk == {k: v for k, v in record_.items() if k in on_disk}
        for version in record_["versions"]:
            assert not Path(version["audio_path"]).is_absolute()
            assert (library / version["audio_path"]).is_file()
    statuses = [c[0]["status"] for c in recorded.calls]
    assert statuses == ["generating", "completed", "completed", "completed", "completed", "failed"]
    assert recorded.calls[3][0]["active_version_id"] == "fx"
    assert recorded.calls[4][0]["is_favorited"] is True

    # no change, no call: the mark is already set; deleting is not a sidecar write
    pm.hook.tts_history_favorite_set(generation_id="g1", is_favorited=True)
    pm.hook.tts_history_generation_deleted(generation_id="g1")
    assert len(recorded.calls) == len(steps)


# -- third-party plugins from entry points ---------------------------------------------------


PLUGINS = {
    "tts_ep_good": """
        from tts_history import hookimpl

        @hookimpl
        def tts_history_extra_metadata(generation):
            return {"good_plugin": "yes"}
    """,
    "tts_ep_boom": """
        raise RuntimeError("this plugin fails at import")
    """,
    "tts_ep_misspelled": """
        from tts_history import hookimpl

        @hookimpl
        def tts_history_generation_finished(generation):
            pass
    """,
    "tts_ep_wrong_args": """
        from tts_history import hookimpl

        @hookimpl
        def tts_history_extra_metadata(gen, colour):
            return {}
    """,
}
ENTRY_POINTS = {
    "good": "tts_ep_good",
    "boom": "tts_ep_boom",
    "missing": "tts_ep_not_installed_anywhere",
    "misspelled": "tts_ep_misspelled",
    "wrong_args": "tts_ep_wrong_args",
    "bad_attr": "tts_ep_good:no_such_object",
}


@pytest.fixture
def third_party_plugins(tmp_path, monkeypatch):
    """Distributions with ``tts_history`` entry points, installed into a folder on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    for module, source in PLUGINS.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    for name, target in ENTRY_POINTS.items():
        dist = site / f"tts_ep_{name}-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tts-ep-{name}\nVersion: 1.0\n")
        (dist / "entry_points.txt").write_text(f"[tts_history]\n{name} = {target}\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield set(ENTRY_POINTS)
    for module in PLUGINS:
        sys.modules.pop(module, None)
    importlib.invalidate_caches()


def test_broken_entry_point_plugins_are_skipped(third_party_plugins, library, caplog):
    names = {ep.name for ep in importlib.metadata.entry_points(group="tts_history")}
    assert third_party_plugins <= names

    caplog.set_level(logging.ERROR, logger="tts_history")
    pm = get_plugin_manager(library, entrypoints=False)
    failed = load_entrypoint_plugins(pm)
    assert set(failed) & third_party_plugins == {"boom", "missing", "misspelled", "wrong_args", "bad_attr"}
    assert pm.get_plugin("good") is not None
    for name in failed:
        assert pm.get_plugin(name) is None
        assert any(repr(name) in r.getMessage() for r in caplog.records)
    pm.check_pending()  # nothing half-registered is left behind

    # the host works, with the good plugin in it
    record(pm, id="g1")
    assert read(library, "g1")["extra"] == {"good_plugin": "yes"}
    # loading again skips what is registered and reports the broken ones again
    assert set(load_entrypoint_plugins(pm)) & third_party_plugins == set(failed) & third_party_plugins


def test_get_plugin_manager_survives_broken_entry_points(third_party_plugins, library):
    pm = get_plugin_manager(library)  # entry points on, as a host calls it
    assert pm.get_plugin("good") is not None
    record(pm, id="g1")
    assert read(library, "g1")["extra"]["good_plugin"] == "yes"


# -- cleanup ---------------------------------------------------------------------------------


@pytest.fixture
def messy(pm, library):
    """Failures, old generations, favorites and protected ones."""
    rows = {
        # id: (status, days ago, favorite)
        "f1": ("failed", 50, False),
        "f2": ("failed", 45, True),
        "f3": ("failed", 40, False),  # protected
        "f4": ("failed", 2, False),
        "c1": ("completed", 60, False),
        "c2": ("completed", 70, True),
        "c3": ("completed", 80, False),  # protected
        "c4": ("completed", 5, False),
        "g1": ("generating", 35, False),
    }
    for gid, (status, days, favorite) in rows.items():
        generation = make_generation(id=gid, created_at=days_ago(days), profile_id="b" if gid == "c4" else "a")
        if status == "failed":
            pm.hook.tts_history_generation_failed(generation=generation, error="x")
        elif status == "generating":
            pm.hook.tts_history_generation_started(generation=generation)
        else:
            pm.hook.tts_history_generation_completed(generation=generation, audio=samples(0.05))
        if favorite:
            pm.hook.tts_history_favorite_set(generation_id=gid, is_favorited=True)
    pm.register(Keep("f3", "c3"))
    return History(library, plugin_manager=pm)


def remaining(history: History) -> set[str]:
    return {i["id"] for i in history.list(limit=100)["items"]}


EVERYONE = {"f1", "f2", "f3", "f4", "c1", "c2", "c3", "c4", "g1"}


@pytest.mark.parametrize(
    ("options", "removed", "kept"),
    [
        ({"failed": True}, ["f1", "f4"], ["f3"]),
        ({"older_than_days": 30}, ["c1", "f1", "g1"], ["c3", "f3"]),
        ({"older_than_days": 55}, ["c1"], ["c3"]),
        ({"failed": True, "older_than_days": 30}, ["f1"], ["f3"]),
        ({"failed": True, "keep_favorites": False}, ["f1", "f2", "f4"], ["f3"]),
        ({"profile_id": "b"}, ["c4"], []),
    ],
)
def test_cleanup(messy, library, options, removed, kept):
    before = all_files(library)
    preview = messy.cleanup(dry_run=True, **options)
    assert sorted(preview["removed"]) == removed and sorted(preview["kept"]) == kept
    assert all_files(library) == before  # a dry run changes nothing
    assert remaining(messy) == EVERYONE

    audio = {gid: read(library, gid)["audio_path"] for gid in removed}
    result = messy.cleanup(**options)
    assert sorted(result["removed"]) == removed and sorted(result["kept"]) == kept
    assert remaining(messy) == EVERYONE - set(removed)
    for gid in removed:
        assert sidecar_path(library, gid) is None
        if audio[gid]:
            assert not (library / audio[gid]).exists()
    # favorites are never in either list unless asked
    if options.get("keep_favorites", True):
        assert not {"f2", "c2"} & set(result["removed"])


def test_cleanup_needs_a_condition(messy, library):
    before = all_files(library)
    with pytest.raises(ValueError, match="failed"):
        messy.cleanup()
    assert all_files(library) == before

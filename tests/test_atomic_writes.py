"""Crash safety with real processes: a writer recording through the hooks is SIGKILLed at random
moments, again and again, and after every kill the library folder must be whole.

"Whole" means: every visible sidecar reads, every audio file a sidecar names is there with the
recorded size and SHA-256 and decodes, no visible ``*.parquet``/``*.wav`` is partial, temp files
(hidden, ``.tmp``) never take a visible name, every change the writer finished before the kill
is on disk, and the index syncs the result without an error.

Also: audio that cannot be stored raises ``InvalidAudioError`` naming the problem and leaves
nothing behind in the library.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import RATE, make_generation, record, tone
from tts_history import Audio, Version
from tts_history.index import Index
from tts_history.library import atomic, schema
from tts_history.library.atomic import Syncer, write_temp
from tts_history.plugin import InvalidAudioError
from tts_history.plugin import audio as audio_io

ROUNDS = 25

# The writer: records generations through the hooks as fast as it can, announcing each change
# on stdout before it starts ("start") and after the hook returned ("done").
WRITER = textwrap.dedent(
    r'''
    import json, random, sys, uuid
    from pathlib import Path

    import numpy as np
    import soundfile as sf

    from tts_history import Audio, Generation, Version, get_plugin_manager

    library, seed, sources = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    rng = random.Random(seed)
    hook = get_plugin_manager(library, entrypoints=False).hook
    RATE = 8000
    live = {}  # id -> is_favorited, for this writer's own generations


    def say(*parts):
        sys.stdout.write(json.dumps(parts) + "\n")
        sys.stdout.flush()


    def audio():
        n = rng.randint(400, 24000)  # 0.05 s to 3 s
        t = np.arange(n) / RATE
        samples = (0.3 * np.sin(2 * np.pi * rng.uniform(150, 900) * t)).astype(np.float32)
        if rng.random() < 0.3:  # a file the host wrote itself, outside the library
            path = sources / f"{uuid.uuid4().hex}.wav"
            sf.write(str(path), samples, RATE, subtype="PCM_16")
            return Audio.from_file(path)
        return Audio.from_samples(samples, RATE, subtype=rng.choice(["PCM_16", "FLOAT"]))


    def generation(gid):
        return Generation(id=gid, profile_id=rng.choice(["p1", "p2"]), text=f"take {gid}")


    say("ready")
    while True:
        r = rng.random()
        if not live or r < 0.40:
            gid = uuid.uuid4().hex
            say("start", "create", gid)
            hook.tts_history_generation_completed(generation=generation(gid), audio=audio())
            live[gid] = False
            say("done", "create", gid)
        elif r < 0.55:
            gid = rng.choice(list(live))
            say("start", "recomplete", gid)
            hook.tts_history_generation_completed(generation=generation(gid), audio=audio())
            say("done", "recomplete", gid)
        elif r < 0.75:
            gid = rng.choice(list(live))
            version = Version(
                id=uuid.uuid4().hex,
                label="processed",
                effects_chain=[{"type": "gain", "params": {"db": rng.uniform(-6, 6)}}],
                is_default=rng.random() < 0.5,
            )
            say("start", "version", gid)
            hook.tts_history_version_added(generation_id=gid, version=version, audio=audio())
            say("done", "version", gid)
        elif r < 0.90:
            gid = rng.choice(list(live))
            value = not live[gid]
            say("start", "favorite", gid, value)
            hook.tts_history_favorite_set(generation_id=gid, is_favorited=value)
            live[gid] = value
            say("done", "favorite", gid, value)
        else:
            gid = rng.choice(list(live))
            say("start", "delete", gid)
            hook.tts_history_generation_deleted(generation_id=gid)
            del live[gid]
            say("done", "delete", gid)
    '''
)


# -- checking a library folder --------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wav_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole RIFF/WAVE file (None: it is whole and decodes)."""
    data = path.read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return f"no RIFF/WAVE header ({len(data)} bytes)"
    riff_size = struct.unpack("<I", data[4:8])[0]
    if riff_size + 8 != len(data):
        return f"RIFF header says {riff_size + 8} bytes, the file has {len(data)}"
    offset, data_bytes, block_align = 12, None, None
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        if offset + 8 + size > len(data):
            return f"chunk {chunk!r} runs past the end of the file"
        if chunk == b"fmt ":
            block_align = struct.unpack("<H", data[offset + 20 : offset + 22])[0]
        if chunk == b"data":
            data_bytes = size
        offset += 8 + size + (size & 1)
    if data_bytes is None or not block_align:
        return "no fmt or data chunk"
    try:
        samples, _ = sf.read(str(path), always_2d=True)
    except sf.LibsndfileError as exc:
        return f"does not decode: {exc}"
    if len(samples) != data_bytes // block_align or len(samples) == 0:
        return f"decodes {len(samples)} frames, its data chunk holds {data_bytes // block_align}"
    return None


class Checker:
    """Checks a library folder after a kill. Files that did not change since they were last
    checked (same inode, size, mtime) are not read again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._seen: dict[Path, tuple] = {}
        self._state: dict[Path, tuple] = {}

    def _key(self, path: Path) -> tuple:
        st = path.stat()
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def check(self, where: str) -> tuple[dict[str, tuple], int, int]:
        """Assert the folder is whole. Returns ({id: (status, is_favorited, n_versions)},
        number of leftover temp files, number of audio files no sidecar names)."""
        sidecars: list[Path] = []
        wavs: list[Path] = []
        temps = 0
        for folder, _dirs, names in os.walk(self.root):
            for name in names:
                path = Path(folder) / name
                inside = path.is_relative_to(self.root / "generations")
                if name.endswith((".parquet", ".wav")):
                    assert not name.startswith("."), f"{where}: hidden file with a visible suffix: {path}"
                    assert inside, f"{where}: {path} outside generations/"
                    (sidecars if name.endswith(".parquet") else wavs).append(path)
                elif name.startswith(".") and name.endswith(".tmp"):
                    temps += 1
                else:  # the library's own files (marker, sync-tool settings) live at the top
                    assert not inside, f"{where}: unexpected file {path}"

        for wav in wavs:  # every wav, named or not, is whole
            key = self._key(wav)
            if self._seen.get(wav) != key:
                problem = wav_problem(wav)
                assert problem is None, f"{where}: partial audio {wav}: {problem}"
                self._seen[wav] = key

        states: dict[str, tuple] = {}
        named: set[Path] = set()
        for sidecar in sidecars:
            key = self._key(sidecar)
            if self._seen.get(sidecar) != key:
                self._state[sidecar] = self._check_sidecar(sidecar, where)
                self._seen[sidecar] = key
            state, audio_paths = self._state[sidecar]
            gid = sidecar.name.removesuffix(".parquet")
            assert gid not in states, f"{where}: two sidecars for {gid}"
            states[gid] = state
            named |= audio_paths
        return states, temps, len(set(wavs) - named)

    def _check_sidecar(self, sidecar: Path, where: str) -> tuple[tuple, set[Path]]:
        try:
            record = schema.read_generation(sidecar)
        except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
            pytest.fail(f"{where}: sidecar {sidecar} does not read: {exc}")
        assert record["status"] == "completed", f"{where}: {sidecar}: {record['status']}"
        versions = record["versions"]
        assert versions, f"{where}: {sidecar} names no audio"
        active = [v for v in versions if v["is_default"]]
        assert len(active) == 1 and active[0]["id"] == record["active_version_id"], where
        assert record["audio_path"] == active[0]["audio_path"], f"{where}: {sidecar}"
        entries = [*versions, record]  # the record's own audio fields describe the active version
        paths: set[Path] = set()
        for entry in entries:
            audio = self.root / entry["audio_path"]
            assert not Path(entry["audio_path"]).is_absolute(), where
            assert audio.is_file(), f"{where}: {sidecar} names missing audio {entry['audio_path']}"
            assert audio.stat().st_size == entry["audio_bytes"], f"{where}: size of {audio}"
            assert sha256(audio) == entry["audio_sha256"], f"{where}: sha256 of {audio}"
            info = sf.info(str(audio))
            assert info.samplerate == entry["sample_rate"] == RATE, where
            assert info.channels == entry["channels"] == 1, where
            assert info.frames / info.samplerate == pytest.approx(entry["duration"]), where
            assert len(sf.read(str(audio))[0]) == info.frames > 0, where
            paths.add(audio)
        state = (record["status"], record["is_favorited"], len(versions))
        return state, paths


def apply(model: dict[str, tuple], op: str, gid: str, *args) -> None:
    """The state a finished change leaves: (status, is_favorited, number of versions)."""
    if op == "create":
        model[gid] = ("completed", False, 1)
    elif op == "recomplete":
        model[gid] = model[gid]  # the original's audio is replaced; the shape stays
    elif op == "version":
        status, favorite, n = model[gid]
        model[gid] = (status, favorite, n + 1)
    elif op == "favorite":
        status, _, n = model[gid]
        model[gid] = (status, args[0], n)
    elif op == "delete":
        del model[gid]
    else:  # pragma: no cover
        raise AssertionError(op)


def test_sigkill_at_random_moments_never_leaves_a_broken_library(library, pm, tmp_path):
    base_seed = random.SystemRandom().randrange(2**31)
    rng = random.Random(base_seed)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    sources = tmp_path / "sources"
    sources.mkdir()
    root = pm.get_plugin("tts_history.history").library.root  # created by the fixture's manager
    checker = Checker(root)
    model: dict[str, tuple] = {}
    finished = in_flight = 0

    for round_ in range(ROUNDS):
        where = f"round {round_} (base seed {base_seed})"
        errors = tmp_path / f"writer-{round_}.err"
        with open(errors, "w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, str(script), str(root), str(base_seed + round_), str(sources)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        try:
            ready = proc.stdout.readline()
            assert ready.strip() == '["ready"]', f"{where}: writer did not start: {errors.read_text()}"
            time.sleep(rng.uniform(0.020, 0.300))
            proc.send_signal(signal.SIGKILL)
            out = proc.stdout.read()  # to the end: the kill closes the pipe
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL, f"{where}: writer stopped by itself: {errors.read_text()}"

        pending = None
        for line in out.splitlines():
            try:
                kind, op, gid, *args = json.loads(line)
            except ValueError:
                continue  # a line cut by the kill
            if kind == "start":
                pending = (op, gid, *args)
            else:
                assert pending == (op, gid, *args), f"{where}: journal out of order"
                apply(model, op, gid, *args)
                pending = None
                finished += 1

        states, _temps, _orphans = checker.check(where)

        if pending is not None:  # killed inside this change: either before it or after it
            in_flight += 1
            op, gid, *args = pending
            after = dict(model)
            apply(after, op, gid, *args)
            assert states.get(gid) in (model.get(gid), after.get(gid)), (
                f"{where}: {op} of {gid} interrupted: on disk {states.get(gid)}, "
                f"expected {model.get(gid)} or {after.get(gid)}"
            )
            model = after if states.get(gid) == after.get(gid) else model
        # every change the writer finished is on disk, and nothing else changed
        assert states == model, f"{where}: folder differs from the finished changes"

    assert finished > ROUNDS, "the writer hardly ever got to record anything"

    report = Index(root).sync()
    assert report.errors == []
    index = Index(root)
    sidecars = list((root / "generations").rglob("*.parquet"))
    assert index.stats()["total_generations"] == len(sidecars) == len(model)
    _, rows = index.sql("select count(*) from generations where audio_present is not true")
    assert rows == [(0,)], "the index finds audio missing or partial"
    _, rows = index.sql("select count(*) from versions where not audio_present")
    assert rows == [(0,)]


# -- audio that cannot be stored --------------------------------------------------------------


def _text_as_wav(tmp_path: Path) -> Audio:
    fake = tmp_path / "outside" / "fake.wav"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text("this is not audio, only a text file with a .wav name\n" * 20)
    return Audio.from_file(fake)


def _wav_without_samples(tmp_path: Path) -> Audio:
    path = tmp_path / "outside" / "silence.wav"
    path.parent.mkdir(exist_ok=True)
    sf.write(str(path), np.zeros(0, dtype=np.float32), RATE, subtype="PCM_16")
    return Audio.from_file(path)


BAD_AUDIO = {
    "text file posing as wav": (_text_as_wav, ["does not decode", "fake.wav"]),
    "wav file with no samples": (_wav_without_samples, ["holds no samples", "silence.wav"]),
    "empty samples": (lambda _: Audio.from_samples(np.zeros(0, dtype=np.float32), RATE), ["empty"]),
    "NaN samples": (
        lambda _: Audio.from_samples(np.where(np.arange(800) == 400, np.nan, tone()[:800]), RATE),
        ["NaN"],
    ),
    "infinite samples": (
        lambda _: Audio.from_samples(np.full(800, np.inf, dtype=np.float32), RATE),
        ["infinity"],
    ),
}


def snapshot(root: Path) -> dict[str, str]:
    """Every file of the library (temp files too) with its content hash."""
    return {
        str(path.relative_to(root)): sha256(path) for path in sorted(root.rglob("*")) if path.is_file()
    }


@pytest.mark.parametrize("case", list(BAD_AUDIO))
def test_bad_audio_raises_and_leaves_nothing_behind(case, library, pm, tmp_path):
    make, words = BAD_AUDIO[case]
    root = pm.get_plugin("tts_history.history").library.root
    fresh = snapshot(root)  # the marker and whatever else a new library holds

    # into an empty library: nothing at all may appear (no sidecar, no audio, no temp file)
    with pytest.raises(InvalidAudioError) as raised:
        pm.hook.tts_history_generation_completed(
            generation=make_generation(id="bad"), audio=make(tmp_path)
        )
    for word in words:
        assert word in str(raised.value), f"{raised.value!r} does not name {word!r}"
    assert snapshot(root) == fresh
    assert not (root / "generations").exists() or not any(
        p.is_file() for p in (root / "generations").rglob("*")
    )

    # beside a recorded generation: its sidecar and audio stay exactly as they were
    kept = record(pm, id="kept")
    before = snapshot(root)
    with pytest.raises(InvalidAudioError):
        pm.hook.tts_history_generation_completed(generation=kept, audio=make(tmp_path))
    assert snapshot(root) == before
    with pytest.raises(InvalidAudioError):
        pm.hook.tts_history_version_added(
            generation_id="kept",
            version=Version(id=uuid.uuid4().hex, label="processed", is_default=True),
            audio=make(tmp_path),
        )
    assert snapshot(root) == before
    with pytest.raises(InvalidAudioError):
        pm.hook.tts_history_generation_completed(
            generation=make_generation(id="other"), audio=make(tmp_path)
        )
    assert snapshot(root) == before
    report = Index(root).sync()
    assert report.errors == [] and report.added == 1


def test_a_disk_full_while_audio_is_written_raises_and_leaves_nothing_behind(
    library, pm, tmp_path, monkeypatch
):
    # the samples' temp file is written on a thread while the sidecar is encoded: its
    # failure must still reach the host, and no sidecar may name audio that never landed
    root = pm.get_plugin("tts_history.history").library.root
    kept = record(pm, id="kept")
    before = snapshot(root)
    real_write_temp = audio_io.write_temp

    def disk_full(path, write, tmp=None):
        def half(out):
            out.write(b"RIFF")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

        return real_write_temp(path, half, tmp)

    monkeypatch.setattr(audio_io, "write_temp", disk_full)
    with pytest.raises(OSError, match="No space left"):
        pm.hook.tts_history_generation_completed(
            generation=make_generation(id="new"), audio=Audio.from_samples(tone(), RATE)
        )
    with pytest.raises(OSError, match="No space left"):
        pm.hook.tts_history_generation_completed(generation=kept, audio=Audio.from_samples(tone(), RATE))
    with pytest.raises(OSError, match="No space left"):
        pm.hook.tts_history_version_added(
            generation_id="kept",
            version=Version(id=uuid.uuid4().hex, label="processed", is_default=True),
            audio=Audio.from_samples(tone(), RATE),
        )
    assert snapshot(root) == before
    monkeypatch.undo()
    pm.hook.tts_history_generation_completed(generation=kept, audio=Audio.from_samples(tone(), RATE))
    report = Index(root).sync()
    assert report.errors == [] and report.added == 1


def test_a_syncer_makes_files_durable_and_raises_what_an_fsync_raised(tmp_path):
    files = [write_temp(tmp_path / f"f{i}.wav", lambda f: f.write(b"x" * 4096), sync=False) for i in range(3)]
    with Syncer() as syncer:
        syncer.submit(files)
        syncer.wait()
        syncer.submit([tmp_path / "gone.wav"])
        with pytest.raises(FileNotFoundError, match="gone.wav"):
            syncer.wait()
    # with its window full, the next submit waits for the oldest batch, and raises its error
    with Syncer(window=1) as syncer:
        syncer.submit([tmp_path / "gone.wav"])
        with pytest.raises(FileNotFoundError, match="gone.wav"):
            syncer.submit(files)


needs_syncfs = pytest.mark.skipif(atomic._SYNCFS is None, reason="no syncfs here (Linux 5.8 and later)")


@needs_syncfs
def test_a_syncer_given_the_root_syncs_its_file_system_every_window_and_at_the_end(tmp_path, monkeypatch):
    syncfs = atomic._SYNCFS
    calls = []

    def counted(fd):
        calls.append(fd)
        return syncfs(fd)

    monkeypatch.setattr(atomic, "_SYNCFS", counted)
    files = [write_temp(tmp_path / f"f{i}.wav", lambda f: f.write(b"x" * 4096), sync=False) for i in range(5)]
    with Syncer(tmp_path, window=2) as syncer:
        syncer.submit(files[:2])  # a window's worth: one syncfs starts in the background
        syncer.submit(files[2:])
        syncer.wait()  # and one more for the files written since it began
        assert len(calls) >= 2
        waited = len(calls)
        syncer.wait()  # nothing new: no call
        assert len(calls) == waited
        # a file that is gone is no error: syncfs makes the file system durable, not a name
        syncer.submit([tmp_path / "gone.wav"])
        syncer.wait()


@needs_syncfs
def test_a_failed_syncfs_is_raised_naming_the_root_by_a_later_submit_or_the_wait(tmp_path, monkeypatch):
    def failing(fd):
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(atomic, "_SYNCFS", failing)
    files = [write_temp(tmp_path / f"f{i}.wav", lambda f: f.write(b"x"), sync=False) for i in range(4)]
    words = re.escape(f"files written below {tmp_path} durable: Input/output error")
    with Syncer(tmp_path) as syncer:
        syncer.submit(files)
        with pytest.raises(OSError, match=words) as raised:
            syncer.wait()
        assert raised.value.errno == errno.EIO
    with Syncer(tmp_path, window=1) as syncer:
        syncer.submit(files[:1])  # starts a syncfs, which fails in the background
        with pytest.raises(OSError, match=words):
            for _ in range(100):  # the first submit after it ended raises its error
                time.sleep(0.01)
                syncer.submit(files[1:2])


@needs_syncfs
def test_a_syncer_fsyncs_files_on_another_file_system_than_the_root_one_by_one(tmp_path):
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system to write to")
    with tempfile.TemporaryDirectory(dir=other) as elsewhere:
        gone = Path(elsewhere) / "gone.wav"  # an fsync of it fails; syncfs would not notice
        with Syncer(tmp_path) as syncer:
            syncer.submit([gone])
            with pytest.raises(FileNotFoundError, match="gone.wav"):
                syncer.wait()


def test_a_temp_file_makes_its_folders_and_never_removes_a_file_it_could_not_create(tmp_path):
    tmp = write_temp(tmp_path / "2026" / "12" / "07" / "g.parquet", lambda f: f.write(b"row"))
    assert tmp.parent == tmp_path / "2026" / "12" / "07" and tmp.read_bytes() == b"row"
    # a temp name already taken: the open fails, and the file that holds it is left as it was
    with pytest.raises(FileExistsError):
        write_temp(tmp_path / "other.parquet", lambda f: f.write(b"new"), tmp)
    assert tmp.read_bytes() == b"row"
    # a folder that cannot be made: the error names it, and nothing is left behind
    (tmp_path / "plain").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="plain"):
        write_temp(tmp_path / "plain" / "g.parquet", lambda f: f.write(b"row"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026", "plain"]

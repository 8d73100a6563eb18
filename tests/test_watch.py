"""The live-sync watcher (``tts-history watch`` and ``Index.watch()``), with real watchdog
observers, real files, real subprocesses and real signals.

The watcher is an accelerator and the scan is the guarantee, so most tests here end with the
same question: does the index now answer exactly as one rebuilt from the folder? (The
10,000-file burst checks the exact set of ids instead: a second 10,000-file build would double
its cost.) Waiting is never a speed requirement: a condition is polled until it holds, with
``SAFETY`` seconds only as a guard against hanging; the one bound on a person's wait is the
issue's generous 10 s.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from helpers import RATE, cli, indexed, record, tone

from tts_history import Audio, Effect, History, Version, get_plugin_manager
from tts_history.index import Filters, Index, IndexBusyError
from tts_history.index.watch import HEARTBEAT, Watcher, watcher_running
from tts_history.library import open_library, schema
from tts_history.library.layout import MARKER

SAFETY = 60.0  # seconds: a guard against hanging, never a speed requirement
BURST = 10_000


# -- helpers ---------------------------------------------------------------------------------


def eventually(
    condition: Callable[[], object], what: str, watcher: Watcher | None = None, timeout: float = SAFETY
):
    """Poll ``condition`` until it holds; the watcher is allowed to be late, never wrong."""
    deadline = time.monotonic() + timeout
    while True:
        if watcher is not None:
            watcher.wait_idle(1.0)
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def dump(index: Index) -> dict:
    """Everything the index answers, in a form two indexes can be compared by."""
    with index.reading() as con:  # one connection for all of it: each get() would open one
        everything = index.list(limit=10_000)
        return {
            "generations": con.execute("SELECT * FROM generations ORDER BY sidecar_path").fetchall(),
            "versions": con.execute(
                "SELECT * FROM versions ORDER BY generation_id, position, id"
            ).fetchall(),
            "profiles": con.execute("SELECT * FROM profiles ORDER BY sidecar_path").fetchall(),
            "files": con.execute("SELECT path, kind, size, error FROM files ORDER BY path").fetchall(),
            "list": everything,
            # every field is in the tables above; get() itself is checked on a sample
            "details": [index.get(i["id"]) for i in everything["items"][:: 1 + everything["total"] // 100]],
            "stats": index.stats(),
            "conflicts": index.conflicts(),
            "unreadable": index.unreadable(),
        }


def rebuilt(root: Path, where: Path) -> Index:
    """An index built from nothing out of the folder as it is now."""
    index = Index(root, path=where / f"rebuilt-{uuid.uuid4().hex[:8]}.duckdb")
    index.rebuild()
    return index


def assert_same_as_rebuild(index: Index, root: Path, where: Path) -> None:
    mine, truth = dump(index), dump(rebuilt(root, where))
    for key in truth:
        assert mine[key] == truth[key], f"the watched index differs from a rebuild in {key!r}"


def tiny_wav() -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(80, dtype=np.float32), RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def synthetic_record(library, gid: str, created: datetime, text: str, audio_bytes: int) -> dict:
    """A complete one-version generation record, as the plugin writes it."""
    audio = library.relative(library.audio_path(gid, created, "v1", ".wav"))
    version = dict(
        id="v1", label="original", audio_path=audio, effects_chain=None, is_default=True,
        created_at=created, source_version_id=None, duration=0.01, sample_rate=RATE, channels=1,
        audio_bytes=audio_bytes, audio_sha256=None,
    )  # fmt: skip
    record = {f.name: None for f in schema.GENERATION_SCHEMA if f.name != "schema_version"}
    record.update(
        id=gid, profile_id="p1", text=text, status="completed", is_favorited=False,
        created_at=created, updated_at=created, audio_path=audio, duration=0.01,
        sample_rate=RATE, channels=1, audio_bytes=audio_bytes, active_version_id="v1",
        versions=[version], extra={},
    )  # fmt: skip
    return record


TEMPLATE_ID = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvu"  # as long as uuid4().hex; nothing a date repeats


def stage(
    library, staging: Path, count: int, *, days: int = 30, label: str = "burst"
) -> list[tuple[Path, Path]]:
    """Write ``count`` sidecars outside the library (text ``f"{label} {i:05d}"``), with one
    shared tiny WAV for their audio. Returns (staged sidecar, final sidecar) pairs; the audio's
    final place is beside the sidecar, named ``<id>.v1.wav``.

    One sidecar per day is written by ``schema.write_generation``; the others are byte copies
    of it with the id and the number replaced by strings of the same length (Snappy keeps such
    short unique strings as literals). The first copy of each day is read back, both as
    Parquet columns and through the product's reader, and the index under test reads every
    one. Writing 10,000 through pyarrow instead costs 10-50 s of CPU and fsync on these
    shared machines."""
    staging.mkdir(parents=True, exist_ok=True)
    wav = staging / "tiny.wav"
    wav.write_bytes(tiny_wav())
    now = datetime.now(timezone.utc).replace(microsecond=0)
    first = f"{label} {0:05d}".encode()
    templates = []
    for day in range(days):
        created = now - timedelta(days=day)
        path = staging / "templates" / f"{TEMPLATE_ID}-{day}.parquet"
        path.parent.mkdir(exist_ok=True)
        template = synthetic_record(library, TEMPLATE_ID, created, first.decode(), len(tiny_wav()))
        schema.write_generation(path, template)
        templates.append((path.read_bytes(), created))
    pairs = []
    for i in range(count):
        gid = uuid.uuid4().hex
        data, created = templates[i % days]
        staged = staging / f"{gid}.parquet"
        text = f"{label} {i:05d}"
        staged.write_bytes(data.replace(TEMPLATE_ID.encode(), gid.encode()).replace(first, text.encode()))
        pairs.append((staged, library.sidecar_path(gid, created)))
        if i < days:  # the first copy of each template: every reader sees the new values
            audio = library.relative(library.audio_path(gid, created, "v1", ".wav"))
            for row in (pq.read_table(staged).to_pylist()[0], schema.read_generation(staged, gid)):
                assert (row["id"], row["text"], row["audio_path"]) == (gid, text, audio), staged
                assert row["versions"][0]["audio_path"] == audio, staged
    return pairs


def land(pairs: list[tuple[Path, Path]], wav: Path) -> None:
    """Move staged generations into the library as a sync tool does: the audio (a hard link of
    one tiny WAV) under a temp name, renamed into place, then the sidecar renamed into place."""
    for staged, final in pairs:
        final.parent.mkdir(parents=True, exist_ok=True)
        gid = final.name.removesuffix(".parquet")
        audio = final.with_name(f"{gid}.v1.wav")
        temp = final.with_name(f".syncthing.{audio.name}.tmp")
        os.link(wav, temp)
        os.replace(temp, audio)
        os.replace(staged, final)


def source_library(tmp_path: Path) -> tuple[Path, object]:
    """A second replica of a library, recorded through the hooks: the 'other machine'."""
    root = tmp_path / "source"
    pm = get_plugin_manager(root, entrypoints=False)
    return root, pm


def replica_of(source: Path, root: Path) -> Path:
    """An empty folder that is the same library (same library.json) as ``source``."""
    root.mkdir(parents=True)
    shutil.copy2(source / MARKER, root / MARKER)
    return root


def arrive(source: Path, target: Path, relative: str, *, truncate: int | None = None) -> None:
    """Copy one file the way a sync tool does: temp name beside the target, then rename."""
    src = source / relative
    dst = target / relative
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    if truncate is not None:
        data = data[:truncate]
    temp = dst.with_name(f".syncthing.{dst.name}.tmp")
    temp.write_bytes(data)
    os.utime(temp, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns))  # mtimes kept
    os.replace(temp, dst)


def deliver(source: Path, target: Path, gid: str) -> tuple[str, list[str]]:
    """Every file of a generation arrives at ``target``, audio first: (sidecar, audio)."""
    sidecar, audio = files_of(source, gid)
    for relative in audio + [sidecar]:
        arrive(source, target, relative)
    return sidecar, audio


def files_of(root: Path, gid: str) -> tuple[str, list[str]]:
    """The sidecar and the audio files of one generation, relative to the library root."""
    sidecar = next((root / "generations").glob(f"*/*/*/{gid}.parquet"))
    record = schema.read_generation(sidecar)
    return sidecar.relative_to(root).as_posix(), [v["audio_path"] for v in record["versions"]]


class BatchLog(logging.Handler):
    """The watcher's own account of its batches: (paths, added, updated, removed, errors)."""

    PATTERN = re.compile(r"batch: (\d+) path\(s\) -> added (\d+), updated (\d+), removed (\d+), errors (\d+)")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.batches: list[tuple[int, ...]] = []
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        match = self.PATTERN.search(message)
        if match:
            self.batches.append(tuple(int(g) for g in match.groups()))


@contextlib.contextmanager
def batch_log() -> Iterator[BatchLog]:
    logger = logging.getLogger("tts_history.watch")
    handler, level = BatchLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class WatchProcess:
    """``python -m tts_history --library LIB --index IDX watch ...`` in a real subprocess."""

    def __init__(self, root: Path, index: Path, log: Path, *options: str) -> None:
        self.log = log
        self._err = open(log, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tts_history", "--library", str(root), "--index", str(index),
             "watch", *options],
            stdout=subprocess.DEVNULL, stderr=self._err,
        )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_watching(self) -> None:
        """Until the start's reconcile is done and events are followed."""
        eventually(
            lambda: "Watching" in self.text() or self.proc.poll() is not None, "the watcher to start"
        )
        assert self.proc.poll() is None, f"watch exited early:\n{self.text()}"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(SAFETY)
        finally:
            self._err.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(SAFETY)
        self._err.close()

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._err.close()


# -- a burst of 10,000 generations, with readers in other processes ---------------------------

READER = textwrap.dedent(
    r"""
    import contextlib, io, json, os, sys, time

    from tts_history.cli import main

    root, index, stop, out = sys.argv[1:5]
    commands = {
        "list": ["list", "--json", "--limit", "5"],
        "search": ["search", "burst 07", "--json", "--limit", "5"],
        "stats": ["stats", "--json"],
        "sql": ["sql", "SELECT count(*) AS n FROM generations", "--json"],
    }
    runs = {name: 0 for name in commands}
    worst = {name: 0.0 for name in commands}
    errors = []
    turn = 0
    while not os.path.exists(stop) or turn < 8:
        name = list(commands)[turn % len(commands)]
        turn += 1
        began = time.monotonic()
        captured = io.StringIO()
        try:
            with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                main.main(["--library", root, "--index", index, *commands[name]], standalone_mode=False)
            json.loads(captured.getvalue())
        except BaseException as exc:  # every failure is a finding: report it, go on
            errors.append(f"{name}: {type(exc).__name__}: {exc}: {captured.getvalue()[-500:]}")
        runs[name] += 1
        worst[name] = max(worst[name], time.monotonic() - began)
        time.sleep(0.1)  # a person does not type faster than this
    with open(out, "w") as f:
        json.dump({"runs": runs, "worst": worst, "errors": errors}, f)
    """
)


def test_burst_of_10000_generations_is_indexed_once_each_while_other_processes_read(tmp_path):
    """10,000 generations land at once (temp-then-rename, audio before sidecar) while
    ``tts-history watch`` runs in its own process and CLI reads (list, search, stats, sql) run in
    another: every generation is indexed exactly once, with its audio, and no reader meets a
    lock error. inotify overflows in such bursts (FACTS.md): the periodic reconcile is off
    here, so the watcher must notice the overflow itself and reconcile."""
    library = open_library(tmp_path / "library", create=True)
    root, index_path = library.root, tmp_path / "index" / "index.duckdb"
    pairs = stage(library, tmp_path / "staging", BURST)
    for _, final in pairs[::2]:  # half the day folders exist already, half are new
        final.parent.mkdir(parents=True, exist_ok=True)
    expected = {final.name.removesuffix(".parquet") for _, final in pairs}

    watch = WatchProcess(root, index_path, tmp_path / "watch.log", "--reconcile-every", "0")
    reader_out, stop = tmp_path / "reader.json", tmp_path / "stop-reader"
    (tmp_path / "reader.py").write_text(READER)
    reader = subprocess.Popen(
        [sys.executable, str(tmp_path / "reader.py"), str(root), str(index_path), str(stop), str(reader_out)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    index = Index(root, path=index_path)
    lock_errors: list[str] = []  # this process polls the index too: a reader like any other

    def indexed() -> int:
        while True:
            try:
                return index.sql("SELECT count(*) FROM generations")[1][0][0]
            except IndexBusyError as exc:
                lock_errors.append(str(exc))

    try:
        watch.wait_watching()
        assert watcher_running(index)
        began = time.monotonic()
        land(pairs, tmp_path / "staging" / "tiny.wav")
        landed = time.monotonic() - began
        deadline = time.monotonic() + 240
        while indexed() < BURST and watch.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        took = time.monotonic() - began
        stop.touch()
        reader_err = reader.communicate(timeout=SAFETY)[1]
        code = watch.stop(signal.SIGTERM)
    finally:
        stop.touch()
        watch.ensure_dead()
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    log = watch.text()
    assert code == 0, log
    assert reader.returncode == 0, reader_err

    with index.reading() as con:
        ids = [row[0] for row in con.execute("SELECT id FROM generation_rows").fetchall()]
        kinds = dict(con.execute("SELECT kind, count(*) FROM files GROUP BY kind").fetchall())
        missing = con.execute("SELECT count(*) FROM generations WHERE NOT audio_present").fetchone()[0]
    assert len(ids) == len(set(ids)), "a generation was indexed twice"
    assert set(ids) == expected, f"{len(expected - set(ids))} of {BURST} generations never indexed"
    assert kinds == {"generation": BURST, "audio": BURST}
    assert missing == 0
    assert index.unreadable() == []
    assert index.stats()["total_generations"] == BURST
    assert index.list(Filters(search="burst 04321"))["total"] == 1

    overflowed = "overflowed" in log
    if overflowed:  # watchdog said so: the watcher must have answered with a full reconcile
        assert "reconciling the whole library: the kernel's event queue overflowed" in log, log

    readers = json.loads(reader_out.read_text())
    worst = max(readers["worst"].values())
    print(
        f"\n10,000-file burst: landed in {landed:.1f} s, all indexed {took:.1f} s after the first "
        f"landed; inotify overflow: {overflowed}; reader runs {readers['runs']}; worst wait of a "
        f"person's query {worst:.2f} s ({', '.join(f'{k} {v:.2f} s' for k, v in readers['worst'].items())}); "
        f"lock errors: {len(lock_errors) + len(readers['errors'])}"
    )
    assert readers["errors"] == [], readers["errors"]
    assert lock_errors == [], lock_errors
    assert all(n >= 2 for n in readers["runs"].values()), readers
    assert worst < 10.0, f"a read waited {worst:.1f} s"  # a safety bound, not a speed target


# -- debounce, ignored files, arrival order, bad files ---------------------------------------


@pytest.fixture
def replicas(tmp_path):
    """A source replica recorded through the hooks, and a watched replica of the same library
    that files reach only the way a sync tool brings them."""
    source, pm = source_library(tmp_path)
    target = replica_of(source, tmp_path / "target")
    index = Index(target, path=tmp_path / "index" / "index.duckdb")
    return source, pm, target, index


def test_ten_events_on_one_sidecar_make_one_upsert(replicas, tmp_path):
    source, pm, target, index = replicas
    gid = record(pm, text="draft 0").id
    sidecar, audio = deliver(source, target, gid)
    base = schema.read_generation(source / sidecar)
    staging = tmp_path / "revisions"
    staging.mkdir()
    revisions = []
    for n in range(1, 11):  # ten rewrites, prepared first so that they land within moments
        path = staging / f"{n}.parquet"
        later = base["updated_at"] + timedelta(seconds=n)
        schema.write_generation(path, {**base, "text": f"draft {n}", "updated_at": later})
        revisions.append(path)

    with batch_log() as log, Watcher(index, debounce=1.0, reconcile_every=None) as watcher:
        before = watcher.batches
        for path in revisions:  # ten temp-then-rename writes of one sidecar, as fast as they go
            temp = target / Path(sidecar).with_name(f".{Path(sidecar).name}.tmp")
            shutil.copyfile(path, temp)
            os.replace(temp, target / sidecar)
        eventually(lambda: indexed(index, gid)["text"] == "draft 10", "the last revision", watcher)
        batches = watcher.batches - before
    assert batches == 1, log.messages
    # one batch (the sidecar, and perhaps its folder, whose listing changed), one upsert
    assert [b[1:] for b in log.batches] == [(0, 1, 0, 0)], log.messages
    assert index.list()["total"] == 1
    assert_same_as_rebuild(index, target, tmp_path)


def test_files_that_sync_tools_and_editors_leave_are_never_indexed(replicas, tmp_path):
    source, pm, target, index = replicas
    keep = record(pm, text="a real generation")
    stray = record(pm, text="a stray copy under a name nobody indexes")
    sentinel = record(pm, text="the sentinel")
    sidecar, audio = deliver(source, target, keep.id)
    stray_sidecar, stray_audio = files_of(source, stray.id)
    valid = (source / stray_sidecar).read_bytes()  # a perfectly readable sidecar...
    wav = (source / stray_audio[0]).read_bytes()
    day = (target / stray_sidecar).parent
    name = Path(stray_sidecar).name

    with batch_log() as log, Watcher(index, debounce=0.02, reconcile_every=None) as watcher:
        eventually(lambda: index.list()["total"] == 1, "the start's reconcile", watcher)
        # ...under every name that sync tools, editors and tts-history itself use for files
        # that are not (yet) part of the library
        leftovers = {
            day / f".syncthing.{name}.tmp": valid,
            day / f"~syncthing~{name}.tmp": valid,
            day / f".{name}.3f2a9c1b7d4e.tmp": valid,  # tts-history's own temp file
            day / f".{name}.0a1b2c3d4e5f.tmp": b"PAR1 half-written",
            day / f"{name}.tmp": valid,
            day / f"{name}~": valid,  # an editor's backup
            day / f".{name}.swp": b"vim swap",
            day / f".#{name}": b"emacs lock",
            day / f".{name}": valid,  # hidden
            day / ".DS_Store": b"\0\0\0\1Bud1",
            day / f".syncthing.{Path(stray_audio[0]).name}.tmp": wav[:100],
            target / ".stfolder" / "syncthing-folder-1a2b3c.txt": b"",
            target / ".stversions" / stray_sidecar.replace(".parquet", "~20240101-120000.parquet"): valid,
            target / "generations" / ".stversions" / name: valid,
            day / ".stversions" / name: valid,
            target / ".dropbox.cache" / "2024-01-01" / name: valid,
            day / ".dropbox.cache" / name: valid,
            target / "generations" / ".dropbox" / name: b"not even parquet",
            target / "profiles" / f".syncthing.p1.parquet.tmp": b"junk",
            target / "profiles" / "~syncthing~p1.parquet.tmp": b"junk",
        }
        for path, data in leftovers.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (target / ".stfolder").mkdir(exist_ok=True)
        # renamed within the ignored names, as sync tools do while they work
        os.replace(day / f".{name}.3f2a9c1b7d4e.tmp", day / f".{name}.3f2a9c1b7d4f.tmp")
        # then a real arrival: once it is indexed, every event before it has been handled
        sidecar, audio = files_of(source, sentinel.id)
        for relative in audio + [sidecar]:
            arrive(source, target, relative)
        eventually(lambda: index.list()["total"] == 2, "the sentinel", watcher)

        assert {i["id"] for i in index.list()["items"]} == {keep.id, sentinel.id}
        assert index.unreadable() == []
        assert index.conflicts() == []
        with index.reading() as con:
            paths = [row[0] for row in con.execute("SELECT path FROM files").fetchall()]
        assert all(not part.startswith((".", "~")) for p in paths for part in p.split("/")), paths
        assert not any(p.endswith((".tmp", "~")) for p in paths), paths
        assert not any("skipped" in m or "failed" in m for m in log.messages), log.messages

        # the name was all that kept it out: a sync tool's temp file renamed into place counts
        os.replace(day / f".syncthing.{Path(stray_audio[0]).name}.tmp", target / stray_audio[0])
        (target / stray_audio[0]).write_bytes(wav)
        os.replace(day / f".syncthing.{name}.tmp", target / stray_sidecar)
        eventually(lambda: index.list()["total"] == 3, "the renamed temp file", watcher)
        assert indexed(index, stray.id)["audio_present"] is True
    assert_same_as_rebuild(index, target, tmp_path)


def test_stray_files_of_file_managers_are_not_counted_as_audio(replicas, tmp_path):
    """Explorer and Finder leave desktop.ini / Thumbs.db (not hidden) in folders; the stats
    must count only the audio and sidecars of the library."""
    source, pm, target, index = replicas
    gid = record(pm, text="one").id
    sidecar, audio = deliver(source, target, gid)
    day = (target / sidecar).parent
    (day / "Thumbs.db").write_bytes(b"x" * 5000)
    (day / "desktop.ini").write_bytes(b"[.ShellClassInfo]\r\n" * 10)
    index.sync()
    stats = index.stats()
    assert stats["audio_bytes"] == sum((target / a).stat().st_size for a in audio)


def test_arrival_in_any_order_shows_missing_audio_and_heals(replicas, tmp_path):
    """Sidecars before their audio (and before a new version's audio), audio before its
    sidecar, an audio file that is still being copied, a deletion of the audio long before the
    sidecar's: the generation is listed all along (audio missing) and heals when the file lands
    whole; nothing is dropped or duplicated."""
    source, pm, target, index = replicas
    hook = pm.hook
    first = record(pm, text="sidecar first", seconds=0.3)
    hook.tts_history_version_added(
        generation_id=first.id,
        version=Version(id="louder", label="louder", effects_chain=[Effect("gain", params={"db": 6})]),
        audio=Audio.from_samples(tone(0.3, freq=330.0), RATE),
    )
    second = record(pm, text="audio first", seconds=0.2)
    sidecar1, (original1, louder1) = files_of(source, first.id)
    sidecar2, audio2 = files_of(source, second.id)

    def state(gid: str) -> tuple:
        item = indexed(index, gid)
        return (item["audio_present"], *[v["audio_present"] for v in item["versions"]])

    def total() -> int:
        return index.list()["total"]

    def recorded_size(relative: str) -> int | None:
        with index.reading() as con:
            row = con.execute("SELECT size FROM files WHERE path = ?", [relative]).fetchone()
        return row and row[0]

    with Watcher(index, debounce=0.02, reconcile_every=None) as watcher:
        # 1. a sidecar before any of its audio: listed, with its audio missing
        arrive(source, target, sidecar1)
        eventually(lambda: total() == 1, "the sidecar", watcher)
        assert state(first.id) == (False, False, False)
        assert index.stats()["total_generations"] == 1

        # 2. the processed version's audio first: only that version heals
        arrive(source, target, louder1)
        eventually(lambda: state(first.id) == (False, False, True), "the version's audio", watcher)

        # 3. the original, still being copied (short): still missing...
        size = (source / original1).stat().st_size
        arrive(source, target, original1, truncate=size // 3)
        eventually(lambda: recorded_size(original1) == size // 3, "the partial file", watcher)
        assert state(first.id) == (False, False, True)
        # ...until it lands whole
        arrive(source, target, original1)
        eventually(lambda: state(first.id) == (True, True, True), "the whole original", watcher)

        # 4. audio before its sidecar: not a generation on its own, present once the sidecar lands
        for relative in audio2:
            arrive(source, target, relative)
        eventually(lambda: recorded_size(audio2[0]) is not None, "the audio", watcher)
        assert total() == 1
        arrive(source, target, sidecar2)
        eventually(lambda: total() == 2, "the second sidecar", watcher)
        assert state(second.id) == (True, True)

        # 5. a new active version: its sidecar arrives before its audio
        hook.tts_history_version_added(
            generation_id=second.id,
            version=Version(id="slow", label="slow", is_default=True),
            audio=Audio.from_samples(tone(0.5, freq=220.0), RATE),
        )
        sidecar2, audio2 = files_of(source, second.id)
        arrive(source, target, sidecar2)
        eventually(lambda: (indexed(index, second.id) or {}).get("active_version_id") == "slow", "the new sidecar", watcher)
        assert state(second.id) == (False, True, False)
        arrive(source, target, audio2[1])
        eventually(lambda: state(second.id) == (True, True, True), "the new version's audio", watcher)

        # 6. the audio's deletion arrives long before the sidecar's
        hook.tts_history_generation_deleted(generation_id=first.id)
        for relative in (original1, louder1):
            (target / relative).unlink()
        eventually(lambda: state(first.id) == (False, False, False), "the audio deletions", watcher)
        assert total() == 2
        (target / sidecar1).unlink()
        eventually(lambda: total() == 1, "the sidecar deletion", watcher)
        assert [i["id"] for i in index.list()["items"]] == [second.id]
        assert index.stats()["total_generations"] == 1
    assert_same_as_rebuild(index, target, tmp_path)


def test_a_corrupt_sidecar_is_reported_skipped_and_retried_and_the_watcher_lives_on(replicas, tmp_path):
    source, pm, target, index = replicas
    good = [record(pm, text=f"good {i}") for i in range(3)]
    sidecars = {}
    for generation in good:
        sidecar, audio = files_of(source, generation.id)
        sidecars[generation.id] = sidecar
        for relative in audio:
            arrive(source, target, relative)
    day = (target / sidecars[good[0].id]).parent
    folder = day.relative_to(target).as_posix()
    other = schema.read_generation(source / sidecars[good[1].id])
    future = pa.Table.from_pylist(
        [{**other, "id": "4-future", "schema_version": 99}], schema=schema.GENERATION_SCHEMA
    )
    truncated = (source / sidecars[good[2].id]).read_bytes()
    bad = {
        "0-garbage": b"this is not parquet at all",
        "1-empty": b"",
        "3-wrong-id": (source / sidecars[good[0].id]).read_bytes(),  # a sidecar of another id
    }

    with batch_log() as log, Watcher(index, debounce=0.02, reconcile_every=None) as watcher:
        for name, data in bad.items():
            (day / f"{name}.parquet").write_bytes(data)
        pq.write_table(future, day / "4-future.parquet")
        # a sync tool that writes in place (rsync --inplace) stopped half way
        (target / sidecars[good[2].id]).parent.mkdir(parents=True, exist_ok=True)
        (target / sidecars[good[2].id]).write_bytes(truncated[: len(truncated) // 2])
        arrive(source, target, sidecars[good[0].id])
        eventually(
            lambda: len(index.unreadable()) == 5 and index.list()["total"] == 1, "the bad files", watcher
        )
        problems = {p["path"]: p["reason"] for p in index.unreadable()}
        assert set(problems) == {f"{folder}/{name}.parquet" for name in [*bad, "4-future"]} | {
            sidecars[good[2].id]
        }
        assert "does not match the file name" in problems[f"{folder}/3-wrong-id.parquet"]
        assert "newer" in problems[f"{folder}/4-future.parquet"]
        assert all(reason for reason in problems.values())
        for path, reason in problems.items():  # each reported with its path and its reason
            assert any(path in m and reason in m for m in log.messages), (path, log.messages)

        # the watcher lives on: more files, good and bad, keep coming
        arrive(source, target, sidecars[good[1].id])
        (day / "5-garbage.parquet").write_bytes(b"PAR1 nope")
        eventually(
            lambda: index.list()["total"] == 2 and len(index.unreadable()) == 6, "more files", watcher
        )

        # retried when it changes: deleted, completed, repaired
        (day / "0-garbage.parquet").unlink()
        arrive(source, target, sidecars[good[2].id])
        schema.write_generation(day / "1-empty.parquet", {**other, "id": "1-empty"})
        eventually(lambda: index.list()["total"] == 4, "the repaired files", watcher)
        eventually(
            lambda: {Path(p["path"]).name for p in index.unreadable()}
            == {"3-wrong-id.parquet", "4-future.parquet", "5-garbage.parquet"},
            "the reports to follow the files",
            watcher,
        )
        assert index.get("1-empty")["text"] == "good 1"

    result = cli("--library", str(target), "--index", str(index.path), "info", "--json")
    assert result.returncode == 0, result.stderr
    assert {Path(p["path"]).name for p in json.loads(result.stdout)["unreadable"]} == {
        "3-wrong-id.parquet", "4-future.parquet", "5-garbage.parquet"
    }
    assert_same_as_rebuild(index, target, tmp_path)


def same_size_rewrite(source: Path, sidecar: str) -> None:
    """On the other machine, the generation is edited (a corrected text of the same length);
    the sidecar is rewritten to exactly its old size."""
    path = source / sidecar
    before = path.stat().st_size
    record_ = schema.read_generation(path)
    text = record_["text"][:-1] + ("B" if record_["text"][-1] != "B" else "C")
    later = record_["updated_at"] + timedelta(seconds=1)
    schema.write_generation(path, {**record_, "text": text, "updated_at": later})
    if path.stat().st_size != before:  # the test needs a rewrite of the very same size
        raise RuntimeError(f"the rewrite changed the size: {before} -> {path.stat().st_size}")


def keep_mtime(path: Path, mtime_ns: int) -> None:
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_a_rewrite_of_the_same_size_with_its_mtime_kept_is_read_again(replicas, tmp_path):
    """Sync tools keep (or reset) mtimes, and an edit can leave a sidecar the very same size:
    the event says where to look, and the watcher must not then trust size and mtime."""
    source, pm, target, index = replicas
    gid = record(pm, text="same size A").id
    marker = record(pm, text="arrives after the rewrite").id
    sidecar, audio = deliver(source, target, gid)
    hour_ago = time.time_ns() - 3600 * 10**9
    keep_mtime(target / sidecar, hour_ago)

    with Watcher(index, debounce=0.02, reconcile_every=None) as watcher:
        eventually(lambda: index.list()["total"] == 1, "the start's reconcile", watcher)
        same_size_rewrite(source, sidecar)
        temp = (target / sidecar).with_name(f".syncthing.{Path(sidecar).name}.tmp")
        shutil.copyfile(source / sidecar, temp)
        keep_mtime(temp, hour_ago)  # the mtime the file had, kept by the sync tool
        os.replace(temp, target / sidecar)
        marker_sidecar, marker_audio = files_of(source, marker)
        for relative in marker_audio + [marker_sidecar]:
            arrive(source, target, relative)  # a later arrival: once indexed, so is every earlier event
        eventually(lambda: index.list()["total"] == 2, "the later arrival", watcher)
        assert indexed(index, gid)["text"] == "same size B"


def test_the_next_start_sees_a_same_size_rewrite_whose_mtime_was_kept(replicas, tmp_path):
    source, pm, target, index = replicas
    gid = record(pm, text="while nobody watched A").id
    sidecar, audio = deliver(source, target, gid)
    hour_ago = time.time_ns() - 3600 * 10**9
    keep_mtime(target / sidecar, hour_ago)
    with Watcher(index, reconcile_every=None):
        assert index.list()["total"] == 1
    same_size_rewrite(source, sidecar)
    arrive(source, target, sidecar)
    keep_mtime(target / sidecar, hour_ago)
    with Watcher(index, reconcile_every=None):  # start() reconciles before it returns
        assert indexed(index, gid)["text"] == "while nobody watched B"


def test_a_change_no_event_reports_is_found_by_the_periodic_reconcile(replicas, tmp_path):
    """Network drives send no events and inotify loses some. A file changed through a hard link
    outside the library's folders really sends none: the periodic reconcile finds it."""
    source, pm, target, index = replicas
    gid = record(pm, text="changed behind the watcher's back").id
    sidecar, audio = files_of(source, gid)
    outside = tmp_path / "outside"
    outside.mkdir()
    links = {}
    for relative in audio + [sidecar]:
        links[relative] = outside / Path(relative).name
        shutil.copyfile(source / relative, links[relative])
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        os.link(links[relative], target / relative)

    with Watcher(index, debounce=0.02, reconcile_every=0.5) as watcher:
        eventually(lambda: index.list()["total"] == 1, "the start's reconcile", watcher)
        assert indexed(index, gid)["audio_present"] is True
        pm.hook.tts_history_favorite_set(generation_id=gid, is_favorited=True)
        reconciles = watcher.reconciles
        for relative, data in (
            (sidecar, (source / sidecar).read_bytes()),
            (audio[0], (source / audio[0]).read_bytes()[:100]),  # and the audio cut short
        ):
            with open(links[relative], "r+b") as f:  # same inode: no event in the library
                f.truncate(0)
                f.write(data)
        eventually(
            lambda: indexed(index, gid)["is_favorited"] and indexed(index, gid)["audio_present"] is False,
            "the periodic reconcile",
            watcher,
        )
        assert watcher.reconciles > reconciles
    assert_same_as_rebuild(index, target, tmp_path)


def test_polling_follows_changes_where_no_events_come(replicas, tmp_path):
    """``--polling`` (network drives): additions, rewrites and deletions are all followed."""
    source, pm, target, index = replicas
    generations = [record(pm, text=f"polled {i}") for i in range(3)]
    with Watcher(index, polling=True, poll_interval=0.2, debounce=0.02, reconcile_every=None) as watcher:
        for generation in generations:
            sidecar, audio = files_of(source, generation.id)
            for relative in audio + [sidecar]:
                arrive(source, target, relative)
        eventually(lambda: index.list()["total"] == 3, "the additions", watcher)
        pm.hook.tts_history_favorite_set(generation_id=generations[0].id, is_favorited=True)
        arrive(source, target, files_of(source, generations[0].id)[0])
        sidecar, audio = files_of(source, generations[1].id)
        (target / sidecar).unlink()
        for relative in audio:
            (target / relative).unlink()
        eventually(
            lambda: index.list()["total"] == 2 and index.list(Filters(favorites=True))["total"] == 1,
            "the rewrite and the deletion",
            watcher,
        )
    assert_same_as_rebuild(index, target, tmp_path)


def test_a_folder_moved_away_and_back_is_followed(replicas, tmp_path):
    """Sync tools and people move whole folders: into a hidden versions folder (gone), back
    (here again), and to another name (the same generations, once each, under the new path)."""
    source, pm, target, index = replicas
    generations = [record(pm, text=f"in a folder {i}") for i in range(3)]
    for generation in generations:
        sidecar, audio = files_of(source, generation.id)
        for relative in audio + [sidecar]:
            arrive(source, target, relative)
    day = (target / files_of(source, generations[0].id)[0]).parent
    away = target / ".stversions" / "day"
    away.parent.mkdir()
    with Watcher(index, debounce=0.02, reconcile_every=None) as watcher:
        eventually(lambda: index.list()["total"] == 3, "the start's reconcile", watcher)
        os.rename(day, away)
        eventually(lambda: index.list()["total"] == 0, "the folder moved away", watcher)
        os.rename(away, day)
        eventually(lambda: index.list()["total"] == 3, "the folder moved back", watcher)
        elsewhere = day.with_name("31" if day.name != "31" else "30")
        os.rename(day, elsewhere)  # (its sidecars still name their audio at the old place)
        eventually(
            lambda: {(target / indexed(index, g.id)["sidecar_path"]).parent for g in generations} == {elsewhere},
            "the folder renamed",
            watcher,
        )
        assert index.list()["total"] == 3
    assert_same_as_rebuild(index, target, tmp_path)


def test_a_library_folder_replaced_while_watched_is_watched_anew(library, pm, tmp_path, caplog):
    """A backup restored over the library (the folder moved away, a copy put in its place):
    the watcher follows the new folder, not the old one, and while there is none it stops its
    heartbeat, so readers sync for themselves."""
    root = pm.get_plugin("tts_history.history").library.root
    index = Index(root, path=tmp_path / "index" / "index.duckdb")
    first = record(pm, text="before the restore")
    backup = tmp_path / "backup"
    with caplog.at_level(logging.INFO, logger="tts_history.watch"):
        with Watcher(index, debounce=0.02, reconcile_every=None) as watcher:
            eventually(lambda: index.list()["total"] == 1, "the start's reconcile", watcher)
            os.rename(root, backup)
            eventually(lambda: not watcher_running(index), "the heartbeat to stop")
            assert "is gone" in caplog.text
            shutil.copytree(backup, root)
            eventually(lambda: watcher_running(index), "the heartbeat again")
            later = record(pm, text="after the restore")  # into the restored folder
            eventually(lambda: index.list()["total"] == 2, "the new folder's generation", watcher)
            record(get_plugin_manager(backup), text="into the moved-away copy")
            time.sleep(0.5)
            watcher.wait_idle(SAFETY)
            assert {i["id"] for i in index.list()["items"]} == {first.id, later.id}
    assert "was replaced: watching the new one" in caplog.text
    assert_same_as_rebuild(index, root, tmp_path)


def test_readers_trust_only_a_watcher_that_beats_and_notices_changes_soon(library, pm, tmp_path):
    root = pm.get_plugin("tts_history.history").library.root
    index_path = tmp_path / "index" / "index.duckdb"
    index = Index(root, path=index_path)
    slow = WatchProcess(root, index_path, tmp_path / "slow.log", "--polling", "--poll-interval", "30")
    try:
        slow.wait_watching()
        assert not watcher_running(index)  # it may take 30 s to see a change: readers sync
        generation = record(pm, text="seen at once")
        result = cli("--library", str(root), "--index", str(index_path), "show", generation.id)
        assert result.returncode == 0 and "seen at once" in result.stdout
    finally:
        slow.stop()
    watch = WatchProcess(root, index_path, tmp_path / "watch.log")
    try:
        watch.wait_watching()
        eventually(lambda: watcher_running(index), "the heartbeat")
        watch.proc.send_signal(signal.SIGSTOP)  # frozen: no batch, no heartbeat
        eventually(lambda: not watcher_running(index), "a frozen watcher to lose trust")
        generation = record(pm, text="while it is frozen")
        result = cli("--library", str(root), "--index", str(index_path), "show", generation.id)
        assert result.returncode == 0 and "while it is frozen" in result.stdout
        watch.proc.send_signal(signal.SIGCONT)
        eventually(lambda: watcher_running(index), "the heartbeat after it thaws")
    finally:
        watch.proc.send_signal(signal.SIGCONT)
        watch.stop()


# -- a host runs the watcher in its own process ----------------------------------------------


def test_a_host_runs_the_watcher_in_its_own_process(library, pm, tmp_path):
    """``history.index.watch()`` in the host: it returns at once (after reconciling), the host
    records through the hooks and queries from its own threads while batches are applied, and
    reads skip their own sync while the watcher keeps the index current."""
    root = pm.get_plugin("tts_history.history").library.root
    history = History(root, index_path=tmp_path / "index" / "index.duckdb", plugin_manager=pm)
    before = record(pm, text="recorded before the watcher")
    errors: list[BaseException] = []
    stop = threading.Event()

    def query() -> None:
        while not stop.is_set():
            try:
                history.list(limit=5)
                history.list(search="take")
                history.stats()
                history.sql("SELECT count(*) FROM versions")
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

    watcher = history.index.watch(debounce=0.02, reconcile_every=None)
    try:
        assert watcher_running(history.index)
        assert [i["id"] for i in history.list()["items"]] == [before.id]
        threads = [threading.Thread(target=query) for _ in range(3)]
        for thread in threads:
            thread.start()
        ids = [record(pm, text=f"take {i}").id for i in range(25)]
        pm.hook.tts_history_favorite_set(generation_id=ids[0], is_favorited=True)
        pm.hook.tts_history_version_added(
            generation_id=ids[1],
            version=Version(id="louder", label="louder", is_default=True),
            audio=Audio.from_samples(tone(0.4), RATE),
        )
        pm.hook.tts_history_generation_deleted(generation_id=ids[2])
        eventually(
            lambda: history.list(search="take")["total"] == 24
            and history.list(favorites=True)["total"] == 1
            and history.get(ids[1])["active_version_id"] == "louder",
            "the host's changes",
            watcher,
        )
        stop.set()
        for thread in threads:
            thread.join(SAFETY)
    finally:
        stop.set()
        watcher.stop()
    assert not errors, errors
    assert not watcher_running(history.index)
    assert not (history.index.path.parent / HEARTBEAT).exists()
    assert_same_as_rebuild(history.index, root, tmp_path)


# -- signals: SIGINT and SIGTERM end it cleanly; kill -9 at any moment is survived ------------


@pytest.mark.parametrize(
    "sig, options",
    [(signal.SIGTERM, ()), (signal.SIGINT, ("--polling", "--poll-interval", "0.2"))],
    ids=["SIGTERM", "SIGINT-polling"],
)
def test_a_signal_finishes_the_batch_checkpoints_and_exits_0(sig, options, tmp_path):
    library = open_library(tmp_path / "library", create=True)
    root, index_path = library.root, tmp_path / "index" / "index.duckdb"
    pairs = stage(library, tmp_path / "staging", 600, days=3)
    watch = WatchProcess(root, index_path, tmp_path / "watch.log", "--debounce", "0.02", *options)
    index = Index(root, path=index_path)
    try:
        watch.wait_watching()
        assert watcher_running(index)
        land(pairs[:300], tmp_path / "staging" / "tiny.wav")
        eventually(lambda: BatchLog.PATTERN.search(watch.text()), "a first batch")
        land(pairs[300:], tmp_path / "staging" / "tiny.wav")
        code = watch.stop(sig)  # while the rest is being applied, or about to be
    finally:
        watch.ensure_dead()
    log = watch.text()
    assert code == 0, log
    assert "Traceback" not in log and "stopped after" in log, log
    assert not (index_path.parent / HEARTBEAT).exists()
    assert not watcher_running(index)
    wal = Path(f"{index_path}.wal")
    assert not wal.exists() or wal.stat().st_size == 0, "the index was not checkpointed"

    # every batch it reported is in the index, whole: nothing was cut half way
    reported = sum(int(m.group(2)) for m in BatchLog.PATTERN.finditer(log))
    count = index.sql("SELECT count(*) FROM generations")[1][0][0]
    assert count == reported >= 300
    with index.reading() as con:
        torn = con.execute(
            "SELECT count(*) FROM generations g WHERE NOT audio_present "
            "OR NOT EXISTS (SELECT 1 FROM versions v WHERE v.generation_id = g.id)"
        ).fetchone()[0]
    assert torn == 0
    # and what it had not seen yet, the next sync finds: then it is exactly a rebuild
    index.sync()
    assert index.stats()["total_generations"] == 600
    assert_same_as_rebuild(index, root, tmp_path)


def test_kill_9_at_any_moment_then_the_next_start_converges_to_a_rebuild(tmp_path):
    """Real processes, killed with SIGKILL at random moments (while starting, while reconciling,
    in the middle of a burst, while a host records), while the library keeps changing. Every
    next start must converge to exactly the index a full rebuild gives."""
    rng = random.Random(20260418)
    root = tmp_path / "library"
    pm = get_plugin_manager(root, entrypoints=False)
    library = pm.get_plugin("tts_history.history").library
    root = library.root
    index_path = tmp_path / "index" / "index.duckdb"
    rounds = 5
    pairs = stage(library, tmp_path / "staging", rounds * 120, days=4)
    wav = tmp_path / "staging" / "tiny.wav"
    live: list[str] = []

    def change(chunk: list[tuple[Path, Path]]) -> None:
        """What other machines and the host do meanwhile: a burst lands, the host records,
        favorites, adds a version, deletes."""
        land(chunk, wav)
        live.extend(final.name.removesuffix(".parquet") for _, final in chunk)
        for i in range(3):
            live.append(record(pm, text=f"hosted {len(live)}").id)
        victim = rng.choice(live)
        pm.hook.tts_history_favorite_set(generation_id=victim, is_favorited=True)
        pm.hook.tts_history_version_added(
            generation_id=rng.choice(live),
            version=Version(id=uuid.uuid4().hex[:8], label="processed", is_default=rng.random() < 0.5),
            audio=Audio.from_samples(tone(0.1), RATE),
        )
        gone = rng.choice(live)
        pm.hook.tts_history_generation_deleted(generation_id=gone)
        live.remove(gone)

    moments = []
    failures: list[BaseException] = []

    def changing(chunk: list[tuple[Path, Path]]) -> None:
        try:
            change(chunk)
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    for n in range(rounds):
        chunk = pairs[n * 120 : (n + 1) * 120]
        watch = WatchProcess(root, index_path, tmp_path / f"watch-{n}.log", "--debounce", "0.02")
        try:
            if n % 2 == 1:  # killed while it starts: importing, opening, reconciling
                change(chunk[:60])
                time.sleep(rng.uniform(0.0, 1.5))
                moments.append("starting" if "Watching" not in watch.text() else "watching")
                watch.kill()
                change(chunk[60:])
            else:
                watch.wait_watching()
                # the start converged: exactly a rebuild, before anything else happens
                assert_same_as_rebuild(Index(root, path=index_path), root, tmp_path)
                worker = threading.Thread(target=changing, args=(chunk,))
                worker.start()
                time.sleep(rng.uniform(0.0, 1.5))
                moments.append("after a batch" if BatchLog.PATTERN.search(watch.text()) else "in the burst")
                watch.kill()
                worker.join(SAFETY)
        finally:
            watch.ensure_dead()
        assert not failures, failures
        assert watch.proc.returncode == -signal.SIGKILL, watch.text()

    watch = WatchProcess(root, index_path, tmp_path / "watch-last.log")
    try:
        watch.wait_watching()
        index = Index(root, path=index_path)
        assert_same_as_rebuild(index, root, tmp_path)
        assert {i["id"] for i in index.list(limit=10_000)["items"]} == set(live)
        assert watch.stop(signal.SIGTERM) == 0, watch.text()
    finally:
        watch.ensure_dead()
    print(f"\nkill -9 moments: {moments}")

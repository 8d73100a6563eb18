"""Setting up the workloads (not measured): a library folder of N generations with real
sidecars, and the baseline database holding the same data. Both are cached in the work folder
and reused by later runs.

Going through the plugin costs a few ms per generation, far too slow for a million, so the
library is written by a bulk writer in several processes: sidecars through the product's own
``library.schema.write_generation`` (so in the exact format, whatever it becomes), without the
per-file fsync a live write pays, and audio as hard links to a few shared
WAVs (one per whole second of duration), so that every ``audio_path`` exists with the size the
sidecar records. The baseline gets the same records by ``executemany`` in one transaction.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tts_history.library import atomic, open_library, schema

from . import data
from .baseline import Baseline, row_of

# Bump when the generated data or layout changes: cached libraries of another version are rebuilt.
DATA_VERSION = "1"
LINKS_PER_SOURCE = 20_000  # ext4 allows 65,000 hard links to one file


def library_dir(workdir: Path, n: int) -> Path:
    return workdir / f"library-{n}"


def baseline_path(workdir: Path, n: int) -> Path:
    return workdir / f"baseline-{n}.sqlite"


def _ready(path: Path) -> Path:
    return path.with_name(path.name + ".ready.json")


def _is_ready(path: Path, n: int) -> bool:
    try:
        marker = json.loads(_ready(path).read_text())
    except (OSError, ValueError):
        return False
    return (
        marker.get("version") == DATA_VERSION
        and marker.get("format") == format_fingerprint()
        and marker.get("n") == n
        and path.exists()
    )


def _mark_ready(path: Path, n: int, **info: Any) -> None:
    marker = {"version": DATA_VERSION, "format": format_fingerprint(), "n": n, **info}
    _ready(path).write_text(json.dumps(marker))


def audio_sources(workdir: Path, groups: int) -> dict[int, str]:
    """Make the shared WAVs (``groups`` copies of each duration) and return their sha256."""
    shas = {}
    for seconds in range(1, data.MAX_SECONDS + 1):
        content = data.wav_content(seconds)
        shas[seconds] = data.wav_sha256(seconds)
        for group in range(groups):
            path = _source(workdir, group, seconds)
            if not path.exists() or path.stat().st_size != len(content):
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(content)
                os.replace(tmp, path)
    return shas


def _source(workdir: Path, group: int, seconds: int) -> Path:
    return workdir / "audio-sources" / f"g{group}" / f"{seconds}s.wav"


def _groups(n: int) -> int:
    # ~1.1 audio files per generation, spread over MAX_SECONDS durations
    return max(1, math.ceil(1.2 * n / (LINKS_PER_SOURCE * data.MAX_SECONDS / 4)))


def _fast_writes() -> None:
    """In a bulk-writer process: the product's own sidecar writer, minus the fsyncs a live
    write pays (setup is not measured, and a crash only means generating again): the switch
    TTS_HISTORY_FSYNC=0 sets. Whatever ``library.schema`` writes, byte for byte, is what the
    generated library holds."""
    atomic.FSYNC = False


@functools.lru_cache(maxsize=1)
def format_fingerprint() -> str:
    """A hash of the bytes the product writes for a fixed record: cached libraries written in
    another sidecar format are generated again."""
    record = next(data.records(data.CHUNK, 0, 1, {s: "0" * 64 for s in range(1, data.MAX_SECONDS + 1)}))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.parquet"
        schema.write_generation(path, record)
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _write_range(args: tuple) -> int:
    """Worker: write sidecars and audio links of records [start, stop)."""
    workdir, root, n, start, stop, shas, groups = args
    _fast_writes()
    library = open_library(root)
    made: set[Path] = set()
    written = 0
    for record in data.records(n, start, stop, shas):
        folder = library.day_dir(record["created_at"])
        if folder not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(folder)
        for version in record["versions"]:  # audio first, as the plugin writes it
            group = int(version["id"][:8], 16) % groups
            try:
                os.link(_source(workdir, group, int(version["duration"])), library.absolute(version["audio_path"]))
            except FileExistsError:
                pass
        schema.write_generation(library.sidecar_path(record["id"], record["created_at"]), record)
        written += 1
    return written


def ensure_library(
    workdir: Path, n: int, *, processes: int = 2, log: Callable[[str], None] = print
) -> Path:
    """The library of ``n`` generations in ``workdir``, generated unless cached."""
    root = library_dir(workdir, n)
    with _locked(workdir / f"library-{n}.lock", log):  # another run may be generating it
        return _ensure_library(workdir, root, n, processes, log)


@contextmanager
def _locked(path: Path, log: Callable[[str], None]) -> Iterator[None]:
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"  waiting for another run that is generating {path.stem}")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ensure_library(workdir: Path, root: Path, n: int, processes: int, log: Callable[[str], None]) -> Path:
    if _is_ready(root, n):
        _clean_leftovers(root)
        return root
    if root.exists():
        log(f"  removing {root}: incomplete, or of another data version or sidecar format")
        shutil.rmtree(root)
    _ready(root).unlink(missing_ok=True)
    started = time.perf_counter()
    groups = _groups(n)
    shas = audio_sources(workdir, groups)
    library = open_library(root, create=True)
    for profile in data.profile_records():
        schema.write_profile(library.profile_path(profile["id"]), profile)
    step = max(data.CHUNK, math.ceil(n / (processes * 8) / data.CHUNK) * data.CHUNK)
    ranges = [(workdir, root, n, s, min(n, s + step), shas, groups) for s in range(0, n, step)]
    done = 0
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        for count in pool.imap_unordered(_write_range, ranges):
            done += count
            log(f"  library {n:,}: {done:,} sidecars written ({time.perf_counter() - started:.0f} s)")
    seconds = time.perf_counter() - started
    _mark_ready(root, n, seconds=round(seconds, 1), groups=groups)
    log(f"  library {n:,} ready in {seconds:.0f} s")
    return root


def ensure_baseline(
    workdir: Path, n: int, library_root: Path, *, log: Callable[[str], None] = print
) -> Path:
    """The baseline database holding the same ``n`` generations, loaded unless cached."""
    path = baseline_path(workdir, n)
    with _locked(workdir / f"baseline-{n}.lock", log):
        return _ensure_baseline(path, n, library_root, log)


def _ensure_baseline(path: Path, n: int, library_root: Path, log: Callable[[str], None]) -> Path:
    if _is_ready(path, n) and json.loads(_ready(path).read_text()).get("library") == str(library_root):
        baseline = Baseline(path)
        removed = baseline.delete_measured()  # rows a run that died left behind
        baseline.close()
        if removed:
            log(f"  baseline {n:,}: removed {removed} rows a previous run left behind")
        return path
    path.unlink(missing_ok=True)
    started = time.perf_counter()
    baseline = Baseline(path)
    baseline.create()
    baseline.bulk_load_profiles(data.profile_records())
    shas = {s: data.wav_sha256(s) for s in range(1, data.MAX_SECONDS + 1)}
    count = baseline.bulk_load(row_of(r, library_root) for r in data.records(n, 0, n, shas))
    baseline.close()
    assert count == n, (count, n)
    seconds = time.perf_counter() - started
    _mark_ready(path, n, library=str(library_root), seconds=round(seconds, 1))
    log(f"  baseline {n:,} loaded in {seconds:.0f} s")
    return path


# Day folders the workloads write into (the freshness probe's generations, and today's folder
# of the host-cost runs) lie outside the generated span; a run that died may have left some.
def _clean_leftovers(root: Path) -> None:
    last = data.END.strftime("%Y/%m/%d")
    generations = root / "generations"
    for year in sorted(generations.iterdir()) if generations.exists() else ():
        for month in sorted(year.iterdir()):
            for day in sorted(month.iterdir()):
                if f"{year.name}/{month.name}/{day.name}" > last:
                    shutil.rmtree(day)
            if not any(month.iterdir()):
                month.rmdir()
        if not any(year.iterdir()):
            year.rmdir()

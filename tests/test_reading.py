"""Reading sidecars for the index, in this process and in a helper process beside it."""

from __future__ import annotations

import ctypes
import mmap
import os
import time
from pathlib import Path

import pyarrow as pa
import pytest
from helpers import RATE, tone

from tts_history import Audio, Generation, Profile, get_plugin_manager
from tts_history.index import reading
from tts_history.index.reading import Reader, load
from tts_history.library import open_library


@pytest.fixture
def sidecars(tmp_path):
    """A library of 20 generations and a profile, plus a truncated and a foreign sidecar:
    (root, relative paths, kinds)."""
    library = open_library(tmp_path / "library", create=True)
    pm = get_plugin_manager(library.root, entrypoints=False)
    pm.hook.tts_history_profile_saved(profile=Profile(id="p1", name="Ann"))
    for i in range(20):
        pm.hook.tts_history_generation_completed(
            generation=Generation(id=f"g{i:02}", profile_id="p1", text=f"take {i}, café"),
            audio=Audio.from_samples(tone(0.02), RATE),
        )
    paths = sorted(p.relative_to(library.root).as_posix() for p in library.root.rglob("*.parquet"))
    good = next(p for p in paths if p.startswith("generations/"))
    broken = good.rsplit("/", 1)[0] + "/broken.parquet"
    (library.root / broken).write_bytes((library.root / good).read_bytes()[:-40])
    foreign = good.rsplit("/", 1)[0] + "/other.parquet"
    (library.root / foreign).write_bytes((library.root / good).read_bytes())  # g.. inside
    paths += [broken, foreign]
    kinds = ["profile" if p.startswith("profiles/") else "generation" for p in paths]
    return str(library.root), paths, kinds


def _sorted(tables: dict[str, pa.Table]) -> dict[str, list[dict]]:
    return {kind: sorted(t.to_pylist(), key=lambda r: r["sidecar_path"]) for kind, t in tables.items()}


def test_a_helper_process_reads_what_this_process_reads(sidecars):
    root, paths, kinds = sidecars
    here, errors = load(root, paths, kinds)
    assert sorted(p for p, _ in errors) == sorted(paths[-2:])
    assert "does not match the file name" in dict(errors)[paths[-1]]
    with Reader(root, helper=True) as reader:
        assert reader._process is not None
        for _ in range(2):  # the helper serves batch after batch
            tables, helper_errors = reader.load(paths, kinds)
            assert _sorted(tables) == _sorted(here)
            assert sorted(helper_errors) == sorted(errors)
            assert tables["generation"].schema == here["generation"].schema
        process = reader._process
    assert process.poll() is not None  # ended with the reader


def test_records_turned_into_columns_a_few_at_a_time_read_as_at_once(sidecars, monkeypatch):
    root, paths, kinds = sidecars
    at_once, errors = load(root, paths, kinds)
    monkeypatch.setattr(reading, "_ROWS", 3)  # 20 generations: 7 parts, errors among them
    in_parts, part_errors = load(root, paths, kinds)
    assert _sorted(in_parts) == _sorted(at_once) and part_errors == errors
    assert in_parts["generation"].num_rows == 20 and in_parts["generation"].schema == at_once["generation"].schema


def test_a_helper_that_dies_is_replaced_by_reading_here(sidecars):
    root, paths, kinds = sidecars
    here, errors = load(root, paths, kinds)
    with Reader(root, helper=True) as reader:
        reader._process.kill()
        reader._process.wait()
        tables, helper_errors = reader.load(paths, kinds)
        assert reader._process is None
        assert _sorted(tables) == _sorted(here) and sorted(helper_errors) == sorted(errors)
        tables, _ = reader.load(paths, kinds)  # and it goes on without one
        assert _sorted(tables) == _sorted(here)


def test_sidecars_out_of_the_page_cache_are_asked_for_ahead_of_the_reading(tmp_path):
    paths = []
    for n in range(40):
        path = tmp_path / f"f{n}.bin"
        path.write_bytes(os.urandom(16384))
        with open(path, "rb+") as f:
            os.fsync(f.fileno())  # clean pages, which DONTNEED drops
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        paths.append(path.name)
    if any(_resident(tmp_path / p) for p in paths):
        pytest.skip("this file system keeps the pages whatever it is told")
    assert not reading._cached(str(tmp_path), paths)
    reading._will_need(str(tmp_path), paths + ["missing.bin"])  # a missing file is left to the reading
    deadline = time.monotonic() + 10
    while not all(_resident(tmp_path / p) for p in paths) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(_resident(tmp_path / p) for p in paths)
    assert reading._cached(str(tmp_path), paths)


def _resident(path: Path) -> bool:
    """Whether every page of the file is in the page cache (mincore, which reads nothing)."""
    libc = ctypes.CDLL(None, use_errno=True)
    size = path.stat().st_size
    vec = (ctypes.c_ubyte * -(-size // mmap.PAGESIZE))()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as mapped:
        first = ctypes.c_char.from_buffer(mapped)
        try:
            if libc.mincore(ctypes.c_void_p(ctypes.addressof(first)), ctypes.c_size_t(size), vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
        finally:
            del first  # the mapping cannot close while exported
    return all(v & 1 for v in vec)

"""Lock contention with real processes and threads, on a real DuckDB index.

DuckDB lets one process at a time hold the index read-write, and while it does nobody else can
even read it; there is no busy timeout. The index therefore opens per query or per batch and
retries with backoff when another process holds the lock. These tests check that readers and
writers in different processes (and threads in one process) all get their answers, that the
answers are never stale against what was already written, and that a broken index file is
rebuilt from the folder.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from helpers import cli, record, tone
from tts_history import Audio, Version
from tts_history.index import Filters, Index, IndexBusyError, IndexCorruptError, IndexPathError
from tts_history.index.connection import LINGER, MAX_HOLD, Database, engine, is_damage, someone_waits

SAFETY = 60.0  # seconds: only ever a limit against hanging, never a speed requirement


def library_root(pm) -> Path:
    return pm.get_plugin("tts_history.history").library.root


# -- (a) a writing process against CLI readers in other processes ---------------------------

WRITER = textwrap.dedent(
    r'''
    import json, os, random, sys, time, uuid

    import numpy as np

    from tts_history import Audio, Generation, get_plugin_manager
    from tts_history.index import Index

    library, log_path, stop_path = sys.argv[1], sys.argv[2], sys.argv[3]
    hook = get_plugin_manager(library, entrypoints=False).hook
    index = Index(library)
    rng = random.Random()
    written = 0
    log = open(log_path, "a")


    def note(**entry):
        log.write(json.dumps({"t": time.monotonic(), **entry}) + "\n")
        log.flush()


    def write(n):
        global written
        for _ in range(n):
            gid = uuid.uuid4().hex
            samples = (0.3 * np.sin(np.arange(rng.randint(800, 4000)) / 7)).astype(np.float32)
            hook.tts_history_generation_completed(
                generation=Generation(id=gid, profile_id=rng.choice(["p1", "p2"]), text=f"take {gid}"),
                audio=Audio.from_samples(samples, 8000),
            )
            written += 1
        note(written=written)


    def sync():
        before = written  # every sidecar written so far is in the index once sync returns
        report = index.sync()
        note(synced=before, errors=report.errors)


    write(3)
    sync()
    print("ready", flush=True)
    while not os.path.exists(stop_path):
        write(rng.randint(1, 3))
        sync()
    print(json.dumps({"written": written}), flush=True)
    '''
)

READ_COMMANDS = {
    "list": (["list", "--json", "--limit", "5"], lambda out: out["total"]),
    "stats": (["stats", "--json"], lambda out: out["total_generations"]),
    "search": (["search", "take", "--json", "--limit", "5"], lambda out: out["total"]),
    "sql": (["sql", "select count(*) from generations", "--json"], lambda out: [*out[0].values()][0]),
}


def test_cli_readers_and_a_writer_in_other_processes(library, pm, tmp_path):
    root = library_root(pm)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    log, stop, writer_err = tmp_path / "writer.log", tmp_path / "stop", tmp_path / "writer.err"
    with open(writer_err, "w") as stderr:
        writer = subprocess.Popen(
            [sys.executable, str(script), str(root), str(log), str(stop)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    results: list[dict] = []  # every reader invocation
    failures: list[BaseException] = []
    names = list(READ_COMMANDS)
    wanted = {(name, no_sync) for name in names for no_sync in (False, True)}

    def reader(number: int) -> None:
        # reader 0 syncs before every read, reader 1 never does, reader 2 alternates: auto-sync
        # makes readers write the index too, so the lock is contended both ways
        try:
            turn = 0
            while not stop.exists():
                name = names[(number + turn) % len(names)]
                no_sync = number == 1 or (number == 2 and turn % 2 == 1)
                turn += 1
                options = ["--library", str(root)] + (["--no-sync"] if no_sync else [])
                start = time.monotonic()
                result = cli(*options, *READ_COMMANDS[name][0])
                results.append(
                    {
                        "reader": number,
                        "command": name,
                        "no_sync": no_sync,
                        "start": start,
                        "returncode": result.returncode,
                        "stdout": result.stdout,
                        "stderr": result.stderr,
                    }
                )
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    try:
        assert writer.stdout.readline().strip() == "ready", writer_err.read_text()
        threads = [threading.Thread(target=reader, args=(n,)) for n in range(3)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        # a few seconds, and until every command has run both with and without auto-sync
        while time.monotonic() - began < SAFETY and (
            time.monotonic() - began < 4.0 or not wanted <= {(r["command"], r["no_sync"]) for r in results}
        ):
            if writer.poll() is not None or failures or any(r["returncode"] for r in results):
                break
            time.sleep(0.05)
        stop.touch()
        for thread in threads:
            thread.join(SAFETY)
        out = writer.communicate(timeout=SAFETY)[0]
    finally:
        stop.touch()
        if writer.poll() is None:
            writer.kill()
            writer.wait()

    assert not failures, failures
    assert writer.returncode == 0, writer_err.read_text()
    written = json.loads(out.strip().splitlines()[-1])["written"]
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    syncs = [e for e in entries if "synced" in e]
    assert all(e["errors"] == [] for e in syncs)
    assert len(syncs) > 2

    for r in results:
        where = f"reader {r['reader']} {r['command']} (no_sync={r['no_sync']})"
        assert r["returncode"] == 0, f"{where}: exit {r['returncode']}: {r['stderr']}"
        assert "lock" not in r["stderr"].lower(), f"{where}: {r['stderr']}"
        assert "traceback" not in r["stderr"].lower(), f"{where}: {r['stderr']}"
        r["count"] = READ_COMMANDS[r["command"]][1](json.loads(r["stdout"]))
        # never stale (time.monotonic is one clock for every process on Linux): a reader that
        # syncs sees every sidecar written before it started; one that does not sees at least
        # what the writer's syncs had put in the index by then
        key = "synced" if r["no_sync"] else "written"
        floor = max((e[key] for e in entries if key in e and e["t"] < r["start"]), default=0)
        assert floor <= r["count"] <= written, f"{where}: saw {r['count']}, expected >= {floor}"

    assert {(r["command"], r["no_sync"]) for r in results} == wanted
    for number in range(3):  # only adding: what one reader sees never goes down
        counts = [r["count"] for r in results if r["reader"] == number]
        assert counts == sorted(counts), f"reader {number} saw the count go down: {counts}"

    result = cli("--library", str(root), "stats", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total_generations"] == written
    assert len(list((root / "generations").rglob("*.parquet"))) == written


# -- (b) threads of one process sharing one Index -------------------------------------------


GENERATIONS = 60


def test_threads_query_one_index_while_another_syncs(library, pm):
    root = library_root(pm)
    index = Index(root)
    written: list[str] = []
    synced: list[str] = []  # ids that a finished sync has put in the index
    done = threading.Event()
    errors: list[BaseException] = []
    syncs = [0]
    queries = [0]

    def guarded(work):
        def run():
            try:
                work()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                done.set()

        return run

    @guarded
    def write():
        for n in range(GENERATIONS):
            generation = record(pm, text=f"take {n}", profile_id=f"p{n % 3}")
            if n % 7 == 0:
                pm.hook.tts_history_version_added(
                    generation_id=generation.id,
                    version=Version(id=f"v{n}", label="processed", is_default=True),
                    audio=Audio.from_samples(tone(0.1), 8000),
                )
            if n % 5 == 0:
                pm.hook.tts_history_favorite_set(generation_id=generation.id, is_favorited=True)
            written.append(generation.id)

    @guarded
    def sync():
        while not done.is_set() or len(synced) < len(written):
            before = list(written)
            report = index.sync()
            assert report.errors == []
            synced[:] = before
            syncs[0] += 1

    @guarded
    def query():
        rng = random.Random()
        last_total = 0
        while not done.is_set():
            seen = list(synced)
            listing = index.list(limit=10)
            assert listing["total"] >= max(last_total, len(seen))
            last_total = listing["total"]
            stats = index.stats()
            assert stats["total_generations"] >= len(seen)
            if seen:
                gid = rng.choice(seen)
                item = index.get(gid)
                assert item["id"] == gid and item["versions"]
            queries[0] += 1

    writer = threading.Thread(target=write)
    syncer = threading.Thread(target=sync)
    readers = [threading.Thread(target=query) for _ in range(4)]
    for thread in [writer, syncer, *readers]:
        thread.start()
    writer.join(SAFETY)
    deadline = time.monotonic() + SAFETY  # the syncer must catch up despite the readers
    while not errors and len(synced) < len(written) and time.monotonic() < deadline:
        time.sleep(0.02)
    done.set()
    for thread in [syncer, *readers]:
        thread.join(SAFETY)

    assert not errors, errors
    assert not any(t.is_alive() for t in [writer, syncer, *readers])
    assert len(written) == GENERATIONS and sorted(synced) == sorted(written)
    assert syncs[0] >= 2 and queries[0] >= 4
    assert index.stats()["total_generations"] == GENERATIONS
    assert index.list(limit=10)["total"] == GENERATIONS


def test_a_sync_waits_for_the_readers_of_its_own_process(library, pm):
    """DuckDB cannot upgrade a read-only connection in place: a writer must wait until this
    process's readers are done with it, not close it under them."""
    root = library_root(pm)
    index = Index(root)
    record(pm, text="first")
    index.sync()
    record(pm, text="second")  # a change for the next sync to write
    index.db.forget()  # the sync's connection lingers read-write; the reader must open read-only
    entered, results, errors = threading.Event(), [], []

    def read():
        try:
            with index.reading() as con:
                entered.set()
                for _ in range(25):  # a long read: ~0.5 s on its connection
                    results.append(con.execute("select count(*) from generations").fetchone()[0])
                    time.sleep(0.02)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    assert entered.wait(SAFETY)
    report = index.sync()  # waits for the reader, then writes
    reader.join(SAFETY)
    assert not errors, errors
    assert results == [1] * 25  # the reader's connection stayed whole, and saw one state
    assert report.added == 1 and report.errors == []
    assert index.stats()["total_generations"] == 2


def _assert_left_free(index: Index) -> None:
    """The idle index is detached (no alias left behind) and another process may take it."""
    deadline = time.monotonic() + SAFETY
    while attached() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert attached() == []
    done = subprocess.run(
        [sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1]).close()", str(index.path)],
        capture_output=True, text=True, timeout=SAFETY,
    )
    assert done.returncode == 0, done.stderr


def test_an_idle_index_is_detached_and_its_file_left_free(library, pm):
    """The process attaches the index file to its one DuckDB instance per turn: once idle, the
    file is detached (no alias left behind, however many turns) and another process may take it
    read-write."""
    root = library_root(pm)
    record(pm, text="first")
    index = Index(root)
    for _ in range(5):
        index.sync()
        index.stats()
    _assert_left_free(index)


def test_queries_in_a_row_share_one_closing_timer_and_the_file_is_left_free_after_the_last(library, pm):
    """An idle read-only connection closes LINGER after its last use: queries in a row move that
    moment on, instead of each starting a timer thread of its own."""
    root = library_root(pm)
    record(pm, text="first")
    index = Index(root)
    index.sync()
    timers = set()  # the objects themselves: an id could be reused once one is gone
    started = time.monotonic()
    for _ in range(300):
        index.stats()
        timers.add(index.db._closer)
    elapsed = time.monotonic() - started
    assert None not in timers  # armed after every query
    assert len(timers) <= 2 + 2 * elapsed / LINGER, (len(timers), elapsed)
    _assert_left_free(index)


WAITER = textwrap.dedent(
    r'''
    import sys, time
    from pathlib import Path
    from tts_history.index.connection import _detach, open_with_retry, someone_waits
    path = Path(sys.argv[1])
    assert not someone_waits(path)
    print("started", flush=True)
    started = time.monotonic()
    con, alias = open_with_retry(path, read_only=False, timeout=60)  # read-write: it must wait
    _detach(con, alias)
    print(f"in after {time.monotonic() - started:.3f} s", flush=True)
    '''
)


def test_a_busy_reader_keeps_the_index_until_another_process_waits_for_it(library, pm, tmp_path):
    """Queries without pause keep the file attached (reopening costs the next query its cached
    data) while nobody else wants it, and let go as soon as another process waits to write."""
    root = library_root(pm)
    record(pm, text="first")
    index = Index(root)
    index.sync()
    db = index.db
    aliases = set()
    until = time.monotonic() + 8 * MAX_HOLD
    while time.monotonic() < until:
        index.stats()
        aliases.add(db._alias)
    assert len(aliases) == 1, "the index was reopened while nobody waited for it"

    script = tmp_path / "waiter.py"
    script.write_text(WAITER)
    waiter = subprocess.Popen(
        [sys.executable, str(script), str(index.path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert waiter.stdout.readline().strip() == "started", waiter.stderr.read()
    deadline = time.monotonic() + SAFETY
    while waiter.poll() is None and time.monotonic() < deadline:
        index.stats()  # without pause: the waiter gets in only because this process gives way
        aliases.add(db._alias)
    out, err = waiter.communicate(timeout=SAFETY)
    assert waiter.returncode == 0, err
    assert out.startswith("in after"), out
    assert len(aliases) > 1, "this process never let the waiting one in"
    assert not someone_waits(index.path)  # the waiter's announcement went with it


def test_a_cursor_in_use_when_the_index_is_forgotten_is_not_used_again(library, pm):
    """forget() detaches the file under a query still running (the file is about to be
    replaced); that query's cursor belongs to the old attach and must not serve the next one."""
    record(pm, text="first")
    index = Index(library_root(pm))
    index.sync()
    db = index.db
    with db.read() as con:
        con.execute("SELECT 1").fetchall()
        db.forget()
    with db.read() as con:
        assert con.execute("SELECT count(*) FROM generations").fetchone() == (1,)
    assert index.stats()["total_generations"] == 1


def test_a_result_left_unread_does_not_reach_the_next_user_of_the_cursor(library, pm):
    """A query read with fetchone() leaves its result open; the cursor then goes back to the
    pool, and the next user's register() (every sync does one) must not be refused for it."""
    for n in range(3):
        record(pm, text=f"take {n}")
    index = Index(library_root(pm))
    index.sync()
    db = index.db
    with db.read() as con:
        assert con.execute("SELECT id FROM generations").fetchone() is not None  # 2 rows unread
    with db.read() as con:
        con.register("probe", pa.table({"n": [1]}))
        con.unregister("probe")
    record(pm, text="one more")
    assert index.sync().added == 1  # an incremental sync, not a rebuild after an error
    assert index.stats()["total_generations"] == 4


def attached() -> list[str]:
    con = engine()
    try:
        return [name for (name,) in con.execute(
            "SELECT database_name FROM duckdb_databases() WHERE NOT internal AND database_name <> 'memory'"
        ).fetchall()]
    finally:
        con.close()


# -- (c) the lock of another process ----------------------------------------------------------

HOLDER = textwrap.dedent(
    r'''
    import sys, duckdb
    con = duckdb.connect(sys.argv[1])  # read-write: nobody else may open the file now
    con.execute("select count(*) from generations").fetchall()
    print("locked", flush=True)
    sys.stdin.readline()  # hold it until told to let go
    con.close()
    '''
)


def _holder(tmp_path: Path, index_path: Path) -> subprocess.Popen:
    # this process's connection lingers a moment after its last query; the holder (plain
    # DuckDB, no retry) must find the file free
    Database.for_path(index_path).forget()
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(index_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.strip() == "locked", proc.stderr.read()
    return proc


def _release(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.stdin.write("\n")
        proc.stdin.flush()
    assert proc.wait(timeout=SAFETY) == 0, proc.stderr.read()


def test_a_read_waits_for_another_process_and_a_short_deadline_fails_naming_the_index(
    library, pm, tmp_path
):
    root = library_root(pm)
    for n in range(3):
        record(pm, text=f"take {n}")
    index = Index(root)
    index.sync()
    holder = _holder(tmp_path, index.path)
    try:
        # the lock is really held: DuckDB itself refuses even a read-only open
        with pytest.raises(duckdb.Error, match="(?i)lock"):
            duckdb.connect(str(index.path), read_only=True)

        db = Database.for_path(index.path)
        with pytest.raises(IndexBusyError) as busy:
            with db.read(timeout=0.1):
                pass
        assert str(index.path) in str(busy.value)
        with pytest.raises(IndexBusyError) as busy:
            with db.write(timeout=0.1):
                pass
        assert str(index.path) in str(busy.value)

        answers: list = []
        waiting = threading.Thread(target=lambda: answers.append(Index(root).stats()))
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive() and not answers, "a read got through a lock held elsewhere"
    finally:
        _release(holder)
    waiting.join(SAFETY)
    assert answers and answers[0]["total_generations"] == 3


def test_cli_waits_for_another_process_and_answers(library, pm, tmp_path):
    root = library_root(pm)
    for n in range(4):
        record(pm, text=f"take {n}")
    Index(root).sync()
    index_path = Index(root).path
    holder = _holder(tmp_path, index_path)
    readers = []
    try:
        for options in ([], ["--no-sync"]):  # auto-sync must wait to write, --no-sync to read
            readers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tts_history", "--library", str(root), *options,
                     "list", "--json"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        time.sleep(1.0)  # let them run into the lock
        assert all(r.poll() is None for r in readers), "a reader finished while the lock was held"
    finally:
        _release(holder)
    for reader in readers:
        out, err = reader.communicate(timeout=SAFETY)
        assert reader.returncode == 0, err
        assert "lock" not in err.lower()
        assert json.loads(out)["total"] == 4


# -- (d) a corrupted index is rebuilt from the folder -----------------------------------------


def _answers(index: Index, ids: list[str]) -> dict:
    """What a person or script asks of the index. The sum of durations is compared to the last
    bits elsewhere (test_stats_are_exactly_the_same_after_a_rebuild)."""
    stats = index.stats()
    stats["total_duration_seconds"] = pytest.approx(stats["total_duration_seconds"], rel=1e-12)
    return {
        "list": index.list(limit=100),
        "favorites": index.list(Filters(favorites=True), limit=100),
        "search": index.list(Filters(search="take", profile_id="p1"), limit=100),
        "stats": stats,
        "get": {gid: index.get(gid) for gid in ids},
        "sql": index.sql("select id, profile_id, is_favorited, duration from generations order by id"),
        "versions": index.sql("select generation_id, id, is_default from versions order by 1, 2"),
    }


def _populate(pm) -> list[str]:
    ids = []
    for n in range(12):
        generation = record(pm, text=f"take {n}", profile_id=f"p{n % 2}", seconds=0.1 + n / 50)
        if n % 3 == 0:
            pm.hook.tts_history_version_added(
                generation_id=generation.id,
                version=Version(id=f"v{n}", label="louder", is_default=n % 2 == 0),
                audio=Audio.from_samples(tone(0.2), 8000),
            )
        if n % 4 == 0:
            pm.hook.tts_history_favorite_set(generation_id=generation.id, is_favorited=True)
        ids.append(generation.id)
    return ids


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbage_header(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(os.urandom(8192) + data[8192:])


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


CORRUPTIONS = {
    "garbage": _garbage,
    "empty": _empty,
    "garbage header": _garbage_header,
    "truncated": _truncated,
}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS))
def test_corrupted_index_is_rebuilt_by_the_next_sync(corrupt, library, pm):
    root = library_root(pm)
    ids = _populate(pm)
    index = Index(root)
    assert index.sync().added == 12
    before = _answers(index, ids)
    assert before["stats"]["total_generations"] == 12 and before["favorites"]["total"] == 3

    index.db.forget()  # as when this process ends: its lingering connection goes
    CORRUPTIONS[corrupt](index.path)

    rebuilt = Index(root)
    report = rebuilt.sync()
    assert report.errors == [] and report.added == 12  # rebuilt from the folder
    assert _answers(rebuilt, ids) == before
    assert _answers(Index(root), ids) == before  # and stays good


@pytest.mark.parametrize("corrupt", ["garbage", "truncated"])
def test_corrupted_index_is_rebuilt_by_the_next_cli_list(corrupt, library, pm):
    root = library_root(pm)
    _populate(pm)

    def run(*args):
        result = cli("--library", str(root), *args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    listing, stats = run("list", "--json", "--limit", "100"), run("stats", "--json")
    assert listing["total"] == 12
    stats["total_duration_seconds"] = pytest.approx(stats["total_duration_seconds"], rel=1e-12)
    CORRUPTIONS[corrupt](Index(root).path)
    assert run("list", "--json", "--limit", "100") == listing
    assert run("stats", "--json") == stats


def test_a_rebuild_in_another_process_never_fails_the_readers_and_writers_of_the_index(library, pm):
    """sync --rebuild empties the index in place, under its lock: processes that have it open,
    or open it meanwhile, wait their turn and never write to a file deleted under them."""
    root = library_root(pm)
    _populate(pm)
    assert Index(root).sync().added == 12
    lib = ["--library", str(root)]
    rebuilds = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            from tts_history.index import Index
            for _ in range(12):
                Index({str(root)!r}).rebuild()
        """)],
        stderr=subprocess.PIPE, text=True,
    )
    failures = []

    def reader() -> None:
        while rebuilds.poll() is None:
            result = cli(*lib, "list", "--json", "--limit", "100")
            if result.returncode != 0:
                failures.append(result.stderr)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    written = 0
    while rebuilds.poll() is None:  # and this process records and syncs meanwhile
        record(pm, text=f"during {written}", seconds=0.05)
        written += 1
        Index(root).sync()
    for thread in threads:
        thread.join()
    assert rebuilds.returncode == 0, rebuilds.stderr.read()
    assert failures == []
    listing = json.loads(cli(*lib, "list", "--json", "--limit", "1000").stdout)
    assert written > 0 and listing["total"] == 12 + written


def _someones_database(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE notes AS SELECT 'keep me' AS note")
    con.close()


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: p.write_text("# my notes\n"), "not a DuckDB database"),
        (_someones_database, "a DuckDB database but not a tts-history index"),
        (lambda p: p.mkdir(), "is a folder"),
    ],
    ids=["a document", "someone's database", "a folder"],
)
def test_a_chosen_index_path_holding_something_else_is_refused_and_left_as_it_is(
    make, words, library, pm, tmp_path
):
    """A typo in --index must not cost a file: only an index (or a damaged DuckDB file, or
    an empty one) at a chosen path is opened, rebuilt or replaced."""
    root = library_root(pm)
    _populate(pm)
    path = tmp_path / "chosen"
    make(path)
    before = None if path.is_dir() else path.read_bytes()
    for attempt in (lambda i: i.list(), lambda i: i.sync(), lambda i: i.rebuild()):
        with pytest.raises(IndexPathError, match=words) as raised:
            attempt(Index(root, path))
        assert str(path) in str(raised.value)
    assert path.is_dir() if before is None else path.read_bytes() == before
    assert not Path(f"{path}.wal").exists()
    result = cli("--library", str(root), "--index", str(path), "list")
    assert "Traceback" not in result.stderr
    if path.is_dir():  # click's own check of the option: a wrong command line
        assert result.returncode == 2 and "is a directory" in result.stderr
    else:
        assert result.returncode == 1 and words in result.stderr


def test_an_index_path_inside_the_library_is_refused(library, pm):
    root = library_root(pm)
    _populate(pm)
    sidecar = next((root / "generations").rglob("*.parquet"))
    before = sidecar.read_bytes()
    for path in (sidecar, root / "library.json", root / "index.duckdb"):
        with pytest.raises(IndexPathError, match="inside the library folder"):
            Index(root, path)
    assert sidecar.read_bytes() == before and not (root / "index.duckdb").exists()


def test_a_chosen_index_path_that_is_empty_or_an_index_is_used(library, pm, tmp_path):
    root = library_root(pm)
    _populate(pm)
    empty = tmp_path / "empty.duckdb"
    empty.write_bytes(b"")  # a creation cut short
    assert Index(root, empty).sync().added == 12
    assert Index(root, empty).rebuild().added == 12  # now an index of ours: rebuilt
    assert Index(root, empty).stats()["total_generations"] == 12


def test_a_corrupt_block_is_reported_as_corrupt_not_as_locked(library, pm):
    """A checksum failure names a 'block'; it is not another process's lock, and waiting for
    it to go away cannot help."""
    root = library_root(pm)
    _populate(pm)
    index = Index(root)
    index.sync()
    index.db.forget()  # as when this process ends: its lingering connection goes
    data = index.path.read_bytes()
    # keep DuckDB's file headers, break the blocks behind them
    index.path.write_bytes(data[:12288] + os.urandom(len(data) - 12288))
    with pytest.raises(duckdb.Error, match="(?i)corrupt|checksum"):
        duckdb.connect(str(index.path), read_only=True)

    with pytest.raises(IndexCorruptError):
        with Database.for_path(index.path).read(timeout=0.5):
            pass


def test_an_index_damaged_while_attached_is_rebuilt_by_the_next_sync(library, pm):
    """The file breaks under an open connection (a disk error, another program writing into
    it): the sync that meets the failed checksum rebuilds the index from the folder."""
    root = library_root(pm)
    ids = _populate(pm)
    index = Index(root)
    index.sync()
    before = _answers(index, ids)
    index.db.forget()
    with index.db.pinned():  # attached afresh: its blocks are read from the file from now on
        data = index.path.read_bytes()
        index.path.write_bytes(data[:12288] + os.urandom(len(data) - 12288))
        report = index.sync(full=True)
    assert report.errors == [] and report.added == 12  # rebuilt, not updated in place
    assert _answers(index, ids) == before


def test_only_a_damaged_file_counts_as_damage(tmp_path):
    """A sync rebuilds the index only for damage; a failed query or a misused connection is
    raised (a rebuild would hide it, and takes minutes for a large library)."""
    path = tmp_path / "x.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t AS SELECT range AS i, repeat('x', 100) AS s FROM range(100000)")
    con.close()
    data = path.read_bytes()
    path.write_bytes(data[:12288] + os.urandom(len(data) - 12288))
    errors = {}
    for name, statement in {
        "checksum": lambda c: duckdb.connect(str(path)),
        "binder": lambda c: c.execute("SELECT no_such_column FROM range(3)").fetchall(),
        "unread result": lambda c: (c.execute("SELECT 1 UNION ALL SELECT 2").fetchone(),
                                    c.register("r", pa.table({"n": [1]}))),
    }.items():
        con = duckdb.connect()
        with pytest.raises(duckdb.Error) as raised:
            statement(con)
        con.close()
        errors[name] = is_damage(raised.value)
    assert errors == {"checksum": True, "binder": False, "unread result": False}


def test_stats_are_exactly_the_same_after_a_rebuild(library, pm):
    """The index is a cache: thrown away and rebuilt, it must give the same answers, down to
    the last bit of the total duration (the JSON a script compares)."""
    root = library_root(pm)
    index = Index(root)
    for gid, seconds in (("a", 0.1), ("b", 0.2), ("c", 0.3)):
        record(pm, id=gid, seconds=seconds)
    an_hour_ago = time.time() - 3600
    for sidecar in (root / "generations").rglob("*.parquet"):  # recorded a while ago
        os.utime(sidecar, (an_hour_ago, an_hour_ago))
    index.sync()
    pm.hook.tts_history_favorite_set(generation_id="a", is_favorited=True)  # changed since
    index.sync()
    # the index now holds the rows as b, c, a; a rebuild reads the folder in path order, a, b, c:
    # in floating point, 0.2 + 0.3 + 0.1 == 0.6 but 0.1 + 0.2 + 0.3 == 0.6000000000000001
    before = index.stats()
    index.rebuild()
    assert index.stats() == before

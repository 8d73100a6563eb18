"""Reading sidecars into Arrow tables for the index, in this process and, for large syncs, in a
helper process beside it.

A sidecar's record costs ~0.1 ms of Python (the footer's JSON, its types checked), and the GIL
keeps threads from sharing that work. A rebuild of a large library therefore hands half of each
batch to a helper process: a plain ``python -c`` running :func:`serve`, not multiprocessing,
which would run a host application's main module again in the child. If the
helper cannot start or dies, its share is read here: it only ever makes a sync faster.
A batch whose files are not in the page cache is asked of the kernel ahead of its reading.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

import pyarrow as pa

from ..library import SidecarError, schema, sidecar_identity
from .text import SIGNATURE_COLUMNS, normalize, signatures

log = logging.getLogger("tts_history.index")

SAMPLE = 16  # files of a batch looked at to tell whether it is in the page cache
_ADVISERS = 8  # threads opening files for read-ahead
HELPER_MIN = 4000  # sidecars to read before a helper process pays for its start (~0.3 s)
# records held as dicts before they become Arrow columns: a dict costs ~5 KB, its columns ~1 KB
_ROWS = 500

_EXTRA_COLUMNS = {
    "generation": [("sidecar_path", pa.string()), ("search_text", pa.string()), ("conflict_copy", pa.bool_())],
    "profile": [("sidecar_path", pa.string())],
}
_BATCH_SCHEMAS = {
    kind: pa.schema(list(base) + [pa.field(name, type_) for name, type_ in _EXTRA_COLUMNS[kind]])
    for kind, base in (("generation", schema.GENERATION_SCHEMA), ("profile", schema.PROFILE_SCHEMA))
}

Loaded = tuple[dict[str, pa.Table], list[tuple[str, str]]]


def _read_one(root: str, path: str, kind: str) -> dict[str, Any] | SidecarError:
    identity = sidecar_identity(path.rsplit("/", 1)[-1])
    try:
        # a plain string: building a Path costs as much as parsing the record's dates
        row = schema.read_row(f"{root}/{path}", kind, identity and identity[0])
    except SidecarError as exc:
        return SidecarError(path, exc.reason)
    row["sidecar_path"] = path
    if kind == "generation":
        row["search_text"] = normalize(row["text"])
        row["conflict_copy"] = bool(identity and identity[1])
    return row


def _opened(root: str, paths: list[str]) -> Iterator[int]:
    """A descriptor of each of these files that opens, closed after its turn (one that does not
    open is left to the reading, which reports it)."""
    for path in paths:
        try:
            fd = os.open(f"{root}/{path}", os.O_RDONLY)
        except OSError:
            continue
        try:
            yield fd
        finally:
            os.close(fd)


def _cached(root: str, paths: list[str]) -> bool:
    """Whether the first bytes of each of these files are in the page cache."""
    for fd in _opened(root, paths):
        try:
            os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
        except OSError:  # not in the cache (or no RWF_NOWAIT here: taken as not)
            return False
    return True


def _will_need(root: str, paths: list[str]) -> None:
    """Ask the kernel to read these files ahead, unless a sample of them is already in the page
    cache. Sidecars that are not are then read from the disk many at a time, not one after
    another as they are parsed (a cold build of 1M: 301 s, not 932; of 100k: 14-16 s, not 19-21).
    Opening a file reads its inode, synchronously: several threads keep several reads queued
    (1M cold, 7.4 KB sidecars: 363 s with eight threads; the bench's rebuild with one, 398 s)."""
    if _cached(root, paths[:: max(1, len(paths) // SAMPLE)]):
        return
    # interleaved, so that the read-ahead moves through the batch in the order it is parsed;
    # daemon threads, like their caller's, so that a process ending early never waits for them
    advisers = [
        threading.Thread(target=_advise, args=(root, paths[i::_ADVISERS]), daemon=True)
        for i in range(_ADVISERS)
    ]
    for thread in advisers:
        thread.start()
    for thread in advisers:
        thread.join()


def _advise(root: str, paths: list[str]) -> None:
    for fd in _opened(root, paths):
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:  # only advice
            pass


def load(root: str, paths: list[str], kinds: list[str]) -> Loaded:
    """Read sidecars (relative ``paths`` of ``kinds``) one by one into one table per kind, with
    their paths; errors as (path, reason), so one bad file never fails the rest."""
    if len(paths) > SAMPLE:  # a watcher's few files are read as soon as they could be asked for
        threading.Thread(target=_will_need, args=(root, paths), daemon=True).start()
    rows: dict[str, list[dict[str, Any]]] = {"generation": [], "profile": []}
    parts: dict[str, list[pa.Table]] = {"generation": [], "profile": []}
    errors: list[tuple[str, str]] = []

    def to_columns(kind: str) -> None:
        parts[kind].append(pa.Table.from_pylist(rows[kind], schema=_BATCH_SCHEMAS[kind]))
        rows[kind] = []

    for path, kind in zip(paths, kinds):
        result = _read_one(root, path, kind)
        if isinstance(result, SidecarError):
            errors.append((path, result.reason))
            continue
        rows[kind].append(result)
        if len(rows[kind]) == _ROWS:
            to_columns(kind)
    for kind in parts:
        to_columns(kind)
    tables = {kind: pa.concat_tables(found) for kind, found in parts.items()}
    generations = tables["generation"]
    words = signatures(generations.column("search_text"))
    for column, values in zip(SIGNATURE_COLUMNS, words.T):
        generations = generations.append_column(column, pa.array(values))
    tables["generation"] = generations
    return tables, errors


def _send(stream: BinaryIO, value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream: BinaryIO) -> Any:
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError("the stream ended")
    (size,) = struct.unpack("<Q", header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the stream ended")
    return pickle.loads(data)  # only ever from our own helper process or its parent


class Reader:
    """Reads batches of sidecars of one library; with ``helper``, half of each batch in a
    helper process. Use as a context manager: the helper ends with it."""

    def __init__(self, root: str, *, helper: bool = False) -> None:
        self.root = root
        self._process: subprocess.Popen | None = None
        if helper and (os.cpu_count() or 1) > 1:
            try:
                # the parent's import path, which a host or a test may have extended
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
                self._process = subprocess.Popen(
                    [sys.executable, "-c", "from tts_history.index.reading import serve; serve()"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=env,
                )
            except OSError as exc:  # an embedded interpreter may have no runnable python
                log.info("reading sidecars in this process only: %s", exc)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            for stream in (process.stdin, process.stdout):
                try:
                    stream.close()
                except OSError:  # a helper that died leaves its pipe broken
                    pass
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def load(self, paths: list[str], kinds: list[str]) -> Loaded:
        process = self._process
        if process is None or len(paths) < 2:
            return load(self.root, paths, kinds)
        half = len(paths) // 2
        try:
            _send(process.stdin, (self.root, paths[:half], kinds[:half]))
        except (OSError, ValueError):
            self._stop()
            return load(self.root, paths, kinds)
        mine = load(self.root, paths[half:], kinds[half:])
        try:
            theirs: Loaded = _receive(process.stdout)
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            log.warning("the helper reading sidecars stopped (%s); reading here", exc)
            self._stop()
            theirs = load(self.root, paths[:half], kinds[:half])
        tables = {kind: pa.concat_tables([theirs[0][kind], mine[0][kind]]) for kind in mine[0]}
        return tables, theirs[1] + mine[1]


def serve() -> None:
    """The helper: read requests (root, paths, kinds) from stdin until it closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            root, paths, kinds = _receive(stdin)
        except EOFError:
            return
        _send(stdout, load(root, paths, kinds))

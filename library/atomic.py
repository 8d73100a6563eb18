"""Crash-safe file writes: temp name, fsync, rename, fsync of the folder.

Temp files are hidden and end in ``.tmp``, so no glob for ``*.parquet`` or ``*.wav`` (nor a
watcher, nor a sync tool told to skip hidden files) ever sees a half-written file.

``TTS_HISTORY_FSYNC=0`` skips the fsyncs: writes stay atomic (a killed process never leaves a
partial file), but a power cut may lose the last changes. Like SQLite's ``synchronous=OFF``.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import os
import re
import secrets
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, BinaryIO

TEMP_SUFFIX = ".tmp"
FSYNC = os.environ.get("TTS_HISTORY_FSYNC", "1") != "0"
_CHUNK = 1 << 20  # bytes a copy reads at a time
# a temp file's buffer, given so that open() does not probe the new file (isatty, fstat) for one
_BUFFER = io.DEFAULT_BUFFER_SIZE


_TEMP = re.compile(rf"\..+\.[0-9a-f]{{12}}{re.escape(TEMP_SUFFIX)}")


def copy_hashed(stream: BinaryIO, out: BinaryIO) -> tuple[int, str]:
    """Copy ``stream`` to ``out``, reading it once: returns its size and sha256."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
        out.write(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


def stale_temp_files(root: Path, older_than_ns: int) -> Iterator[Path]:
    """Temp files of :func:`temp_path` below ``root`` last changed (mtime or ctime, the later)
    before ``older_than_ns``: left by a writer that was killed."""
    for folder, _, names in os.walk(root):
        for name in names:
            if _TEMP.fullmatch(name):
                path = Path(folder) / name
                try:
                    st = path.stat()
                    if max(st.st_mtime_ns, st.st_ctime_ns) < older_than_ns:
                        yield path
                except FileNotFoundError:
                    continue


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    if os.name == "nt" or not FSYNC:  # Windows cannot open a folder; its renames are durable
        return
    _fsync(folder, os.O_RDONLY)


def fsync_file(path: Path) -> None:
    """Make a file written with ``write_temp(..., sync=False)`` durable."""
    if FSYNC:
        _fsync(path, os.O_RDWR)  # Windows flushes only a handle open for writing


def open_making_folder(path: Path, mode: str, **options: Any) -> IO[Any]:
    """``open(path, mode)``, making the file's folder first if it is missing. Made only when the
    open finds it so: a mkdir before every open fails, and then stats, nearly every time."""
    try:
        return open(path, mode, **options)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, mode, **options)


def write_temp(
    path: Path, write: Callable[[BinaryIO], None], tmp: Path | None = None, *, sync: bool = True
) -> Path:
    """Write a temp file beside ``path`` (named ``tmp``, else a new :func:`temp_path`) and
    return its name; remove it on failure. Durable on return, unless ``sync=False`` leaves
    that to a later :func:`fsync_file` (a :class:`Syncer`)."""
    tmp = tmp or temp_path(path)
    f = open_making_folder(tmp, "xb", buffering=_BUFFER)
    try:
        with f:
            write(f)
            f.flush()
            if FSYNC and sync:
                os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _fsync_files(paths: list[Path]) -> None:
    for path in paths:
        fsync_file(path)


def _filesystem_sync() -> Callable[[int], int] | None:
    """Linux's syncfs(2), which makes every file of a file system durable in one call, where it
    also reports the write errors of that file system's earlier writebacks (Linux 5.8 on);
    elsewhere None."""
    version = re.match(r"(\d+)\.(\d+)", os.uname().release) if sys.platform == "linux" else None
    if version is None or tuple(map(int, version.groups())) < (5, 8):
        return None
    return getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)


_SYNCFS = _filesystem_sync()


class Syncer:
    """Makes files written with ``sync=False`` durable, without the writer waiting for the disk.

    Given the ``root`` folder they are written below, on Linux: by syncfs(2) of root's file
    system, one call for them all, started in the background every ``window`` files and once
    more in :meth:`wait`; that is less work than an fsync per file (importing 5,120 generations,
    1-4 s of 13-16). Files on another file system than root (a mount below it), and every file
    elsewhere, are fsynced one by one, by a few threads of their own (concurrent fsyncs share
    the journal's commits). At most ``window`` batches are pending; :meth:`submit` then waits
    for the oldest, so writers never run far ahead of the disk. Use it as a context manager: on
    exit no fsync is still running."""

    def __init__(self, root: Path | None = None, *, threads: int = 8, window: int = 256) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tts-history-fsync")
        self._pending: deque[Future[None]] = deque()
        self._lock = threading.Lock()
        self._window = window
        self._root = str(root)
        self._root_fd: int | None = None  # open on root while syncfs makes files durable
        self._root_dev = 0  # root's file system
        self._on_root: dict[str, bool] = {}  # folder: whether it is on root's file system
        self._unsynced = 0  # files on root's file system written since the last syncfs began
        self._syncing: Future[None] | None = None
        if FSYNC and root is not None and _SYNCFS is not None:
            # opened before the first write: syncfs reports the errors since the fd was opened
            self._root_fd = os.open(root, os.O_RDONLY)
            self._root_dev = os.fstat(self._root_fd).st_dev

    def submit(self, paths: list[Path]) -> None:
        """Make ``paths`` durable in the background; raises what an earlier batch's sync raised."""
        if not FSYNC:
            return
        if self._root_fd is not None:
            paths = [path for path in paths if not self._on_root_fs(path)]
            if not paths:
                return
        future = self._pool.submit(_fsync_files, paths)
        with self._lock:
            self._pending.append(future)
            oldest = self._pending.popleft() if len(self._pending) > self._window else None
        if oldest is not None:
            oldest.result()

    def _on_root_fs(self, path: Path) -> bool:
        """Whether ``path`` is left to syncfs; starts one when ``window`` files wait for it."""
        folder = os.path.dirname(path)
        with self._lock:
            same = self._on_root.get(folder)
            if same is None:
                same = self._on_root[folder] = os.stat(folder).st_dev == self._root_dev
            if not same:
                return False
            self._unsynced += 1
            start = self._unsynced >= self._window and (self._syncing is None or self._syncing.done())
            if start:
                previous, self._unsynced = self._syncing, 0
                self._syncing = self._pool.submit(self._syncfs)
        if start and previous is not None:
            previous.result()  # an error is raised once, by the writer that finds it
        return True

    def _syncfs(self) -> None:
        assert self._root_fd is not None and _SYNCFS is not None
        if _SYNCFS(self._root_fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"cannot make the files written below {self._root} durable: "
                          f"{os.strerror(code)}")

    def wait(self) -> None:
        """Wait until every file submitted is durable; raises the first sync's error."""
        while True:
            with self._lock:
                if not self._pending:
                    break
                future = self._pending.popleft()
            future.result()
        if self._root_fd is not None:
            with self._lock:
                syncing, self._syncing = self._syncing, None
                unsynced, self._unsynced = self._unsynced, 0
            if syncing is not None:
                syncing.result()
            if unsynced:
                self._syncfs()

    def __enter__(self) -> Syncer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None


def commit_temp(tmp: Path, path: Path, *, replace: bool = True, sync_folder: bool = True) -> None:
    """Move a temp file from :func:`write_temp` into place, durably. ``sync_folder=False``
    leaves the folder's fsync to a later commit in the same folder: journaling file systems
    (ext4, XFS, APFS, NTFS) make renames durable in the order they were made, so that fsync
    makes this rename durable too, and never the later one without it."""
    try:
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails with FileExistsError instead of overwriting
            tmp.unlink()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_folder:
        fsync_dir(path.parent)


def atomic_write(path: Path, write: Callable[[BinaryIO], None], *, replace: bool = True) -> None:
    commit_temp(write_temp(path, write), path, replace=replace)


def atomic_write_bytes(path: Path, data: bytes, *, replace: bool = True) -> None:
    atomic_write(path, lambda f: f.write(data), replace=replace)

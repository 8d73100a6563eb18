"""Sharing one DuckDB file between threads and, by turns, between processes.

DuckDB lets one process at a time hold a file read-write (and while it does, nobody else may
even read it), has no busy timeout, and refuses a read-only connection beside a read-write one
in the same process. So, per process and file, there is one connection at a time, shared by
every thread through cursors: read-only while only readers need it, read-write while a writer
does (readers then share the writer's). An idle read-only connection closes after a moment
(LINGER), a read-write one at once. Opens that meet another process's lock retry with short
backoff until a deadline, and meanwhile say so by holding a shared flock on a file beside the
index (WAITING_SUFFIX). A connection in steady use looks for such a waiter every MAX_HOLD
seconds (or HOLD_PER_USE times its longest use, up to HOLD_CEILING) and, when there is one,
closes and rests (REST) before opening again: a process that queries without pause would
otherwise leave other processes only gaps too short to find. With nobody waiting it keeps the
file, since reopening costs the next query its cached data.

"Opening" a file attaches it to the process's one in-memory DuckDB instance, and closing
detaches it: starting an instance costs 20-35 ms, attaching a file 1-5 ms, and the file lock is
the same either way.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

try:
    import fcntl
except ImportError:  # Windows: waiters cannot be seen, so a hold always ends in giving way
    fcntl = None  # type: ignore[assignment]

READ_TIMEOUT = 15.0
WRITE_TIMEOUT = 60.0
LINGER = 0.1  # seconds an idle read-only connection stays open for the next query
MAX_HOLD = 0.1  # seconds a connection may stay open while queries keep coming
# (opening again costs 1-5 ms: at 0.3 s a watcher waited twice as long for its turn)
HOLD_PER_USE = 3  # ... or this many times its longest use: a reopened file's data is read again,
# and a process scanning 160 MB per query would otherwise spend half its time doing so
HOLD_CEILING = 1.0  # ... but never longer than this: other processes' deadlines are in seconds
REST = 0.04  # seconds before opening again after giving way: longer than RETRY_MAX * 1.5
RETRY_MAX = 0.02  # the longest pause between two tries of an open that meets a lock
WAITING_SUFFIX = ".waiting"  # beside the index: flocked shared by each process waiting for it


class IndexBusyError(RuntimeError):
    """Another process held the index longer than the deadline allowed."""


class IndexCorruptError(RuntimeError):
    """The index file cannot be opened as a DuckDB database (it is a cache: rebuild it)."""


def is_lock_error(exc: Exception) -> bool:
    # DuckDB's words for another process's lock ("block" in a checksum error is no lock)
    message = str(exc)
    return "Could not set lock" in message or "Conflicting lock" in message


def is_damage(exc: Exception) -> bool:
    """Whether DuckDB failed because the file no longer holds what it wrote (a block whose
    checksum fails, a short read, a database invalidated by it), not because of a query."""
    if is_lock_error(exc):
        return False
    if isinstance(exc, (duckdb.IOException, duckdb.SerializationException, duckdb.InternalException)):
        return True
    message = str(exc).lower()
    return "corrupt" in message or "checksum" in message


_engine: duckdb.DuckDBPyConnection | None = None
_engine_lock = threading.Lock()
_aliases = itertools.count()


def engine() -> duckdb.DuckDBPyConnection:
    """A new connection to the process's DuckDB instance, which holds no data of its own."""
    global _engine
    with _engine_lock:
        if _engine is None:
            # spills of large syncs go to a folder of this process's own, not the working directory
            spill = Path(tempfile.gettempdir()) / f"tts-history-{os.getpid()}"
            _engine = duckdb.connect(":memory:", config={"temp_directory": str(spill)})
            # give a detached file's memory back to the system instead of keeping it for later
            _engine.execute("SET allocator_bulk_deallocation_flush_threshold = '8MB'")
        return _engine.cursor()


def _attach(path: Path, *, read_only: bool) -> tuple[duckdb.DuckDBPyConnection, str]:
    """A connection whose default database is the file at ``path``, and that database's alias."""
    alias = f"tts_index_{next(_aliases)}"  # never reused: a failed attach leaves no name behind
    con = engine()
    try:
        quoted = str(path).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS {alias}{' (READ_ONLY)' if read_only else ''}")
        con.execute(f"USE {alias}")
    except BaseException:
        con.close()
        raise
    return con, alias


def _detach(con: duckdb.DuckDBPyConnection, alias: str) -> None:
    try:
        con.execute("USE memory")
        con.execute(f"DETACH {alias}")  # releases the lock; read-write, it checkpoints first
    finally:
        con.close()


def _waiting_path(path: Path) -> Path:
    return path.with_name(path.name + WAITING_SUFFIX)


def _announce(path: Path) -> int | None:
    """Say that this process waits for the index: a shared flock, held until the fd closes
    (a killed process's lock goes with it)."""
    if fcntl is None:
        return None
    fd = os.open(_waiting_path(path), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a holder looking for waiters locks it only for a moment
    return fd


def someone_waits(path: Path) -> bool:
    """Whether another process is waiting to open the index (always, where flock is missing)."""
    if fcntl is None:
        return True
    try:
        fd = os.open(_waiting_path(path), os.O_RDONLY)
    except FileNotFoundError:
        return False  # nobody ever waited for it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the lock when it was taken
    return False


def open_with_retry(
    path: Path, *, read_only: bool, timeout: float
) -> tuple[duckdb.DuckDBPyConnection, str]:
    deadline = time.monotonic() + timeout
    delay = 0.002
    announced: int | None = None
    try:
        while True:
            try:
                return _attach(path, read_only=read_only)
            except duckdb.Error as exc:
                if not is_lock_error(exc):
                    raise IndexCorruptError(f"index {path} cannot be opened: {exc}") from exc
                if time.monotonic() >= deadline:
                    raise IndexBusyError(
                        f"index {path} has been locked by another process for {timeout:.0f} s: {exc}"
                    ) from exc
            if announced is None:
                announced = _announce(path)
            # jitter keeps two waiting processes from retrying in lockstep
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, RETRY_MAX)
    finally:
        if announced is not None:
            os.close(announced)


class Database:
    """The process's handle on one index file. Use :meth:`for_path`, not the constructor."""

    _registry: dict[Path, Database] = {}
    _registry_lock = threading.Lock()

    @classmethod
    def for_path(cls, path: Path) -> Database:
        path = path.resolve()
        with cls._registry_lock:
            if path not in cls._registry:
                cls._registry[path] = cls(path)
            return cls._registry[path]

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._writer = threading.Lock()  # one writer at a time within this process
        self._con: duckdb.DuckDBPyConnection | None = None
        self._alias = ""
        self._read_only = True
        self._users = 0
        self._pins = 0
        self._hold_started = 0.0
        self._longest = 0.0  # seconds of the longest use within the current hold
        self._rest_until = 0.0
        self._closer: threading.Timer | None = None
        self._last_use = 0.0  # when the last user gave the connection back
        # cursors of the open connection that no user holds: making one and pointing it at the
        # file costs 0.4 ms a query
        self._idle_cursors: list[duckdb.DuckDBPyConnection] = []

    def _open(self, *, read_only: bool, timeout: float) -> None:
        """Open the file (the caller holds ``_cond`` and no connection is open)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rest = self._rest_until - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        self._con, self._alias = open_with_retry(self.path, read_only=read_only, timeout=timeout)
        self._read_only = read_only
        self._hold_started = time.monotonic()
        self._longest = 0.0

    def _checkout(self) -> tuple[duckdb.DuckDBPyConnection, str]:
        """A cursor of the open connection, for one user, and the alias of the attach it
        belongs to (the caller holds ``_cond``)."""
        if self._idle_cursors:
            cursor = self._idle_cursors.pop()
        else:
            cursor = self._con.cursor()
            try:
                cursor.execute(f"USE {self._alias}")
            except BaseException:
                cursor.close()
                raise
        self._users += 1
        return cursor, self._alias

    @contextmanager
    def _lent(self, cursor: duckdb.DuckDBPyConnection, alias: str) -> Iterator[duckdb.DuckDBPyConnection]:
        started = time.monotonic()
        reusable = False
        try:
            yield cursor
            reusable = True  # a use that failed may have left it inside a transaction
        finally:
            self._release(cursor, alias, reusable, time.monotonic() - started)

    @contextmanager
    def read(self, timeout: float = READ_TIMEOUT) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._cond:
            if self._con is None:
                self._open(read_only=True, timeout=timeout)
            cursor, alias = self._checkout()
        with self._lent(cursor, alias):
            yield cursor

    @contextmanager
    def write(self, timeout: float = WRITE_TIMEOUT) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._writer:
            with self._cond:
                # a read-only connection cannot be upgraded: wait for its readers, then reopen
                while self._con is not None and self._read_only and self._users:
                    self._cond.wait()
                if self._con is not None and self._read_only:
                    self._close()
                if self._con is None:
                    self._open(read_only=False, timeout=timeout)
                cursor, alias = self._checkout()
            with self._lent(cursor, alias):
                yield cursor

    @contextmanager
    def pinned(self, timeout: float = WRITE_TIMEOUT) -> Iterator[None]:
        """Keep the read-write connection open throughout (a long-running process that writes
        often and serves its own queries), instead of reopening it for every batch."""
        with self.write(timeout):
            with self._cond:
                self._pins += 1
        try:
            yield
        finally:
            with self._cond:
                self._pins -= 1
                self._close_if_idle()

    def _release(
        self, cursor: duckdb.DuckDBPyConnection, alias: str, reusable: bool, used: float
    ) -> None:
        with self._cond:
            # the file stays attached while it has users, unless forget() detached it
            if reusable and self._con is not None and alias == self._alias:
                # a result left unread (fetchone) would refuse the next user's register()
                cursor.abort()
                self._idle_cursors.append(cursor)
            else:
                cursor.close()
            self._users -= 1
            self._longest = max(self._longest, used)
            self._close_if_idle()
            self._cond.notify_all()

    def _close_if_idle(self) -> None:
        """Close when nobody uses the connection, after LINGER seconds in case another query
        follows at once (attaching costs 1-5 ms), and at the end of a hold (see the module's
        notes) if another process is waiting for the file, so that it gets its turn."""
        if self._users or self._pins or self._con is None:
            return
        if not self._read_only:  # writes come in batches: let readers of other processes in
            self._close()
            return
        hold = min(max(MAX_HOLD, HOLD_PER_USE * self._longest), HOLD_CEILING)
        if time.monotonic() - self._hold_started >= hold:
            if someone_waits(self.path):
                self._close()
                self._rest_until = time.monotonic() + REST
                return
            # look again after another hold, as long as the uses within it ask for
            self._hold_started = time.monotonic()
            self._longest = 0.0
        self._last_use = time.monotonic()
        # One timer per idle spell, moved on when it fires if the connection was used meanwhile:
        # a timer thread started for every query cost each 0.2-0.3 ms.
        if self._closer is None:
            self._arm(LINGER)

    def _arm(self, delay: float) -> None:
        # Not a daemon: at exit the interpreter waits the moment it takes to close the file,
        # instead of killing the thread inside DuckDB (which aborts the process).
        self._closer = threading.Timer(delay, self._close_lingering)
        self._closer.start()

    def _close_lingering(self) -> None:
        with self._cond:
            if self._closer is not threading.current_thread():
                return  # cancelled meanwhile
            self._closer = None
            if self._users or self._pins:
                return  # the last user's release arms it again
            idle_for = time.monotonic() - self._last_use
            if idle_for < LINGER:  # used since the timer was armed
                self._arm(LINGER - idle_for)
            else:
                self._close()

    def _close(self) -> None:
        if self._closer is not None:
            self._closer.cancel()
            self._closer = None
        for cursor in self._idle_cursors:  # each would keep the file as its default database
            cursor.close()
        self._idle_cursors.clear()
        con, self._con = self._con, None
        if con is not None:
            try:
                _detach(con, self._alias)
            except duckdb.Error as exc:  # the next open attaches the file afresh
                logging.getLogger(__name__).warning("closing index %s: %s", self.path, exc)

    def forget(self) -> None:
        """Close everything (the file is about to be deleted or replaced)."""
        with self._cond:
            self._close()

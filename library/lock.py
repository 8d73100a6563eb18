"""A machine-wide lock around read-modify-write of sidecars, so that a host, a person's CLI and
any other process on this machine never lose each other's changes to the same sidecar."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .atomic import open_making_folder

try:
    import fcntl
except ImportError:  # Windows: the in-process lock still serialises threads
    fcntl = None  # type: ignore[assignment]

_thread_locks: dict[Path, threading.Lock] = {}
_registry = threading.Lock()


@contextmanager
def locked(path: Path) -> Iterator[None]:
    with _registry:
        tlock = _thread_locks.setdefault(path, threading.Lock())
    with tlock:
        if fcntl is None:
            yield
            return
        with open_making_folder(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, even on kill -9
            yield

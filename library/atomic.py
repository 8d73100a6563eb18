"""Crash-safe file writes: temp name, fsync, rename, fsync of the folder.

Temp files are hidden and end in ``.tmp``, so no glob for ``*.parquet`` or ``*.wav`` (nor a
watcher, nor a sync tool told to skip hidden files) ever sees a half-written file.

``TTS_HISTORY_FSYNC=0`` skips the fsyncs: writes stay atomic (a killed process never leaves a
partial file), but a power cut may lose the last changes. Like SQLite's ``synchronous=OFF``.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"
FSYNC = os.environ.get("TTS_HISTORY_FSYNC", "1") != "0"


_TEMP = re.compile(rf"\..+\.[0-9a-f]{{12}}{re.escape(TEMP_SUFFIX)}")


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


def stale_temp_files(root: Path, older_than_ns: int) -> Iterator[Path]:
    """Temp files of :func:`temp_path` below ``root`` last changed before ``older_than_ns``
    (left by a writer that was killed)."""
    for folder, _, names in os.walk(root):
        for name in names:
            if _TEMP.fullmatch(name):
                path = Path(folder) / name
                try:
                    if path.stat().st_mtime_ns < older_than_ns:
                        yield path
                except FileNotFoundError:
                    continue


def fsync_dir(folder: Path) -> None:
    if os.name == "nt" or not FSYNC:  # Windows cannot open a folder; its renames are durable
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp(path: Path, write: Callable[[BinaryIO], None], tmp: Path | None = None) -> Path:
    """Write a durable temp file beside ``path`` (named ``tmp``, else a new :func:`temp_path`)
    and return its name; remove it on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp or temp_path(path)
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            if FSYNC:
                os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


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

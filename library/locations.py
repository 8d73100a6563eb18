"""Where a library and its per-machine state live when nobody says otherwise."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import platformdirs

APP = "tts-history"
LIBRARY_ENV = "TTS_HISTORY_LIBRARY"


def library_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``path`` if given, else ``$TTS_HISTORY_LIBRARY``, else the per-user default library."""
    chosen = path or os.environ.get(LIBRARY_ENV) or Path(platformdirs.user_data_dir(APP)) / "library"
    return Path(chosen).expanduser().resolve()


def machine_dir(library_root: Path) -> Path:
    """Per-machine state of one library (index, locks): outside the library folder, so that a
    sync tool never copies a live database, and keyed by the library's path on this machine."""
    key = hashlib.sha256(str(library_root).encode()).hexdigest()[:16]
    return Path(platformdirs.user_cache_dir(APP)) / "libraries" / f"{library_root.name}-{key}"

"""Where everything lives inside a library folder, and which files belong to it.

The folder is the only source of truth; both the plugin (which writes it) and the index (which
reads it) take every path from here, so the two never disagree about the layout.
"""

from __future__ import annotations

import json
import os
from importlib import resources
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from glob import escape, glob
from pathlib import Path

from .atomic import atomic_write_bytes
from .errors import LibraryError

MARKER = "library.json"
FORMAT_NAME = "tts-history-library"
FORMAT_VERSION = 1
GENERATIONS_DIR = "generations"
PROFILES_DIR = "profiles"
SIDECAR_SUFFIX = ".parquet"

# Ids become file names. No dots: a dot separates a generation id from a version id in audio
# names, and sync tools mark their conflict copies with dotted suffixes.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def check_id(value: object, field: str) -> str:
    """Return ``value`` if it can name files in the library, else raise naming the field."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise LibraryError(
            f"{field} {value!r} is not a valid id: use 1-128 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return value


# Conflict copies that sync tools leave beside a file both sides changed:
# Syncthing: <stem>.sync-conflict-YYYYMMDD-HHMMSS-<DEVICE>.<ext>
# Dropbox:   <stem> (<device>'s conflicted copy <date>).<ext>, and its case/Unicode variants
_CONFLICT = re.compile(
    r"(?P<stem>[^ ]+?)(?:\.sync-conflict-\d{8}-\d{6}-[A-Za-z0-9]+| \([^()]*conflict[^()]*\))",
    re.IGNORECASE,
)


def is_audio_name(name: str) -> bool:
    """True for the name of a version's audio file: ``<generation id>.<version id>.<ext>``."""
    parts = name.split(".")
    return (
        len(parts) == 3
        and _ID.fullmatch(parts[0]) is not None
        and _ID.fullmatch(parts[1]) is not None
        and parts[2].isalnum()
        and len(parts[2]) <= 8
    )


def sidecar_identity(name: str) -> tuple[str, bool] | None:
    """For the file name of a sidecar: (the id it carries, whether it is a sync tool's conflict
    copy). None for any other file, temp files included."""
    if not name.endswith(SIDECAR_SUFFIX):
        return None
    stem = name[: -len(SIDECAR_SUFFIX)]
    if _ID.fullmatch(stem):
        return stem, False
    copy = _CONFLICT.fullmatch(stem)
    if copy and _ID.fullmatch(copy["stem"]):
        return copy["stem"], True
    return None


@dataclass(frozen=True)
class Library:
    """A library folder on this machine. Paths inside sidecars are relative to ``root``."""

    root: Path

    @property
    def generations(self) -> Path:
        return self.root / GENERATIONS_DIR

    @property
    def profiles(self) -> Path:
        return self.root / PROFILES_DIR

    def day_dir(self, created_at: datetime) -> Path:
        # One folder per UTC day keeps every folder small and a generation's files together.
        # Joined as one "YYYY/MM/DD": a join per part, through strftime, takes five times longer.
        day = created_at.astimezone(timezone.utc)
        return self.root / f"{GENERATIONS_DIR}/{day.year}/{day.month:02d}/{day.day:02d}"

    def sidecar_path(self, generation_id: str, created_at: datetime) -> Path:
        return self.day_dir(created_at) / f"{generation_id}{SIDECAR_SUFFIX}"

    def audio_path(
        self, generation_id: str, created_at: datetime, version_id: str, suffix: str
    ) -> Path:
        return self.day_dir(created_at) / f"{generation_id}.{version_id}{suffix}"

    def profile_path(self, profile_id: str) -> Path:
        return self.profiles / f"{check_id(profile_id, 'profile_id')}{SIDECAR_SUFFIX}"

    def find_sidecar(self, generation_id: str) -> Path | None:
        """The sidecar of ``generation_id``, wherever its day folder is (~7 µs a day folder)."""
        if not isinstance(generation_id, str) or not _ID.fullmatch(generation_id):
            return None  # no such file can exist, and the id must never act as a pattern
        pattern = self.generations / "*" / "*" / "*" / f"{escape(generation_id)}{SIDECAR_SUFFIX}"
        hits = glob(str(pattern))
        return Path(hits[0]) if hits else None

    def copy_folders(self, generation_id: str) -> set[Path]:
        """Day folders holding a sync tool's conflict copy of ``generation_id``'s sidecar."""
        if not isinstance(generation_id, str) or not _ID.fullmatch(generation_id):
            return set()
        days = self.generations / "*" / "*" / "*"
        hits = glob(str(days / f"{escape(generation_id)}.sync-conflict-*{SIDECAR_SUFFIX}"))
        hits += glob(str(days / f"{escape(generation_id)} (*){SIDECAR_SUFFIX}"))
        return {Path(hit).parent for hit in hits if sidecar_identity(Path(hit).name) == (generation_id, True)}

    def relative(self, path: Path) -> str:
        """The portable form stored in sidecars: POSIX separators, relative to the root."""
        return path.relative_to(self.root).as_posix()

    def absolute(self, relative: str) -> Path:
        # one string join: joinpath parses every part (a list page makes a hundred of these)
        return Path(os.path.join(self.root, *relative.split("/")))

    def audio_present(self, relative: str | None, size: int | None) -> bool:
        """Whether an audio file is there whole: with the size its sidecar recorded, if it
        recorded one (a file a sync tool is still copying, or a truncated one, is not). The
        index's sync applies the same rule to the files it lists."""
        if relative is None:
            return False
        try:
            found = os.stat(self.absolute(relative)).st_size
        except OSError:
            return False
        return size is None or found == size

    def library_id(self) -> str:
        return read_marker(self.root)["library_id"]


def read_marker(root: Path) -> dict:
    marker = root / MARKER
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LibraryError(
            f"{root} is not a tts-history library (no {MARKER}); run 'tts-history init'"
        ) from None
    except (OSError, ValueError) as exc:
        raise LibraryError(f"{marker} cannot be read: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise LibraryError(f"{marker} is not a tts-history library marker")
    version = data.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise LibraryError(
            f"{marker} has format version {version!r}; this tts-history reads up to "
            f"{FORMAT_VERSION}: upgrade tts-history"
        )
    return data


def open_library(root: str | Path, *, create: bool = False) -> Library:
    """Open the library at ``root``; with ``create``, make it first if the folder has none."""
    root = Path(root).expanduser().resolve()
    if create and not (root / MARKER).exists():
        if root.exists() and not root.is_dir():
            raise LibraryError(f"{root} exists and is not a folder")
        root.mkdir(parents=True, exist_ok=True)
        marker = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "library_id": str(uuid.uuid4()),
            "created_at": datetime.now(timezone.utc).isoformat(),
        }
        try:
            # exclusive: two processes initialising at once must agree on one library_id
            atomic_write_bytes(root / MARKER, json.dumps(marker, indent=2).encode(), replace=False)
        except FileExistsError:
            pass
        stignore = root / ".stignore"
        if not stignore.exists():  # for Syncthing users; any other tool ignores it
            template = resources.files(__package__).joinpath("stignore").read_bytes()
            atomic_write_bytes(stignore, template)
    read_marker(root)
    return Library(root)

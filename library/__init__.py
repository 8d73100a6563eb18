"""The on-disk format of a library folder, shared by the plugin (writer) and the index (reader)."""

from .errors import LibraryError, SidecarError
from .layout import Library, check_id, is_audio_name, open_library, sidecar_identity

__all__ = [
    "Library",
    "LibraryError",
    "SidecarError",
    "check_id",
    "is_audio_name",
    "open_library",
    "sidecar_identity",
]

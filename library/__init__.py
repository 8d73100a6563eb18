"""The on-disk format of a library folder, shared by the plugin (writer) and the index (reader)."""

from .errors import LibraryError, SidecarError
from .layout import Library, check_id, sidecar_identity, open_library

__all__ = ["Library", "LibraryError", "SidecarError", "check_id", "sidecar_identity", "open_library"]

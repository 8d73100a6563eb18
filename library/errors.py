"""Errors about the library folder. Each message names the path, field or value at fault."""


class LibraryError(Exception):
    """The library folder, or something asked of it, is not valid."""


class SidecarError(LibraryError):
    """A sidecar file cannot be read as a record of this format."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

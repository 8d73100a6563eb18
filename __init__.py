"""tts-history: a local-first generation history for text-to-speech apps.

``from tts_history import hookimpl`` to write a plugin; ``get_plugin_manager()`` to host one;
``History`` to query a library from Python.
"""

from importlib.metadata import PackageNotFoundError, version

from .hooks import (
    Audio,
    Effect,
    Generation,
    InvalidValueError,
    Profile,
    Version,
    get_plugin_manager,
    hookimpl,
)

try:
    __version__ = version("tts-history")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"


def __getattr__(name: str):
    # History pulls in DuckDB, and the audio code numpy and soundfile: a host that only builds
    # values and records generations pays for them when they are first used
    if name == "History":
        from .history import History

        return History
    if name == "InvalidAudioError":
        from .plugin.audio import InvalidAudioError

        return InvalidAudioError
    raise AttributeError(name)


__all__ = [
    "Audio",
    "Effect",
    "Generation",
    "History",
    "InvalidAudioError",
    "InvalidValueError",
    "Profile",
    "Version",
    "__version__",
    "get_plugin_manager",
    "hookimpl",
]

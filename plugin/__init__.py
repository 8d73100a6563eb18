"""The history plugin: records what a host's hook calls report into the library folder."""

from .audio import InvalidAudioError
from .history import HistoryPlugin

__all__ = ["HistoryPlugin", "InvalidAudioError"]

"""The hook contract between a text-to-speech host, the history plugin and other plugins.

Plugins write ``from tts_history import hookimpl`` and implement any ``tts_history_*`` hook of
:mod:`tts_history.hooks.specs`; hosts call them through :func:`get_plugin_manager`.
"""

import pluggy

from .manager import get_plugin_manager, load_entrypoint_plugins
from .specs import PROJECT_NAME, hookspec
from .types import Audio, Effect, Generation, InvalidValueError, Profile, Version

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = [
    "PROJECT_NAME",
    "Audio",
    "Effect",
    "Generation",
    "InvalidValueError",
    "Profile",
    "Version",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "load_entrypoint_plugins",
]

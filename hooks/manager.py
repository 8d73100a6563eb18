"""A ready plugin manager for a host: the specs, the history plugin, third-party plugins."""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path
from typing import Any

import pluggy

from . import specs

log = logging.getLogger("tts_history")


def load_entrypoint_plugins(pm: pluggy.PluginManager) -> list[str]:
    """Register every plugin of the ``tts_history`` entry-point group, one by one.

    A plugin that fails to import or to register is logged and skipped: a broken third-party
    plugin must never take the host down (pluggy's own loader stops at the first failure).
    Returns the names of the plugins that failed.
    """
    failed = []
    for ep in importlib.metadata.entry_points(group=specs.PROJECT_NAME):
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            pm.register(ep.load(), name=ep.name)
            pm.check_pending()
        except Exception as exc:  # any error of a third party's code
            if pm.get_plugin(ep.name) is not None:
                pm.unregister(name=ep.name)
            log.error("plugin %r (%s) could not be loaded and is skipped: %s", ep.name, ep.value, exc)
            failed.append(ep.name)
    return failed


def get_plugin_manager(
    library: str | Path | None = None, *, entrypoints: bool = True
) -> pluggy.PluginManager:
    """A plugin manager with the specs added and the history plugin recording into ``library``
    (created if missing; default: the per-user library, see ``tts-history info``).

    With ``entrypoints``, third-party plugins of the ``tts_history`` entry-point group are
    loaded too. The host then calls ``pm.hook.tts_history_<event>(...)`` with keyword arguments.
    """
    from ..plugin import HistoryPlugin  # here, so that importing the contract stays light

    pm = pluggy.PluginManager(specs.PROJECT_NAME)
    pm.add_hookspecs(specs)
    pm.register(HistoryPlugin(library, hook=pm.hook), name="tts_history.history")
    if entrypoints:
        load_entrypoint_plugins(pm)
    return pm


def call_each(caller: pluggy.HookCaller, error_result: Any = None, **kwargs: Any) -> list[Any]:
    """Call every implementation of a hook on its own, in registration order.

    Used for the hooks the history plugin offers other plugins: one plugin's exception is
    logged, counted as ``error_result``, and never stops the others or the caller's work.
    """
    results = []
    for impl in caller.get_hookimpls():
        if impl.hookwrapper or impl.wrapper:
            continue
        try:
            results.append(impl.function(*(kwargs[name] for name in impl.argnames)))
        except Exception:
            log.exception("plugin %r failed in %s", impl.plugin_name, caller.name)
            results.append(error_result)
    return results

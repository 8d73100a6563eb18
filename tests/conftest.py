"""Shared fixtures. Every test gets its own per-user folders (platformdirs honours XDG_* on
Linux), so nothing touches the real user's library or index."""

from __future__ import annotations

from pathlib import Path

import pytest

from tts_history import get_plugin_manager


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(home / name.lower()))
    monkeypatch.delenv("TTS_HISTORY_LIBRARY", raising=False)
    monkeypatch.delenv("TTS_HISTORY_INDEX", raising=False)
    return home


@pytest.fixture
def library(tmp_path) -> Path:
    return tmp_path / "library"


@pytest.fixture
def pm(library):
    return get_plugin_manager(library, entrypoints=False)

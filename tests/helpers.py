"""Helpers shared by the tests: real audio, generations recorded through the hooks, the CLI
in a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np

from tts_history import Audio, Generation, History, Profile, get_plugin_manager

RATE = 8000


def tone(seconds: float = 0.25, rate: int = RATE, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_generation(**fields) -> Generation:
    fields.setdefault("id", str(uuid.uuid4()))
    fields.setdefault("profile_id", "p1")
    fields.setdefault("text", "Hello world")
    return Generation(**fields)


def record(pm, seconds: float = 0.25, **fields) -> Generation:
    """One completed generation through the hooks, as a host records it."""
    generation = make_generation(**fields)
    pm.hook.tts_history_generation_completed(
        generation=generation, audio=Audio.from_samples(tone(seconds), RATE)
    )
    return generation


def days_ago(n: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(days=n)


def cli(*args: str, env: dict | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``tts-history`` command in a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "tts_history", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        input=input,
        timeout=120,
    )


def make_history(root) -> History:
    """A History on its own library, with no plugins but ours."""
    return History(root, plugin_manager=get_plugin_manager(root, entrypoints=False))


def history_with_own_work(root) -> History:
    """An import target that already holds a profile and a generation of its own."""
    history = make_history(root)
    history.hook.tts_history_profile_saved(profile=Profile(id="p-own", name="Own"))
    record(history.pm, 0.02, profile_id="p-own", text="already here")
    history.sync()
    return history



def indexed(index, generation_id: str) -> dict | None:
    """What the index itself holds for a generation: its row of the ``generations`` view (paths
    relative), with its ``versions`` rows. ``get`` reads the record from its sidecar instead,
    so it cannot tell whether the index has caught up with a change."""
    with index.reading() as con:
        cursor = con.execute("SELECT * FROM generations WHERE id = ?", [generation_id])
        row = cursor.fetchone()
        if row is None:
            return None
        item = dict(zip([d[0] for d in cursor.description], row))
        cursor = con.execute(
            "SELECT * FROM versions WHERE generation_id = ? ORDER BY position", [generation_id]
        )
        names = [d[0] for d in cursor.description]
        item["versions"] = [dict(zip(names, r)) for r in cursor.fetchall()]
    return item

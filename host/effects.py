"""The reference host's effects: what it applies to make a processed version."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _gain(samples: np.ndarray, rate: int, db: float = -6.0) -> np.ndarray:
    return samples * (10 ** (db / 20))


def _echo(samples: np.ndarray, rate: int, delay_ms: float = 180.0, decay: float = 0.4) -> np.ndarray:
    shift = int(rate * delay_ms / 1000)
    out = np.concatenate([samples, np.zeros(shift)])
    out[shift:] += samples * decay
    return out


EFFECTS = {"gain": _gain, "echo": _echo}


def apply(samples: np.ndarray, rate: int, chain: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Apply an effects chain (``[{type, enabled, params}]``) to int16 samples."""
    audio = samples.astype(np.float64) / 32768
    for effect in chain:
        if effect.get("enabled", True):
            try:
                audio = EFFECTS[effect["type"]](audio, rate, **effect.get("params", {}))
            except KeyError:
                raise ValueError(
                    f"unknown effect {effect['type']!r}; known: {', '.join(EFFECTS)}"
                ) from None
    return (np.clip(audio, -1, 1) * 32767).astype(np.int16)

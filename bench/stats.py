"""Timing and memory helpers."""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def percentile(samples: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * q
    low, high = math.floor(k), math.ceil(k)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def summary(seconds: list[float]) -> dict[str, Any]:
    """Milliseconds: n, p50, p95, p99, min, max, mean."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50": percentile(ms, 0.50),
        "p95": percentile(ms, 0.95),
        "p99": percentile(ms, 0.99),
        "min": min(ms),
        "max": max(ms),
        "mean": sum(ms) / len(ms),
    }


def repeat(
    fn: Callable[[int], Any], *, reps: int, budget: float, warmup: int = 2, min_reps: int = 5
) -> list[float]:
    """Time ``fn(i)`` ``reps`` times (after ``warmup`` untimed calls), stopping early once
    ``budget`` seconds are spent and at least ``min_reps`` samples are taken."""
    for i in range(warmup):
        fn(i)
    samples: list[float] = []
    gc_was = gc.isenabled()
    started = time.perf_counter()
    try:
        for i in range(reps):
            gc.disable()
            t0 = time.perf_counter()
            fn(i)
            samples.append(time.perf_counter() - t0)
            if gc_was:
                gc.enable()
            if len(samples) >= min_reps and time.perf_counter() - started > budget:
                break
    finally:
        if gc_was:
            gc.enable()
    return samples


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) etc. of a process, in kB (Linux)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Vm"):
                key, value = line.split(":", 1)
                parts = value.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0])
    except OSError:
        pass
    return out


def disk_read_bytes() -> int | None:
    """Bytes the machine has read from its block devices since boot (Linux; else None): the
    difference around a step shows whether its files came from the page cache."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "pgpgin":
                return int(value) * 1024
    except OSError:
        pass
    return None


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []

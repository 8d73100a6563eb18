"""Results as JSON (everything) and Markdown (the tables a person reads)."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

NOT_MEASURED = [
    {
        "key": "archive_export_import",
        "label": "export and import throughput (MB/s) and peak memory for a 2 GB archive",
        "goal": ">= 200 MB/s with flat memory",
        "reason": "archives (export/import) do not exist yet",
    }
]

_PACKAGES = ("tts-history", "duckdb", "pyarrow", "SQLAlchemy", "watchdog", "pluggy", "numpy", "soundfile")


def archives_available() -> bool:
    try:
        from tts_history.archive import export_archive, import_archives  # noqa: F401
    except ImportError:
        return False
    return True


def machine(workdir: Path) -> dict[str, Any]:
    """What the figures were measured on."""
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    versions["sqlite"] = sqlite3.sqlite_version
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "memory_gib": mem_total,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "filesystem": _filesystem(workdir),
        "versions": versions,
        # the code measured: a run against a snapshot of the tree names it in this variable
        "git_commit": os.environ.get("TTS_HISTORY_BENCH_CODE") or _git_commit(),
    }


def _filesystem(path: Path) -> str | None:
    try:
        best = ("", None)
        target = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, kind, *_ = line.split()
            if target.startswith(mount) and len(mount) > len(best[0]):
                best = (mount, kind)
        return best[1]
    except OSError:
        return None


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10,
        )
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def write(results: dict[str, Any], out: Path, stem: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{stem}.json"
    md_path = out / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    md_path.write_text(markdown(results), encoding="utf-8")
    return md_path, json_path


# -- Markdown ---------------------------------------------------------------------------------


def _num(x: float | None, digits: int | None = None) -> str:
    if x is None:
        return "—"
    if digits is None:
        digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return f"{x:,.{digits}f}"


def _size(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"


def _value(f: dict[str, Any], side: str) -> str:
    stats = f[side]
    if stats is None:
        return "—"
    if "value" in stats:
        return f"{_num(stats['value'])} {f['unit']}"
    text = f"{_num(stats['p50'])} / {_num(stats['p95'])}"
    if f["key"] == "freshness":
        text += f" / {_num(stats['p99'])}"
    return text + f" {f['unit']}"


def _ratio(f: dict[str, Any]) -> str:
    if f.get("ratio") is None:
        return "—"
    return f"{f['ratio']:.2f}x ({f['ratio_stat']})"


def _met(f: dict[str, Any]) -> str:
    return {True: "met", False: "**missed**", None: "—"}[f.get("met")]


def markdown(results: dict[str, Any]) -> str:
    run, m = results["run"], results["machine"]
    v = m["versions"]
    sizes = [i["size"] for i in results["size_info"]]  # measured so far (a long run writes as it goes)
    largest = max(sizes) if sizes else None
    lines = [
        "# tts-history benchmark results",
        "",
        f"Command: `{run['command']}` — {run['started_at']} UTC, {run['seconds'] / 60:.1f} min"
        + (" (**quick mode**: tiny sizes and few repetitions, for CI; not figures to quote)" if run["quick"] else "")
        + ".",
        "",
        f"Machine: {m['cpu_count']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB RAM, "
        f"{m['platform']}, {m['filesystem']} file system; Python {m['python']}; "
        + ", ".join(f"{k} {v[k]}" for k in v if v[k])
        + (f"; code at {m['git_commit']}" if m.get("git_commit") else "")
        + ".",
        "",
        f"Load average (1/5/15 min) at the start {_load(run['load_start'])}, at the end "
        f"{_load(run['load_end'])}"
        + (": above 1, so other work shared the machine at times and figures may be noisy." if max(run["load_start"] + run["load_end"] or [0]) > 1.0 else "."),
        "",
        "Latencies are `p50 / p95` (freshness: `p50 / p95 / p99`). **Ratio** is the baseline's "
        "time divided by ours on the statistic the goal names (p50; p95 for search): above 1 "
        "means tts-history is faster. The baseline is the seed's design run on the same data, "
        "machine and run: SQLite through SQLAlchemy, one commit per generation, the seed's "
        "queries. Goals are the issue's, stated for the 1M library; at smaller sizes `met` is "
        "for reference.",
        "",
    ]
    for remark in results.get("remarks", []):  # what the person who ran it wants readers to know
        lines += [f"> {remark}", ""]
    if largest is not None:
        lines += [f"## Summary at {_size(largest)} generations", ""]
        lines += _table(
            [f for f in results["figures"]
             if (f["size"] == largest or f["key"].startswith("archive")) and (f["goal"] or f["baseline"])],
            brief=True,
        )
        lines.append("")
    lines += ["## Every figure", ""]
    for n in sizes:
        info = next(i for i in results["size_info"] if i["size"] == n)
        lines += [
            f"### {n:,} generations",
            "",
            f"Setup (generate or reuse the library and the baseline) {info.get('setup_seconds', 0):.0f} s; "
            f"measurements {info.get('seconds', 0) - info.get('setup_seconds', 0):.0f} s; load average "
            f"{_load(info.get('load_before', []))} before, {_load(info.get('load_after', []))} after.",
            "",
        ]
        lines += _table([f for f in results["figures"] if f["size"] == n], brief=False)
        lines.append("")
    pending = [n for n in results["sizes"] if n not in sizes]
    if pending:
        lines += [f"Still to measure in this run: {', '.join(f'{n:,}' for n in pending)} generations.", ""]
    lines += ["## Not measured", ""]
    if not results["not_measured"]:
        lines.append("Every figure of the issue was measured.")
    for item in results["not_measured"]:
        lines.append(f"- {item['label'][0].upper() + item['label'][1:]} (goal: {item['goal']}): "
                     f"not measured, {item['reason']}.")
    lines.append("")
    checks = results["checks"]
    failed = [c for c in checks if not c["ok"]]
    lines += [
        "## Harness checks",
        "",
        f"{len(checks) - len(failed)} of {len(checks)} checks passed: both sides hold the same "
        "data and give the same answers (totals, first and deep pages, search totals, stats, "
        "sidecars read back equal to the generated records, audio present).",
    ]
    for c in failed:
        lines.append(f"- FAILED at {c['size']:,}: {c['name']}: {c['detail']}")
    lines += ["", "## How it was measured", ""]
    lines += [f"- {line}" for line in results["method"]]
    return "\n".join(lines) + "\n"


def _load(values: list[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in values) if values else "?"


def _table(figures: list[dict[str, Any]], *, brief: bool) -> list[str]:
    if brief:
        rows = ["| figure | ours | baseline (seed's design) | ratio | goal | met |", "|---|---|---|---|---|---|"]
        for f in figures:
            rows.append(
                f"| {f['label']} | {_value(f, 'ours')} | {_value(f, 'baseline')} | {_ratio(f)} | "
                f"{f['goal'] or '—'} | {_met(f)} |"
            )
        return rows
    rows = [
        "| figure | ours | baseline (seed's design) | ratio | goal | met | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        rows.append(
            f"| {f['label']} | {_value(f, 'ours')} | {_value(f, 'baseline')} | {_ratio(f)} | "
            f"{f['goal'] or '—'} | {_met(f)} | {f['note']} |"
        )
    return rows

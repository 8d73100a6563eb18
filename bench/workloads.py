"""The measurements of one library size, ours beside the baseline's where one exists."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from tts_history import Audio, Generation, get_plugin_manager
from tts_history.index import DEBOUNCE, Filters, Index
from tts_history.library import open_library, schema

from . import build, data
from .baseline import MEASURED_AUDIO, Baseline
from .stats import disk_read_bytes, proc_status, repeat, summary

MB = 1024 * 1024


@dataclass(frozen=True)
class Goal:
    """One condition of a goal: ``stat`` of our figure compared with ``threshold``, and
    optionally a speed-up over the baseline (baseline ``stat`` / ours)."""

    stat: str  # p50 | p95 | p99 | value
    op: str  # <= | >=
    threshold: float | None
    speedup: float | None = None

    def check(self, figure: dict[str, Any]) -> bool | None:
        ours = figure["ours"].get(self.stat)
        if ours is None or (isinstance(ours, float) and math.isnan(ours)):
            return None
        ok = True
        if self.threshold is not None:
            ok = ours <= self.threshold if self.op == "<=" else ours >= self.threshold
        if self.speedup is not None:
            ratio = figure.get("ratio")
            ok = ok and ratio is not None and ratio >= self.speedup
        return ok


# The goals; they are stated for the 1M library.
GOALS: dict[str, tuple[str, tuple[Goal, ...]]] = {
    "host_record": ("p50 <= 1.5 ms", (Goal("p50", "<=", 1.5),)),
    "rebuild": (">= 5,000 sidecars/s on 2 cores", (Goal("value", ">=", 5000),)),
    "sync_one_change": ("<= 2 s at 1M", (Goal("p50", "<=", 2000),)),
    "list_first": ("<= 10 ms, >= 2x baseline", (Goal("p50", "<=", 10, 2),)),
    "list_deep": ("<= 10 ms, >= 2x baseline", (Goal("p50", "<=", 10, 2),)),
    "get": ("<= 5 ms, >= 2x baseline", (Goal("p50", "<=", 5, 2),)),
    "stats": ("<= 20 ms, >= 2x baseline", (Goal("p50", "<=", 20, 2),)),
    "freshness": ("p50 <= 250 ms, p99 <= 1 s", (Goal("p50", "<=", 250), Goal("p99", "<=", 1000))),
    "watcher_rss": ("<= 200 MB at 1M", (Goal("value", "<=", 200),)),
    "archive_export": (">= 200 MB/s", (Goal("value", ">=", 200),)),
    "archive_import": (">= 200 MB/s", (Goal("value", ">=", 200),)),
    # flat: the peak grows by at most 50 MB from an archive a tenth the size
    "archive_export_rss": ("flat (+<= 50 MB for 10x the archive)", (Goal("growth", "<=", 50),)),
    "archive_import_rss": ("flat (+<= 50 MB for 10x the archive)", (Goal("growth", "<=", 50),)),
}
for _name in data.SEARCHES:
    GOALS["search_" + _name.replace(" ", "_")] = (
        "p95 <= 50 ms, >= 2x baseline",
        (Goal("p95", "<=", 50, 2),),
    )
# the speed-up is taken on the statistic the goal names (p95 for search, else p50)
_RATIO_STAT = {key: goals[0].stat for key, (_, goals) in GOALS.items() if goals[0].stat != "value"}


@dataclass
class Config:
    workdir: Path
    processes: int
    reps: int  # repetitions of each query
    budget: float  # seconds to spend on one query figure at most
    host_samples: int
    sync_reps: int
    build_reps: int
    freshness_samples: int
    freshness_budget: float  # seconds of sampling at most (once 5 samples are in)
    log: Callable[[str], None]


def figure(
    key: str,
    label: str,
    size: int,
    unit: str,
    ours: dict[str, Any],
    baseline: dict[str, Any] | None = None,
    note: str = "",
    goal_key: str | None = None,
) -> dict[str, Any]:
    ratio_key = key.removesuffix("_held") if key.removesuffix("_held") in _RATIO_STAT else (goal_key or key)
    goal_key = key if goal_key is None else goal_key
    out: dict[str, Any] = {
        "key": key,
        "label": label,
        "size": size,
        "unit": unit,
        "ours": ours,
        "baseline": baseline,
        "ratio": None,
        "ratio_stat": None,
        "goal": None,
        "met": None,
        "note": note,
    }
    if baseline is not None:
        stat = _RATIO_STAT.get(ratio_key, "p50")
        out["ratio_stat"] = stat
        if ours.get(stat):
            out["ratio"] = baseline[stat] / ours[stat]
        out["ratio_p50"] = baseline["p50"] / ours["p50"] if ours.get("p50") else None
        out["ratio_p95"] = baseline["p95"] / ours["p95"] if ours.get("p95") else None
    if goal_key in GOALS:
        text, goals = GOALS[goal_key]
        out["goal"] = text
        results = [g.check(out) for g in goals]
        out["met"] = None if None in results else all(results)
    return out


def run_size(n: int, cfg: Config) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Every figure at one library size: (figures, checks, info)."""
    log = cfg.log
    info: dict[str, Any] = {"size": n, "load_before": list(os.getloadavg())}
    t_setup = time.perf_counter()
    root = build.ensure_library(cfg.workdir, n, processes=cfg.processes, log=log)
    base_path = build.ensure_baseline(cfg.workdir, n, root, log=log)
    info["setup_seconds"] = round(time.perf_counter() - t_setup, 1)
    library = open_library(root)
    baseline = Baseline(base_path)
    figures: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    try:
        log(f"[{n:,}] host-side cost of recording ({cfg.host_samples} samples)")
        # An fsync waits for other dirty pages of the file system too: the earlier phases'
        # write-back would be billed to the recording, so it is flushed before.
        os.sync()
        figures += host_cost(library, baseline, n, cfg)
        log(f"[{n:,}] cold index build")
        figures += cold_build(root, n, cfg)
        index = Index(library)
        checks += correctness(library, index, baseline, n)
        for check in checks:
            if not check["ok"]:
                log(f"  CHECK FAILED: {check['name']}: {check['detail']}")
        log(f"[{n:,}] queries")
        figures += queries(index, baseline, n, cfg)
        log(f"[{n:,}] incremental sync")
        figures += incremental_sync(library, index, n, cfg)
        log(f"[{n:,}] freshness under the watcher ({cfg.freshness_samples} samples)")
        figures += freshness(library, index, n, cfg)
    finally:
        baseline.close()
    info["load_after"] = list(os.getloadavg())
    info["seconds"] = round(time.perf_counter() - t_setup, 1)
    return figures, checks, info


# -- host-side cost -------------------------------------------------------------------------


def _clip(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * data.SAMPLE_RATE)) / data.SAMPLE_RATE
    return (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def host_cost(library, baseline: Baseline, n: int, cfg: Config) -> list[dict[str, Any]]:
    """The host's call that records a finished generation (its sidecar and audio durable when
    the call returns), through the real plugin manager, against the seed's add + commit."""
    pm = get_plugin_manager(library.root)
    clip = _clip(2.0)
    texts = [r["text"] for r in data.records(n, 0, min(n, 200), _shas())]
    profile = data.PROFILES[0]
    ours_ids: list[str] = []
    base_ids: list[str] = []
    completed: list[float] = []
    pair: list[float] = []
    seed_insert: list[float] = []
    warmup = 20
    for i in range(cfg.host_samples + warmup):
        text = texts[i % len(texts)]
        gid = str(uuid.uuid4())
        t0 = time.perf_counter()
        pm.hook.tts_history_generation_completed(
            generation=Generation(
                id=gid, profile_id=profile.id, text=text, language="en", seed=i, model_size="1.7B"
            ),
            audio=Audio.from_samples(clip, data.SAMPLE_RATE),
        )
        t1 = time.perf_counter()
        ours_ids.append(gid)

        gid = str(uuid.uuid4())
        t2 = time.perf_counter()
        generation = Generation(
            id=gid, profile_id=profile.id, text=text, language="en", seed=i, model_size="1.7B"
        )
        pm.hook.tts_history_generation_started(generation=generation)
        pm.hook.tts_history_generation_completed(
            generation=generation, audio=Audio.from_samples(clip, data.SAMPLE_RATE)
        )
        t3 = time.perf_counter()
        ours_ids.append(gid)

        gid = str(uuid.uuid4())
        audio_path = str(library.root / MEASURED_AUDIO / f"{gid}.wav")  # written by the seed's host
        t4 = time.perf_counter()
        baseline.create_generation(profile.id, text, "en", audio_path, 2.0, i, None, generation_id=gid)
        t5 = time.perf_counter()
        base_ids.append(gid)
        if i >= warmup:
            completed.append(t1 - t0)
            pair.append(t3 - t2)
            seed_insert.append(t5 - t4)
    for gid in ours_ids:
        pm.hook.tts_history_generation_deleted(generation_id=gid)
    baseline.delete_measured()
    build._clean_leftovers(library.root)
    base = summary(seed_insert)
    note = "2 s of 24 kHz audio from samples; the seed's figure is add + commit only (its host writes the WAV besides)"
    return [
        figure("host_record", "record one generation: `completed` hook", n, "ms", summary(completed), base, note),
        figure(
            "host_record_pair",
            "record one generation: `started` + `completed` hooks",
            n,
            "ms",
            summary(pair),
            base,
            "",
            goal_key="host_record",
        ),
    ]


def _shas() -> dict[int, str]:
    return {s: data.wav_sha256(s) for s in range(1, data.MAX_SECONDS + 1)}


# -- cold build -------------------------------------------------------------------------------


def cold_build(root: Path, n: int, cfg: Config) -> list[dict[str, Any]]:
    sidecars = n + len(data.PROFILES)
    runs = []
    for _ in range(cfg.build_reps if n <= 20_000 else 1):
        read_before = disk_read_bytes()
        out = subprocess.run(
            [sys.executable, "-m", "tts_history.bench.worker", "rebuild", str(root)],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if result["errors"]:
            raise RuntimeError(f"the cold build reported errors: {result['first_errors']}")
        read_after = disk_read_bytes()
        result["disk_read_bytes"] = None if read_before is None or read_after is None else read_after - read_before
        runs.append(result)
        cfg.log(f"  {sidecars:,} sidecars in {result['seconds']:.1f} s")
    runs.sort(key=lambda r: r["seconds"])
    median = runs[len(runs) // 2]
    rates = [sidecars / r["seconds"] for r in runs]
    return [
        figure(
            "rebuild",
            "cold full index build from sidecars",
            n,
            "sidecars/s",
            {"value": sidecars / median["seconds"], "seconds": median["seconds"], "runs": len(runs),
             "min": min(rates), "max": max(rates), "disk_read_bytes": median["disk_read_bytes"]},
            note=f"{median['seconds']:.1f} s for {sidecars:,} sidecars (median of {len(runs)}); "
            + _cache_note(median["disk_read_bytes"]),
        ),
        figure(
            "rebuild_rss",
            "cold full index build: peak memory of the process",
            n,
            "MB",
            {"value": max(r["peak_rss_kb"] for r in runs) / 1024},
        ),
    ]


def _cache_note(read: int | None) -> str:
    if read is None:
        return "disk reads not known on this system"
    # the machine's reads while it ran: the index's own file and the interpreter's are a few MB
    return f"{read / 1e6:,.0f} MB read from disk meanwhile" + (" (page cache warm)" if read < 50e6 else "")


# -- correctness of the harness ---------------------------------------------------------------


def correctness(library, index: Index, baseline: Baseline, n: int) -> list[dict[str, Any]]:
    """The two sides hold the same data and answer the same: otherwise the figures compare
    different things."""
    checks = []

    def check(name: str, ok: bool, detail: Any = "") -> None:
        checks.append({"size": n, "name": name, "ok": bool(ok), "detail": str(detail)})

    ours = index.list(limit=50)
    base = baseline.list_generations(limit=50)
    check("total generations", ours["total"] == base["total"] == n, (ours["total"], base["total"], n))
    check(
        "first page: same ids in the same order",
        [i["id"] for i in ours["items"]] == [i["id"] for i in base["items"]],
    )
    deep = _deep(n)
    ours_deep = index.list(limit=50, offset=deep)
    base_deep = baseline.list_generations(limit=50, offset=deep)
    check(
        "deep page: same ids in the same order",
        [i["id"] for i in ours_deep["items"]] == [i["id"] for i in base_deep["items"]],
    )
    same_fields = all(
        a[k] == b[k]
        for a, b in zip(ours["items"], base["items"])
        for k in ("id", "profile_id", "profile_name", "text", "language", "audio_path", "seed",
                  "engine", "status", "is_favorited", "created_at")
    )
    check("first page: same field values (seed's response schema)", same_fields)
    for name, query in data.SEARCHES.items():
        a = index.list(Filters(search=query), limit=50)["total"]
        b = baseline.list_generations(search=query, limit=50)["total"]
        check(f"search {name} ({query!r}): same total", a == b, (a, b))
    s_ours, s_base = index.stats(), baseline.get_generation_stats()
    check("stats: total", s_ours["total_generations"] == s_base["total_generations"])
    check(
        "stats: total duration",
        math.isclose(s_ours["total_duration_seconds"], s_base["total_duration_seconds"] or 0, rel_tol=1e-9),
        (s_ours["total_duration_seconds"], s_base["total_duration_seconds"]),
    )
    check("stats: by profile", s_ours["generations_by_profile"] == s_base["generations_by_profile"])
    _, rows = index.sql(
        "SELECT count(*) FILTER (status = 'completed' AND NOT audio_present), "
        "count(*) FILTER (status = 'completed'), count(*) FILTER (is_favorited), "
        "count(*) FILTER (status = 'failed'), (SELECT count(*) FROM versions) FROM generations"
    )
    missing, completed, favorites, failed, versions = rows[0]
    check("every completed generation's audio is present", missing == 0, f"{missing} missing")
    check(
        "the library has failures, favorites and processed versions",
        failed > 0 and favorites > 0 and versions > completed,
        f"completed {completed}, failed {failed}, favorites {favorites}, versions {versions}",
    )
    # sidecars read back through the product's reader equal the generated records
    shas = _shas()
    sample = [r for k, r in enumerate(data.records(n, 0, min(n, 2000), shas)) if k % 97 == 0]
    same = all(
        schema.read_generation(library.sidecar_path(r["id"], r["created_at"])) == r for r in sample
    )
    check("sidecars round-trip through library.schema", same, f"{len(sample)} compared")
    try:
        got = index.get(sample[0]["id"])
    except LookupError as exc:
        check("get: same record", False, exc)
    else:
        got_base = baseline.get_generation(sample[0]["id"]) or {}
        check("get: same record", (got["text"], got["profile_name"]) == (got_base.get("text"), got_base.get("profile_name")))
    return checks


def _deep(n: int) -> int:
    return max(0, (n // 2) // 50 * 50)


# -- queries ----------------------------------------------------------------------------------


def queries(index: Index, baseline: Baseline, n: int, cfg: Config) -> list[dict[str, Any]]:
    with baseline.engine.connect() as con:
        step = max(1, n // 100)
        ids = [row[0] for row in con.exec_driver_sql(
            f"SELECT id FROM generations WHERE rowid % {step} = 0 LIMIT 100"
        )]
    random.Random(n).shuffle(ids)
    # gets held open read other rows than those of the gets before them: a row read once is
    # cached, and the second figure would otherwise owe its speed to the first
    held_ids = ids[len(ids) // 2 :]
    ids = ids[: len(ids) // 2]
    deep = _deep(n)
    cursor = index.list(limit=1, offset=deep - 1)["next_cursor"] if deep else None
    held_fns = {"get": lambda i: index.get(held_ids[i % len(held_ids)])}
    specs: list[tuple[str, str, Callable[[int], Any], Callable[[int], Any]]] = [
        ("list_first", "list, first page (50)", lambda i: index.list(limit=50),
         lambda i: baseline.list_generations(limit=50)),
        ("list_deep", f"list, deep page (offset {deep:,})", lambda i: index.list(limit=50, offset=deep),
         lambda i: baseline.list_generations(limit=50, offset=deep)),
        ("list_cursor", f"list, deep page by cursor (after {deep:,}; baseline: its offset page)",
         lambda i: index.list(limit=50, cursor=cursor),
         lambda i: baseline.list_generations(limit=50, offset=deep)),
        ("get", "get by id", lambda i: index.get(ids[i % len(ids)]),
         lambda i: baseline.get_generation(ids[i % len(ids)])),
    ]
    for name, query in data.SEARCHES.items():
        specs.append(
            (
                "search_" + name.replace(" ", "_"),
                f"search, {name} ({query!r})",
                lambda i, q=query: index.list(Filters(search=q), limit=50),
                lambda i, q=query: baseline.list_generations(search=q, limit=50),
            )
        )
    specs.append(("stats", "stats", lambda i: index.stats(), lambda i: baseline.get_generation_stats()))
    out = []
    goal_keys = {"list_cursor": "list_deep"}  # the same page, reached as a client pages
    for key, label, ours_fn, base_fn in specs:
        base = summary(repeat(base_fn, reps=cfg.reps, budget=cfg.budget))
        ours = summary(repeat(ours_fn, reps=cfg.reps, budget=cfg.budget))
        with index.reading():  # the process keeps its read connection open across calls
            held = summary(repeat(held_fns.get(key, ours_fn), reps=cfg.reps, budget=cfg.budget))
        out.append(figure(key, label, n, "ms", ours, base, "back-to-back calls through Index as shipped (its own connection handling)",
                          goal_key=goal_keys.get(key)))
        out.append(
            figure(
                key + "_held",
                label + " (index connection held open)",
                n,
                "ms",
                held,
                base,
                "one connection held open across the calls, as the baseline's pooled engine does",
                goal_key="",
            )
        )
        cfg.log(
            f"  {label}: ours {ours['p50']:.1f} ms (held {held['p50']:.1f}), "
            f"baseline {base['p50']:.1f} ms (p50)"
        )
    return out


# -- incremental sync -------------------------------------------------------------------------


def incremental_sync(library, index: Index, n: int, cfg: Config) -> list[dict[str, Any]]:
    shas = _shas()
    target = next(r for r in data.records(n, n // 3, min(n, n // 3 + 50), shas) if r["status"] == "completed")
    path = library.sidecar_path(target["id"], target["created_at"])
    original = schema.read_generation(path)
    folder = library.relative(path.parent)

    def change() -> None:
        record = schema.read_generation(path)
        record["is_favorited"] = not record["is_favorited"]
        record["updated_at"] = schema.now()
        schema.write_generation(path, record)

    index.sync()
    unchanged = repeat(lambda i: index.sync(), reps=cfg.sync_reps, budget=60, warmup=0, min_reps=2)
    full, every, targeted, updated = [], [], [], []
    for rep in range(cfg.sync_reps):
        change()
        t0 = time.perf_counter()
        report = index.sync()
        full.append(time.perf_counter() - t0)
        updated.append(report.updated)
        if rep < (cfg.sync_reps if n <= 200_000 else 2):  # it stats every file: long at 1M
            change()
            t0 = time.perf_counter()
            report = index.sync(every_file=True)
            every.append(time.perf_counter() - t0)
            updated.append(report.updated)
        change()
        t0 = time.perf_counter()
        index.sync(within=[folder])
        targeted.append(time.perf_counter() - t0)
    schema.write_generation(path, original)
    index.sync()
    note = f"every sync reported {min(updated)}-{max(updated)} updated"
    return [
        figure("sync_one_change", "incremental sync, one sidecar changed (`tts-history sync`)", n, "ms",
               summary(full), note=note),
        figure("sync_every_file", "incremental sync, one sidecar changed, every file compared (`sync --every-file`)",
               n, "ms", summary(every)),
        figure("sync_nothing", "incremental sync, nothing changed", n, "ms", summary(unchanged)),
        figure("sync_within", "targeted sync of the changed day folder (watcher, History)", n, "ms",
               summary(targeted)),
    ]


# -- freshness under the watcher, and the watcher's memory ------------------------------------


def freshness(library, index: Index, n: int, cfg: Config) -> list[dict[str, Any]]:
    root = library.root
    env = dict(os.environ)
    started = time.perf_counter()
    watcher = subprocess.Popen(
        [sys.executable, "-m", "tts_history", "--library", str(root), "watch"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        assert watcher.stderr is not None
        for line in watcher.stderr:
            lines.append(line.rstrip())
            if line.startswith("Watching "):
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    probe = None
    ids: list[str] = []
    pm = get_plugin_manager(root)
    try:
        if not ready.wait(3600) or watcher.poll() is not None:
            raise RuntimeError("the watcher did not start:\n" + "\n".join(lines[-20:]))
        start_seconds = time.perf_counter() - started
        rss_started = proc_status(watcher.pid)
        probe = subprocess.Popen(
            [sys.executable, "-m", "tts_history.bench.worker", "probe", str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert probe.stdout is not None and probe.stdin is not None
        if probe.stdout.readline().strip() != "ready":
            raise RuntimeError("the freshness probe did not start")
        day = datetime(2030, 1, 1, 12, tzinfo=timezone.utc)  # outside the generated span
        clip = _clip(1.0)
        rng = random.Random(n)
        latencies: list[float] = []
        timeouts = 0
        sampling = time.perf_counter()
        for i in range(cfg.freshness_samples + 1):  # the first one creates the day folder
            if len(latencies) >= 5 and time.perf_counter() - sampling > cfg.freshness_budget:
                break  # enough samples for the time allowed (--quick must stay quick)
            gid = str(uuid.uuid4())
            pm.hook.tts_history_generation_completed(
                generation=Generation(
                    id=gid, profile_id=data.PROFILES[0].id, text=f"freshness probe {i}",
                    created_at=day + timedelta(seconds=i),
                ),
                audio=Audio.from_samples(clip, data.SAMPLE_RATE),
            )
            t0 = time.monotonic()  # the sidecar is durable: the hook returned
            ids.append(gid)
            probe.stdin.write(f"{gid} {t0!r}\n")
            probe.stdin.flush()
            answer = probe.stdout.readline().split()
            if i > 0:
                if answer[1] == "timeout":
                    timeouts += 1
                else:
                    latencies.append(float(answer[1]))
            time.sleep(rng.uniform(0.02, 0.15))
        status = proc_status(watcher.pid)
    finally:
        if probe is not None:
            probe.stdin.close()
            probe.wait(30)
        for gid in ids:
            pm.hook.tts_history_generation_deleted(generation_id=gid)
        watcher.terminate()
        try:
            watcher.wait(120)
        except subprocess.TimeoutExpired:
            watcher.kill()
            watcher.wait()
        build._clean_leftovers(root)
        index.sync()
    if watcher.returncode != 0:
        raise RuntimeError(f"the watcher exited {watcher.returncode}:\n" + "\n".join(lines[-20:]))
    # the watcher logs each batch's duration: where the time goes
    batches = [float(m.group(1)) for line in lines if (m := re.search(r"batch: .* in (\d+) ms", line))]
    fresh = summary(latencies)
    note = f"{timeouts} timeout(s) of 20 s; " if timeouts else ""
    if batches:
        fresh["watcher_batch_ms"] = summary([b / 1000 for b in batches])
        note += (f"the watcher's batches took p50 {fresh['watcher_batch_ms']['p50']:.0f} ms "
                 f"(p95 {fresh['watcher_batch_ms']['p95']:.0f} ms, {len(batches)} batches), after a "
                 f"{DEBOUNCE * 1000:.0f} ms debounce")
    return [
        figure("freshness", "freshness: sidecar durable -> visible to another process's query", n, "ms",
               fresh, note=note),
        figure("watcher_start", "watcher start: process start, reconcile, watching", n, "ms",
               {"value": start_seconds * 1000}),
        figure("watcher_rss", "watcher peak memory (VmHWM) holding the library", n, "MB",
               {"value": status.get("VmHWM", 0) / 1024,
                "rss_after_start": rss_started.get("VmRSS", 0) / 1024,
                "rss_end": status.get("VmRSS", 0) / 1024}),
    ]


# -- archives: export and import throughput, and their memory --------------------------------


def archives(roots: dict[int, Path], target_bytes: int, cfg: Config) -> list[dict[str, Any]]:
    """Export the oldest generations holding ``target_bytes`` of audio (and a tenth of that, to
    see whether memory stays flat) from a generated library, then import each archive into an
    empty library. Each step runs in a process of its own, for its peak RSS."""
    n, root = _library_with_audio(roots, target_bytes)
    index = Index(open_library(root))
    _, rows = index.sql(
        "SELECT g.id, sum(v.audio_bytes) FROM generations g JOIN versions v ON v.generation_id = g.id "
        "WHERE g.status = 'completed' GROUP BY g.id, g.created_at ORDER BY g.created_at, g.id"
    )
    work = cfg.workdir / f"archives-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    runs: dict[str, dict[str, Any]] = {}
    try:
        for name, target in (("small", target_bytes // 10), ("large", target_bytes)):
            ids, total = [], 0
            for gid, audio_bytes in rows:
                if total >= target:
                    break
                ids.append(gid)
                total += int(audio_bytes)
            (work / f"{name}.ids").write_text("\n".join(ids))
            archive = work / f"{name}.zip"
            exported = _worker("export", str(root), str(archive), str(work / f"{name}.ids"))
            target_library = work / f"import-{name}"
            imported = _worker("import", str(target_library), str(archive))
            if imported["imported"] != len(ids):
                raise RuntimeError(f"the import took {imported['imported']} of {len(ids)} generations")
            runs[name] = {"export": exported, "import": imported, "generations": len(ids)}
            cfg.log(
                f"  {name}: {exported['archive_bytes'] / 1e6:,.0f} MB, {len(ids):,} generations: export "
                f"{exported['seconds']:.1f} s, import {imported['seconds']:.1f} s"
            )
            archive.unlink()
            shutil.rmtree(target_library)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    large, small = runs["large"], runs["small"]
    size_mb = large["export"]["archive_bytes"] / 1e6
    out = []
    for step in ("export", "import"):
        big, little = large[step], small[step]
        out.append(
            figure(
                f"archive_{step}",
                f"{step} of a {size_mb / 1000:.2f} GB archive: throughput",
                n,
                "MB/s",
                {"value": large["export"]["archive_bytes"] / 1e6 / big["seconds"], "seconds": big["seconds"],
                 "archive_bytes": large["export"]["archive_bytes"], "generations": large["generations"]},
                note=f"{big['seconds']:.1f} s for {large['generations']:,} generations; MB = 10^6 bytes",
            )
        )
        peak, peak_small = big["peak_rss_kb"] / 1024, little["peak_rss_kb"] / 1024
        out.append(
            figure(
                f"archive_{step}_rss",
                f"{step} of a {size_mb / 1000:.2f} GB archive: peak memory",
                n,
                "MB",
                {"value": peak, "small_archive_value": peak_small, "growth": peak - peak_small},
                note=f"{peak_small:.0f} MB for an archive a tenth the size (growth {peak - peak_small:+.0f} MB)",
            )
        )
    return out


def _library_with_audio(roots: dict[int, Path], target_bytes: int) -> tuple[int, Path]:
    """The smallest generated library holding enough audio (else the largest)."""
    per_generation = 0.9 * data.wav_bytes(6)  # a conservative average
    for n in sorted(roots):
        if n * per_generation >= target_bytes * 1.1:
            return n, roots[n]
    n = max(roots)
    return n, roots[n]


def _worker(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "tts_history.bench.worker", *args],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])

"""``tts-history-bench`` / ``python -m tts_history.bench``: run the benchmark, write the results.

    tts-history-bench                      # 10k, 100k and 1M; results in bench/results/
    tts-history-bench --sizes 10k,100k     # only these sizes
    tts-history-bench --quick              # one tiny library, few repetitions (CI)

Generated libraries and baseline databases are cached in ``--workdir`` and reused by later
runs; every run builds its index afresh in a per-run cache folder there.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

DEFAULT_SIZES = "10k,100k,1M"
QUICK_SIZES = "2000"
WORKDIR_ENV = "TTS_HISTORY_BENCH_WORKDIR"


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "").replace(",", "")
    factor = 1
    if text.endswith("k"):
        factor, text = 1000, text[:-1]
    elif text.endswith("m"):
        factor, text = 1_000_000, text[:-1]
    value = float(text) * factor
    if value < 100 or value != int(value):
        raise argparse.ArgumentTypeError(f"size {text!r}: give a whole number of at least 100, e.g. 10k or 1M")
    return int(value)


def _sizes(text: str) -> list[int]:
    try:
        return sorted({parse_size(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes {text!r}: use e.g. 10k,100k,1M") from None


def _default_out(quick: bool, workdir: Path) -> Path:
    here = Path(__file__).resolve().parent / "results"
    if not quick and here.is_dir() and os.access(here, os.W_OK):
        return here  # a source checkout: the committed results
    return workdir / "results"


def _remove_stale(workdir: Path) -> None:
    """Per-run folders of runs that died (their process is gone)."""
    for folder in list(workdir.glob("run-cache-*")) + list(workdir.glob("archives-*")):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tts-history-bench",
        description="Measure tts-history beside the seed's design (SQLite + SQLAlchemy) on the "
        "same data, machine and run; write Markdown and JSON results.",
    )
    parser.add_argument("--sizes", type=_sizes, help=f"library sizes, e.g. 10k,100k,1M (default {DEFAULT_SIZES}; --quick: {QUICK_SIZES})")
    parser.add_argument("--quick", action="store_true", help="tiny library, few repetitions: proves the harness works (CI)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help=f"where libraries are generated and cached [env {WORKDIR_ENV}; default /tmp/tts-history-bench]")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for latest.md and latest.json (default: bench/results in a source checkout, else WORKDIR/results; --quick: WORKDIR/results)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="processes writing generated libraries")
    parser.add_argument("--reps", type=int, default=None, help="repetitions of each query (default 40; --quick 8)")
    parser.add_argument("--host-samples", type=int, default=None, help="generations recorded for the host-side cost (default 2000; --quick 100)")
    parser.add_argument("--freshness-samples", type=int, default=None, help="generations timed under the watcher (default 150; --quick 15)")
    parser.add_argument("--archive-bytes", type=int, default=None, help="audio bytes in the archive exported and imported (default 2e9; --quick 2e7)")
    parser.add_argument("--remark", action="append", default=[], help="a note to print at the top of the results (repeatable)")
    parser.add_argument("--keep-cache", action="store_true", help="keep the per-run index folder after the run")
    args = parser.parse_args(argv)

    quick = args.quick
    sizes = args.sizes or _sizes(QUICK_SIZES if quick else DEFAULT_SIZES)
    workdir = (args.workdir or Path(os.environ.get(WORKDIR_ENV) or "/tmp/tts-history-bench")).expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    out = (args.out.expanduser().resolve() if args.out else _default_out(quick, workdir))

    _remove_stale(workdir)
    # The index and the plugin's lock go to a cache folder of this run, inside the work folder.
    run_cache = workdir / f"run-cache-{os.getpid()}"
    shutil.rmtree(run_cache, ignore_errors=True)
    os.environ["XDG_CACHE_HOME"] = str(run_cache)
    for name in ("TTS_HISTORY_LIBRARY", "TTS_HISTORY_INDEX"):
        os.environ.pop(name, None)

    from . import report
    from .stats import loadavg
    from . import build
    from .workloads import Config, archives, run_size

    def log(message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)

    cfg = Config(
        workdir=workdir,
        processes=max(1, args.processes),
        reps=args.reps or (8 if quick else 40),
        budget=2.0 if quick else 15.0,
        host_samples=args.host_samples or (100 if quick else 2000),
        sync_reps=2 if quick else 5,
        build_reps=1 if quick else 3,
        freshness_samples=args.freshness_samples or (15 if quick else 150),
        freshness_budget=10.0 if quick else 900.0,
        log=log,
    )
    command = "tts-history-bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    started = time.perf_counter()
    results = {
        "schema": 1,
        "run": {
            "command": command.strip(),
            "quick": quick,
            "started_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "load_start": loadavg(),
            "workdir": str(workdir),
        },
        "machine": report.machine(workdir),
        "remarks": list(args.remark),
        "sizes": sizes,
        "figures": [],
        "checks": [],
        "size_info": [],
        "not_measured": report.NOT_MEASURED,
        "method": [
            "Libraries are generated once by a bulk writer (real sidecars in the exact format, audio "
            "hard-linked to shared WAVs of the recorded size), cached in the work folder; the "
            "baseline database holds the same records, loaded with executemany.",
            "Host-side cost: the real plugin manager's hooks, timed around the call, interleaved with "
            "the seed's create_generation (session, add, commit) on the same size of database; 20 "
            "warm-up calls each are not counted. The disk's pending writes of earlier phases are "
            "flushed first (`os.sync`), as an fsync waits on them too.",
            "Cold build: a separate process deletes the index and builds it from the sidecars "
            "(`Index.rebuild`). Its note says how much the machine read from disk meanwhile: "
            "the sidecars of a library larger than the page cache come from the disk, and the "
            "figure is then the disk's as much as the code's.",
            "Queries: tts-history through `Index` (what `History` with auto-sync off, e.g. under a "
            "watcher, runs), back to back with the product's own connection handling, and again "
            "inside one `Index.reading()` that holds the connection open; the baseline through "
            "the seed's SQLAlchemy queries on a pooled engine. Gets held open read 50 other ids "
            "than the 50 before them, so that neither figure finds the other's rows cached. "
            "Two warm-up calls, then up to the repetitions asked for (within a time budget).",
            "Incremental sync: one sidecar rewritten atomically (favorite flipped), then a full "
            "`Index.sync()` timed; and a sync limited to that day folder.",
            "Freshness: a `tts-history watch` subprocess follows the library; this process records a "
            "generation through the hooks, and a third process polls `Index.get(id)` every 5 ms "
            "from the moment the hook returned until it is found (CLOCK_MONOTONIC, shared by "
            "the processes). The watcher's peak memory is its VmHWM afterwards.",
            "Archives: `History.export` of the oldest generations holding the archive's size of "
            "audio, then `History.import_archives` of it into an empty library, each in a process "
            "of its own (peak memory: its maximum RSS); the same again for an archive a tenth the "
            "size, to see whether memory stays flat.",
        ],
    }
    log(f"sizes {', '.join(f'{n:,}' for n in sizes)}; work folder {workdir}; results to {out}")
    try:
        for n in sizes:
            figures, checks, info = run_size(n, cfg)
            results["figures"] += figures
            results["checks"] += checks
            results["size_info"].append(info)
            results["run"]["seconds"] = time.perf_counter() - started
            results["run"]["load_end"] = loadavg()
            md, js = report.write(results, out, "latest")  # after each size: a long run shows progress
            log(f"[{n:,}] done; results so far in {md}")
        if report.archives_available():
            target = args.archive_bytes or (20_000_000 if quick else 2_000_000_000)
            log(f"archives: export and import of {target / 1e9:.2f} GB (and a tenth of that)")
            roots = {n: build.library_dir(workdir, n) for n in sizes}
            results["figures"] += archives(roots, target, cfg)
            results["not_measured"] = []
    finally:
        if not args.keep_cache:
            shutil.rmtree(run_cache, ignore_errors=True)
    results["run"]["seconds"] = time.perf_counter() - started
    results["run"]["load_end"] = loadavg()
    md, js = report.write(results, out, "latest")
    print(md.read_text())
    log(f"wrote {md} and {js}")
    failed = [c for c in results["checks"] if not c["ok"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

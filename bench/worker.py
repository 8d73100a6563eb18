"""Measurements that run in a process of their own.

``python -m tts_history.bench.worker rebuild LIBRARY``: a cold index build (the index deleted,
then built from the sidecars); prints JSON with the time, the counts and the peak RSS.

``python -m tts_history.bench.worker probe LIBRARY``: the reader of the freshness figure. It
reads ``<id> <t0>`` lines (``t0``: the writer's ``time.monotonic()`` when the sidecar was
durable; CLOCK_MONOTONIC is shared by every process on the machine), polls the index from this
process until the generation is visible, and answers ``<id> <seconds>`` (or ``<id> timeout``).

``export LIBRARY OUT IDS_FILE`` and ``import LIBRARY ARCHIVE``: one archive export or import
through ``History``; print JSON with the time and the peak RSS.

Each sets up its process as the ``tts-history`` command does (its Arrow allocator).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def rebuild(library: str) -> None:
    from tts_history.index import Index

    index = Index(library)
    started = time.perf_counter()
    step = [0]

    def progress(done: int, total: int) -> None:
        if done >= step[0] or done == total:
            step[0] = done + max(50_000, total // 10)
            print(f"    rebuild: {done:,}/{total:,} sidecars read and applied "
                  f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    report = index.rebuild(progress=progress)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "added": report.added,
                "errors": len(report.errors),
                "first_errors": report.errors[:3],
                "peak_rss_kb": _peak_kb(),
            }
        ),
        flush=True,
    )


def export(library: str, out: str, ids_file: str) -> None:
    from tts_history import History

    ids = Path(ids_file).read_text().split()
    history = History(library, auto_sync=False)
    started = time.perf_counter()
    summary = history.export(out, ids)
    seconds = time.perf_counter() - started
    print(json.dumps({**summary, "seconds": seconds, "peak_rss_kb": _peak_kb()}), flush=True)


def import_(library: str, archive: str) -> None:
    from tts_history import History

    history = History(library)
    history.index.sync()  # the empty target's index: not part of the figure
    started = time.perf_counter()
    report = history.import_archives([archive])
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "imported": len(report.imported),
                      "skipped": len(report.skipped), "peak_rss_kb": _peak_kb()}), flush=True)


def _peak_kb() -> int:
    """This process's peak RSS. VmHWM, not ru_maxrss: getrusage keeps the parent's peak across
    fork and exec, so a child of a big process would report the parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def probe(library: str, poll: float = 0.005, timeout: float = 20.0) -> None:
    from tts_history.index import Index, NotFoundError

    index = Index(library)
    index.list(limit=1)  # open once: imports and the index's checks are not part of the figure
    print("ready", flush=True)
    for line in sys.stdin:
        generation_id, t0 = line.split()
        t0 = float(t0)
        while True:
            try:
                index.get(generation_id)
            except NotFoundError:
                if time.monotonic() - t0 > timeout:
                    print(f"{generation_id} timeout", flush=True)
                    break
                time.sleep(poll)
                continue
            print(f"{generation_id} {time.monotonic() - t0:.6f}", flush=True)
            break


def main() -> None:
    from tts_history.cli import use_system_allocator

    use_system_allocator()  # each command stands for the CLI's, which does the same
    command, *args = sys.argv[1:]
    {"rebuild": rebuild, "probe": probe, "export": export, "import": import_}[command](*args)


if __name__ == "__main__":
    main()

"""Live sync: a watchdog observer keeps the index in step with the library folder.

The watcher is an accelerator; the scan is the guarantee. Events only say *where* to look:
each batch re-reads just those paths with the same reconcile as ``sync``, so a lost, duplicated
or out-of-order event can never make the index wrong, only late. inotify loses events in bursts
(the kernel queue overflows) and network drives give none, so the watcher also reconciles the
whole folder every ``reconcile_every`` seconds (the folders that changed, as ``sync`` does) and
when an overflow is reported (every file: lost events may have been writes in place).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from . import DEBOUNCE, Index
from .connection import IndexBusyError
from .sync import SyncReport, ignored

log = logging.getLogger("tts_history.watch")

# watchdog reports a kernel queue overflow only through this logger (FACTS: it keeps watching)
_INOTIFY_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")
_EVENTS = {"created", "modified", "deleted", "moved", "closed"}  # not opened / closed_no_write
HEARTBEAT = "watcher.json"
# Readers skip their own sync while a watcher's heartbeat is fresh: it beats every _BEAT
# seconds from a thread of its own (a long batch does not stop it; a frozen process does)
_BEAT = 1.0
_FRESH = 5 * _BEAT
# ... and only if it notices changes this soon: a slower poll is left to readers' own syncs
_TRUSTED_POLL = 2.0
_PIN_LIMIT = 64  # paths in a batch small enough to apply under one open of the index


class _OverflowSpotter(logging.Handler):
    def __init__(self, watcher: Watcher) -> None:
        super().__init__(logging.WARNING)
        self.watcher = watcher

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            # lost events may have been writes in place, which no folder's stat shows
            self.watcher.request_reconcile("the kernel's event queue overflowed", every_file=True)


class _Events(FileSystemEventHandler):
    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _EVENTS:
            return
        if event.is_directory and event.event_type == "modified":
            return  # an entry of it changed, and that entry has an event of its own
        paths = [event.src_path, getattr(event, "dest_path", "")]
        self.watcher.notify(os.fsdecode(p) for p in paths if p)


class Watcher:
    """Keeps ``index`` current while running. Thread-based: ``start()`` returns at once, and the
    host's own threads (or asyncio loop) go on; queries from this process share the index's
    connection while a batch is applied.

    :param polling: poll instead of using OS events (network drives, which send none).
    :param poll_interval: seconds between polls.
    :param debounce: seconds to let a burst of events gather into one batch.
    :param reconcile_every: seconds between reconciles of the whole library (None: never, not advised).
    """

    def __init__(
        self,
        index: Index,
        *,
        polling: bool = False,
        poll_interval: float = 1.0,
        debounce: float = DEBOUNCE,
        reconcile_every: float | None = 300.0,
    ) -> None:
        self.index = index
        self.root = index.library.root
        self.polling = polling
        self.poll_interval = poll_interval
        self.debounce = debounce
        self.reconcile_every = reconcile_every
        self.batches = 0
        self.reconciles = 0
        self._pending: set[str] = set()
        self._reconcile_reason: str | None = None
        self._reconcile_every_file = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer = None
        self._beater: threading.Thread | None = None
        self._spotter = _OverflowSpotter(self)
        self._heartbeat = index.path.parent / HEARTBEAT
        self._root_id: tuple[int, int] | None = None  # the folder watched (device, inode)

    # -- public ----------------------------------------------------------------------------

    def start(self) -> Watcher:
        """Reconcile what changed while nobody watched, then follow events in the background."""
        self.index.sync()
        self.reconciles += 1
        for name in _INOTIFY_LOGGERS:
            logging.getLogger(name).addHandler(self._spotter)
        observer = PollingObserver(timeout=self.poll_interval) if self.polling else Observer()
        self._root_id = _identity(self.root)
        observer.schedule(_Events(self), str(self.root), recursive=True)
        observer.start()
        self._observer = observer
        self._thread = threading.Thread(target=self._run, name="tts-history-watch", daemon=True)
        self._thread.start()
        self._write_heartbeat()
        self._beater = threading.Thread(target=self._beat, name="tts-history-heartbeat", daemon=True)
        self._beater.start()
        self._idle.set()
        # a host that exits without stop(): the batch thread must not die inside DuckDB
        atexit.register(self.stop)
        log.info("watching %s (%s)", self.root, "polling" if self.polling else "events")
        return self

    def stop(self) -> None:
        """Stop following events, finish the batch under way, checkpoint the index."""
        atexit.unregister(self.stop)
        if self._stopping.is_set():
            return
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
        self._stopping.set()
        self._wake.set()
        for thread in (self._thread, self._beater):
            if thread is not None:
                thread.join()
        for name in _INOTIFY_LOGGERS:
            logging.getLogger(name).removeHandler(self._spotter)
        try:
            with self.index.db.write() as con:
                con.execute("CHECKPOINT")
        except IndexBusyError as exc:  # the WAL is replayed on the next open anyway
            log.warning("could not checkpoint: %s", exc)
        self._heartbeat.unlink(missing_ok=True)
        log.info("stopped after %d batch(es), %d reconcile(s)", self.batches, self.reconciles)

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def notify(self, absolute_paths: Iterable[str]) -> None:
        """Note paths that changed (the observer calls this; a host may too)."""
        fresh = []
        for path in absolute_paths:
            try:
                relative = Path(path).relative_to(self.root).as_posix()
            except ValueError:
                continue
            if relative != "." and not any(ignored(part) for part in relative.split("/")):
                fresh.append(relative)
        if fresh:
            with self._lock:
                self._pending.update(fresh)
                self._idle.clear()
            self._wake.set()

    def request_reconcile(self, reason: str, *, every_file: bool = False) -> None:
        """Reconcile the whole library soon: the folders that changed, or ``every_file``."""
        with self._lock:
            self._reconcile_reason = reason
            self._reconcile_every_file |= every_file
            self._idle.clear()
        self._wake.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every change noticed so far is applied (for tests and embedding hosts)."""
        return self._idle.wait(timeout)

    # -- the batch loop --------------------------------------------------------------------

    def _run(self) -> None:
        next_reconcile = self._next_reconcile()
        while not self._stopping.is_set():
            timeout = None if next_reconcile is None else max(0.0, next_reconcile - time.monotonic())
            self._wake.wait(timeout)
            self._wake.clear()
            if next_reconcile is not None and time.monotonic() >= next_reconcile:
                self.request_reconcile("periodic reconcile")
                self._wake.clear()
            if not self._stopping.is_set():
                time.sleep(self.debounce)  # let the rest of a burst arrive
            with self._lock:
                paths, self._pending = self._pending, set()
                reason, self._reconcile_reason = self._reconcile_reason, None
                every_file, self._reconcile_every_file = self._reconcile_every_file, False
            if reason is not None:
                log.info("reconciling the whole library: %s", reason)
                if self._apply(None, paths, every_file):
                    self.reconciles += 1
                    next_reconcile = self._next_reconcile()
            elif paths:
                self._apply(paths, paths)
            with self._lock:
                if not self._pending and self._reconcile_reason is None:
                    self._idle.set()

    def _next_reconcile(self) -> float | None:
        return None if self.reconcile_every is None else time.monotonic() + self.reconcile_every

    def _apply(self, within: set[str] | None, paths: set[str], every_file: bool = False) -> bool:
        started = time.perf_counter()
        try:
            if within is None:
                report = self.index.sync(every_file=every_file)
            elif len(within) > _PIN_LIMIT:  # long: other processes get in between its batches
                report = self.index.sync(within=within, full=True)
            else:  # short: one open of the index for the diff and the apply
                with self.index.db.pinned():
                    # what an event names is read again whatever its stat says
                    report = self.index.sync(within=within, full=True)
        except Exception as exc:  # never let one bad batch end the watcher
            log.error("batch of %d path(s) failed, retrying: %s", len(paths), exc)
            with self._lock:
                self._pending |= paths
                if within is None:
                    self._reconcile_reason = self._reconcile_reason or "retry after a failure"
                    self._reconcile_every_file |= every_file
            self._stopping.wait(1.0)
            self._wake.set()
            return False
        self.batches += 1
        self._log(report, len(paths), time.perf_counter() - started)
        return True

    def _beat(self) -> None:
        """Beat while the library folder is the one watched. One replaced (a backup restored,
        a folder swapped in) is watched anew and reconciled; while it is gone, no beat, so
        readers sync for themselves instead of trusting a watcher that sees nothing."""
        lost = False
        while not self._stopping.wait(_BEAT):
            try:
                now = _identity(self.root)
            except OSError:
                if not lost:
                    log.error("the library folder %s is gone; watching for it to come back", self.root)
                lost = True
                continue
            if now != self._root_id:
                log.warning("the library folder %s was replaced: watching the new one", self.root)
                self._root_id = now
                self.index.recheck()  # it may hold another library
                self._observer.unschedule_all()
                self._observer.schedule(_Events(self), str(self.root), recursive=True)
                self.request_reconcile("the library folder was replaced")
            elif lost:
                log.info("the library folder %s is back", self.root)
            lost = False
            self._write_heartbeat()

    def _log(self, report: SyncReport, events: int, seconds: float) -> None:
        for path, reason in report.errors:
            log.warning("skipped %s: %s", path, reason)
        changed = report.added + report.updated + report.removed
        (log.info if changed or report.errors else log.debug)(
            "batch: %d path(s) -> added %d, updated %d, removed %d, errors %d in %.0f ms",
            events,
            report.added,
            report.updated,
            report.removed,
            len(report.errors),
            seconds * 1000,
        )

    def _write_heartbeat(self) -> None:
        """Tell other processes on this machine that the index is being kept current."""
        lag = self.poll_interval if self.polling else 0.0  # how late it may notice a change
        data = {"pid": os.getpid(), "library": str(self.root), "at": time.time(), "lag": lag}
        tmp = self._heartbeat.with_suffix(f".{os.getpid()}.tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self._heartbeat)


def _identity(folder: Path) -> tuple[int, int]:
    st = os.stat(folder)
    return st.st_dev, st.st_ino


def watcher_running(index: Index) -> bool:
    """True while a live process on this machine keeps ``index`` current, soon enough that a
    reader need not sync: its heartbeat is fresh, it notices changes within _TRUSTED_POLL
    seconds and, where that can be asked safely, its pid is alive."""
    try:
        data = json.loads((index.path.parent / HEARTBEAT).read_text())
        if time.time() - float(data["at"]) > _FRESH or float(data.get("lag", 0)) > _TRUSTED_POLL:
            return False
        if os.name == "posix":
            os.kill(int(data["pid"]), 0)  # signal 0 only asks; on Windows it would kill
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True

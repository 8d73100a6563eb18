"""Multi-device convergence: three replicas of one library, each with its own index kept
current by its own watcher, exchange files the way a sync tool does.

The sync tool here is small but honest about what real ones do: each file travels under a
temp name and is renamed into place (Syncthing's ``.syncthing.*.tmp`` and ``~syncthing~*.tmp``,
Dropbox's ``.dropbox.cache``), with its mtime kept; files land in shuffled order, so sidecars
arrive before their audio and after it; deletions land late, the audio's before the sidecar's;
replaced and deleted files go to ``.stversions`` on the device that keeps versions. When two
devices changed the same file since the last exchange, the newer mtime keeps the name and
every other version becomes a conflict copy beside it (Syncthing's
``<stem>.sync-conflict-YYYYMMDD-HHMMSS-<DEVICE>.<ext>``, Dropbox's
``<stem> (<device>'s conflicted copy <date>).<ext>``).

After the exchanges stop, the three indexes must give the same answers (list, search, stats,
show, conflicts), each exactly what a rebuild of its own folder gives; every conflict copy the
tool made must be listed; no generation may be lost, and each loser's content must still be
on disk. Then one person resolves, the resolution travels, and again all three agree.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import RATE, cli, record, tone

from tts_history import Audio, History, Profile, Version, get_plugin_manager
from tts_history.index import Filters, Index
from tts_history.index.watch import Watcher
from tts_history.library import sidecar_identity
from tts_history.library.layout import MARKER

SAFETY = 60.0  # seconds: a guard against hanging, never a speed requirement
SEARCHES = ["take", "café", "STRASSE", "conflict", "nothing-matches-this"]


# -- the replicas ----------------------------------------------------------------------------


@dataclass
class Replica:
    name: str
    device: str  # Syncthing's short device id, or Dropbox's device name
    style: str  # how its sync tool names temp files and conflict copies
    root: Path
    history: History
    watcher: Watcher | None = None

    @property
    def pm(self):
        return self.history.pm

    @property
    def index(self) -> Index:
        return self.history.index


def make_replicas(tmp_path: Path) -> list[Replica]:
    styles = [
        ("A", "MFZWI3D", "syncthing"),  # Linux, keeps versions in .stversions
        ("B", "P56IOI7", "syncthing-windows"),  # ~syncthing~*.tmp
        ("C", "carol-laptop", "dropbox"),  # .dropbox.cache, "conflicted copy"
    ]
    replicas = []
    first_root: Path | None = None
    for name, device, style in styles:
        root = tmp_path / name / "library"
        if first_root is None:
            pm = get_plugin_manager(root, entrypoints=False)  # creates the library
            first_root = pm.get_plugin("tts_history.history").library.root
        else:
            root.mkdir(parents=True)
            shutil.copy2(first_root / MARKER, root / MARKER)  # the same library_id
            shutil.copy2(first_root / ".stignore", root / ".stignore")
            pm = get_plugin_manager(root, entrypoints=False)
        history = History(root, index_path=tmp_path / name / "index" / "index.duckdb", plugin_manager=pm)
        replicas.append(Replica(name, device, style, history.library.root, history))
    (replicas[0].root / ".stfolder").mkdir()
    (replicas[1].root / ".stfolder").mkdir()
    (replicas[2].root / ".dropbox.cache").mkdir()
    return replicas


# -- the sync tool ---------------------------------------------------------------------------


def _skipped(name: str) -> bool:
    # what sync tools themselves never send: their own temp files, markers, caches, versions
    return name.startswith((".", "~")) or name.endswith((".tmp", "~"))


@dataclass
class Seen:
    sha: str
    mtime_ns: int
    data: bytes


@dataclass
class SyncTool:
    replicas: list[Replica]
    rng: random.Random
    known: dict[str, dict[str, str]] = field(default_factory=dict)  # replica -> path -> sha
    pending_deletes: list[tuple[Replica, str]] = field(default_factory=list)
    copies: dict[str, dict[str, bytes]] = field(default_factory=dict)  # original -> copy -> data
    events: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for replica in self.replicas:
            self.known[replica.name] = {p: s.sha for p, s in self.scan(replica).items()}

    def scan(self, replica: Replica) -> dict[str, Seen]:
        seen = {}
        for folder, dirs, files in os.walk(replica.root):
            dirs[:] = [d for d in dirs if not _skipped(d)]
            for name in files:
                if _skipped(name) or (folder == str(replica.root) and name == MARKER):
                    continue
                path = Path(folder) / name
                data = path.read_bytes()
                seen[path.relative_to(replica.root).as_posix()] = Seen(
                    hashlib.sha256(data).hexdigest(), path.stat().st_mtime_ns, data
                )
        return seen

    # -- one exchange ----------------------------------------------------------------------

    def exchange(self) -> bool:
        """Send every change since the last exchange; returns whether anything moved."""
        moved = self._delete_late()
        now = {r.name: self.scan(r) for r in self.replicas}
        changed: dict[str, dict[str, Seen | None]] = defaultdict(dict)
        for replica in self.replicas:
            before, after = self.known[replica.name], now[replica.name]
            for path in before.keys() | after.keys():
                sha = after[path].sha if path in after else None
                if sha != before.get(path):
                    changed[path][replica.name] = after.get(path)

        # (to, path, content, the original renamed aside on the loser's own device)
        puts: list[tuple[Replica, str, Seen, str | None]] = []
        for path, by in sorted(changed.items()):
            versions = {name: seen for name, seen in by.items() if seen is not None}
            if not versions:  # deleted, and changed nowhere else: delete everywhere, late
                for replica in self.replicas:
                    if path in now[replica.name]:
                        self.pending_deletes.append((replica, path))
                continue
            # the newest mtime keeps the name (a modification beats a deletion)
            order = sorted(versions, key=lambda n: (versions[n].mtime_ns, n), reverse=True)
            winner = versions[order[0]]
            losers = [n for n in order[1:] if versions[n].sha != winner.sha]
            for loser in losers:
                copy = self._copy_name(path, self._replica(loser), versions[loser].mtime_ns, now)
                self.copies.setdefault(path, {})[copy] = versions[loser].data
                self.events.append(f"conflict: {path} kept from {order[0]}, {loser}'s -> {copy}")
                for replica in self.replicas:
                    # the loser's own device renames its version aside; the others receive it
                    aside = path if replica.name == loser else None
                    puts.append((replica, copy, versions[loser], aside))
                    now[replica.name][copy] = versions[loser]
            for replica in self.replicas:
                have = now[replica.name].get(path)
                if have is None or have.sha != winner.sha:
                    puts.append((replica, path, winner, None))

        self.rng.shuffle(puts)  # sidecars before their audio, audio before its sidecar
        puts.sort(key=lambda p: p[3] is None)  # renames aside before the winner lands
        for replica, path, seen, aside in puts:
            if aside is not None:
                os.rename(replica.root / aside, replica.root / path)
            else:
                self._put(replica, path, seen)
            if self.rng.random() < 0.2:
                time.sleep(0.01)  # let the watchers see the folders half-synced
        for replica in self.replicas:  # pending deletions stay known: not a local change
            self.known[replica.name] = {p: s.sha for p, s in self.scan(replica).items()}
        return moved or bool(changed)

    def settle(self) -> None:
        """Exchange until nothing moves and no deletion is pending."""
        for _ in range(10):
            if not self.exchange() and not self.pending_deletes:
                return
        raise AssertionError(f"the sync tool never settled: {self.pending_deletes}")

    # -- file operations, the way the tools do them ----------------------------------------

    def _replica(self, name: str) -> Replica:
        return next(r for r in self.replicas if r.name == name)

    def _temp(self, replica: Replica, final: Path) -> Path:
        if replica.style == "dropbox":
            return replica.root / ".dropbox.cache" / uuid.uuid4().hex
        if replica.style == "syncthing-windows":
            return final.with_name(f"~syncthing~{final.name}.tmp")
        return final.with_name(f".syncthing.{final.name}.tmp")

    def _put(self, replica: Replica, path: str, seen: Seen) -> None:
        final = replica.root / path
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = self._temp(replica, final)
        with open(temp, "wb") as f:  # in pieces, as blocks arrive
            half = len(seen.data) // 2
            f.write(seen.data[:half])
            f.flush()
            f.write(seen.data[half:])
        os.utime(temp, ns=(seen.mtime_ns, seen.mtime_ns))  # the sender's mtime, kept
        if final.exists() and replica.style == "syncthing":
            self._version(replica, path)
        os.replace(temp, final)

    def _version(self, replica: Replica, path: str) -> None:
        """Syncthing's file versioning: the replaced or deleted file moves to .stversions."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        stem, dot, ext = path.rpartition(".")
        kept = replica.root / ".stversions" / f"{stem}~{stamp}{uuid.uuid4().hex[:4]}{dot}{ext}"
        kept.parent.mkdir(parents=True, exist_ok=True)
        os.rename(replica.root / path, kept)

    def _delete_late(self) -> bool:
        """Deletions arrive late, and the audio's before the sidecar's."""
        if not self.pending_deletes:
            return False
        pending, self.pending_deletes = self.pending_deletes, []
        pending.sort(key=lambda item: item[1].endswith(".parquet"))
        for replica, path in pending:
            if not (replica.root / path).exists():
                continue
            if replica.style == "syncthing":
                self._version(replica, path)
            else:
                (replica.root / path).unlink()
            if path.endswith(".parquet"):
                time.sleep(0.05)  # the sidecar's deletion comes a while after the audio's
            self.known[replica.name].pop(path, None)
        return True

    def _copy_name(self, path: str, loser: Replica, mtime_ns: int, now: dict) -> str:
        stem, ext = path.rsplit(".", 1)
        when = datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc)
        taken = {p for seen in now.values() for p in seen} | {
            c for copies in self.copies.values() for c in copies
        }
        for bump in range(100):
            if loser.style == "dropbox":
                number = f" {bump}" if bump else ""
                suffix = f" ({loser.device}'s conflicted copy {when:%Y-%m-%d}{number})"
            else:
                stamp = datetime.fromtimestamp(mtime_ns / 1e9 + bump, timezone.utc)
                suffix = f".sync-conflict-{stamp:%Y%m%d-%H%M%S}-{loser.device}"
            name = f"{stem}{suffix}.{ext}"
            if name not in taken:
                return name
        raise AssertionError("no free conflict copy name")


# -- what the indexes answer -----------------------------------------------------------------


def _relative(value: Any, root: Path) -> Any:
    """Answers with this replica's root made ``<root>``, so that replicas can be compared."""
    if isinstance(value, str) and value.startswith(f"{root}{os.sep}"):
        return "<root>/" + Path(value).relative_to(root).as_posix()
    if isinstance(value, dict):
        return {k: _relative(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_relative(v, root) for v in value)
    return value


def answers(index: Index) -> dict:
    root = index.library.root
    with index.reading() as con:  # one connection throughout
        everything = index.list(limit=10_000)
        return _relative(
            {
                "list": everything,
                "search": {w: index.list(Filters(search=w), limit=10_000) for w in SEARCHES},
                "favorites": index.list(Filters(favorites=True), limit=10_000),
                "stats": index.stats(),
                "show": [index.get(item["id"]) for item in everything["items"]],
                "conflicts": index.conflicts(),
                "unreadable": index.unreadable(),
                "versions": con.execute("SELECT * FROM versions ORDER BY generation_id, position").fetchall(),
                "profiles": con.execute(
                    "SELECT * EXCLUDE (sidecar_path) FROM profiles ORDER BY id"
                ).fetchall(),
                "files": con.execute("SELECT path, kind, size, error FROM files ORDER BY path").fetchall(),
            },
            root,
        )


def converged(replicas: list[Replica], tmp_path: Path) -> dict:
    """Wait until each watched index answers exactly as a rebuild of its own folder, then check
    that the three replicas answer alike. Returns the (common) answers."""
    results = []
    for replica in replicas:
        where = tmp_path / "rebuilt" / f"{replica.name}-{uuid.uuid4().hex[:6]}.duckdb"
        truth_index = Index(replica.root, path=where)
        truth_index.rebuild()
        truth = answers(truth_index)
        deadline = time.monotonic() + SAFETY
        while True:
            replica.watcher.wait_idle(1.0)
            mine = answers(replica.index)
            if mine == truth:
                break
            if time.monotonic() > deadline:
                for key in truth:
                    assert mine[key] == truth[key], f"replica {replica.name}: {key} differs from a rebuild"
            time.sleep(0.1)
        results.append(mine)
    for replica, result in zip(replicas[1:], results[1:]):
        for key in results[0]:
            assert result[key] == results[0][key], f"replicas A and {replica.name} differ in {key}"
    return results[0]


# -- what the people do ----------------------------------------------------------------------


TEXTS = ["take {i}", "Café take {i}", "Die Straße {i}", "conflict take {i}", "今日は {i}"]


@dataclass
class People:
    replicas: list[Replica]
    rng: random.Random
    live: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    n: int = 0

    def new(self, replica: Replica, count: int = 2) -> list[str]:
        ids = []
        for _ in range(count):
            text = TEXTS[self.n % len(TEXTS)].format(i=self.n)
            ids.append(
                record(
                    replica.pm,
                    seconds=0.05 + 0.01 * (self.n % 5),
                    text=text,
                    language=["en", "de", "ja"][self.n % 3],
                ).id
            )
            self.n += 1
        self.live.update(ids)
        return ids

    def favorite(self, replica: Replica, gid: str) -> None:
        replica.pm.hook.tts_history_favorite_set(generation_id=gid, is_favorited=True)

    def add_version(self, replica: Replica, gid: str, label: str) -> str:
        version = f"{label}-{uuid.uuid4().hex[:6]}"
        replica.pm.hook.tts_history_version_added(
            generation_id=gid,
            version=Version(id=version, label=label, is_default=self.rng.random() < 0.5),
            audio=Audio.from_samples(tone(0.05, freq=300.0 + self.n), RATE),
        )
        self.n += 1
        return version

    def delete(self, replica: Replica, gid: str) -> None:
        replica.pm.hook.tts_history_generation_deleted(generation_id=gid)
        self.live.discard(gid)
        self.deleted.add(gid)


def test_three_replicas_converge_through_a_sync_tool(tmp_path):
    rng = random.Random(4242)
    replicas = make_replicas(tmp_path)
    a, b, c = replicas
    tool = SyncTool(replicas, rng)
    people = People(replicas, rng)
    expected_versions: dict[str, set[str]] = defaultdict(set)  # versions nobody may lose
    expected_favorites: set[str] = set()

    for replica in replicas:
        polling = replica.style == "dropbox"  # one replica on a "network drive"
        replica.watcher = replica.index.watch(
            polling=polling, poll_interval=0.3, debounce=0.02, reconcile_every=None
        )
    try:
        # round 0: every device records; the same profile is saved on two devices at once
        for replica in replicas:
            people.new(replica, 4)
        a.pm.hook.tts_history_profile_saved(profile=Profile(id="p1", name="Narrator"))
        time.sleep(0.01)
        c.pm.hook.tts_history_profile_saved(profile=Profile(id="p1", name="Narrator (Carol)"))
        tool.exchange()

        for round_ in range(1, 4):
            ids = sorted(people.live)
            rng.shuffle(ids)
            both, three, solo_fav, solo_ver = ids[:4]
            # deleting a generation that has a conflict copy is its own test (below)
            conflicted = {Path(p).name.removesuffix(".parquet") for p in tool.copies}
            doomed = next(i for i in ids[4:] if i not in conflicted)
            # two devices change the same generation at once: a favorite here, a version there
            people.favorite(a, both)
            expected_favorites.add(both)
            time.sleep(0.01)
            expected_versions[both].add(people.add_version(b, both, "louder"))
            # all three at once
            expected_versions[three].add(people.add_version(c, three, "slower"))
            people.favorite(b, three)
            expected_favorites.add(three)
            expected_versions[three].add(people.add_version(a, three, "brighter"))
            # changes nobody else makes
            people.favorite(c, solo_fav)
            expected_favorites.add(solo_fav)
            expected_versions[solo_ver].add(people.add_version(a, solo_ver, "warm"))
            people.delete(rng.choice(replicas), doomed)
            for replica in replicas:
                people.new(replica, 2)
            tool.exchange()
        tool.settle()
        assert any("conflict" in e for e in tool.events)

        common = converged(replicas, tmp_path)

        # no generation lost, none duplicated, none resurrected
        listed = [item["id"] for item in common["list"]["items"]]
        assert len(listed) == len(set(listed))
        assert set(listed) == people.live
        assert common["stats"]["total_generations"] == len(people.live)
        # every conflict copy the sync tool made is listed, and its content is still on disk
        made = {
            (sidecar_identity(Path(path).name) or (None,))[0]: set(copies)
            for path, copies in tool.copies.items()
            if path.startswith("generations/")
        }
        listed_conflicts = {
            conflict["id"]: {s["sidecar_path"] for s in conflict["sidecars"]}
            for conflict in common["conflicts"]
            if conflict["kind"] == "generation"
        }
        assert set(listed_conflicts) == set(made)
        originals = {
            (sidecar_identity(Path(path).name) or (None,))[0]: path for path in tool.copies
        }
        for gid, copies in made.items():
            assert listed_conflicts[gid] == {f"<root>/{c}" for c in copies | {originals[gid]}}
            entry = next(x for x in common["conflicts"] if x.get("id") == gid)
            assert sum(1 for s in entry["sidecars"] if s["wins"]) == 1  # exactly one winner
        profile_copies = {
            copy for path, copies in tool.copies.items() if path.startswith("profiles/") for copy in copies
        }
        assert profile_copies, tool.events
        assert {x["sidecar_path"] for x in common["conflicts"] if x["kind"] == "profile"} == {
            f"<root>/{copy}" for copy in profile_copies
        }
        for replica in replicas:
            for copies in tool.copies.values():
                for copy, data in copies.items():
                    assert (replica.root / copy).read_bytes() == data, (replica.name, copy)
        # the CLI lists them too, on every device
        for replica in replicas:
            result = cli(
                "--library", str(replica.root), "--index", str(replica.index.path), "conflicts", "--json"
            )
            assert result.returncode == 0, result.stderr
            assert _relative(json.loads(result.stdout), replica.root) == json.loads(
                json.dumps(common["conflicts"])
            )
        # until someone decides, the list shows the newest updated_at (the documented rule)
        for conflict in common["conflicts"]:
            if conflict["kind"] == "generation":
                winner = max(conflict["sidecars"], key=lambda s: (s["updated_at"], not s["conflict_copy"]))
                assert winner["wins"]

        # one person decides on device B: every conflict merged, nothing of the losers lost
        resolved = b.history.resolve()
        assert set(made) <= set(resolved)
        tool.settle()
        common = converged(replicas, tmp_path)
        assert common["conflicts"] == []
        listed = {item["id"] for item in common["list"]["items"]}
        assert listed == people.live
        shown = {item["id"]: item for item in common["show"]}
        for gid, versions in expected_versions.items():
            if gid in people.live:
                assert versions <= {v["id"] for v in shown[gid]["versions"]}, gid
                assert all(v["audio_present"] for v in shown[gid]["versions"]), gid
        for gid in expected_favorites & people.live:
            assert shown[gid]["is_favorited"], gid
        print(
            f"\nconvergence: {len(people.live)} generations, {len(people.deleted)} deleted, "
            f"{sum(len(c) for c in tool.copies.values())} conflict copies made and resolved"
        )
    finally:
        for replica in replicas:
            if replica.watcher is not None:
                replica.watcher.stop()


def test_deleting_a_conflicted_generation_deletes_it_on_every_replica(tmp_path):
    """Two devices change one generation at once (a conflict copy appears), then a person
    deletes that generation: 'delete' is a person deciding, so after the deletion has travelled
    the generation is gone everywhere, and does not come back out of its conflict copy."""
    rng = random.Random(7)
    replicas = make_replicas(tmp_path)
    a, b, c = replicas
    tool = SyncTool(replicas, rng)
    people = People(replicas, rng)
    for replica in replicas:
        replica.watcher = replica.index.watch(debounce=0.02, reconcile_every=None)
    try:
        gid, keep = people.new(a, 2)
        tool.settle()
        people.favorite(a, gid)
        time.sleep(0.01)
        people.add_version(b, gid, "louder")
        tool.settle()
        common = converged(replicas, tmp_path)
        assert [x["id"] for x in common["conflicts"]] == [gid]

        a.history.delete([gid])
        assert gid not in {i["id"] for i in a.history.list()["items"]}  # at once, on A
        tool.settle()
        common = converged(replicas, tmp_path)
        assert [i["id"] for i in common["list"]["items"]] == [keep]
        assert common["conflicts"] == []
    finally:
        for replica in replicas:
            if replica.watcher is not None:
                replica.watcher.stop()

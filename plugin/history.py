"""The history plugin: turns the host's hook calls into records in the library folder."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pluggy

from ..hooks import hookimpl
from ..hooks.manager import call_each
from ..hooks.types import Audio, Generation, InvalidValueError, Profile, Version
from ..library import check_id, open_library, schema, sidecar_identity
from ..library.atomic import Syncer, commit_temp, fsync_dir
from ..library.locations import library_path
from . import audio as audio_io
from .merge import merge, winner_order
from .store import Store

log = logging.getLogger("tts_history")

# new audio in its temp file, and where it goes once the sidecar naming it is encoded
_Staged = tuple[audio_io.PreparedAudio, Path]
# an imported record, and its versions' audio, checked and in temp files, by version id
ImportItem = tuple[dict[str, Any], Mapping[str, audio_io.PreparedAudio]]

_AUDIO_FIELDS = ("audio_path", "duration", "sample_rate", "channels", "audio_bytes", "audio_sha256")
ORIGINAL_LABEL = "original"
# how far the host's duration may be from the measured one before it is worth a warning
_DURATION_TOLERANCE = 0.05


def _not_recorded(generation_id: str) -> LookupError:
    return LookupError(f"generation {generation_id!r} is not recorded in this library")


def _copy(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "versions": [dict(v) for v in record["versions"]], "extra": dict(record["extra"])}


def _activate(record: dict[str, Any], version_id: str) -> None:
    """Make ``version_id`` the active version: the generation's audio fields give its audio."""
    for version in record["versions"]:
        version["is_default"] = version["id"] == version_id
        if version["is_default"]:
            record.update({name: version[name] for name in _AUDIO_FIELDS})
    record["active_version_id"] = version_id


class HistoryPlugin:
    """Records generations into a library folder. ``hook`` is the plugin manager's hook relay,
    used to ask other plugins for metadata and protection and to tell them what was written."""

    def __init__(self, library: str | Path | None = None, hook: pluggy.HookRelay | None = None):
        self.library = open_library(library_path(library), create=True)
        self.store = Store(self.library)
        self.hook = hook
        self._profile_names: dict[str, str] = {}

    # -- host -> history ------------------------------------------------------------------

    @hookimpl
    def tts_history_generation_started(self, generation: Generation) -> None:
        self._record(generation, status="generating")

    @hookimpl
    def tts_history_generation_failed(self, generation: Generation, error: str) -> None:
        if not isinstance(error, str):
            raise InvalidValueError(f"error must be a string, got {error!r}")
        self._record(generation, status="failed", error=error)

    @hookimpl
    def tts_history_generation_completed(self, generation: Generation, audio: Audio) -> None:
        self._record(generation, status="completed", audio=audio)

    @hookimpl
    def tts_history_version_added(self, generation_id: str, version: Version, audio: Audio) -> None:
        check_id(version.id, "version.id")
        with self.store.transaction():
            before = self._existing(generation_id)
            record = _copy(before)
            ids = {v["id"] for v in record["versions"]}
            if version.id in ids:
                raise InvalidValueError(
                    f"version.id {version.id!r} already exists in generation {generation_id!r}"
                )
            if version.source_version_id is not None and version.source_version_id not in ids:
                raise InvalidValueError(
                    f"version.source_version_id {version.source_version_id!r} is not a version "
                    f"of generation {generation_id!r}"
                )
            now = schema.now()
            entry, staged = self._store_audio(record, version.id, audio)
            entry.update(
                label=version.label,
                effects_chain=json.dumps([e.to_dict() for e in version.effects_chain]),
                is_default=False,
                created_at=version.created_at or now,
                source_version_id=version.source_version_id,
            )
            record["versions"].append(entry)
            if version.is_default or record["active_version_id"] is None:
                _activate(record, version.id)
            record["updated_at"] = now
            self._write(record, before=before, audio=[staged])

    @hookimpl
    def tts_history_default_version_changed(self, generation_id: str, version_id: str) -> None:
        with self.store.transaction():
            before = self._existing(generation_id)
            if version_id not in {v["id"] for v in before["versions"]}:
                raise LookupError(f"generation {generation_id!r} has no version {version_id!r}")
            record = _copy(before)
            _activate(record, version_id)
            record["updated_at"] = schema.now()
            self._write(record, before=before)

    @hookimpl
    def tts_history_favorite_set(self, generation_id: str, is_favorited: bool) -> None:
        if not isinstance(is_favorited, bool):
            raise InvalidValueError(f"is_favorited must be true or false, got {is_favorited!r}")
        with self.store.transaction():
            before = self._existing(generation_id)
            if before["is_favorited"] == is_favorited:
                return
            record = {**_copy(before), "is_favorited": is_favorited, "updated_at": schema.now()}
            self._write(record, before=before)

    @hookimpl
    def tts_history_generation_deleted(self, generation_id: str) -> None:
        with self.store.transaction():
            self.store.remove(generation_id)

    @hookimpl
    def tts_history_profile_saved(self, profile: Profile) -> None:
        check_id(profile.id, "profile.id")
        now = schema.now()
        with self.store.transaction():
            existing = self.store.read_profile(profile.id)
            self.store.write_profile(
                {
                    "id": profile.id,
                    "name": profile.name,
                    "description": profile.description,
                    "language": profile.language,
                    "extra": json.dumps(dict(profile.extra), ensure_ascii=False),
                    "created_at": existing["created_at"] if existing else profile.created_at or now,
                    "updated_at": now,
                }
            )
        self._profile_names[profile.id] = profile.name

    @hookimpl
    def tts_history_profile_deleted(self, profile_id: str) -> None:
        check_id(profile_id, "profile_id")
        with self.store.transaction():
            self.store.remove_profile(profile_id)
        self._profile_names.pop(profile_id, None)
        from ..index import Filters, Index  # the index answers "which generations" without a scan

        index = Index(self.library)
        index.sync()
        self.remove_generations(index.generation_ids(Filters(profile_id=profile_id)))

    # -- for the query side (History) -----------------------------------------------------

    def remove_generations(self, generation_ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """Remove generations unless a plugin protects them: returns (removed, kept)."""
        removed, kept = [], []
        for generation_id in generation_ids:
            with self.store.transaction():
                record = self.store.read(generation_id)
                if record is None:
                    continue
                if self.is_protected(record):
                    kept.append(generation_id)
                    continue
                self.store.remove(generation_id)
            removed.append(generation_id)
        if kept:
            log.info("kept %d protected generation(s): %s", len(kept), ", ".join(kept))
        return removed, kept

    def resolve_copies(self, generation_id: str, sidecars: list[Path]) -> dict[str, Any]:
        """Merge every sidecar of ``generation_id`` (see :mod:`.merge`) into one at its day
        folder's proper name, then remove the others. Returns the merged record."""
        with self.store.transaction():
            found = []
            for path in sidecars:
                if path.exists():
                    identity = sidecar_identity(path.name)
                    record = schema.read_generation(path, generation_id)
                    found.append((winner_order(path, record, bool(identity and identity[1])), path, record))
            if not found:
                raise _not_recorded(generation_id)
            found.sort(key=lambda item: item[0])
            merged = merge([record for _, _, record in found])
            merged["updated_at"] = schema.now()
            target = self.store.write(merged)
            for _, path, _ in found:
                if path != target:
                    path.unlink(missing_ok=True)
        if self.hook is not None:
            call_each(self.hook.tts_history_generation_recorded, generation=merged, sidecar_path=target)
        return merged

    def resolve_profile_copy(self, copy: Path) -> None:
        """Keep the newer of a profile sidecar and its conflict copy, under the proper name."""
        identity = sidecar_identity(copy.name)
        if identity is None or not identity[1]:
            raise LookupError(f"{copy} is not a conflict copy of a profile sidecar")
        with self.store.transaction():
            original = self.store.read_profile(identity[0])
            candidate = schema.read_profile(copy, identity[0])
            if original is None or candidate["updated_at"] > original["updated_at"]:
                self.store.write_profile(candidate)
            copy.unlink()

    @contextmanager
    def import_records(
        self,
    ) -> Iterator[Callable[[Sequence[ImportItem]], None]]:
        """Write complete records that came from elsewhere (an archive, another app): all of
        them, or on any error none. Yields ``add(items)``, which several threads may call:
        ``items`` is a few ``(record, audio)`` pairs (a few at a time: their sidecars are
        encoded together, in less time), ``record`` under its own ``id``, new to this library
        (the importer's are fresh UUIDs), ``audio`` its versions' by version id, checked and in
        temp files (see :func:`.audio.from_stream`; ``sync=False`` is best). ``add`` writes the
        sidecars under temp names, and hands them and the audio to a :class:`.Syncer`, which
        makes them durable while the caller reads on (on Linux, one syncfs of the library's
        file system for many files). When the block ends and every one of them is durable, the
        audio and then the sidecars are moved into place under the lock, one fsync per folder;
        if anything fails, every file written is removed again."""
        # for the move only the paths are kept, as text, and the records only for the plugins
        # that are told of them: an import can be large
        recorded = None if self.hook is None else self.hook.tts_history_generation_recorded
        hooked = recorded is not None and bool(recorded.get_hookimpls())
        staged: list[tuple[str, str, list[tuple[str, str]], dict[str, Any] | None]] = []
        syncer = Syncer(self.library.root)

        def add(items: Sequence[ImportItem]) -> None:
            try:
                every_moves = [self._import_moves(record, audio) for record, audio in items]
                sidecars = self.store.stage([record for record, _ in items], sync=False)
            except BaseException:
                for _, audio in items:
                    for prepared in audio.values():
                        prepared.tmp.unlink(missing_ok=True)
                raise
            for (record, audio), (tmp, final), moves in zip(items, sidecars, every_moves):
                staged.append((str(tmp), str(final), moves, record if hooked else None))
                syncer.submit([tmp, *(prepared.tmp for prepared in audio.values())])

        moved: list[Path] = []  # sidecars moved into place
        files: list[Path] = []  # and the audio files they name
        try:
            with syncer:  # on leaving, no fsync is still under way on a file removed below
                yield add
                syncer.wait()
            with self.store.transaction():
                try:
                    for tmp, final, moves, _ in staged:
                        sidecar = Path(final)
                        if sidecar.exists():
                            raise InvalidValueError(f"generation {sidecar.stem!r} is already recorded")
                        for audio_tmp, audio_final in moves:
                            files.append(Path(audio_final))
                            commit_temp(Path(audio_tmp), files[-1], sync_folder=False)
                        # the folder's fsync below makes both renames durable, audio first
                        commit_temp(Path(tmp), sidecar, sync_folder=False)
                        moved.append(sidecar)
                    # side by side: concurrent fsyncs share the journal's commits
                    with ThreadPoolExecutor(max_workers=8) as pool:
                        list(pool.map(fsync_dir, {path.parent for path in moved}))
                except BaseException:
                    # as a removal goes: the sidecars, durably, then their audio
                    for path in moved:
                        path.unlink(missing_ok=True)
                    for folder in {path.parent for path in moved}:
                        fsync_dir(folder)
                    for path in files:
                        path.unlink(missing_ok=True)
                    raise
        except BaseException:
            for tmp, _, moves, _ in staged:
                Path(tmp).unlink(missing_ok=True)
                for audio_tmp, _ in moves:
                    Path(audio_tmp).unlink(missing_ok=True)
            raise
        for _, final, _, record in staged:
            if record is not None:
                call_each(recorded, generation=record, sidecar_path=Path(final))

    def is_protected(self, record: Mapping[str, Any]) -> bool:
        if self.hook is None:
            return False
        answers = call_each(self.hook.tts_history_protect_generation, True, generation=record)
        return any(answer is True for answer in answers)

    # -- internals ------------------------------------------------------------------------

    def _existing(self, generation_id: str) -> dict[str, Any]:
        record = self.store.read(generation_id)
        if record is None:
            raise _not_recorded(generation_id)
        return record

    def _import_moves(
        self, record: dict[str, Any], audio: Mapping[str, audio_io.PreparedAudio]
    ) -> list[tuple[str, str]]:
        """Check an imported ``record`` and complete it from its ``audio``: the moves (temp
        name, final name) that put its audio in place."""
        check_id(record["id"], "id")
        check_id(record["profile_id"], "profile_id")
        moves = []
        for version in record["versions"]:
            check_id(version["id"], "version id")
            prepared = audio[version["id"]]
            final = self.library.audio_path(
                record["id"], record["created_at"], version["id"], prepared.suffix
            )
            moves.append((str(prepared.tmp), str(final)))
            version.update(audio_path=self.library.relative(final), **prepared.facts())
        if record["versions"]:
            _activate(record, record["active_version_id"] or record["versions"][0]["id"])
        else:
            record.update({name: None for name in _AUDIO_FIELDS})
        return moves

    def _record(
        self,
        generation: Generation,
        *,
        status: str,
        error: str | None = None,
        audio: Audio | None = None,
    ) -> None:
        check_id(generation.id, "generation.id")
        check_id(generation.profile_id, "generation.profile_id")
        extra = self._extra(generation)  # other plugins' code runs outside the lock
        with self.store.transaction():
            before = self.store.read_recent(generation.id, generation.created_at)
            now = schema.now()
            record = self._fresh(generation, now) if before is None else _copy(before)
            record.update(
                profile_id=generation.profile_id,
                text=generation.text,
                language=generation.language,
                seed=generation.seed,
                instruct=generation.instruct,
                engine=generation.engine,
                model_size=generation.model_size,
                profile_name=generation.profile_name
                or self._profile_name(generation.profile_id)
                or record["profile_name"],
                status=status,
                error=error,
                updated_at=now,
                extra={**record["extra"], **extra},
            )
            if generation.duration is not None:
                record["host_duration"] = float(generation.duration)
            staged = []
            if audio is not None:
                staged.append(self._replace_original(record, audio, now))
                if record["host_duration"] is not None and (
                    abs(record["host_duration"] - record["duration"]) > _DURATION_TOLERANCE
                ):
                    log.warning(
                        "generation %s: the host says %.3f s, the audio lasts %.3f s; both kept",
                        generation.id,
                        record["host_duration"],
                        record["duration"],
                    )
            self._write(record, before=before, audio=staged)

    def _fresh(self, generation: Generation, now) -> dict[str, Any]:
        record = {field.name: None for field in schema.GENERATION_SCHEMA}
        del record["schema_version"]
        record.update(
            id=generation.id,
            is_favorited=False,
            created_at=generation.created_at or now,
            versions=[],
            extra={},
        )
        return record

    def _replace_original(self, record: dict[str, Any], audio: Audio, now) -> _Staged:
        # A new id each time: the old file stays until the sidecar no longer names it.
        version_id = uuid.uuid4().hex
        entry, staged = self._store_audio(record, version_id, audio)
        entry.update(
            label=ORIGINAL_LABEL,
            effects_chain=None,
            is_default=False,
            created_at=now,
            source_version_id=None,
        )
        versions = record["versions"]
        was_active = not versions or versions[0]["id"] == record["active_version_id"]
        if versions:
            old = versions[0]["id"]
            for version in versions[1:]:  # processed versions now descend from the new original
                if version["source_version_id"] == old:
                    version["source_version_id"] = version_id
            versions[0] = entry
        else:
            versions.append(entry)
        _activate(record, version_id if was_active else record["active_version_id"])
        return staged

    def _store_audio(
        self, record: dict[str, Any], version_id: str, audio: Audio
    ) -> tuple[dict[str, Any], _Staged]:
        """The version entry for ``audio``, and the audio staged for :meth:`_write`."""
        final = self.library.audio_path(record["id"], record["created_at"], version_id, ".wav")
        prepared = audio_io.prepare(audio, final)
        final = final.with_suffix(prepared.suffix)
        entry = {"id": version_id, "audio_path": self.library.relative(final), **prepared.facts()}
        return entry, (prepared, final)

    def _write(
        self, record: dict[str, Any], *, before: dict[str, Any] | None, audio: Sequence[_Staged] = ()
    ) -> None:
        """Write ``record`` over ``before`` (None: new), then drop the audio only one names.
        The staged ``audio`` it names is moved into place first, once the sidecar is durable
        under its temp name: the audio's write and fsync overlap the sidecar's."""

        def move_audio() -> None:
            for prepared, final in audio:
                prepared.commit(final)

        try:
            path = self.store.write(record, before_commit=move_audio)
        except BaseException:
            # audio staged or moved for this change is named by no sidecar: take it back
            for prepared, _ in audio:
                prepared.discard()
            self.store.remove_unreferenced(record, before or {"versions": []})
            raise
        self.store.remove_unreferenced(before, record)
        if self.hook is not None:
            call_each(self.hook.tts_history_generation_recorded, generation=record, sidecar_path=path)

    def _extra(self, generation: Generation) -> dict[str, str]:
        extra = dict(generation.extra)
        if self.hook is None:
            return extra
        for answer in call_each(self.hook.tts_history_extra_metadata, generation=generation):
            if answer is None:
                continue
            if isinstance(answer, Mapping) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in answer.items()
            ):
                extra.update(answer)
            else:
                log.error("extra metadata %r is not a mapping of strings; skipped", answer)
        return extra

    def _profile_name(self, profile_id: str) -> str | None:
        if profile_id not in self._profile_names:
            profile = self.store.read_profile(profile_id)
            if profile is None:
                return None
            self._profile_names[profile_id] = profile["name"]
        return self._profile_names[profile_id]

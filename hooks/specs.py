"""The hook contract. Each docstring here is the reference; hookspec.md repeats it for readers
and a test fails when the two disagree.

Two directions:

* **Host → history.** A text-to-speech app calls these as things happen
  (``pm.hook.tts_history_generation_completed(generation=..., audio=...)``); the history plugin
  records them in the library folder. Calls take keyword arguments only.
* **History → other plugins.** The history plugin calls these so that other plugins can protect
  generations, add metadata, or follow what is recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pluggy

from .types import Audio, Generation, Profile, Version

PROJECT_NAME = "tts_history"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


# -- host -> history --------------------------------------------------------------------------


@hookspec
def tts_history_generation_started(generation: Generation) -> None:
    """The host started generating audio for ``generation``.

    Recorded at once with status ``generating`` and no audio, so a history view can show work in
    progress. Calling it is optional: ``completed`` and ``failed`` also create the record.
    ``started``, ``completed`` and ``failed`` find an earlier record of the same id in this
    process, or in the day folder of ``generation.created_at`` (without it: today's or
    yesterday's). A host that reports on a generation begun by an earlier run of itself passes
    the ``created_at`` it was begun with.

    :param generation: the text, profile, language, seed and engine settings; ``generation.id``
        identifies the generation in every later call.
    """


@hookspec
def tts_history_generation_completed(generation: Generation, audio: Audio) -> None:
    """The host finished ``generation`` and has its audio.

    The audio is checked (it must decode), copied into the library, and becomes the generation's
    original version; the status becomes ``completed``. Fields of ``generation`` replace those
    recorded by ``started``. Calling it again for the same id replaces the original audio.

    :param generation: the generation's settings, as for ``started``; ``generation.duration`` is
        the host's own figure: kept as ``host_duration`` beside the ``duration`` measured from the
        audio, and a difference over 50 ms is logged as a warning.
    :param audio: a file the host wrote (``Audio.from_file``) or samples and their rate
        (``Audio.from_samples``).
    :raises InvalidAudioError: the audio does not decode; nothing is written.
    """


@hookspec
def tts_history_generation_failed(generation: Generation, error: str) -> None:
    """Generating ``generation`` failed.

    Recorded with status ``failed`` and the error text, so failures stay visible and can be
    cleaned up later (``tts-history cleanup --failed``).

    :param generation: the settings that were tried.
    :param error: what went wrong, as the host would show it to a person.
    """


@hookspec
def tts_history_version_added(generation_id: str, version: Version, audio: Audio) -> None:
    """The host made a processed version of a generation's audio (an effects chain applied).

    The audio is checked and stored beside the original; the version joins the generation's
    list. With ``version.is_default`` it also becomes the active version.

    :param generation_id: the completed generation it belongs to.
    :param version: its id, label, effects chain (a list of ``{type, enabled, params}``) and the
        version it was made from.
    :param audio: the processed audio.
    :raises LookupError: no generation ``generation_id`` is recorded.
    """


@hookspec
def tts_history_default_version_changed(generation_id: str, version_id: str) -> None:
    """The host made ``version_id`` the active version of ``generation_id``.

    The generation's ``audio_path`` and ``duration`` then give that version's audio.

    :raises LookupError: the generation, or that version of it, is not recorded.
    """


@hookspec
def tts_history_favorite_set(generation_id: str, is_favorited: bool) -> None:
    """A person marked ``generation_id`` as a favorite (``True``) or took the mark off.

    :raises LookupError: no generation ``generation_id`` is recorded.
    """


@hookspec
def tts_history_generation_deleted(generation_id: str) -> None:
    """The host deleted ``generation_id``: its sidecar and every audio file of it are removed,
    and so are conflict copies of the sidecar that sync tools left, with their audio.

    A person's explicit delete is not subject to :func:`tts_history_protect_generation`; that
    hook guards automatic removal only. Deleting an id that is not recorded does nothing.
    """


@hookspec
def tts_history_profile_saved(profile: Profile) -> None:
    """The host created or changed a voice profile.

    Stored as the profile's own sidecar; lists show its current name for every generation of it,
    while each generation keeps the name it had when it was made.

    :param profile: its id, name, and whatever else the host keeps (``extra``, JSON data).
    """


@hookspec
def tts_history_profile_deleted(profile_id: str) -> None:
    """The host deleted a voice profile; its generations go too (the seed's cascade).

    Generations that a plugin protects (:func:`tts_history_protect_generation`) are kept, with
    the profile name they were made with, so nothing that uses them is left dangling.
    """


# -- history -> other plugins -----------------------------------------------------------------


@hookspec
def tts_history_protect_generation(generation: Mapping[str, Any]) -> bool | None:
    """Asked before a generation is removed automatically (cascade, cleanup of failures or of
    old generations). Return ``True`` to keep it, for example because a story uses it.

    Every plugin is asked; one ``True`` protects it. A plugin that raises protects it too, and
    the error is logged: when in doubt, nothing is deleted.

    :param generation: the generation's record as its sidecar holds it (the fields listed in
        README.md's folder format), audio paths relative to the library root.
    """


@hookspec
def tts_history_extra_metadata(generation: Generation) -> Mapping[str, str] | None:
    """Asked each time a generation is recorded (started, completed, failed). Return string
    key/values to store in its sidecar's ``extra`` map, or ``None``.

    The host's own ``generation.extra`` is applied first; later plugins' keys win over earlier
    ones. A plugin that raises or returns anything but a mapping of strings is logged and
    skipped: it never stops the generation from being recorded.
    """


@hookspec
def tts_history_generation_recorded(generation: Mapping[str, Any], sidecar_path: Path) -> None:
    """Called after every change to a generation's sidecar is durable on disk (started,
    completed, failed, version added, default version changed, favorite set).

    :param generation: the record as written, audio paths relative to the library root.
    :param sidecar_path: the sidecar's absolute path.

    Exceptions are logged and skipped: the change is already recorded.
    """

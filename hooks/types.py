"""The values a host passes through the hooks. Plain frozen dataclasses, validated on creation,
so a mistake is reported by the host's own call, naming the field and the value."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..library.errors import LibraryError
from ..library.layout import check_id

# a sidecar stores the seed as int64
_SEED_RANGE = range(-(2**63), 2**63)


class InvalidValueError(ValueError):
    """A value given to a hook is not valid; the message names the field and the value."""


def _text(value: object, name: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise InvalidValueError(f"{name} must be a string, got {value!r}")
    _utf8(value, name)


def _utf8(value: str, name: str) -> None:
    """Sidecars hold UTF-8: a lone surrogate (from a bad decode) cannot be stored."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidValueError(
            f"{name} is not valid text: {value[exc.start:exc.end]!r} at {exc.start} is a lone surrogate"
        ) from None


def _id(value: object, name: str, *, optional: bool = False) -> None:
    """Ids name files: the library's rule, reported as a bad value of the host's."""
    if value is None and optional:
        return
    try:
        check_id(value, name)
    except LibraryError as exc:
        raise InvalidValueError(str(exc)) from None


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidValueError(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is None:  # naive times are taken as UTC, as the seed's utcnow() writes them
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _str_map(value: Mapping[str, str], name: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise InvalidValueError(f"{name} must be a mapping of strings, got {value!r}")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise InvalidValueError(
                f"{name} must map strings to strings; {key!r}: {item!r} is not"
            )
        _utf8(key, f"{name} key {key!r}")
        _utf8(item, f"{name}[{key!r}]")
    return dict(value)


@dataclass(frozen=True)
class Generation:
    """What the host knows about a generation when it starts, completes or fails.

    ``id`` is the host's own id (the seed uses a UUID). ``duration`` is what the host measured,
    if anything; the library always measures the audio itself and keeps both when they differ.
    ``extra`` holds the host's own string key/values, stored in the sidecar.
    """

    id: str
    profile_id: str
    text: str
    language: str = "en"
    seed: int | None = None
    instruct: str | None = None
    engine: str = "qwen"
    model_size: str | None = None
    profile_name: str | None = None
    created_at: datetime | None = None
    duration: float | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("id", "profile_id"):
            _id(getattr(self, name), f"generation.{name}")
        for name in ("text", "language", "engine"):
            _text(getattr(self, name), f"generation.{name}")
        for name in ("instruct", "model_size", "profile_name"):
            _text(getattr(self, name), f"generation.{name}", optional=True)
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed not in _SEED_RANGE
        ):
            raise InvalidValueError(
                f"generation.seed must be a 64-bit integer or None, got {self.seed!r}"
            )
        if self.duration is not None and (
            isinstance(self.duration, bool)
            or not isinstance(self.duration, (int, float))
            or not math.isfinite(self.duration)
            or not self.duration >= 0
        ):
            raise InvalidValueError(
                f"generation.duration must be a finite number of seconds >= 0, got {self.duration!r}"
            )
        object.__setattr__(self, "created_at", _utc(self.created_at, "generation.created_at"))
        object.__setattr__(self, "extra", _str_map(self.extra, "generation.extra"))


@dataclass(frozen=True)
class Audio:
    """Audio handed to the library: a file the host wrote, or samples and their rate.

    Build it with :meth:`from_file` or :meth:`from_samples`. A file is copied (any format
    soundfile decodes, kept as it is); samples are written as 16-bit PCM WAV unless
    ``subtype`` says otherwise (any soundfile WAV subtype, e.g. ``"FLOAT"``).
    """

    path: Path | None = None
    samples: Any = None
    sample_rate: int | None = None
    subtype: str = "PCM_16"

    def __post_init__(self) -> None:
        if (self.path is None) == (self.samples is None):
            raise InvalidValueError("audio needs either a path or samples, not both or neither")
        if self.path is not None:
            object.__setattr__(self, "path", Path(self.path))
        elif (
            isinstance(self.sample_rate, bool)
            or not isinstance(self.sample_rate, int)
            or self.sample_rate <= 0
        ):
            raise InvalidValueError(
                f"audio.sample_rate must be a positive integer with samples, got {self.sample_rate!r}"
            )

    @classmethod
    def from_file(cls, path: str | Path) -> Audio:
        return cls(path=Path(path))

    @classmethod
    def from_samples(cls, samples: Any, sample_rate: int, subtype: str = "PCM_16") -> Audio:
        return cls(samples=samples, sample_rate=sample_rate, subtype=subtype)


@dataclass(frozen=True)
class Effect:
    """One step of an effects chain: ``{"type", "enabled", "params"}`` as the seed stores it."""

    type: str
    enabled: bool = True
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not self.type:
            raise InvalidValueError(f"effect.type must be a non-empty string, got {self.type!r}")
        if not isinstance(self.enabled, bool):
            raise InvalidValueError(f"effect.enabled must be true or false, got {self.enabled!r}")
        if not isinstance(self.params, Mapping):
            raise InvalidValueError(f"effect.params must be a mapping, got {self.params!r}")
        try:
            json.dumps(dict(self.params), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidValueError(
                f"effect.params of {self.type!r} must be JSON data: {exc}"
            ) from None
        object.__setattr__(self, "params", dict(self.params))

    @classmethod
    def coerce(cls, value: Effect | Mapping[str, Any]) -> Effect:
        if isinstance(value, Effect):
            return value
        if not isinstance(value, Mapping):
            raise InvalidValueError(f"an effect must be a mapping or Effect, got {value!r}")
        unknown = set(value) - {"type", "enabled", "params"}
        if unknown:
            raise InvalidValueError(f"effect has unknown key(s) {sorted(unknown)}")
        return cls(
            type=value.get("type"),  # type: ignore[arg-type]
            enabled=value.get("enabled", True),
            params=value.get("params") or {},
        )

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "enabled": self.enabled, "params": dict(self.params)}


@dataclass(frozen=True)
class Version:
    """A processed version of a generation's audio: its label and the effects that made it.

    ``source_version_id`` names the version the effects were applied to (None: the original).
    ``is_default`` makes it the active version, the one the generation's ``audio_path`` gives.
    """

    id: str
    label: str
    effects_chain: Sequence[Effect | Mapping[str, Any]] = ()
    source_version_id: str | None = None
    is_default: bool = False
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        _id(self.id, "version.id")
        _text(self.label, "version.label")
        _id(self.source_version_id, "version.source_version_id", optional=True)
        if not isinstance(self.is_default, bool):
            raise InvalidValueError(f"version.is_default must be true or false, got {self.is_default!r}")
        if isinstance(self.effects_chain, (str, bytes)) or not isinstance(self.effects_chain, Sequence):
            raise InvalidValueError(
                f"version.effects_chain must be a list of effects, got {self.effects_chain!r}"
            )
        chain = tuple(Effect.coerce(e) for e in self.effects_chain)
        object.__setattr__(self, "effects_chain", chain)
        object.__setattr__(self, "created_at", _utc(self.created_at, "version.created_at"))


@dataclass(frozen=True)
class Profile:
    """A voice profile as the host keeps it. ``extra`` holds anything else, as JSON data."""

    id: str
    name: str
    description: str | None = None
    language: str | None = None
    created_at: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _id(self.id, "profile.id")
        _text(self.name, "profile.name")
        _text(self.description, "profile.description", optional=True)
        _text(self.language, "profile.language", optional=True)
        if not isinstance(self.extra, Mapping):
            raise InvalidValueError(f"profile.extra must be a mapping, got {self.extra!r}")
        try:
            json.dumps(dict(self.extra), allow_nan=False, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
            raise InvalidValueError(f"profile.extra must be JSON data: {exc}") from None
        object.__setattr__(self, "created_at", _utc(self.created_at, "profile.created_at"))

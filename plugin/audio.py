"""Taking audio into the library: check that it decodes, measure it, write it durably.

The audio lands as a hidden temp file beside its final name; the store renames it into place
just before the sidecar that points at it, so no sidecar ever names missing or partial audio.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from ..hooks.types import Audio
from ..library.atomic import commit_temp, write_temp

_SUFFIX = {"MPEG": ".mp3", "RAW": ".raw"}
_CHUNK = 1 << 20


class InvalidAudioError(ValueError):
    """Audio given to the library cannot be stored; the message names the source and why."""


@dataclass(frozen=True)
class PreparedAudio:
    tmp: Path  # durable, hidden temp file beside its final place
    suffix: str
    duration: float
    sample_rate: int
    channels: int
    audio_bytes: int
    audio_sha256: str

    def commit(self, final: Path) -> None:
        # the sidecar written next in the same folder fsyncs it, for both renames
        commit_temp(self.tmp, final, sync_folder=False)

    def facts(self) -> dict:
        return {
            "duration": self.duration,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "audio_bytes": self.audio_bytes,
            "audio_sha256": self.audio_sha256,
        }


def prepare(audio: Audio, final: Path) -> PreparedAudio:
    """Write ``audio`` to a durable temp file beside ``final`` (whose suffix it may change)."""
    if audio.path is not None:
        return _from_file(audio.path, final)
    return _from_samples(audio, final)


def _from_file(source: Path, final: Path) -> PreparedAudio:
    if not source.is_file():
        raise InvalidAudioError(f"audio file {source} does not exist or is not a file")
    with open(source, "rb") as stream:
        return from_stream(stream, final, str(source))


def from_stream(stream: BinaryIO, final: Path, name: str) -> PreparedAudio:
    """Copy audio from an open binary stream (a file, an archive entry) as it is, byte for byte;
    ``name`` names the source in errors."""
    digest = hashlib.sha256()

    def copy(out: BinaryIO) -> None:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)

    tmp = write_temp(final, copy)
    try:
        # decoded from our own copy: what is checked is exactly what is stored
        info = _decode(tmp, name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    suffix = _SUFFIX.get(info.format, "." + info.format.lower())
    return PreparedAudio(tmp, suffix, *_measure(info), tmp.stat().st_size, digest.hexdigest())


def _decode(path: Path, name: str) -> sf._SoundFileInfo:
    try:
        info = sf.info(str(path))
        with sf.SoundFile(str(path)) as f:
            decoded = sum(len(block) for block in f.blocks(blocksize=65536))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        # libsndfile's own words, without the temp file's name its message carries
        reason = getattr(exc, "error_string", None) or "not audio soundfile can read"
        raise InvalidAudioError(f"audio {name} does not decode: {reason}") from None
    if info.frames == 0 or decoded == 0:
        raise InvalidAudioError(f"audio {name} holds no samples")
    return info


def _measure(info) -> tuple[float, int, int]:
    return info.frames / info.samplerate, int(info.samplerate), int(info.channels)


def _from_samples(audio: Audio, final: Path) -> PreparedAudio:
    samples = np.asarray(audio.samples)
    if samples.dtype.kind not in "iuf" or samples.ndim not in (1, 2):
        raise InvalidAudioError(
            f"audio samples must be a 1-D (mono) or 2-D (frames, channels) numeric array, "
            f"got dtype {samples.dtype} with shape {samples.shape}"
        )
    if samples.shape[0] == 0 or samples.size == 0:
        raise InvalidAudioError("audio samples are empty")
    if samples.dtype.kind == "f" and not np.isfinite(samples).all():
        raise InvalidAudioError("audio samples contain NaN or infinity")
    buffer = io.BytesIO()
    try:
        sf.write(buffer, samples, audio.sample_rate, format="WAV", subtype=audio.subtype)
    except (sf.LibsndfileError, ValueError, TypeError) as exc:
        raise InvalidAudioError(f"audio samples cannot be written as WAV/{audio.subtype}: {exc}") from None
    data = buffer.getbuffer()
    tmp = write_temp(final, lambda out: out.write(data))
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    return PreparedAudio(
        tmp,
        ".wav",
        samples.shape[0] / audio.sample_rate,
        audio.sample_rate,
        channels,
        len(data),
        hashlib.sha256(data).hexdigest(),
    )


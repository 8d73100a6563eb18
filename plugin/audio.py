"""Taking audio into the library: check that it decodes, measure it, write it durably.

The audio lands as a hidden temp file beside its final name; the store renames it into place
just before the sidecar that points at it, so no sidecar ever names missing or partial audio.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf

from ..hooks.types import Audio
from ..library.atomic import commit_temp, copy_hashed, temp_path, write_temp

_SUFFIX = {"MPEG": ".mp3", "RAW": ".raw"}
# Writes samples' temp files (write, fsync) while the caller encodes the sidecar that names them
_WRITER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tts-history-audio")
# Uncompressed audio: every frame is a fixed number of bytes and any bytes decode, so once
# libsndfile has parsed the header and measured the data against the file's real length, a
# decode of every sample would find exactly its frame count and could not fail. Everything
# else (FLAC, whose subtype also reads PCM_16; Vorbis, MP3, ADPCM...) is decoded in full.
_PLAIN_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "AU", "CAF"})
_PLAIN_SUBTYPES = frozenset(
    {"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"}
)


class InvalidAudioError(ValueError):
    """Audio given to the library cannot be stored; the message names the source and why,
    ``reason`` says only why."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True)
class _Decoded:
    format: str
    frames: int
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class PreparedAudio:
    tmp: Path  # hidden temp file beside its final place, durable (unless from_stream was told not)
    suffix: str
    duration: float
    sample_rate: int
    channels: int
    audio_bytes: int
    audio_sha256: str
    written: Future[Path] | None = None  # the temp file's write, when a thread does it

    def commit(self, final: Path) -> None:
        if self.written is not None:
            self.written.result()  # raises what the write raised; it removed its temp file
        # the sidecar written next in the same folder fsyncs it, for both renames
        commit_temp(self.tmp, final, sync_folder=False)

    def discard(self) -> None:
        """Remove the temp file (none once committed), after its write if it is under way."""
        if self.written is not None:
            wait_for([self.written])
        self.tmp.unlink(missing_ok=True)

    def facts(self) -> dict:
        return {
            "duration": self.duration,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "audio_bytes": self.audio_bytes,
            "audio_sha256": self.audio_sha256,
        }


def prepare(audio: Audio, final: Path) -> PreparedAudio:
    """Write ``audio`` to a durable temp file beside ``final`` (whose suffix it may change);
    from samples, the write may still be under way on return (:meth:`PreparedAudio.commit`
    waits for it)."""
    if audio.path is not None:
        return _from_file(audio.path, final)
    return _from_samples(audio, final)


def _from_file(source: Path, final: Path) -> PreparedAudio:
    if not source.is_file():
        raise InvalidAudioError(f"audio file {source} does not exist or is not a file")
    with open(source, "rb") as stream:
        return from_stream(stream, final, str(source))


def from_stream(stream: BinaryIO, final: Path, name: str, *, sync: bool = True) -> PreparedAudio:
    """Copy audio from an open binary stream (a file, an archive entry) as it is, byte for byte;
    ``name`` names the source in errors. ``sync=False`` leaves the temp file's fsync to the
    caller (an import makes many durable at once)."""
    copied: list[tuple[int, str]] = []
    tmp = write_temp(final, lambda out: copied.append(copy_hashed(stream, out)), sync=sync)
    try:
        # decoded from our own copy: what is checked is exactly what is stored
        decoded = _decode(str(tmp), name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    suffix = _SUFFIX.get(decoded.format, "." + decoded.format.lower())
    size, sha256 = copied[0]
    return PreparedAudio(tmp, suffix, *_measure(decoded), audio_bytes=size, audio_sha256=sha256)


def measure_stream(stream: BinaryIO, name: str) -> dict[str, Any]:
    """Check audio from a stream as :func:`from_stream` does, keeping nothing: its facts."""
    with tempfile.TemporaryFile() as out:
        size, sha256 = copy_hashed(stream, out)
        out.flush()
        out.seek(0)  # libsndfile reads an open file from where it stands
        duration, rate, channels = _measure(_decode(out.fileno(), name))
    return {
        "duration": duration,
        "sample_rate": rate,
        "channels": channels,
        "audio_bytes": size,
        "audio_sha256": sha256,
    }


def _decode(source: str | int, name: str) -> _Decoded:
    """Open ``source`` (a path, or a file descriptor at its start) as audio and count its
    frames: by decoding every sample, unless the encoding makes that redundant (``_PLAIN_*``)."""
    try:
        with sf.SoundFile(source, closefd=False) as f:
            frames = f.frames
            if frames and (f.format not in _PLAIN_FORMATS or f.subtype not in _PLAIN_SUBTYPES):
                frames = sum(len(block) for block in f.blocks(blocksize=65536))
            decoded = _Decoded(f.format, frames, f.samplerate, f.channels)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        # libsndfile's own words, without the temp file's name its message carries
        words = getattr(exc, "error_string", None) or "not audio soundfile can read"
        raise InvalidAudioError(
            f"audio {name} does not decode: {words}", f"does not decode as audio ({words})"
        ) from None
    if decoded.frames == 0:
        raise InvalidAudioError(f"audio {name} holds no samples", "holds no samples")
    return decoded


def _measure(decoded: _Decoded) -> tuple[float, int, int]:
    return decoded.frames / decoded.sample_rate, int(decoded.sample_rate), int(decoded.channels)


def _as_pcm16(samples: np.ndarray, subtype: str) -> np.ndarray:
    """float32 samples bound for PCM_16 as the int16 values libsndfile would write (floor of
    x * 32768, clipped): the same bytes, at a fifth of libsndfile's per-sample cost."""
    if subtype.upper() != "PCM_16" or samples.dtype != np.float32:
        return samples
    scaled = np.floor(samples * np.float32(32768))
    return np.clip(scaled, -32768, 32767, out=scaled).astype(np.int16)


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
        sf.write(
            buffer,
            _as_pcm16(samples, audio.subtype),
            audio.sample_rate,
            format="WAV",
            subtype=audio.subtype,
        )
    except (sf.LibsndfileError, ValueError, TypeError) as exc:
        raise InvalidAudioError(f"audio samples cannot be written as WAV/{audio.subtype}: {exc}") from None
    data = buffer.getbuffer()
    tmp = temp_path(final)
    written = _WRITER.submit(write_temp, final, lambda out: out.write(data), tmp)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    return PreparedAudio(
        tmp,
        ".wav",
        samples.shape[0] / audio.sample_rate,
        audio.sample_rate,
        channels,
        len(data),
        hashlib.sha256(data).hexdigest(),
        written,
    )


"""Text-to-speech through eSpeak NG, bound with ctypes.

The library and its voice data come from the ``espeakng-loader`` wheel, so
nothing is downloaded and no system eSpeak is needed. eSpeak NG keeps global
state and is not thread-safe: one engine is initialised lazily per process and
every call into it holds ``_lock``.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import Final

import espeakng_loader  # type: ignore[import-untyped]  # ships no type information
import numpy as np
import numpy.typing as npt

__all__ = [
    "PITCH_RANGE",
    "RATE_RANGE",
    "SAMPLE_RATE",
    "SpeechError",
    "list_languages",
    "synthesize",
]

SAMPLE_RATE: Final[int] = 22050
# Documented limits from speak_lib.h; eSpeak NG silently clamps values outside
# them, so they are rejected here instead.
RATE_RANGE: Final[tuple[int, int]] = (80, 450)  # words per minute
PITCH_RANGE: Final[tuple[int, int]] = (0, 100)

# Constants from eSpeak NG's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS: Final = 2
_INITIALIZE_DONT_EXIT: Final = 0x8000  # report a bad data path instead of calling exit()
_EE_OK: Final = 0
_ERROR_NAMES: Final = {-1: "EE_INTERNAL_ERROR", 1: "EE_BUFFER_FULL", 2: "EE_NOT_FOUND"}
_POS_CHARACTER: Final = 1
_CHARS_UTF8: Final = 1
_PARAM_RATE: Final = 1
_PARAM_PITCH: Final = 3
_CONTINUE: Final = 0  # synth callback result that lets synthesis carry on


class SpeechError(Exception):
    """eSpeak NG could not be loaded, or could not speak the given input."""


class _Voice(ctypes.Structure):
    """espeak_VOICE.

    ``languages`` is a raw address because ListVoices fills it with a packed
    list (priority byte + NUL-terminated code, repeated) that ``c_char_p``
    would cut at the first NUL.
    """

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


# int (*)(short *wav, int numsamples, espeak_EVENT *events); the events are unused.
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)


def _declare_signatures(lib: ctypes.CDLL) -> None:
    """Give ctypes the C prototypes so arguments are converted, not guessed."""
    c_int, c_uint = ctypes.c_int, ctypes.c_uint
    voice_p = ctypes.POINTER(_Voice)
    signatures: dict[str, tuple[list[type], type | None]] = {
        "espeak_Initialize": ([c_int, c_int, ctypes.c_char_p, c_int], c_int),
        "espeak_SetSynthCallback": ([_SynthCallback], None),
        "espeak_ListVoices": ([voice_p], ctypes.POINTER(voice_p)),
        "espeak_SetVoiceByName": ([ctypes.c_char_p], c_int),
        "espeak_SetParameter": ([c_int, c_int, c_int], c_int),
        "espeak_Synth": (
            [ctypes.c_char_p, ctypes.c_size_t, c_uint, c_int, c_uint, c_uint,
             ctypes.POINTER(c_uint), ctypes.c_void_p],
            c_int,
        ),
        "espeak_Synchronize": ([], c_int),
    }
    for name, (argtypes, restype) in signatures.items():
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = restype


def _check(status: int, call: str) -> None:
    if status != _EE_OK:
        raise SpeechError(f"eSpeak NG {call} failed with {_ERROR_NAMES.get(status, status)}")


def _dictionary_shipped(data_path: Path, identifier: str) -> bool:
    """Whether the pronunciation dictionary a voice needs is in the data folder.

    A few voices ship without one (fo, kaa and xex in espeakng-loader 0.2.4);
    eSpeak selects them without an error and then speaks only silence. As in
    LoadVoice (voices.c), a ``dictionary`` line names it, else the part of the
    first ``language`` code before any "-".
    """
    try:
        text = (data_path / "lang" / identifier).read_bytes().decode(errors="replace")
    except OSError:
        return False
    dictionary: str | None = None
    for fields in map(str.split, text.splitlines()):
        if len(fields) < 2:
            continue
        if fields[0] == "dictionary":
            dictionary = fields[1]
            break
        if fields[0] == "language" and dictionary is None:
            dictionary = fields[1].split("-")[0]
    return dictionary is not None and (data_path / f"{dictionary}_dict").is_file()


class _Engine:
    """The initialised library; only ever used with ``_lock`` held."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = Path(espeakng_loader.get_data_path())
        except (OSError, RuntimeError) as exc:
            raise SpeechError(f"cannot load eSpeak NG from espeakng-loader: {exc}") from exc
        _declare_signatures(lib)
        # espeak_Initialize returns the sample rate; a missing or broken data
        # folder shows up as 0 (or -1), not as an error code.
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, os.fsencode(data_path), _INITIALIZE_DONT_EXIT
        )
        if rate != SAMPLE_RATE:
            raise SpeechError(
                f"eSpeak NG failed to initialise with data in {data_path} "
                f"(espeak_Initialize returned {rate}, expected {SAMPLE_RATE})"
            )
        self._lib = lib
        self._pcm = bytearray()
        # eSpeak keeps only the raw function pointer; holding the ctypes object
        # here stops it being garbage collected while the library may call it.
        self._callback = _SynthCallback(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        self.voices = self._find_voices(data_path)

    def _collect(self, wav: int | None, count: int, _events: int | None) -> int:
        if wav and count > 0:
            self._pcm += ctypes.string_at(wav, count * ctypes.sizeof(ctypes.c_short))
        return _CONTINUE

    def _find_voices(self, data_path: Path) -> dict[str, tuple[str, str]]:
        """Map each lower-cased language code to its spelling and a voice identifier.

        Voices are later selected by identifier, not by language, because
        espeak_SetVoiceByProperties lower-cases the requested code and so cannot
        reach codes listed in mixed case (chr-US-Qaaa-x-west). For each code
        the voice is the one eSpeak's scoring prefers for an exact match: the
        lowest priority number, then the name.
        """
        best: dict[str, tuple[int, bytes, str, str]] = {}
        voices = self._lib.espeak_ListVoices(None)
        index = 0
        while voices and voices[index]:
            voice = voices[index].contents
            index += 1
            identifier = voice.identifier.decode()
            if not _dictionary_shipped(data_path, identifier):
                continue
            address = voice.languages
            # Packed as (priority byte, NUL-terminated code)..., ended by a zero priority.
            while address and (priority := ctypes.string_at(address, 1)[0]):
                raw_code = ctypes.string_at(address + 1)
                address += len(raw_code) + 2
                code = raw_code.decode()
                candidate = (priority, voice.name or b"", code, identifier)
                current = best.get(code.lower())
                if current is None or candidate[:2] < current[:2]:
                    best[code.lower()] = candidate
        if not best:
            raise SpeechError(f"eSpeak NG found no usable voices in {data_path}")
        return {key: (code, identifier) for key, (_, _, code, identifier) in best.items()}

    def synthesize(
        self, text: bytes, language: str, rate: int, pitch: int
    ) -> npt.NDArray[np.int16]:
        voice = self.voices.get(language.lower())
        if voice is None:
            raise SpeechError(
                f"unknown language {language!r}: no usable eSpeak NG voice for it "
                "(see list_languages())"
            )
        identifier = voice[1]
        _check(self._lib.espeak_SetVoiceByName(identifier.encode()),
               f"espeak_SetVoiceByName({identifier!r})")
        _check(self._lib.espeak_SetParameter(_PARAM_RATE, rate, 0), "espeak_SetParameter(rate)")
        _check(self._lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0), "espeak_SetParameter(pitch)")
        # A fresh buffer per call, since the returned array is a view of it.
        self._pcm = pcm = bytearray()
        _check(
            self._lib.espeak_Synth(
                text, len(text) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            ),
            "espeak_Synth",
        )
        _check(self._lib.espeak_Synchronize(), "espeak_Synchronize")
        if not pcm:
            raise SpeechError("eSpeak NG produced no audio")
        return np.frombuffer(pcm, dtype=np.int16)


_lock = threading.Lock()
_engine: _Engine | None = None


def _get_engine() -> _Engine:
    """Return the process-wide engine, creating it on first use; hold ``_lock``."""
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine


def list_languages() -> list[str]:
    """Language codes of the installed voices, e.g. ``"en"``, ``"en-us"``, ``"ja"``."""
    with _lock:
        return sorted(code for code, _ in _get_engine().voices.values())


def synthesize(
    text: str, *, language: str = "en", rate: int = 175, pitch: int = 50
) -> npt.NDArray[np.int16]:
    """Speak ``text`` and return mono int16 samples at ``SAMPLE_RATE``.

    ``language`` is a code from ``list_languages()`` (any case), ``rate`` is in
    words per minute within ``RATE_RANGE``, ``pitch`` within ``PITCH_RANGE``.
    Raises ``SpeechError`` for empty text, an unknown language, an out-of-range
    setting, or a failure inside eSpeak NG.
    """
    # A NUL would end the C string early and silently drop the rest, and lone
    # surrogates cannot be encoded as UTF-8; neither should make speech fail.
    cleaned = text.replace("\0", " ")
    if not cleaned.strip():
        raise SpeechError("text is empty")
    if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
        raise SpeechError(
            f"rate {rate} is outside {RATE_RANGE[0]}..{RATE_RANGE[1]} words per minute"
        )
    if not PITCH_RANGE[0] <= pitch <= PITCH_RANGE[1]:
        raise SpeechError(f"pitch {pitch} is outside {PITCH_RANGE[0]}..{PITCH_RANGE[1]}")
    encoded = cleaned.encode("utf-8", errors="replace")
    with _lock:
        return _get_engine().synthesize(encoded, language, rate, pitch)

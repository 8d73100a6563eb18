"""A tiny text-to-speech host built on eSpeak NG. It records its history only through the
public hook contract, exactly as a third-party app would: it never touches the library itself.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pluggy

from ..hooks import Audio, Generation, Profile, Version
from . import effects
from .espeak import SAMPLE_RATE, SpeechError, synthesize

ENGINE = "espeak-ng"
_PROFILE_NAMESPACE = uuid.UUID("6f1d3a4e-8c2b-4f6a-9d0e-2b7c5a1e9f30")


class EspeakHost:
    """Speaks text and reports every generation to the plugin manager's hooks."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.hook = pm.hook
        self._audio: dict[str, np.ndarray] = {}  # this session's samples, for processed versions

    def profile(self, name: str, language: str = "en") -> Profile:
        """The profile called ``name`` (its id derives from the name), saved through the hooks."""
        profile = Profile(
            id=str(uuid.uuid5(_PROFILE_NAMESPACE, name)),
            name=name,
            language=language,
            extra={"voice": language},
        )
        self.hook.tts_history_profile_saved(profile=profile)
        return profile

    def speak(
        self,
        text: str,
        *,
        profile: str = "Default",
        language: str = "en",
        seed: int | None = None,
    ) -> Generation:
        """Generate speech. A failure is recorded as a failed generation and raised again."""
        voice = self.profile(profile, language)
        # the seed picks the voice's pitch and rate, so the same seed speaks the same way
        seed = random.randrange(2**31) if seed is None else seed
        rng = random.Random(seed)
        pitch, rate = rng.randint(35, 65), rng.randint(150, 190)
        generation = Generation(
            id=str(uuid.uuid4()),
            profile_id=voice.id,
            profile_name=voice.name,
            text=text,
            language=language,
            seed=seed,
            engine=ENGINE,
            model_size=None,
            instruct=f"pitch={pitch} rate={rate}",
        )
        self.hook.tts_history_generation_started(generation=generation)
        try:
            samples = synthesize(text, language=language, rate=rate, pitch=pitch)
        except SpeechError as exc:
            self.hook.tts_history_generation_failed(generation=generation, error=str(exc))
            raise
        self._audio[generation.id] = samples
        self.hook.tts_history_generation_completed(
            generation=generation, audio=Audio.from_samples(samples, SAMPLE_RATE)
        )
        return generation

    def process(
        self,
        generation_id: str,
        chain: Sequence[Mapping[str, Any]],
        *,
        label: str,
        make_default: bool = True,
    ) -> Version:
        """Apply an effects chain to a generation spoken in this session: a processed version."""
        processed = effects.apply(self._audio[generation_id], SAMPLE_RATE, chain)
        version = Version(
            id=uuid.uuid4().hex, label=label, effects_chain=list(chain), is_default=make_default
        )
        self.hook.tts_history_version_added(
            generation_id=generation_id,
            version=version,
            audio=Audio.from_samples(processed, SAMPLE_RATE),
        )
        return version

"""The workload: a deterministic library of N generations, the same for our sidecars and for the
baseline's rows.

Record ``i`` of a library of size ``n`` depends only on ``(n, i)`` (through the chunk it falls
in), so worker processes generate disjoint ranges, and the baseline loader regenerates exactly
the same records. Texts are realistic in length (log-normal, median ~90 characters, up to a few
thousand) and in language (ten languages, Zipf-distributed words, Japanese and Chinese without
spaces). A few tokens are planted at known rates so that searches have a rare word, a common
word, a two-word query and a query with no match.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

CHUNK = 2000  # records generated per random stream; fixed, so records never depend on workers

# The time span of a library: two years of history ending here (UTC).
END = datetime(2026, 6, 30, tzinfo=timezone.utc)
SPAN = timedelta(days=730)

# Planted search tokens. None of them is a substring of any vocabulary word (checked below).
RARE_WORD = "quetzalcoatl"  # ~1 generation in 5,000
RARE_RATE = 2e-4
PHRASE = ("harbor", "lanterns")  # planted together, adjacent, in ~0.5%
PHRASE_RATE = 5e-3
COMMON_WORD = "the"  # the most frequent English word (a substring of others, on both sides)
NO_MATCH = "xylophonequartz"

SEARCHES = {
    "rare word": RARE_WORD,
    "common word": COMMON_WORD,
    "two words": " ".join(PHRASE),
    "no match": NO_MATCH,
}

_WORDS = {
    "en": (
        "the of and to a in is you that it he was for on are as with his they I at be this have "
        "from or one had by word but not what all were we when your can said there use an each "
        "which she do how their if will up other about out many then them these so some her "
        "would make like him into time has look two more write go see number no way could "
        "people my than first water been call who oil its now find long down day did get come "
        "made may part story voice morning river garden window quiet evening chapter welcome"
    ).split(),
    "de": (
        "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch "
        "es an werden aus er hat dass sie nach wird bei einer um am sind noch wie einem über "
        "einen so zum war haben nur oder aber vor zur bis mehr durch man sein wurde Straße "
        "Geschichte Stimme Morgen Fluss Garten Fenster Abend Kapitel willkommen schön größer"
    ).split(),
    "fr": (
        "de la le et les des en un du une que est pour qui dans par plus pas au sur ne se ce il "
        "sont avec son aux mais comme on ou elle ses été leur nous cette fait tout deux ont "
        "même bien où entre histoire voix matin rivière jardin fenêtre soirée chapitre "
        "bienvenue très déjà après café élève"
    ).split(),
    "es": (
        "de la que el en y a los se del las un por con no una su para es al lo como más pero "
        "sus le ya o este sí porque esta entre cuando muy sin sobre también me hasta hay donde "
        "historia voz mañana río jardín ventana noche capítulo bienvenido niño año"
    ).split(),
    "it": (
        "di e il la che in a per un è non una sono del con si da le al dei i come più ma anche "
        "questo nel alla gli ha lo della delle storia voce mattina fiume giardino finestra sera "
        "capitolo benvenuto città perché"
    ).split(),
    "pt": (
        "de a o que e do da em um para é com não uma os no se na por mais as dos como mas foi "
        "ao ele das tem à seu sua ou ser quando muito nos já história voz manhã rio jardim "
        "janela noite capítulo bem-vindo coração"
    ).split(),
    "ru": (
        "и в не на я быть он с что а по это она этот к но они мы как из у который то за свой "
        "весь год от так о для ты же все тот мочь вы человек такой его история голос утро река "
        "сад окно вечер глава добро пожаловать ёлка"
    ).split(),
    "ja": (
        "こんにちは ありがとう 今日 明日 物語 声 朝 川 庭 窓 夕方 章 ようこそ 私 あなた です ます "
        "した ない ある いる する なる 東京 天気 時間 世界 音楽 本 学校 先生 がっこう かぞく"
    ).split(),
    "zh": (
        "你好 谢谢 今天 明天 故事 声音 早上 河 花园 窗户 晚上 章节 欢迎 我 你 他 的 是 在 有 "
        "不 了 人 这 中国 天气 时间 世界 音乐 书 学校 老师"
    ).split(),
    "ko": (
        "안녕하세요 감사합니다 오늘 내일 이야기 목소리 아침 강 정원 창문 저녁 장 환영합니다 나 "
        "너 그 은 는 이 가 을 를 에 서울 날씨 시간 세계 음악 책 학교 선생님"
    ).split(),
}
_NO_SPACES = {"ja", "zh"}
_PUNCT = {"ja": "。", "zh": "。"}

for _lang, _vocab in _WORDS.items():
    for _w in _vocab:
        for _token in (RARE_WORD, *PHRASE, NO_MATCH):
            assert _token not in _w.casefold(), (_lang, _w, _token)

# The cumulative Zipf weights of each vocabulary.
_CUM = {
    lang: [sum(1 / (r + 1) for r in range(k + 1)) for k in range(len(words))]
    for lang, words in _WORDS.items()
}


@dataclass(frozen=True)
class ProfileSpec:
    id: str
    name: str
    language: str
    weight: float


PROFILES = (
    ProfileSpec("p-narrator-en", "Narrator (English)", "en", 30),
    ProfileSpec("p-news-en", "News Anchor", "en", 12),
    ProfileSpec("p-erzaehler-de", "Erzähler", "de", 10),
    ProfileSpec("p-conteuse-fr", "Conteuse", "fr", 9),
    ProfileSpec("p-narradora-es", "Narradora", "es", 9),
    ProfileSpec("p-voce-it", "Voce calda", "it", 5),
    ProfileSpec("p-voz-pt", "Voz suave", "pt", 5),
    ProfileSpec("p-rasskazchik-ru", "Рассказчик", "ru", 6),
    ProfileSpec("p-ja-voice", "語り手", "ja", 6),
    ProfileSpec("p-zh-voice", "讲述者", "zh", 5),
    ProfileSpec("p-ko-voice", "내레이터", "ko", 3),
)
_PROFILE_CUM = [sum(p.weight for p in PROFILES[: k + 1]) for k in range(len(PROFILES))]
_ENGINES = (("qwen", "1.7B"), ("qwen", "0.6B"), ("kokoro", None), ("chatterbox", None), ("luxtts", None))
_ENGINE_CUM = [45, 65, 85, 95, 100]
_ERRORS = (
    "CUDA out of memory. Tried to allocate 2.00 GiB",
    "Model failed to load: checkpoint not found",
    "Text too long for the selected model (max 5000 characters)",
    "Generation cancelled by user",
)
_INSTRUCTS = ("Speak slowly and warmly.", "Excited, fast-paced.", "Whisper.", "Calm narration.")
_EFFECTS = (
    [{"type": "reverb", "enabled": True, "params": {"room_size": 0.6, "wet": 0.3}}],
    [{"type": "pitch_shift", "enabled": True, "params": {"semitones": -2}}],
    [
        {"type": "compressor", "enabled": True, "params": {"threshold_db": -18, "ratio": 3}},
        {"type": "gain", "enabled": True, "params": {"gain_db": 2.5}},
    ],
    [{"type": "chorus", "enabled": False, "params": {}}, {"type": "delay", "enabled": True, "params": {"seconds": 0.25}}],
)

# Audio: 24 kHz, 16-bit mono WAVs, one per whole second of duration (1..MAX_SECONDS).
SAMPLE_RATE = 24_000
MAX_SECONDS = 15


def wav_bytes(seconds: int) -> int:
    return 44 + seconds * SAMPLE_RATE * 2


def wav_sha256(seconds: int) -> str:
    return hashlib.sha256(wav_content(seconds)).hexdigest()


def wav_content(seconds: int) -> bytes:
    """A deterministic tone of ``seconds`` as a complete WAV file (PCM 16, mono)."""
    import io

    import numpy as np
    import soundfile as sf

    t = np.arange(seconds * SAMPLE_RATE) / SAMPLE_RATE
    samples = (0.2 * np.sin(2 * np.pi * (180 + 20 * seconds) * t)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    data = buffer.getvalue()
    assert len(data) == wav_bytes(seconds), (len(data), wav_bytes(seconds))
    return data


def _text(rng: random.Random, language: str) -> str:
    length = min(4000, max(6, int(rng.lognormvariate(math.log(90), 0.75))))
    words = _WORDS[language]
    cum = _CUM[language]
    joiner = "" if language in _NO_SPACES else " "
    out: list[str] = []
    size = 0
    sentence_start = True
    while size < length:
        word = rng.choices(words, cum_weights=cum)[0]
        if sentence_start and joiner:
            word = word[:1].upper() + word[1:]
        sentence_start = False
        out.append(word)
        size += len(word) + len(joiner)
        if rng.random() < 0.08:
            out[-1] += _PUNCT.get(language, ".")
            sentence_start = True
    text = joiner.join(out)
    if rng.random() < RARE_RATE:
        text = f"{text} {RARE_WORD}"
    if rng.random() < PHRASE_RATE:
        text = f"{PHRASE[0]} {PHRASE[1]} {text}"
    if not text.endswith((".", "。")):
        text += _PUNCT.get(language, ".")
    return text


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def records(n: int, start: int, stop: int, audio_sha: dict[int, str]) -> Iterator[dict[str, Any]]:
    """Records ``start`` to ``stop`` of a library of ``n`` generations, as sidecar dicts (the
    fields of ``library.schema.GENERATION_SCHEMA``, audio paths relative to the library root).

    ``audio_sha``: the sha256 of the shared WAV of each whole-second duration.
    """
    first_chunk = start // CHUNK
    for chunk in range(first_chunk, (stop - 1) // CHUNK + 1):
        rng = random.Random(f"tts-history-bench:{n}:{chunk}")
        for i in range(chunk * CHUNK, min((chunk + 1) * CHUNK, n)):
            record = _record(rng, n, i, audio_sha)  # always drawn, to keep the stream aligned
            if start <= i < stop:
                yield record


def _record(rng: random.Random, n: int, i: int, audio_sha: dict[int, str]) -> dict[str, Any]:
    gid = _uuid(rng)
    created = END - SPAN + SPAN * ((i + rng.random()) / n)
    profile = PROFILES[_pick(rng, _PROFILE_CUM)]
    language = profile.language if rng.random() < 0.92 else rng.choice(list(_WORDS))
    engine, model_size = _ENGINES[_pick(rng, _ENGINE_CUM)]
    roll = rng.random()
    status = "completed" if roll < 0.975 else "failed" if roll < 0.995 else "generating"
    text = _text(rng, language)
    seed = rng.randrange(2**31) if rng.random() < 0.8 else None
    instruct = rng.choice(_INSTRUCTS) if rng.random() < 0.1 else None
    favorite = rng.random() < 0.03
    extra = {"app_version": rng.choice(("0.4.1", "0.4.2", "0.5.0"))} if rng.random() < 0.1 else {}
    updated = created + timedelta(seconds=rng.uniform(0.5, 30))
    if favorite:
        updated += timedelta(days=rng.uniform(0, 20))
    record: dict[str, Any] = {
        "id": gid,
        "profile_id": profile.id,
        "text": text,
        "language": language,
        "audio_path": None,
        "duration": None,
        "seed": seed,
        "instruct": instruct,
        "engine": engine,
        "model_size": model_size,
        "status": status,
        "error": rng.choice(_ERRORS) if status == "failed" else None,
        "is_favorited": favorite,
        "created_at": created,
        "updated_at": updated,
        "profile_name": profile.name,
        "host_duration": None,
        "sample_rate": None,
        "channels": None,
        "audio_bytes": None,
        "audio_sha256": None,
        "active_version_id": None,
        "versions": [],
        "extra": extra,
        "origin_library_id": None,
        "origin_id": None,
    }
    if status != "completed":
        return record
    seconds = max(1, min(MAX_SECONDS, round(len(text) / 14)))
    day = created.strftime("%Y/%m/%d")

    def version(version_id: str, label: str, chain, source, when) -> dict[str, Any]:
        return {
            "id": version_id,
            "label": label,
            "audio_path": f"generations/{day}/{gid}.{version_id}.wav",
            "effects_chain": None if chain is None else json.dumps(chain),
            "is_default": False,
            "created_at": when,
            "source_version_id": source,
            "duration": float(seconds),
            "sample_rate": SAMPLE_RATE,
            "channels": 1,
            "audio_bytes": wav_bytes(seconds),
            "audio_sha256": audio_sha[seconds],
        }

    original = version(uuid.UUID(int=rng.getrandbits(128)).hex, "original", None, None, created)
    versions = [original]
    active = original
    if rng.random() < 0.06:
        for k in range(rng.choice((1, 1, 2))):
            processed = version(
                uuid.UUID(int=rng.getrandbits(128)).hex,
                f"processed {k + 1}",
                rng.choice(_EFFECTS),
                original["id"],
                created + timedelta(minutes=rng.uniform(1, 600)),
            )
            versions.append(processed)
            if rng.random() < 0.5:
                active = processed
        record["updated_at"] = max(record["updated_at"], max(v["created_at"] for v in versions))
    active["is_default"] = True
    record.update(
        versions=versions,
        active_version_id=active["id"],
        host_duration=float(seconds) + round(rng.uniform(-0.02, 0.02), 3),
        **{k: active[k] for k in ("audio_path", "duration", "sample_rate", "channels", "audio_bytes", "audio_sha256")},
    )
    return record


def _pick(rng: random.Random, cum: list[float]) -> int:
    x = rng.random() * cum[-1]
    for k, c in enumerate(cum):
        if x < c:
            return k
    return len(cum) - 1


def profile_records() -> list[dict[str, Any]]:
    """The profile sidecars (``library.schema.PROFILE_SCHEMA`` fields)."""
    made = END - SPAN - timedelta(days=1)
    return [
        {
            "id": p.id,
            "name": p.name,
            "description": f"{p.name}, {p.language}",
            "language": p.language,
            "extra": json.dumps({"reference_audio": f"{p.id}.wav"}),
            "created_at": made,
            "updated_at": made,
        }
        for p in PROFILES
    ]

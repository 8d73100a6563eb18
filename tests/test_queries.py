"""History.list / get / stats / sql against a small library whose every answer is known.

Every generation is recorded through the hooks, with real audio; every filter is checked
against the exact set of ids it must give.
"""

from __future__ import annotations

import base64
import importlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from helpers import RATE, tone

from tts_history import Audio, Generation, History, Profile, Version, get_plugin_manager, hookimpl
from tts_history.index import NotFoundError, QueryError, tables
from tts_history.index.text import signatures
from tts_history.library import SidecarError, schema

queries = importlib.import_module("tts_history.index.queries")  # the module, not the package's names

# the seed's GenerationResponse (its "Response Schema"), in its order
SEED_ITEM_KEYS = [
    "id",
    "profile_id",
    "profile_name",
    "text",
    "language",
    "audio_path",
    "duration",
    "seed",
    "instruct",
    "engine",
    "model_size",
    "status",
    "error",
    "is_favorited",
    "created_at",
]

NOW = datetime.now(timezone.utc).replace(microsecond=0)

# id, profile, text, language, engine, status, favorite, days ago
ROWS = [
    ("g01", "alice", "Café au lait", "fr", "qwen", "completed", True, 1),
    ("g02", "bob", "CAFE NOIR", "fr", "espeak", "completed", False, 2),
    ("g03", "alice", "Cafe\u0301 décomposé", "fr", "qwen", "completed", False, 3),
    ("g04", "bob", "Die Straße ist lang", "de", "qwen", "completed", True, 5),
    ("g05", "alice", "STRASSE und Weg", "de", "espeak", "completed", False, 8),
    ("g06", "alice", "今日はいい天気ですね", "ja", "kokoro", "completed", False, 10),
    ("g07", "bob", "明日は雨が降るでしょう", "ja", "kokoro", "failed", False, 12),
    ("g08", "alice", "I ❤️ you", "en", "qwen", "completed", True, 15),
    ("g09", "bob", "I ❤ a plain heart", "en", "qwen", "completed", False, 20),
    ("g10", "alice", "50% off today", "en", "qwen", "completed", False, 25),
    ("g11", "bob", "one hundred percent", "en", "qwen", "completed", False, 30),
    ("g12", "alice", "a_c underscore", "en", "espeak", "completed", False, 35),
    ("g13", "bob", "abc plain letters", "en", "espeak", "completed", False, 40),
    ("g14", "alice", "it's quoted", "en", "qwen", "generating", False, 45),
    ("g15", "bob", 'say "hi" twice', "en", "qwen", "completed", False, 50),
    ("g16", "alice", "back\\slash", "en", "qwen", "completed", False, 60),
    ("g17", "bob", "backslash spelled out", "en", "qwen", "failed", False, 70),
    ("g18", "alice", "hello world", "en", "qwen", "completed", False, 80),
    ("g19", "bob", "world, hello again", "en", "espeak", "completed", True, 90),
    ("g20", "alice", "hello there", "en", "qwen", "completed", False, 100),
    ("g21", "bob", "Ελληνικά ΣΟΦΊΑ", "el", "qwen", "completed", False, 110),
    ("g22", "alice", "がっこう", "ja", "kokoro", "completed", False, 120),
]
ALL = [r[0] for r in ROWS]  # newest first: the list order
SECONDS = {gid: 0.05 + n * 0.005 for n, gid in enumerate(ALL)}


def created(days: int) -> datetime:
    return NOW - timedelta(days=days)


def ids(rows) -> set[str]:
    return {r[0] for r in rows}


def populate(pm, library) -> History:
    hook = pm.hook
    hook.tts_history_profile_saved(profile=Profile(id="alice", name="Alice"))
    hook.tts_history_profile_saved(profile=Profile(id="bob", name="Bob"))
    for gid, profile, text, language, engine, status, favorite, days in ROWS:
        generation = Generation(
            id=gid,
            profile_id=profile,
            text=text,
            language=language,
            engine=engine,
            seed=int(gid[1:]),
            model_size="1.7B" if engine == "qwen" else None,
            created_at=created(days),
        )
        if status == "completed":
            audio = Audio.from_samples(tone(SECONDS[gid]), RATE)
            hook.tts_history_generation_completed(generation=generation, audio=audio)
        elif status == "failed":
            hook.tts_history_generation_failed(generation=generation, error="model crashed")
        else:
            hook.tts_history_generation_started(generation=generation)
        if favorite:
            hook.tts_history_favorite_set(generation_id=gid, is_favorited=True)
    return History(library, plugin_manager=pm)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One library for the tests that only read, in its own per-user folders."""
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("queries-home")
        for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
            mp.setenv(name, str(home / name.lower()))
        mp.delenv("TTS_HISTORY_LIBRARY", raising=False)
        mp.delenv("TTS_HISTORY_INDEX", raising=False)
        library = tmp_path_factory.mktemp("queries") / "library"
        yield populate(get_plugin_manager(library, entrypoints=False), library)


@pytest.fixture
def history(shared) -> History:
    """The shared library, for tests that do not change it."""
    yield shared
    assert shared.list(limit=1)["total"] == len(ALL), "a read-only test changed the library"


@pytest.fixture
def own_history(pm, library) -> History:
    """A library of the test's own, for tests that change it."""
    return populate(pm, library)


def listed(history: History, **kwargs) -> list[str]:
    return [item["id"] for item in history.list(limit=100, **kwargs)["items"]]


# -- filters ---------------------------------------------------------------------------------


def test_no_filter_lists_everything_newest_first(history):
    result = history.list(limit=100)
    assert [i["id"] for i in result["items"]] == ALL
    assert result["total"] == len(ALL)
    assert result["next_cursor"] is None


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"profile_id": "alice"}, ids(r for r in ROWS if r[1] == "alice")),
        ({"profile_id": "nobody"}, set()),
        ({"language": "ja"}, {"g06", "g07", "g22"}),
        ({"language": "fr"}, {"g01", "g02", "g03"}),
        ({"engine": "espeak"}, {"g02", "g05", "g12", "g13", "g19"}),
        ({"engine": "kokoro"}, {"g06", "g07", "g22"}),
        ({"status": "failed"}, {"g07", "g17"}),
        ({"status": "generating"}, {"g14"}),
        ({"status": "completed"}, set(ALL) - {"g07", "g17", "g14"}),
        ({"favorites": True}, {"g01", "g04", "g08", "g19"}),
        ({"favorites": False}, set(ALL)),
        # since is inclusive, until exclusive
        ({"since": created(30)}, {f"g{n:02d}" for n in range(1, 12)}),
        ({"until": created(10)}, {f"g{n:02d}" for n in range(7, 23)}),
        ({"since": created(30), "until": created(10)}, {"g07", "g08", "g09", "g10", "g11"}),
        ({"since": created(30).isoformat().replace("+00:00", "Z")}, {f"g{n:02d}" for n in range(1, 12)}),
        ({"since": created(30).astimezone(timezone(timedelta(hours=5)))}, {f"g{n:02d}" for n in range(1, 12)}),
        ({"until": created(10).replace(tzinfo=None).isoformat()}, {f"g{n:02d}" for n in range(7, 23)}),
        ({"since": NOW + timedelta(days=1)}, set()),
        ({"profile_id": "alice", "language": "en", "engine": "qwen"}, {"g08", "g10", "g14", "g16", "g18", "g20"}),
        ({"profile_id": "alice", "language": "en", "engine": "qwen", "search": "hello"}, {"g18", "g20"}),
        ({"profile_id": "bob", "favorites": True, "language": "de"}, {"g04"}),
        ({"status": "completed", "engine": "espeak", "search": "hello", "favorites": True}, {"g19"}),
    ],
)
def test_filter_gives_exact_set(history, filters, expected):
    result = history.list(limit=100, **filters)
    got = [i["id"] for i in result["items"]]
    assert set(got) == expected
    assert got == [gid for gid in ALL if gid in expected]  # still newest first
    assert result["total"] == len(expected)


def test_since_accepts_a_plain_date(history):
    day = created(30).date() + timedelta(days=1)  # midnight UTC after g11 was made
    assert set(listed(history, since=day.isoformat())) == {f"g{n:02d}" for n in range(1, 11)}


def test_limit_and_offset_page_through_in_order(history):
    pages = [history.list(limit=5, offset=offset) for offset in range(0, 25, 5)]
    assert [i["id"] for p in pages for i in p["items"]] == ALL
    assert {p["total"] for p in pages} == {len(ALL)}
    assert [i["id"] for i in history.list(limit=3, offset=2)["items"]] == ALL[2:5]
    assert history.list(limit=3, offset=100)["items"] == []
    assert history.list(limit=3, offset=100)["total"] == len(ALL)


def test_total_counts_every_match_not_just_the_page(history):
    result = history.list(limit=2, profile_id="alice")
    assert len(result["items"]) == 2
    assert result["total"] == sum(1 for r in ROWS if r[1] == "alice")
    assert result["next_cursor"] is not None
    assert history.list(limit=1, search="hello")["total"] == 3


def test_cursor_pages_through_everything_with_filters(history):
    seen, cursor = [], None
    while True:
        page = history.list(limit=3, cursor=cursor, language="en")
        assert page["total"] == sum(1 for r in ROWS if r[3] == "en")
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [r[0] for r in ROWS if r[3] == "en"]


def test_cursor_paging_is_stable_while_generations_are_added(own_history, pm):
    history = own_history
    # several generations at the very same instant: the cursor must split ties correctly
    tie = created(0) - timedelta(hours=1)
    for n in range(5):
        generation = Generation(id=f"tie{n}", profile_id="bob", text=f"tie {n}", created_at=tie)
        pm.hook.tts_history_generation_completed(
            generation=generation, audio=Audio.from_samples(tone(0.05), RATE)
        )
    before = [i["id"] for i in history.list(limit=100)["items"]]
    assert before[:5] == ["tie4", "tie3", "tie2", "tie1", "tie0"]
    assert before[5:] == ALL

    seen, cursor, added = [], None, 0
    while True:
        page = history.list(limit=2, cursor=cursor)
        assert page["total"] == len(before) + added
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # new generations arrive between pages (newest, as a host records them)
        pm.hook.tts_history_generation_completed(
            generation=Generation(id=f"new{added}", profile_id="bob", text="new"),
            audio=Audio.from_samples(tone(0.05), RATE),
        )
        added += 1
    assert added > 5
    assert seen == before  # nothing skipped, nothing twice
    fresh = [i["id"] for i in history.list(limit=100)["items"]]
    assert set(fresh[:added]) == {f"new{n}" for n in range(added)}
    assert fresh[added:] == before


def test_cursor_and_offset_together_are_refused(history):
    cursor = history.list(limit=2)["next_cursor"]
    with pytest.raises(QueryError, match="cursor"):
        history.list(limit=2, cursor=cursor, offset=2)


# -- search ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        # case- and accent-insensitive, both ways
        ("cafe", {"g01", "g02", "g03"}),
        ("CAFÉ", {"g01", "g02", "g03"}),
        ("café", {"g01", "g02", "g03"}),
        ("Cafe\u0301", {"g01", "g02", "g03"}),
        ("decompose", {"g03"}),
        ("STRASSE", {"g04", "g05"}),
        ("strasse", {"g04", "g05"}),
        ("Straße", {"g04", "g05"}),
        ("σοφια", {"g21"}),
        ("ΣΟΦΙΑ", {"g21"}),
        # every word must match, in any order
        ("hello", {"g18", "g19", "g20"}),
        ("hello world", {"g18", "g19"}),
        ("world   hello", {"g18", "g19"}),
        ("hello cafe", set()),
        ("Weg STRASSE", {"g05"}),
        # substrings, Japanese included; voicing marks change the word and are kept
        ("天気", {"g06"}),
        ("今日", {"g06"}),
        ("雨が", {"g07"}),
        ("がっこう", {"g22"}),
        ("かっこう", set()),
        ("ello", {"g18", "g19", "g20"}),
        # emoji, with or without the variation selector
        ("❤", {"g08", "g09"}),
        ("❤️", {"g08", "g09"}),
        # SQL wildcards, quotes and backslashes are ordinary characters
        ("%", {"g10"}),
        ("50%", {"g10"}),
        ("%off", set()),
        ("_", {"g12"}),
        ("a_c", {"g12"}),
        ("'", {"g14"}),
        ("it's", {"g14"}),
        ('"', {"g15"}),
        ('"hi"', {"g15"}),
        ("\\", {"g16"}),
        ("back\\slash", {"g16"}),
        ("' OR 1=1 --", set()),
        ("nothing-matches-this", set()),
    ],
)
def test_search(history, search, expected):
    result = history.list(limit=100, search=search)
    assert {i["id"] for i in result["items"]} == expected
    assert result["total"] == len(expected)


def test_search_combines_with_paging(history):
    first = history.list(limit=1, search="hello")
    second = history.list(limit=1, search="hello", cursor=first["next_cursor"])
    third = history.list(limit=1, search="hello", cursor=second["next_cursor"])
    assert [p["items"][0]["id"] for p in (first, second, third)] == ["g18", "g19", "g20"]
    assert third["next_cursor"] is None


@pytest.mark.parametrize("limit", [1, 2, 100])
def test_a_search_shows_a_generation_with_a_conflict_copy_once(own_history, pm, limit):
    # Pages that stop short of the last match (limits 1 and 2, paged by cursor) and one that
    # reaches past it (100): the shadowed copy of an id comes with none of them.
    history = own_history
    sidecar = Path(history.get("g18")["sidecar_path"])
    copy = sidecar.with_name(f"{sidecar.stem}.sync-conflict-20260101-000000-ABCDEFG.parquet")
    copy.write_bytes(sidecar.read_bytes())
    pm.hook.tts_history_favorite_set(generation_id="g18", is_favorited=True)  # the original wins
    assert history.list(limit=100, search="hello world")["total"] == 2
    items, cursor = [], None
    while True:
        page = history.list(limit=limit, search="hello", cursor=cursor)
        assert page["total"] == 3
        items += page["items"]
        if (cursor := page["next_cursor"]) is None:
            break
    assert [i["id"] for i in items] == ["g18", "g19", "g20"]
    assert items[0]["is_favorited"] is True
    assert [i["id"] for i in history.list(limit=100, search="hello", profile_id="alice")["items"]] == ["g18", "g20"]


@pytest.mark.parametrize("filters", [{"search": "hello"}, {"profile_id": "alice"}, {"language": "en"}, {}])
def test_a_page_that_reaches_past_the_last_match_holds_the_oldest_ones(history, filters):
    # the page is bounded by the oldest match when fewer matches than it reaches are left
    every = listed(history, **filters)
    for limit in (1, 2, 5):
        for offset in range(len(every) + 2):
            page = history.list(limit=limit, offset=offset, **filters)
            assert [i["id"] for i in page["items"]] == every[offset : offset + limit], (limit, offset)
            assert page["total"] == len(every)


def _offset_pages(history: History, count: int, **filters) -> list[list[str]]:
    return [
        [i["id"] for i in history.list(limit=limit, offset=offset, **filters)["items"]]
        for limit in (1, 3)
        for offset in range(count + 2)
    ]


@pytest.mark.parametrize("filters", [{"profile_id": "alice"}, {"language": "en"}, {"status": "failed"}, {}])
def test_deep_offset_pages_found_by_counting_are_the_pages_of_the_full_sort(history, filters, monkeypatch):
    # every offset takes the path of deep pages, whose range is narrowed to a row of the page
    every = listed(history, **filters)
    expected = _offset_pages(history, len(every), **filters)
    monkeypatch.setattr(queries, "_DEEP", 0)
    monkeypatch.setattr(queries, "_SLACK", 1)
    assert _offset_pages(history, len(every), **filters) == expected
    assert history.list(limit=2, offset=len(every), **filters) == {"items": [], "total": len(every), "next_cursor": None}


def test_deep_offset_pages_with_created_at_tied_across_them(pm, library, monkeypatch):
    # generations made at the same instant are ordered by id; no count can split them
    hook = pm.hook
    hook.tts_history_profile_saved(profile=Profile(id="p", name="P"))
    for n in range(30):
        hook.tts_history_generation_failed(
            generation=Generation(id=f"t{n:02d}", profile_id="p", text="x", created_at=created(n // 10)),
            error="boom",
        )
    history = History(library, plugin_manager=pm)
    expected = _offset_pages(history, 30)
    assert expected[0] == ["t09"] and expected[9] == ["t00"] and expected[10] == ["t19"]
    monkeypatch.setattr(queries, "_DEEP", 0)
    monkeypatch.setattr(queries, "_SLACK", 1)
    assert _offset_pages(history, 30) == expected



def test_search_pages_with_created_at_tied_across_them(pm, library, monkeypatch):
    # Matches and other texts at the same instants: a search's page is fetched by the times of
    # its rows (every match at those times is a candidate, the rest are not), or, for a page
    # deeper than _DEEP rows, by their range alone; both give the pages of the full sort
    hook = pm.hook
    hook.tts_history_profile_saved(profile=Profile(id="p", name="P"))
    for n in range(30):
        text = "harbor lanterns" if n % 3 else "quiet river"
        hook.tts_history_generation_failed(
            generation=Generation(id=f"t{n:02d}", profile_id="p", text=text, created_at=created(n // 10)),
            error="boom",
        )
    history = History(library, plugin_manager=pm)
    every = [f"t{n:02d}" for d in range(3) for n in reversed(range(10 * d, 10 * d + 10)) if n % 3]
    assert listed(history, search="lantern") == every
    expected = [every[offset : offset + limit] for limit in (1, 3) for offset in range(len(every) + 2)]
    assert _offset_pages(history, len(every), search="lantern") == expected
    monkeypatch.setattr(queries, "_DEEP", 0)
    assert _offset_pages(history, len(every), search="lantern") == expected
    items, cursor = [], None
    while True:
        page = history.list(limit=4, search="harbor", cursor=cursor)
        items += [i["id"] for i in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert items == every

# -- invalid input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"offset": -1}, "offset"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-13-45"}, "since"),
        ({"until": "not a date"}, "until"),
        ({"cursor": "!!!"}, "cursor"),
        ({"cursor": ""}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"not json").decode()}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(json.dumps(["only one"]).encode()).decode()}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(json.dumps([1, 2]).encode()).decode()}, "cursor"),
        ({"status": "done"}, "status"),
        ({"status": "COMPLETED"}, "status"),
    ],
)
def test_invalid_query_names_the_argument(history, kwargs, argument):
    with pytest.raises(QueryError) as info:
        history.list(**kwargs)
    message = str(info.value)
    assert message.split()[0] == argument  # the message starts with the argument's name
    value = next(iter(kwargs.values()))
    if isinstance(value, str) and value:
        assert repr(value) in message  # and shows the value


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [({"limit": "10"}, "limit"), ({"limit": 2.5}, "limit"), ({"since": 5}, "since")],
)
def test_wrongly_typed_query_argument_is_a_query_error(history, kwargs, argument):
    with pytest.raises(QueryError, match=argument):
        history.list(**kwargs)


def test_get_unknown_id_is_not_found(history):
    with pytest.raises(NotFoundError, match="nope"):
        history.get("nope")


# -- the response schema ---------------------------------------------------------------------


def test_list_items_have_exactly_the_seed_schema(history):
    library = history.library.root
    result = history.list(limit=100)
    assert list(result) == ["items", "total", "next_cursor"]
    for item in result["items"]:
        assert list(item) == SEED_ITEM_KEYS
        # JSON as the seed serves it: round-trips, keys in the seed's order
        assert list(json.loads(json.dumps(item))) == SEED_ITEM_KEYS
        assert item["created_at"].endswith("Z")
        parsed = datetime.fromisoformat(item["created_at"].replace("Z", "+00:00"))
        row = next(r for r in ROWS if r[0] == item["id"])
        assert parsed == created(row[7])
        assert isinstance(item["is_favorited"], bool) and item["is_favorited"] == row[6]
        assert item["status"] == row[5]
        assert item["seed"] == int(item["id"][1:])
        if item["status"] == "completed":
            path = Path(item["audio_path"])
            assert path.is_absolute() and path.is_file()
            assert path.is_relative_to(library)
            assert item["duration"] == pytest.approx(SECONDS[item["id"]], abs=1 / RATE)
            assert item["error"] is None
        else:
            assert item["audio_path"] is None and item["duration"] is None
        if item["status"] == "failed":
            assert item["error"] == "model crashed"


def test_get_returns_every_field_and_versions_with_the_active_one_marked(own_history, pm):
    history = own_history
    fx = Version(
        id="fx",
        label="warm",
        effects_chain=[{"type": "eq", "params": {"low": 2}}, {"type": "reverb", "enabled": False}],
        is_default=True,
    )
    pm.hook.tts_history_version_added(
        generation_id="g18", version=fx, audio=Audio.from_samples(tone(0.3), RATE)
    )
    item = history.get("g18")
    assert list(item)[: len(SEED_ITEM_KEYS)] == SEED_ITEM_KEYS
    for key in (
        "updated_at", "host_duration", "sample_rate", "channels", "audio_bytes",
        "audio_sha256", "audio_present", "active_version_id", "extra", "sidecar_path", "versions",
    ):
        assert key in item
    assert item["text"] == "hello world" and item["profile_name"] == "Alice"
    assert item["sample_rate"] == RATE and item["channels"] == 1
    assert item["audio_present"] is True
    assert Path(item["sidecar_path"]).is_file()
    assert item["updated_at"].endswith("Z")

    original, processed = item["versions"]
    assert (original["label"], original["is_default"], original["effects_chain"]) == ("original", False, None)
    assert processed["id"] == "fx" and processed["is_default"] is True
    assert item["active_version_id"] == "fx"
    assert [v["is_default"] for v in item["versions"]].count(True) == 1
    assert processed["effects_chain"] == [
        {"type": "eq", "enabled": True, "params": {"low": 2}},
        {"type": "reverb", "enabled": False, "params": {}},
    ]
    assert processed["source_version_id"] is None
    # the generation's audio is the active version's
    assert item["audio_path"] == processed["audio_path"] != original["audio_path"]
    assert item["duration"] == processed["duration"] == pytest.approx(0.3)
    assert original["duration"] == pytest.approx(SECONDS["g18"], abs=1 / RATE)
    for version in item["versions"]:
        assert Path(version["audio_path"]).is_file() and version["audio_present"] is True
        assert version["created_at"].endswith("Z")

    # the list item agrees with get
    listed_item = next(i for i in history.list(limit=100)["items"] if i["id"] == "g18")
    assert listed_item == {k: item[k] for k in SEED_ITEM_KEYS}

    # another version made active: get follows
    pm.hook.tts_history_default_version_changed(generation_id="g18", version_id=original["id"])
    again = history.get("g18")
    assert again["active_version_id"] == original["id"]
    assert [v["is_default"] for v in again["versions"]] == [True, False]
    assert again["audio_path"] == original["audio_path"]


def test_get_reads_the_record_from_the_sidecar_the_index_finds(own_history, pm):
    """The index finds the sidecar that counts for the id; get reads the record from it, so it
    gives the folder's record as it is now, while list answers from the index until it syncs."""
    index = own_history.index
    own_history.get("g02")  # synced
    pm.hook.tts_history_favorite_set(generation_id="g02", is_favorited=True)
    assert index.get("g02")["is_favorited"] is True
    assert not next(i for i in index.list(limit=100)["items"] if i["id"] == "g02")["is_favorited"]
    index.sync()
    assert next(i for i in index.list(limit=100)["items"] if i["id"] == "g02")["is_favorited"]

    # audio cut short counts as missing, as the index's sync counts it
    item = index.get("g02")
    Path(item["audio_path"]).write_bytes(Path(item["audio_path"]).read_bytes()[:100])
    item = index.get("g02")
    assert item["audio_present"] is False and item["versions"][0]["audio_present"] is False
    Path(item["audio_path"]).unlink()
    assert index.get("g02")["audio_present"] is False

    # a sidecar removed since the index last synced: not found, naming the file
    sidecar = Path(item["sidecar_path"])
    sidecar.unlink()
    with pytest.raises(NotFoundError, match="removed after the index last synced") as caught:
        index.get("g02")
    assert str(sidecar) in str(caught.value)

    # one damaged since: the reason, naming the file
    damaged = Path(index.get("g04")["sidecar_path"])
    damaged.write_bytes(b"not parquet at all")
    with pytest.raises(SidecarError, match="not a readable Parquet file") as caught:
        index.get("g04")
    assert str(damaged) in str(caught.value)
    index.sync(every_file=True)  # written over in place: its folder's stat is unchanged
    with pytest.raises(NotFoundError, match="'g04' cannot be read: its sidecar .*g04.parquet: not a readable"):
        index.get("g04")
    assert index.unreadable()[0]["path"].endswith("g04.parquet")


# -- stats -----------------------------------------------------------------------------------


def test_stats(history):
    library = history.library.root
    stats = history.stats()
    for key in ("total_generations", "total_duration_seconds", "generations_by_profile"):
        assert key in stats  # the seed's keys
    assert stats["total_generations"] == len(ALL)
    completed = [r[0] for r in ROWS if r[5] == "completed"]
    expected_duration = sum(len(tone(SECONDS[g])) / RATE for g in completed)
    assert stats["total_duration_seconds"] == pytest.approx(expected_duration, abs=1e-9)
    assert stats["generations_by_profile"] == {"alice": 12, "bob": 10}
    assert stats["generations_by_engine"] == {"espeak": 5, "kokoro": 3, "qwen": 14}
    assert stats["generations_by_language"] == {"de": 2, "el": 1, "en": 13, "fr": 3, "ja": 3}
    assert stats["generations_by_status"] == {"completed": 19, "failed": 2, "generating": 1}
    assert stats["favorites"] == 4

    audio = [p for p in (library / "generations").rglob("*.wav")]
    sidecars = list(library.rglob("*.parquet"))
    assert len(audio) == 19 and len(sidecars) == len(ALL) + 2
    assert stats["audio_bytes"] == sum(p.stat().st_size for p in audio)
    assert stats["sidecar_bytes"] == sum(p.stat().st_size for p in sidecars)
    assert stats["bytes_on_disk"] == stats["audio_bytes"] + stats["sidecar_bytes"]


def test_stats_kept_by_each_sync_are_those_counted_from_the_rows(pm, library, monkeypatch):
    """stats reads tallies that each sync batch adjusts by what it changed: through adds,
    failures, favorites, versions, deletions and a conflict copy taking over, they stay equal
    to a count over every row. The ledger is summed up whenever it outgrows its limit."""
    monkeypatch.setattr(importlib.import_module("tts_history.index.sync"), "TALLY_ROWS", 12)
    history = History(library, plugin_manager=pm)
    index = history.index

    def check() -> dict:
        index.sync()
        assert index.sql("SELECT value FROM meta WHERE key = 'tallies'")[1] == [("current",)]
        kept = {row for row in index.sql(tables.KEPT_TALLIES)[1]}
        counted = {row for row in index.sql(tables.TALLIES)[1] if row[2]}
        assert kept == counted
        return history.stats()

    for i, (profile, engine, seconds) in enumerate([("alice", "qwen", 0.2), ("bob", "espeak", 0.3), ("alice", "kokoro", 0.1)]):
        pm.hook.tts_history_generation_completed(
            generation=Generation(id=f"s{i}", profile_id=profile, text=f"take {i}", engine=engine, language="en"),
            audio=Audio.from_samples(tone(seconds), RATE),
        )
    pm.hook.tts_history_generation_failed(
        generation=Generation(id="f1", profile_id="bob", text="broken", engine="qwen"), error="out of memory"
    )
    assert check()["generations_by_status"] == {"completed": 3, "failed": 1}
    pm.hook.tts_history_favorite_set(generation_id="s0", is_favorited=True)
    pm.hook.tts_history_version_added(
        generation_id="s1", version=Version(id="v2", label="louder", effects_chain=[]),
        audio=Audio.from_samples(tone(0.5), RATE), is_default=True,
    )
    pm.hook.tts_history_generation_deleted(generation_id="f1")
    stats = check()
    assert (stats["favorites"], stats["total_generations"]) == (1, 3)

    # a conflict copy of s2, favorited, then the original changed after it: the original wins
    pm.hook.tts_history_favorite_set(generation_id="s2", is_favorited=True)
    sidecar = Path(index.get("s2")["sidecar_path"])
    copy = sidecar.with_name(f"{sidecar.stem}.sync-conflict-20260101-000000-ABCDEFG.parquet")
    copy.write_bytes(sidecar.read_bytes())
    pm.hook.tts_history_favorite_set(generation_id="s2", is_favorited=False)
    assert check()["favorites"] == 1
    sidecar.unlink()  # the original goes: the copy takes over, favorited
    stats = check()
    assert (stats["favorites"], stats["total_generations"]) == (2, 3)
    copy.unlink()
    stats = check()
    assert stats["total_generations"] == 2 and stats["generations_by_profile"] == {"alice": 1, "bob": 1}
    assert index.sql("SELECT count(*) FROM tallies")[1][0][0] <= 12 + 12  # summed, then one batch's


def test_a_duration_that_is_not_finite_counts_as_none_in_stats(pm, library):
    """A sidecar from elsewhere may hold any float: an infinite or NaN duration is indexed as it
    is, and stats leave it out of the sum instead of failing (and the sync rebuilding forever)."""
    history = History(library, plugin_manager=pm)
    for gid, seconds in (("ok", 0.5), ("odd", 0.25)):
        pm.hook.tts_history_generation_completed(
            generation=Generation(id=gid, profile_id="p1", text=gid), audio=Audio.from_samples(tone(seconds), RATE)
        )
    history.index.sync()
    sidecar = Path(history.get("odd")["sidecar_path"])
    for value in (float("inf"), float("nan")):
        record = schema.read_row(sidecar, "generation")
        record.update(duration=value, updated_at=datetime.now(timezone.utc))
        schema.write_generation(sidecar, record)
        report = history.index.sync()
        assert (report.updated, report.errors) == (1, [])
        stats = history.stats()
        assert stats["total_generations"] == 2
        assert stats["total_duration_seconds"] == pytest.approx(len(tone(0.5)) / RATE)
        assert history.index.sql("SELECT value FROM meta WHERE key = 'tallies'")[1] == [("current",)]


def test_stats_of_an_empty_library(pm, library):
    stats = History(library, plugin_manager=pm).stats()
    assert stats["total_generations"] == 0
    assert stats["total_duration_seconds"] == 0
    assert stats["generations_by_profile"] == {}


# -- sql -------------------------------------------------------------------------------------


def test_sql_runs_one_select(history):
    columns, rows = history.sql(
        "SELECT profile_id, count(*) AS n FROM generations GROUP BY profile_id ORDER BY profile_id"
    )
    assert columns == ["profile_id", "n"]
    assert rows == [("alice", 12), ("bob", 10)]
    columns, rows = history.sql(
        "WITH f AS (SELECT id FROM generations WHERE is_favorited) SELECT count(*) FROM f;"
    )
    assert rows == [(4,)]
    assert history.sql("SELECT label FROM versions WHERE generation_id = 'g01'")[1] == [("original",)]
    assert history.sql("SELECT name FROM profiles ORDER BY name")[1] == [("Alice",), ("Bob",)]


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM generation_rows",
        "UPDATE generation_rows SET text = 'x'",
        "INSERT INTO profiles (id, name) VALUES ('x', 'y')",
        "DROP TABLE files",
        "CREATE TABLE t AS SELECT 1",
        "ALTER TABLE files ADD COLUMN x INTEGER",
        "ATTACH ':memory:' AS other",
        "COPY generation_rows TO 'out.csv'",
        "PRAGMA version",
        "SET threads = 1",
        "CHECKPOINT",
        "EXPLAIN SELECT 1",
    ],
)
def test_sql_refuses_anything_but_select(history, statement, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(QueryError, match="only SELECT"):
        history.sql(statement)
    assert history.list(limit=1)["total"] == len(ALL)
    assert history.sql("SELECT count(*) FROM profiles")[1] == [(2,)]
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    "statement",
    ["SELECT 1; SELECT 2", "SELECT 1; DELETE FROM generation_rows", "", ";"],
)
def test_sql_refuses_anything_but_exactly_one_statement(history, statement):
    with pytest.raises(QueryError, match="exactly one"):
        history.sql(statement)
    assert history.list(limit=1)["total"] == len(ALL)


def test_sql_that_does_not_parse_or_fails_is_a_query_error(history):
    with pytest.raises(QueryError, match="parse"):
        history.sql("SELEC 1")
    with pytest.raises(QueryError, match="failed"):
        history.sql("SELECT no_such_column FROM generations")


def test_sql_never_changes_the_index_even_on_a_read_write_connection(own_history):
    index = own_history.index
    index.sync()
    with index.db.pinned():
        with pytest.raises(QueryError):
            index.sql("WITH d AS (DELETE FROM generation_rows RETURNING id) SELECT count(*) FROM d")
    assert index.sql("SELECT count(*) FROM generation_rows")[1] == [(len(ALL),)]


# -- profile names ---------------------------------------------------------------------------


class Keep:
    def __init__(self, *ids: str) -> None:
        self.ids = set(ids)

    @hookimpl
    def tts_history_protect_generation(self, generation):
        return generation["id"] in self.ids


def test_profile_name_is_current_after_rename_and_snapshot_after_delete(own_history, pm):
    history = own_history
    def names() -> dict[str, str | None]:
        return {i["id"]: i["profile_name"] for i in history.list(limit=100, profile_id="alice")["items"]}

    assert set(names().values()) == {"Alice"}
    pm.hook.tts_history_profile_saved(profile=Profile(id="alice", name="Alicia"))
    assert set(names().values()) == {"Alicia"}
    assert history.get("g01")["profile_name"] == "Alicia"
    # made after the rename: its snapshot is the new name
    pm.hook.tts_history_generation_completed(
        generation=Generation(id="late", profile_id="alice", text="late", created_at=NOW),
        audio=Audio.from_samples(tone(0.05), RATE),
    )
    pm.register(Keep("g01", "late"))
    pm.hook.tts_history_profile_deleted(profile_id="alice")
    # the profile's generations went with it, except the protected ones, which keep the
    # name they were made with
    assert names() == {"late": "Alicia", "g01": "Alice"}
    assert history.get("g01")["profile_name"] == "Alice"
    # bob's are untouched
    assert {i["profile_name"] for i in history.list(limit=100, profile_id="bob")["items"]} == {"Bob"}


def test_profile_name_given_by_host_is_the_snapshot(pm, library):
    pm.hook.tts_history_generation_completed(
        generation=Generation(id="h1", profile_id="ghost", text="x", profile_name="Ghost Voice"),
        audio=Audio.from_samples(tone(0.05), RATE),
    )
    pm.hook.tts_history_generation_completed(
        generation=Generation(id="h2", profile_id="nameless", text="y"),
        audio=Audio.from_samples(tone(0.05), RATE),
    )
    history = History(library, plugin_manager=pm)
    assert history.get("h1")["profile_name"] == "Ghost Voice"
    assert history.get("h2")["profile_name"] is None
    pm.hook.tts_history_profile_saved(profile=Profile(id="ghost", name="Renamed Ghost"))
    assert history.get("h1")["profile_name"] == "Renamed Ghost"


def test_a_search_reads_only_the_texts_whose_signature_has_its_bits(own_history):
    history = own_history
    history.list(limit=1)  # synced
    with history.index.db.read() as con:
        stored = con.execute(
            "SELECT search_text, search_sig0, search_sig1, search_sig2, search_sig3 FROM generation_rows "
            "ORDER BY sidecar_path"
        ).fetchall()
    expected = signatures(pa.array([row[0] for row in stored]))
    assert [list(row[1:]) for row in stored] == expected.tolist()
    # With the signatures emptied, nothing has the bits of a term of two bytes or more: the
    # search does not even look at the texts. (Through the index, which does not sync: a sync
    # would read the files just written again, and their rows with them.)
    with history.index.db.write() as con:
        con.execute("UPDATE generation_rows SET search_sig0 = 0, search_sig1 = 0, search_sig2 = 0, search_sig3 = 0")
    assert history.index.list(queries.Filters(search="hello"))["total"] == 0
    assert history.index.list(queries.Filters(search="%"))["total"] == 1  # one byte: no bits, every text read

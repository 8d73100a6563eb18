"""Fuzzing import: malformed archives, by the thousand, through ``History.import_archives``.

Every archive must either import cleanly or raise ``ArchiveError`` (never another exception),
and after a failure every file in and around the library must be byte for byte as before.
An import that succeeds must write only a generation's own files (and a profile under
``profiles/``), and only values a later export can write as strict JSON.

The archives are mutations of a valid tts-history archive and a valid voicebox archive (built
once per module, with tiny audio): byte flips (biased towards the ZIP headers), truncations,
cut-outs, random bytes, entry renames, drops, duplicates, symlink and encryption flags,
recompression, swapped or damaged entry data, manifest field deletions, type changes and odd
values, raw manifest text edits (NaN, 1e999, bad UTF-8, duplicate keys), and small limits.

The default is 1,000 examples, derandomized so CI is reproducible. For a longer run outside CI,
which also explores new random inputs, set ``TTS_HISTORY_FUZZ_EXAMPLES``, e.g.::

    TTS_HISTORY_FUZZ_EXAMPLES=50000 python -m pytest tests/test_archive_fuzz.py -q
"""

from __future__ import annotations

import copy
import io
import json
import lzma
import math
import os
import re
import stat
import tempfile
import uuid
import warnings
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from helpers import cli, make_history, record, tone
from tts_history import Audio, Effect, History, Profile, Version
from tts_history.archive import ArchiveError, Limits
from tts_history.library import LibraryError, schema

# Hypothesis keeps caches in ./.hypothesis unless told otherwise: keep the repository clean
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "tts-history-hypothesis")

EXAMPLES = int(os.environ.get("TTS_HISTORY_FUZZ_EXAMPLES", "1000"))
EXPLORE = "TTS_HISTORY_FUZZ_EXAMPLES" in os.environ  # a long run: new random inputs each time

RATE = 8000
VB_RATE = 24000

# -- the valid archives, built once ------------------------------------------------------------


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def vb_wav(seconds: float, freq: float) -> bytes:
    t = np.arange(int(seconds * VB_RATE)) / VB_RATE
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(2 * np.pi * freq * t), VB_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def voicebox_base() -> bytes:
    gid, pid, v1, v2 = (str(uuid.uuid4()) for _ in range(4))
    manifest = {
        "version": "1.0",
        "generation": {"id": gid, "text": "日本語 ❤️ 👍🏽", "language": "ja", "duration": 0.01, "seed": 5,
                       "instruct": None, "created_at": "2025-03-04T05:06:07.123456"},
        "profile": {"id": pid, "name": "Émilie", "description": None, "language": "ja"},
        "versions": [
            {"id": v1, "label": "original", "is_default": False, "effects_chain": None, "filename": f"{gid}.wav"},
            {"id": v2, "label": "Reverb", "is_default": True, "filename": f"{gid}_{v2[:8]}.wav",
             "effects_chain": [{"type": "reverb", "enabled": True, "params": {"room_size": 0.5}}]},
        ],
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=2))
        zf.writestr(f"audio/{gid}.wav", vb_wav(0.01, 440))
        zf.writestr(f"audio/{gid}_{v2[:8]}.wav", vb_wav(0.012, 660))
    return buffer.getvalue()


class Base:
    """A valid archive, taken apart for the mutations."""

    def __init__(self, name: str, data: bytes, suffix: str) -> None:
        self.name, self.data, self.suffix = name, data, suffix
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            self.entries = [(info.filename, info.compress_type, zf.read(info)) for info in zf.infolist()]
            self.manifest = json.loads(zf.read("manifest.json"))
            self.manifest_text = zf.read("manifest.json").decode()
        self.paths = list(json_paths(self.manifest))
        # where the ZIP structures are: flips there reach the parser's corners
        self.hot = sorted({
            i
            for signature in (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06")
            for start in (m.start() for m in re.finditer(re.escape(signature), data))
            for i in range(start, min(start + 46, len(data)))
        })


def json_paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from json_paths(item, prefix + (i,))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as mp:
        # per-machine state of these libraries lives here; the objects keep these paths
        for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
            mp.setenv(name, str(home / "xdg" / name.lower()))
        source = make_history(home / "source")
        pm = source.pm
        pm.hook.tts_history_profile_saved(profile=Profile(id="p-ada", name="Ada", extra={"k": [1, 2.5]}))
        multi = record(pm, 0.01, profile_id="p-ada", text="こんにちは 👍🏽", seed=3, extra={"a": "b"})
        pm.hook.tts_history_version_added(
            generation_id=multi.id,
            version=Version(id="v-fx", label="fx", effects_chain=[Effect("gain", params={"db": -2.0})], is_default=True),
            audio=Audio.from_samples(tone(0.012, freq=550.0), RATE),
        )
        failed = record(pm, 0.01, profile_id="p-ada", text="will fail")
        pm.hook.tts_history_generation_failed(generation=failed, error="boom")
        source.export(home / "base.zip", [multi.id, failed.id])
        th = Base("tts-history", (home / "base.zip").read_bytes(), ".zip")
        # the same, with the other compression methods zipfile reads: their streams get damaged too
        methods = {"manifest.json": zipfile.ZIP_LZMA}
        recompressed = build_zip([(n, methods.get(n, zipfile.ZIP_BZIP2), d, None) for n, m, d in th.entries])
        bases = [th, Base("voicebox", voicebox_base(), ".voicebox.zip"),
                 Base("tts-history/lzma+bzip2", recompressed, ".zip")]

        # the target: deep inside a sandbox, so that an escaping path stays in view
        sandbox = home / "sandbox"
        target = make_history(sandbox / "d1" / "d2" / "target")
        target.hook.tts_history_profile_saved(profile=Profile(id="p-own", name="Own"))
        record(target.pm, 0.01, profile_id="p-own", text="already here")
        target.sync()
        cases = home / "cases"
        cases.mkdir()
        with target.index.db.pinned():  # one connection for the whole run
            yield {"bases": bases, "target": target, "sandbox": sandbox, "cases": cases}


# -- mutations ---------------------------------------------------------------------------------

ODD_NAMES = ["../x.wav", "../../etc/passwd", "/abs.wav", "C:/x.wav", "c:x.wav", "audio\\x.wav", "audio//x.wav",
             "audio/./x.wav", "audio/../manifest.json", "", "manifest.json", "MANIFEST.JSON", "audio/",
             "audio/é.wav", "audio/a b.wav", "audio/x\x00y.wav", "x" * 300, "audio/x.wav/"]

ODD_VALUES = [
    None, True, False, 0, -1, 1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 1.5, -0.0, 1e308, 5e-324,
    "", " ", "x", "completed", "failed", "generating", "pending", "1.0", "voicebox",
    "../../../x", "a/b", "a.b", "..", "a" * 129, "x\x00y", "\ud800", "\udfff\ud800", "日本語", "👍🏽",
    "2020-01-01T00:00:00Z", "2020-01-01", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
    "2020-02-30T00:00:00", "0" * 64, "g" * 64, [], {}, [1], {"a": 1}, [None], [{}], {"type": "x"},
    [{"type": "x", "enabled": True, "params": {"a": 1}}], [[[[[]]]]],
]

# generated text never holds a path separator: a fuzzed profile id must not reach outside the
# sandbox (a bug lets it name a file; ODD_VALUES has the in-sandbox escapes)
SAFE_TEXT = st.text(st.characters(blacklist_characters="/\\", blacklist_categories=()), max_size=20)
VALUES = st.one_of(
    st.sampled_from(ODD_VALUES),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    SAFE_TEXT,
    st.lists(st.sampled_from(ODD_VALUES[:12]), max_size=3),
)
RAW_NUMBERS = ["1e999", "-1e999", "NaN", "Infinity", "-Infinity", "1e-999", "123456789012345678901234567890",
               "-0", "0.0", "1E2", "01", "true", "null", '"1"']


def build_zip(entries, *, after=None) -> bytes:
    """entries: (name, compress_type, data, external_attr or None)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names, on purpose
        with zipfile.ZipFile(buffer, "w") as zf:
            for name, method, data, attr in entries:
                info = zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0))
                info.compress_type = method
                if attr:
                    info.external_attr = attr
                zf.writestr(info, data)
            if after is not None:
                after(zf)
    return buffer.getvalue()


def with_manifest(base: Base, text: str | bytes) -> bytes:
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return build_zip([(n, m, data if n == "manifest.json" else d, None) for n, m, d in base.entries])


def bases(draw, world) -> Base:
    return draw(st.sampled_from(world["bases"]))


@st.composite
def byte_flips(draw, world):
    base = bases(draw, world)
    data = bytearray(base.data)
    spots = []
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.sampled_from(base.hot) | st.integers(0, len(data) - 1))
        data[i] ^= draw(st.integers(1, 255))
        spots.append(i)
    return base, f"flip bytes at {spots}", bytes(data)


@st.composite
def truncations(draw, world):
    base = bases(draw, world)
    n = len(base.data)
    if draw(st.booleans()):
        cut = draw(st.integers(0, n - 1))
        return base, f"truncate at {cut}/{n}", base.data[:cut]
    a = draw(st.integers(0, n - 1))
    b = draw(st.integers(a + 1, n))
    return base, f"cut out {a}:{b} of {n}", base.data[:a] + base.data[b:]


@st.composite
def random_bytes(draw, world):
    base = bases(draw, world)
    prefix = draw(st.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06" + bytes(18), b"RIFF", base.data[:30]]))
    return base, "random bytes", prefix + draw(st.binary(max_size=2000))


@st.composite
def entry_mutations(draw, world):
    base = bases(draw, world)
    entries = [(n, m, d, None) for n, m, d in base.entries]
    ops = []
    after = None
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(entries) - 1))
        name, method, data, attr = entries[i]
        op = draw(st.sampled_from(["rename", "drop", "duplicate", "symlink", "encrypt", "recompress",
                                   "random-data", "truncate-data", "swap-data", "other-wav", "add-dir",
                                   "add-padding"]))
        ops.append(f"{op} {name!r}")
        if op == "rename":
            new = draw(st.sampled_from(ODD_NAMES + [n for n, *_ in entries]) | SAFE_TEXT)
            ops[-1] += f" -> {new!r}"
            entries[i] = (new, method, data, attr)
        elif op == "drop" and len(entries) > 1:
            del entries[i]
        elif op == "duplicate":
            entries.append(entries[i])
        elif op == "symlink":
            entries[i] = (name, method, data, (stat.S_IFLNK | 0o777) << 16)
        elif op == "encrypt":
            def after(zf, name=name):
                for info in zf.infolist():
                    if info.filename == name:
                        info.flag_bits |= 0x1
        elif op == "recompress":
            entries[i] = (name, draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED,
                                                       zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])), data, attr)
        elif op == "random-data":
            entries[i] = (name, method, draw(st.binary(max_size=600)), attr)
        elif op == "truncate-data":
            entries[i] = (name, method, data[: draw(st.integers(0, max(len(data) - 1, 0)))], attr)
        elif op == "swap-data":
            j = draw(st.integers(0, len(entries) - 1))
            entries[i] = (name, method, entries[j][2], attr)
        elif op == "other-wav":
            buffer = io.BytesIO()
            rate = draw(st.sampled_from([RATE, VB_RATE, 44100]))
            sf.write(buffer, tone(draw(st.sampled_from([0.01, 0.012, 0.02])), rate=rate), rate, format="WAV",
                     subtype=draw(st.sampled_from(["PCM_16", "FLOAT", "PCM_U8"])))
            entries[i] = (name, method, buffer.getvalue(), attr)
        elif op == "add-dir":
            entries.append((draw(st.sampled_from(["audio/", "audio/x/", "../", "/"])), zipfile.ZIP_STORED, b"", 0o40755 << 16))
        elif op == "add-padding":
            entries.append(("audio/pad.bin", zipfile.ZIP_DEFLATED, bytes(draw(st.integers(0, 3 * 2**20))), None))
    return base, "; ".join(ops), build_zip(entries, after=after)


def _set_path(value, path, new):
    if not path:
        return new
    node = value
    for key in path[:-1]:
        node = node[key]
    if new is _DELETE:
        if isinstance(node, dict):
            del node[path[-1]]
        else:
            node.pop(path[-1])
    else:
        node[path[-1]] = new
    return value


_DELETE = object()


@st.composite
def field_mutations(draw, world):
    base = bases(draw, world)
    manifest = json.loads(json.dumps(base.manifest))
    ops = []
    for _ in range(draw(st.integers(1, 3))):
        paths = list(json_paths(manifest))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["set", "set", "set", "delete", "duplicate-item"]))
        if op == "delete" and path:
            manifest = _set_path(manifest, path, _DELETE)
        elif op == "duplicate-item":
            node = manifest
            for key in path:
                node = node[key]
            if isinstance(node, list) and node:
                node.append(json.loads(json.dumps(node[draw(st.integers(0, len(node) - 1))])))
        else:
            manifest = _set_path(manifest, path, copy.deepcopy(draw(VALUES)))  # ODD_VALUES stay as they are
        ops.append(f"{op} {'.'.join(map(str, path)) or '(root)'}")
    text = json.dumps(manifest, indent=draw(st.sampled_from([None, 2])))
    return base, "; ".join(ops), with_manifest(base, text)


@st.composite
def text_mutations(draw, world):
    base = bases(draw, world)
    text = base.manifest_text
    op = draw(st.sampled_from(["number", "number", "insert", "delete", "truncate", "duplicate-key", "bom",
                               "bad-utf8", "deep"]))
    if op == "number":
        numbers = [m.span() for m in re.finditer(r"(?<![\w.])-?\d+(\.\d+)?([eE][-+]?\d+)?(?![\w.])", text)]
        if numbers:
            a, b = draw(st.sampled_from(numbers))
            new = draw(st.sampled_from(RAW_NUMBERS))
            return base, f"number {text[a:b]} -> {new}", with_manifest(base, text[:a] + new + text[b:])
    if op == "insert":
        i = draw(st.integers(0, len(text)))
        piece = draw(st.sampled_from(['"', ",", "{", "}", "[", "]", ":", "\\", "\\u", "\\ud800", "\x00", "null"]))
        return base, f"insert {piece!r} at {i}", with_manifest(base, text[:i] + piece + text[i:])
    if op == "delete":
        a = draw(st.integers(0, len(text) - 1))
        b = draw(st.integers(a + 1, min(a + 20, len(text))))
        return base, f"delete {a}:{b}", with_manifest(base, text[:a] + text[b:])
    if op == "truncate":
        i = draw(st.integers(0, len(text) - 1))
        return base, f"truncate text at {i}", with_manifest(base, text[:i])
    if op == "duplicate-key":
        keys = [m.span() for m in re.finditer(r'"\w+": [^,\n{}\[\]]+', text)]
        if keys:
            a, b = draw(st.sampled_from(keys))
            return base, f"duplicate {text[a:b]!r}", with_manifest(base, text[:a] + text[a:b] + ", " + text[a:b] + text[b:])
    if op == "bom":
        return base, "utf-8 BOM", with_manifest(base, b"\xef\xbb\xbf" + text.encode())
    if op == "bad-utf8":
        raw = text.encode()
        i = draw(st.integers(0, len(raw)))
        return base, f"byte 0xff at {i}", with_manifest(base, raw[:i] + b"\xff" + raw[i:])
    depth = draw(st.integers(10, 5000))
    return base, f"nested {depth} deep", with_manifest(base, text.replace('"extra": {}', '"extra": ' + "[" * depth + "]" * depth, 1)
                                                      if '"extra": {}' in text else "[" * depth + "]" * depth)


LIMITS = st.one_of(
    st.just(None),
    st.just(None),
    st.just(None),
    st.builds(Limits, max_total_bytes=st.integers(1, 20_000), max_ratio=st.floats(1, 300),
              max_manifest_bytes=st.integers(1, 5000), max_entries=st.integers(1, 6)),
)


# -- the property ------------------------------------------------------------------------------

_NEW_GENERATION_FILE = re.compile(
    r"d1/d2/target/generations/\d{4}/\d{2}/\d{2}/[0-9a-f-]{36}(\.parquet|\.[A-Za-z0-9_-]+\.[a-z0-9]+)"
)
_NEW_PROFILE_FILE = re.compile(r"d1/d2/target/profiles/[A-Za-z0-9][A-Za-z0-9_-]{0,127}\.parquet")


def _strict_json(text: str | None) -> bool:
    def refuse(_):
        raise ValueError

    try:
        json.loads(text or "null", parse_constant=refuse)
    except ValueError:
        return False
    return True


def _non_finite(target: History, new_files: set[str], sandbox: Path) -> bool:
    """Whether what was imported holds a number a strict JSON export cannot write."""
    for relative in new_files:
        path = sandbox / relative
        if relative.endswith(".parquet") and "/generations/" in relative:
            stored = schema.read_generation(path)
            numbers = [stored["host_duration"], stored["duration"]] + [v["duration"] for v in stored["versions"]]
            if any(x is not None and not math.isfinite(x) for x in numbers):
                return True
            if not all(_strict_json(v["effects_chain"]) for v in stored["versions"]):
                return True
        elif relative.endswith(".parquet") and "/profiles/" in relative:
            if not _strict_json(schema.read_profile(path)["extra"]):
                return True
    return False


def classify(exc: BaseException | None, before: dict, after: dict, target: History, sandbox: Path) -> list[str]:
    """What is wrong with one import's outcome (empty: nothing)."""
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    problems: list[str] = []
    modified = {p for p in changed if p in before}
    if modified:
        problems.append(f"files that were there changed or vanished: {sorted(modified)[:3]}")
    new = changed - modified
    if exc is None:
        odd = {p for p in new if not (_NEW_GENERATION_FILE.fullmatch(p) or _NEW_PROFILE_FILE.fullmatch(p))}
        if odd:
            problems.append(f"an import wrote unexpected files: {sorted(odd)[:3]}")
        if _non_finite(target, new - odd, sandbox):
            problems.append("a non-finite number was stored (a later export would write invalid JSON)")
        return problems
    if not isinstance(exc, ArchiveError):
        problems.append(f"raises {type(exc).__name__}: {str(exc)[:120]}")
    if new:
        problems.append(f"a failed import left files: {sorted(new)[:3]}")
    return problems


def test_fuzzed_archives_import_cleanly_or_raise_archive_error(world):
    target, sandbox, cases = world["target"], world["sandbox"], world["cases"]
    baseline = snapshot(sandbox)
    outcomes: Counter[str] = Counter()
    findings: dict[str, list[str]] = {}

    def restore() -> None:
        """Back to the baseline after an import that wrote something."""
        for path in sorted(sandbox.rglob("*"), reverse=True):
            relative = path.relative_to(sandbox).as_posix()
            if path.is_file() and relative not in baseline:
                path.unlink()
        for relative, data in baseline.items():
            path = sandbox / relative
            if not path.is_file() or path.read_bytes() != data:
                path.write_bytes(data)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not EXPLORE,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def fuzz(data):
        base, description, archive = data.draw(st.one_of(
            byte_flips(world), truncations(world), random_bytes(world), entry_mutations(world),
            field_mutations(world), field_mutations(world), text_mutations(world),
        ))
        limits = data.draw(LIMITS)
        as_new = data.draw(st.booleans())
        path = cases / f"case{base.suffix}"
        path.write_bytes(archive)
        before = snapshot(sandbox)
        exc = None
        try:
            report = target.import_archives([path], as_new=as_new, limits=limits)
        except Exception as caught:  # noqa: BLE001 (that is the point)
            exc = caught
        after = snapshot(sandbox)
        problems = classify(exc, before, after, target, sandbox)
        outcomes["imported" if exc is None and report.imported else "refused" if exc is not None else "skipped"] += 1
        for problem in problems:
            findings.setdefault(problem, []).append(
                f"[{base.name}] {description} (limits={limits}, as_new={as_new}) -> "
                f"{'ok' if exc is None else type(exc).__name__ + ': ' + str(exc)[:200]}"
            )
        if after != baseline:
            restore()
            if snapshot(sandbox) != baseline:
                findings.setdefault("UNKNOWN: the library could not be restored", []).append(description)

    fuzz()

    runs = sum(outcomes.values())
    summary = f"{runs} archives: {dict(outcomes)}; " + "; ".join(
        f"{name} x{len(examples)}" for name, examples in findings.items()
    )
    print(summary)
    assert runs >= EXAMPLES, summary  # hypothesis ran all it was asked to
    assert outcomes["refused"] >= runs // 2, summary  # most of them really are malformed
    failures = {name: examples[:3] for name, examples in findings.items()}
    assert not failures, "failures:\n" + json.dumps(failures, indent=2, ensure_ascii=False)


# -- through the CLI ---------------------------------------------------------------------------


def _malformed(world) -> dict[str, tuple[bytes, str]]:
    """A few fuzzed archives, chosen by hand, with what their error names."""
    th, vb, _ = world["bases"]
    manifest = json.loads(json.dumps(th.manifest))
    manifest["generations"][0]["versions"][0]["is_default"] = "yes"
    vb_manifest = json.loads(json.dumps(vb.manifest))
    vb_manifest["versions"][1]["effects_chain"] = [{"type": "reverb", "enabled": 1}]
    flipped = bytearray(th.data)
    audio_at = th.data.index(b"WAVE") + 40  # inside the first audio entry's samples
    flipped[audio_at] ^= 0x55
    return {
        "flipped.zip": (bytes(flipped), "Bad CRC-32"),
        "truncated.zip": (th.data[: len(th.data) // 3], "not a ZIP archive, or truncated"),
        "random.zip": (bytes(range(256)) * 4, "not a ZIP archive"),
        "wrong-type.zip": (with_manifest(th, json.dumps(manifest)), "is_default: expected true or false"),
        "nan.zip": (with_manifest(th, th.manifest_text.replace('"seed": 3', '"seed": NaN')), "NaN is not valid JSON"),
        "escape.zip": (build_zip([("../../evil.wav", zipfile.ZIP_STORED, b"x", None)] +
                                 [(n, m, d, None) for n, m, d in th.entries]), "unsafe path"),
        "broken.voicebox.zip": (with_manifest(vb, json.dumps(vb_manifest, indent=2)), "expected true or false"),
    }


def test_fuzzed_archives_through_the_cli(world, tmp_path):
    lib = ["--library", str(tmp_path / "cli-lib")]
    assert cli("init", lib[1]).returncode == 0
    before = snapshot(tmp_path / "cli-lib")
    for name, (data, words) in _malformed(world).items():
        path = tmp_path / name
        path.write_bytes(data)
        result = cli(*lib, "import", str(path))
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and name in lines[0], lines
        assert words in lines[0], (name, lines[0])
        assert result.stdout == ""
    assert snapshot(tmp_path / "cli-lib") == before


# -- known bugs the fuzzer found, pinned ---------------------------------------------------------


def _central_directory_record(data: bytes, name: bytes) -> int:
    at = data.find(b"PK\x01\x02")
    while at != -1:
        length = int.from_bytes(data[at + 28 : at + 30], "little")
        if data[at + 46 : at + 46 + length] == name:
            return at
        at = data.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"{name!r} not in the central directory")


@pytest.mark.parametrize("offset, value", [
    pytest.param(10, 99, id="compression-method-99"),
    pytest.param(8, 0x40, id="strong-encryption-flag"),
])
def test_unsupported_zip_features_of_the_manifest_are_refused(offset, value, world, tmp_path):
    th = world["bases"][0]
    data = bytearray(th.data)
    data[_central_directory_record(th.data, b"manifest.json") + offset] |= value
    path = tmp_path / "method.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="manifest.json"):
        world["target"].import_archives([path])
    assert cli("init", str(tmp_path / "lib")).returncode == 0
    result = cli("--library", str(tmp_path / "lib"), "import", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr


def _damaging_flip(data: bytes, name: str) -> bytes:
    """``data`` with one byte of ``name``'s compressed stream changed so that the decompressor
    itself fails (found by trying each byte in turn: deterministic)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo(name)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for at in range(start, start + info.compress_size):
        changed = bytearray(data)
        changed[at] ^= 0xFF
        try:
            with zipfile.ZipFile(io.BytesIO(bytes(changed))) as zf:
                zf.read(name)
        except (zlib.error, lzma.LZMAError):
            return bytes(changed)
        except Exception:  # noqa: BLE001 (another failure: keep looking)
            continue
    raise AssertionError(f"no single byte breaks {name}'s stream")


@pytest.mark.parametrize("base_index, name", [
    pytest.param(1, "manifest.json", id="deflate-manifest"),
    pytest.param(1, "audio", id="deflate-audio"),
    pytest.param(2, "manifest.json", id="lzma-manifest"),
])
def test_damaged_compressed_data_is_refused(base_index, name, world, tmp_path):
    base = world["bases"][base_index]
    if name == "audio":
        name = next(n for n, *_ in base.entries if n.startswith("audio/"))
    path = tmp_path / f"damaged{base.suffix}"
    path.write_bytes(_damaging_flip(base.data, name))
    with pytest.raises(ArchiveError):
        world["target"].import_archives([path])

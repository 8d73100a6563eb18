"""hookspec.md must never drift from the code: every hook is documented there with its exact
signature and its full docstring, and every value type with each of its fields."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from tts_history.hooks import specs, types

DOC = Path(__file__).resolve().parents[1] / "hookspec.md"
HOOKS = {
    name: fn
    for name, fn in inspect.getmembers(specs, inspect.isfunction)
    if name.startswith("tts_history_")
}
TYPES = [types.Generation, types.Audio, types.Version, types.Effect, types.Profile]


def signature_of(fn) -> str:
    """The ``def`` line as written in specs.py, on one line."""
    source = inspect.getsource(fn)
    header = source[source.index("def ") : source.index('"""')].strip()
    return re.sub(r"\s+", " ", header).replace("( ", "(").replace(", )", ")")


def sections() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    parts = re.split(r"^### `([^`]+)`\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def test_every_hook_is_documented_and_no_other():
    documented = {name for name in sections() if name.startswith("tts_history_")}
    assert documented == set(HOOKS), (
        f"missing from hookspec.md: {sorted(set(HOOKS) - documented)}; "
        f"documented but not in specs.py: {sorted(documented - set(HOOKS))}"
    )


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_signature_matches(name):
    section = sections()[name]
    block = re.search(r"```python\n(.*?)\n```", section, flags=re.S)
    assert block, f"{name}: no python code block with its signature"
    assert re.sub(r"\s+", " ", block.group(1)).strip() == signature_of(HOOKS[name])


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_docstring_matches(name):
    doc = inspect.getdoc(HOOKS[name])
    assert doc and doc in sections()[name], f"{name}: hookspec.md does not carry its docstring"


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
def test_types_documented(cls):
    section = sections().get(cls.__name__)
    assert section is not None, f"hookspec.md has no section for {cls.__name__}"
    for field in dataclasses.fields(cls):
        cell = field.type.replace("|", "\\|")  # a bare | would split the Markdown table
        assert re.search(rf"^\| `{field.name}` \| `{re.escape(cell)}` \|", section, flags=re.M), (
            f"{cls.__name__}.{field.name}: {field.type} is not in its table in hookspec.md"
        )


def test_hooks_are_prefixed_and_typed():
    for name, fn in HOOKS.items():
        assert name.startswith("tts_history_")
        sig = inspect.signature(fn)
        assert sig.return_annotation is not inspect.Signature.empty, name
        for param in sig.parameters.values():
            assert param.annotation is not inspect.Parameter.empty, f"{name}({param.name})"

"""How the CLI prints: JSON for scripts, aligned text for people."""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import click

from ..index.queries import iso


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value) if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def _finite(data: Any) -> Any:
    """``data`` with NaN and infinities (float or Decimal) as null: JSON has no word for them."""
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(value) for value in data]
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, Decimal) and not data.is_finite():
        return None
    return data


def dump_json(data: Any) -> str:
    try:
        return json.dumps(data, ensure_ascii=False, indent=2, default=_plain, allow_nan=False)
    except ValueError:  # a NaN or an infinity somewhere (SQL can make them): walk it only then
        return json.dumps(_finite(data), ensure_ascii=False, indent=2, default=_plain)


def echo_json(data: Any) -> None:
    click.echo(dump_json(data))


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def duration(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.1f}s"


def when(created_at: str) -> str:
    return created_at[:16].replace("T", " ")


def generation_rows(items: list[dict[str, Any]]) -> str:
    return table(
        ["ID", "CREATED (UTC)", "PROFILE", "LANG", "STATUS", "DUR", "", "TEXT"],
        [
            [
                item["id"],
                when(item["created_at"]),
                short(item["profile_name"] or item["profile_id"], 16),
                item["language"],
                item["status"],
                duration(item["duration"]),
                "★" if item["is_favorited"] else "",
                short(item["text"], 60),
            ]
            for item in items
        ],
    )

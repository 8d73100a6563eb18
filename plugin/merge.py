"""Merging the sidecars that carry one generation id (a sync tool's conflict copies).

The rule, the same on every machine: the newest ``updated_at`` wins (on a tie, the original
over a copy, then the first path). Nothing the others hold is dropped where keeping it loses
nothing: a favorite mark on any copy stays, versions only a copy has are added after the
winner's, and extra keys only a copy has are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def winner_order(path: Path, record: dict[str, Any], is_copy: bool) -> tuple:
    # sorted ascending: newest first, originals before copies, then by path
    return (-record["updated_at"].timestamp(), is_copy, str(path))


def merge(records: list[dict[str, Any]]) -> dict[str, Any]:
    """``records`` in winner order (see :func:`winner_order`); returns the merged record."""
    winner, *others = records
    merged = {
        **winner,
        "versions": [dict(v) for v in winner["versions"]],
        "extra": dict(winner["extra"]),
    }
    seen = {v["id"] for v in merged["versions"]}
    extra_versions = []
    for other in others:
        merged["is_favorited"] = merged["is_favorited"] or other["is_favorited"]
        for key, value in other["extra"].items():
            merged["extra"].setdefault(key, value)
        for version in other["versions"]:
            if version["id"] not in seen:
                seen.add(version["id"])
                extra_versions.append({**version, "is_default": False})
    merged["versions"] += sorted(extra_versions, key=lambda v: (v["created_at"], v["id"]))
    return merged

"""The benchmark harness still works: ``--quick`` on a tiny library, in a subprocess, writes
Markdown and JSON holding every figure, with the baseline's figure and the ratio wherever the
seed's design has one. No timing is asserted: the figures themselves are not the test's business."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

pytest.importorskip("sqlalchemy")

# every figure the harness reports, and whether the seed's design has a counterpart
FIGURES = {
    "host_record": True,
    "host_record_pair": True,
    "rebuild": False,
    "rebuild_rss": False,
    "list_first": True,
    "list_deep": True,
    "list_cursor": True,
    "get": True,
    "search_rare_word": True,
    "search_common_word": True,
    "search_two_words": True,
    "search_no_match": True,
    "stats": True,
    "sync_one_change": False,
    "sync_every_file": False,
    "sync_nothing": False,
    "sync_within": False,
    "freshness": False,
    "watcher_start": False,
    "watcher_rss": False,
    "archive_export": False,
    "archive_export_rss": False,
    "archive_import": False,
    "archive_import_rss": False,
}
WITH_GOAL = {
    "host_record", "rebuild", "sync_one_change", "list_first", "list_deep", "list_cursor", "get", "stats",
    "search_rare_word", "search_common_word", "search_two_words", "search_no_match",
    "freshness", "watcher_rss", "archive_export", "archive_import", "archive_export_rss",
    "archive_import_rss",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TTS_HISTORY")}
    result = subprocess.run(
        [sys.executable, "-m", "tts_history.bench", "--quick", "--workdir", str(tmp / "work"), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    return out, result


def test_quick_run_writes_json_with_every_figure_and_ratio(quick_run):
    out, _ = quick_run
    results = json.loads((out / "latest.json").read_text())
    assert results["run"]["quick"] is True
    machine = results["machine"]
    assert machine["cpu_count"] >= 1 and machine["python"]
    for name in ("duckdb", "pyarrow", "SQLAlchemy", "sqlite", "tts-history"):
        assert machine["versions"][name], name
    assert results["run"]["load_start"] and results["run"]["load_end"]
    (size,) = results["sizes"]
    figures = {f["key"]: f for f in results["figures"] if f["size"] == size}
    for key, has_baseline in FIGURES.items():
        assert key in figures, key
        f = figures[key]
        ours = f["ours"]
        value = ours.get("value", ours.get("p50"))
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, ours)
        if "p50" in ours:
            assert ours["p95"] >= ours["p50"] and ours["n"] >= 1, (key, ours)
        if has_baseline:
            assert f["baseline"]["p50"] > 0, key
            assert f["ratio"] > 0 and f["ratio_stat"] in ("p50", "p95"), key
            assert f["ratio"] == pytest.approx(f["baseline"][f["ratio_stat"]] / ours[f["ratio_stat"]])
        else:
            assert f["baseline"] is None and f["ratio"] is None, key
        if key in WITH_GOAL:
            assert f["goal"] and f["met"] in (True, False), key
    for key in ("list_first", "get", "stats", "search_rare_word"):
        assert figures[key + "_held"]["ratio"] > 0  # the same query with the connection held open
    assert figures["freshness"]["ours"]["p99"] >= figures["freshness"]["ours"]["p50"]
    assert results["not_measured"] == []  # archives exist: every figure of the issue is measured
    assert results["checks"] and all(c["ok"] for c in results["checks"]), [
        c for c in results["checks"] if not c["ok"]
    ]


def test_quick_run_writes_markdown_with_every_figure(quick_run):
    out, result = quick_run
    text = (out / "latest.md").read_text()
    results = json.loads((out / "latest.json").read_text())
    assert text.startswith("# tts-history benchmark results")
    assert "quick mode" in text and "Load average" in text and "SQLAlchemy" in text
    for f in results["figures"]:
        row = next((line for line in text.splitlines() if line.startswith(f"| {f['label']} |")), None)
        assert row is not None, f["label"]
        if f["ratio"] is not None:
            assert f"{f['ratio']:.2f}x" in row, row
        if f["goal"]:
            assert f["goal"] in row and ("met" in row or "missed" in row), row
    assert "Every figure of the issue was measured." in text
    assert "checks passed" in text
    assert text in result.stdout  # the run prints its table too

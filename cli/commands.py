"""The library commands: init, info, sync, list, search, show, stats, delete, favorite,
cleanup, sql."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ..index import DEBOUNCE
from ..library import open_library
from ..library.layout import FORMAT_VERSION
from . import Context, main
from .output import dump_json, echo_json, generation_rows, table

pass_ctx = click.make_pass_decorator(Context)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def filter_options(func: Callable) -> Callable:
    """The list filters, shared by list, search and cleanup-like commands."""
    options = [
        click.option("--profile-id", help="Only this voice profile's generations."),
        click.option("--language", help="Only this language code, e.g. en."),
        click.option("--engine", help="Only this engine, e.g. qwen."),
        click.option(
            "--status", type=click.Choice(["generating", "completed", "failed"]), help="Only this status."
        ),
        click.option("--favorites", is_flag=True, help="Only favorites."),
        click.option("--since", help="Created at or after this date/time (ISO 8601, UTC if no zone)."),
        click.option("--until", help="Created before this date/time."),
        click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True),
        click.option("--offset", type=click.IntRange(0), default=0, show_default=True),
        click.option("--cursor", help="Continue after the page that printed this cursor."),
        json_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


@contextmanager
def progress_bar(label: str, threshold: int = 100) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback drawing a bar on stderr, for runs of ``threshold``
    items or more and only on a terminal: scripts' output stays clean."""
    state: dict[str, Any] = {"done": 0}

    def update(done: int, total: int) -> None:
        if "bar" not in state and total >= threshold and sys.stderr.isatty():
            state["bar"] = click.progressbar(length=total, label=label, file=sys.stderr)
            state["bar"].__enter__()
        if "bar" in state:
            state["bar"].update(done - state["done"])
        state["done"] = done

    try:
        yield update
    finally:
        if "bar" in state:
            state["bar"].__exit__(None, None, None)


def _listing(ctx: Context, search: str | None, as_json: bool, limit: int, offset: int, cursor, **filters):
    history = ctx.history()
    result = history.list(search=search, limit=limit, offset=offset, cursor=cursor, **filters)
    if as_json:
        echo_json(result)
        return
    if not result["items"]:
        click.echo("No generations match." if result["total"] == 0 else "No more generations.")
        return
    click.echo(generation_rows(result["items"]))
    if cursor is None:
        first = offset + 1
        click.echo(f"\n{first}-{first + len(result['items']) - 1} of {result['total']}", err=True)
    else:  # where the page starts is not counted: a cursor page costs no more than the first
        click.echo(f"\n{len(result['items'])} after the cursor, of {result['total']}", err=True)
    if result["next_cursor"]:
        click.echo(f"next page: --cursor {result['next_cursor']}", err=True)


@main.command()
@click.argument("path", required=False, type=click.Path(file_okay=False))
@pass_ctx
def init(ctx: Context, path: str | None) -> None:
    """Create a library folder (default: the chosen library)."""
    root = path or ctx.library_root
    library = open_library(root, create=True)
    click.echo(f"Library ready at {library.root}")


@main.command()
@json_option
@pass_ctx
def info(ctx: Context, as_json: bool) -> None:
    """Where the library and its index are, what they hold, and what is wrong."""
    history = ctx.history()
    index = history.index
    if ctx.auto_sync:
        index.sync()
    with index.reading() as con:
        generations, profiles = con.execute(
            "SELECT (SELECT count(*) FROM generations), (SELECT count(*) FROM profiles)"
        ).fetchone()
    data = {
        "library": str(history.library.root),
        "library_id": history.library.library_id(),
        "format_version": FORMAT_VERSION,
        "index": str(index.path),
        "index_bytes": index.path.stat().st_size if index.path.exists() else 0,
        "generations": generations,
        "profiles": profiles,
        "unreadable": index.unreadable(),
        "conflicts": len(index.conflicts()),
    }
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        if key != "unreadable":
            click.echo(f"{key + ':':16}{value}")
    for problem in data["unreadable"]:
        click.echo(f"unreadable:     {problem['path']}: {problem['reason']}")
    if data["conflicts"]:
        click.echo("see them with:  tts-history conflicts")


@main.command()
@click.option(
    "--every-file",
    is_flag=True,
    help="Compare every file, not only those in folders that changed (after files were "
    "written over in place, e.g. by cp).",
)
@click.option("--full", is_flag=True, help="Re-read every sidecar, not only those that changed.")
@click.option("--rebuild", is_flag=True, help="Empty the index and build it again from the folder.")
@json_option
@pass_ctx
def sync(ctx: Context, every_file: bool, full: bool, rebuild: bool, as_json: bool) -> None:
    """Bring the index in step with the library folder. Exits 1 if a sidecar could not be
    read (each is named; everything else is applied).

    Only folders whose own time changed are listed: files are added, renamed into place and
    removed by every sync tool, and each of those changes its folder.
    """
    index = ctx.history().index
    with progress_bar("Reading sidecars", threshold=1000) as update:
        report = (
            index.rebuild(progress=update)
            if rebuild
            else index.sync(full=full, every_file=every_file, progress=update)
        )
    if as_json:
        echo_json(report.as_dict())
    else:
        for path, reason in report.errors:
            click.echo(f"skipped {path}: {reason}", err=True)
        click.echo(
            f"added {report.added}, updated {report.updated}, removed {report.removed}, "
            f"errors {len(report.errors)}"
        )
    if report.errors:  # the rest is applied; a script or cron job still learns of them
        raise click.exceptions.Exit(1)


@main.command(name="list")
@filter_options
@click.option("--search", help="Only generations whose text holds every word of this.")
@pass_ctx
def list_(ctx: Context, search: str | None, **options: Any) -> None:
    """List generations, newest first."""
    _listing(ctx, search, **options)


@main.command()
@click.argument("query")
@filter_options
@pass_ctx
def search(ctx: Context, query: str, **options: Any) -> None:
    """Find generations whose text holds every word of QUERY (any case, any accents)."""
    _listing(ctx, query, **options)


@main.command()
@click.argument("generation_id")
@json_option
@pass_ctx
def show(ctx: Context, generation_id: str, as_json: bool) -> None:
    """Everything recorded about one generation, with its versions."""
    item = ctx.history().get(generation_id)
    if as_json:
        echo_json(item)
        return
    for key, value in item.items():
        if key not in ("versions", "extra"):
            click.echo(f"{key + ':':19}{'' if value is None else value}")
    for key, value in item["extra"].items():
        click.echo(f"extra.{key + ':':13}{value}")
    click.echo("")
    click.echo(
        table(
            ["VERSION", "LABEL", "ACTIVE", "DUR", "EFFECTS", "AUDIO"],
            [
                [
                    v["id"],
                    v["label"],
                    "*" if v["is_default"] else "",
                    f"{v['duration']:.2f}s" if v["duration"] is not None else "",
                    ", ".join(e["type"] for e in v["effects_chain"] or []),
                    v["audio_path"] if v["audio_present"] else
                    f"{v['audio_path']} ({'wrong size' if Path(v['audio_path']).exists() else 'missing'})",
                ]
                for v in item["versions"]
            ],
        )
    )


@main.command()
@json_option
@pass_ctx
def stats(ctx: Context, as_json: bool) -> None:
    """Totals: generations, seconds of audio, counts by profile, engine, language, status."""
    data = ctx.history().stats()
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for name, count in value.items():
                click.echo(f"  {name}: {count}")
        else:
            click.echo(f"{key}: {value}")


@main.command()
@click.argument("generation_ids", nargs=-1, required=True)
@json_option
@pass_ctx
def delete(ctx: Context, generation_ids: tuple[str, ...], as_json: bool) -> None:
    """Delete generations: the sidecar and every audio file. If one id is unknown, nothing is
    deleted."""
    deleted = ctx.history().delete(generation_ids)
    if as_json:
        echo_json({"deleted": deleted})
    else:
        click.echo(f"deleted {len(deleted)} generation(s)")


@main.command()
@click.argument("generation_id")
@click.option("--on/--off", "value", default=None, help="Set the mark instead of flipping it.")
@json_option
@pass_ctx
def favorite(ctx: Context, generation_id: str, value: bool | None, as_json: bool) -> None:
    """Flip the favorite mark of a generation (or set it with --on / --off)."""
    state = ctx.history().favorite(generation_id, value)
    if as_json:
        echo_json({"id": generation_id, "is_favorited": state})
    else:
        click.echo(f"{generation_id} is {'now' if state else 'no longer'} a favorite")


def _finite_days(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):  # FloatRange lets NaN through
        raise click.BadParameter(f"{value} is not a number of days")
    return value


@main.command()
@click.option("--failed", is_flag=True, help="Failed generations.")
@click.option("--profile-id", help="Generations of this profile.")
@click.option("--older-than", type=click.FloatRange(min=0), callback=_finite_days,
              help="Generations older than DAYS.")
@click.option("--include-favorites", is_flag=True, help="Remove favorites too (kept by default).")
@click.option("--orphans", is_flag=True,
              help="Also remove temp files and audio no sidecar names, left by interrupted writers "
                   "(only those older than an hour).")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@json_option
@pass_ctx
def cleanup(
    ctx: Context,
    failed: bool,
    profile_id: str | None,
    older_than: float | None,
    include_favorites: bool,
    orphans: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Remove generations in bulk. Conditions combine; protected generations are kept."""
    chosen = failed or profile_id or older_than is not None
    if not (chosen or orphans):
        raise click.UsageError("say what to clean up: --failed, --profile-id, --older-than or --orphans")
    history = ctx.history()
    result = {"removed": [], "kept": []}
    if chosen:
        result = history.cleanup(
            failed=failed,
            profile_id=profile_id,
            older_than_days=older_than,
            keep_favorites=not include_favorites,
            dry_run=dry_run,
        )
    files = history.remove_orphans(dry_run=dry_run) if orphans else []
    if as_json:
        echo_json({**result, "orphan_files": files, "dry_run": dry_run})
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb} {len(result['removed'])} generation(s) and {len(files)} orphan file(s); "
        f"kept {len(result['kept'])} protected"
    )


@main.command()
@click.argument("query")
@json_option
@pass_ctx
def sql(ctx: Context, query: str, as_json: bool) -> None:
    """Run a read-only SELECT against the index (views: generations, versions, profiles)."""
    columns, rows = ctx.history().sql(query)
    if as_json:
        click.echo(dump_json([dict(zip(columns, row)) for row in rows]))
    else:
        click.echo(table(columns, [list(row) for row in rows]))


@main.command()
@click.option("--polling", is_flag=True, help="Poll instead of OS events (network drives send none).")
@click.option("--poll-interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True)
@click.option(
    "--reconcile-every",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds between full reconciles of the folder (0: never).",
)
@click.option("--debounce", type=click.FloatRange(min=0), default=DEBOUNCE, show_default=True,
              help="Seconds to let a burst of changes gather into one batch.")
@pass_ctx
def watch(ctx: Context, polling: bool, poll_interval: float, reconcile_every: float, debounce: float) -> None:
    """Keep the index current as the folder changes, until interrupted (Ctrl-C or SIGTERM:
    the batch under way finishes and the index is checkpointed)."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if not logging.getLogger().isEnabledFor(logging.INFO):
        logging.getLogger("tts_history.watch").setLevel(logging.INFO)
    watcher = ctx.history().index.watch(
        polling=polling,
        poll_interval=poll_interval,
        reconcile_every=reconcile_every or None,
        debounce=debounce,
    )
    click.echo(f"Watching {watcher.root}; Ctrl-C to stop.", err=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        watcher.stop()


@main.command()
@json_option
@pass_ctx
def conflicts(ctx: Context, as_json: bool) -> None:
    """Open conflicts: generations that sync tools left in more than one sidecar. Lists show
    the copy that wins (newest updated_at); 'resolve' merges them."""
    found = ctx.history().conflicts()
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("No open conflicts.")
        return
    for conflict in found:
        if conflict["kind"] == "profile":
            click.echo(f"profile copy  {conflict['sidecar_path']}")
            continue
        click.echo(f"generation {conflict['id']}")
        for copy in conflict["sidecars"]:
            click.echo(
                f"  {'wins ' if copy['wins'] else '     '} {copy['updated_at']}  "
                f"{'★' if copy['is_favorited'] else ' '}  {copy['versions']} version(s)  "
                f"{copy['sidecar_path']}"
            )


@main.command()
@click.argument("generation_ids", nargs=-1)
@click.option("--all", "resolve_all", is_flag=True, help="Resolve every open conflict.")
@json_option
@pass_ctx
def resolve(ctx: Context, generation_ids: tuple[str, ...], resolve_all: bool, as_json: bool) -> None:
    """Merge a generation's conflicting sidecars into one and remove the copies: the newest
    wins, a favorite mark on any copy stays, versions only a copy has are kept."""
    if bool(generation_ids) == resolve_all:
        raise click.UsageError("name the generations to resolve, or give --all")
    done = ctx.history().resolve(None if resolve_all else generation_ids)
    if as_json:
        echo_json({"resolved": done})
    else:
        click.echo(f"resolved {len(done)} conflict(s)")

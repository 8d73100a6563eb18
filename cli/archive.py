"""Archive commands: export, export-audio, import, import-voicebox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..archive import Limits
from . import Context, main
from .commands import json_option, pass_ctx, progress_bar
from .output import echo_json


@main.command()
@click.argument("generation_ids", nargs=-1)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The archive to write (a .zip).")
@click.option("--profile-id", help="Every generation of this profile.")
@click.option("--search", help="Every generation whose text holds every word of this.")
@click.option("--language", help="Only this language.")
@click.option("--status", type=click.Choice(["generating", "completed", "failed"]))
@click.option("--favorites", is_flag=True, help="Only favorites.")
@click.option("--since", help="Created at or after this date/time.")
@click.option("--until", help="Created before this date/time.")
@json_option
@pass_ctx
def export(ctx: Context, generation_ids: tuple[str, ...], output: Path, as_json: bool, **filters: Any) -> None:
    """Export generations into a ZIP archive: the ids given, or every one the filters match.
    The archive keeps everything: every field, every version and its audio, the profile."""
    chosen = {k: v for k, v in filters.items() if v not in (None, False)}
    if generation_ids and chosen:
        raise click.UsageError("give generation ids or filters, not both")
    with progress_bar("Exporting") as update:
        summary = ctx.history().export(output, generation_ids or None, progress=update, **chosen)
    if as_json:
        echo_json(summary)
    else:
        click.echo(
            f"exported {summary['generations']} generation(s), "
            f"{summary['audio_bytes'] / 1e6:.1f} MB of audio, to {summary['archive']}"
        )


@main.command(name="export-audio")
@click.argument("generation_id")
@click.option("--version", "version_id", help="This version instead of the active one.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The file to write, or a folder to write it in.")
@pass_ctx
def export_audio(ctx: Context, generation_id: str, version_id: str | None, output: Path) -> None:
    """Write a generation's audio (the active version, or --version) to a file."""
    click.echo(ctx.history().export_audio(generation_id, output, version_id))


@main.command(name="import")
@click.argument("archives", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--as-new", is_flag=True, help="Import again what was imported before, as copies.")
@click.option("--max-bytes", type=click.IntRange(min=1), default=Limits.max_total_bytes,
              show_default=True, help="Refuse an archive larger than this, uncompressed.")
@click.option("--max-ratio", type=click.FloatRange(min=1), default=Limits.max_ratio,
              show_default=True, help="Refuse an entry that expands more than this.")
@json_option
@pass_ctx
def import_(ctx: Context, archives: tuple[Path, ...], as_new: bool, max_bytes: int, max_ratio: float,
            as_json: bool) -> None:
    """Import archives written by tts-history export or by voicebox (*.voicebox.zip).
    Every archive is checked completely first; on any problem nothing is imported."""
    limits = Limits(max_total_bytes=max_bytes, max_ratio=max_ratio)
    with progress_bar("Importing") as update:
        report = ctx.history().import_archives(archives, as_new=as_new, limits=limits, progress=update)
    _report(report, as_json)


@main.command(name="import-voicebox")
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@json_option
@pass_ctx
def import_voicebox(ctx: Context, data_dir: Path, as_json: bool) -> None:
    """Migrate a whole voicebox data directory (its database and generations/ audio). It is
    only read; running this again imports only what is new."""
    with progress_bar("Migrating") as update:
        report = ctx.history().import_voicebox(data_dir, progress=update)
    _report(report, as_json)


def _report(report, as_json: bool) -> None:
    if as_json:
        echo_json(report.as_dict())
        return
    for skipped in report.skipped:
        click.echo(f"skipped {skipped['id']} ({skipped['source']}): {skipped['reason']}", err=True)
    click.echo(f"imported {len(report.imported)}, skipped {len(report.skipped)}")


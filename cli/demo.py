"""``speak`` and ``demo``: real generations through the reference eSpeak NG host."""

from __future__ import annotations

import click

from ..host.app import EspeakHost
from ..host.espeak import SpeechError
from . import Context, main
from .commands import json_option, pass_ctx
from .output import echo_json, generation_rows

_DEMO = [
    ("Ada", "en", "Hello! This is tts-history, keeping every generation in a plain folder."),
    ("Ada", "en", "The index is a cache: delete it, sync, and every answer is the same."),
    ("Émile", "fr", "Bonjour, je suis une voix française, avec des accents à chercher."),
    ("Hana", "ja", "こんにちは、音声合成の履歴です。"),
    ("Greta", "de", "Guten Tag, hier spricht eine deutsche Stimme. Straße und Grüße."),
]


@main.command()
@click.argument("text")
@click.option("--profile", default="Default", show_default=True, help="Voice profile name.")
@click.option("--language", default="en", show_default=True, help="eSpeak NG language code.")
@click.option("--seed", type=int, help="Same seed, same pitch and rate.")
@json_option
@pass_ctx
def speak(ctx: Context, text: str, profile: str, language: str, seed: int | None, as_json: bool) -> None:
    """Speak TEXT with eSpeak NG and record it, as a host app would."""
    history = ctx.history(create=True)
    host = EspeakHost(history.pm)
    try:
        generation = host.speak(text, profile=profile, language=language, seed=seed)
    except SpeechError as exc:
        raise click.ClickException(f"{exc} (recorded as a failed generation)") from None
    item = history.get(generation.id)
    if as_json:
        echo_json(item)
    else:
        click.echo(f"{item['id']}  {item['duration']:.2f}s  {item['audio_path']}")


@main.command()
@pass_ctx
def demo(ctx: Context) -> None:
    """Make a handful of real generations (several voices and languages, one failure, one
    processed version, one favorite), then print the list and the stats."""
    history = ctx.history(create=True)
    host = EspeakHost(history.pm)
    spoken = [host.speak(text, profile=name, language=lang, seed=i) for i, (name, lang, text) in enumerate(_DEMO)]
    try:
        host.speak("This voice does not exist.", profile="Nobody", language="xx-nowhere", seed=7)
    except SpeechError:
        pass  # recorded as a failed generation: that is the point
    host.process(
        spoken[0].id,
        [{"type": "echo", "enabled": True, "params": {"delay_ms": 180, "decay": 0.4}},
         {"type": "gain", "enabled": True, "params": {"db": -3}}],
        label="hall echo",
    )
    history.favorite(spoken[2].id, True)
    click.echo(f"Library: {history.library.root}\n")
    click.echo(generation_rows(history.list(limit=10)["items"]))
    stats = history.stats()
    click.echo(
        f"\n{stats['total_generations']} generations, {stats['total_duration_seconds']:.1f} s of audio, "
        f"{stats['bytes_on_disk'] / 1e6:.1f} MB on disk; by status: {stats['generations_by_status']}"
    )
    click.echo("Try: tts-history search bonjour · tts-history show ID · tts-history stats --json")

"""``visrec model export``: export a built-in encoder to ONNX and print its model card."""

from __future__ import annotations

from pathlib import Path

import click

from models.export import DEFAULT_ENCODER, SPECS, ExportError, ensure_encoder, export_encoder
from models.modelcard import ModelCard
from streams.settings import Settings


@click.group("model")
def command() -> None:
    """Export and inspect the image encoder."""


@command.command("export")
@click.option(
    "--model",
    "name",
    type=click.Choice(sorted(SPECS)),
    default=None,
    help=f"Built-in encoder (default: settings' embed.model, else {DEFAULT_ENCODER}).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write here (always exports). Default: the model cache, exporting only if missing.",
)
def export(name: str | None, out: Path | None) -> None:
    """Export ONNX (fp32 + fp16) and model_card.json; needs the `export` extra (torch)."""
    settings = Settings()
    name = name or settings.embed.model
    try:
        if out is None:
            folder = ensure_encoder(name, settings.model_cache_dir)
            card = ModelCard.load(folder)
        else:
            folder = out
            card = export_encoder(name, out)
    except (ExportError, ImportError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(card.to_json(), nl=False)
    click.echo(f"model folder: {folder.resolve()}", err=True)


@command.command("card")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def card(model_dir: Path) -> None:
    """Validate and print the model card of an encoder folder (ours or a third party's)."""
    try:
        loaded = ModelCard.load(model_dir)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(loaded.to_json(), nl=False)

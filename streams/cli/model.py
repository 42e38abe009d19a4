"""``visrec model export``: export a built-in encoder to ONNX and print its model card."""

from __future__ import annotations

from pathlib import Path

import click

from models.exceptions import ExportError
from models.vision.export import DEFAULT_ENCODER, SPECS, ensure_encoder, export_encoder
from models.vision.modelcard import ModelCard
from schemas import RedisKeys
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


@command.command("reembed")
@click.option(
    "--model",
    "name",
    type=click.Choice(sorted(SPECS)),
    default=None,
    help="Built-in encoder to switch to (default: settings' embed.model).",
)
@click.option(
    "--model-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Any encoder folder with a model card (overrides --model).",
)
@click.option("--batch", type=int, default=64, show_default=True)
@click.option("--no-switch", is_flag=True, help="Embed everything but keep serving the old model.")
def reembed_command(name: str | None, model_dir: Path | None, batch: int, no_switch: bool) -> None:
    """Re-embed the whole catalogue with another encoder, then switch all readers atomically.

    Reads the compacted products topic from the start, stores the new vectors beside the old
    ones, checkpoints progress in Redis (an interrupted run resumes) and, when every product is
    done, switches the active model with one write: no reader ever mixes two models.
    """
    from tqdm import tqdm

    from models.vision.embedder import Embedder
    from models.vision.encoder import Encoder
    from streams.edge.products import image_limits
    from streams.ops.reembed import reembed

    settings = Settings()
    folder = model_dir or ensure_encoder(name or settings.embed.model, settings.model_cache_dir)
    e = settings.embed
    encoder = Encoder.load(
        folder, device=e.device, intra_op_threads=e.intra_op_threads, cuda=e.cuda_options()
    )
    limits = image_limits(e)
    with tqdm(unit="product", desc=f"re-embedding with {encoder.model_id}") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        with Embedder(encoder, limits, e.decode_threads, gpu_decode=e.gpu_decode) as embedder:
            report = reembed(
                settings, embedder, batch_size=batch, switch=not no_switch, progress=progress
            )
    click.echo(
        f"embedded {report.embedded}, failed {report.failed}, invalid {report.skipped_invalid}; "
        f"{'switched to' if report.switched else 'not switched to'} {encoder.model_id}"
    )


@command.command("fit-space")
@click.option(
    "--model-id", default=None, help="Model whose space to fit (default: the active model)."
)
def fit_space_command(model_id: str | None) -> None:
    """Fit (or refit) a model's retrieval space now and publish it to every worker.

    Workers fit one themselves once the catalogue reaches interest.space_min_items and refit
    as it grows by interest.space_refit_growth; this forces it, e.g. after a bulk import.
    """
    from streams.state.item_store import ItemStore
    from streams.state.redis import connect_redis
    from streams.state.spaces import SpaceStore, fit_and_publish

    settings = Settings()
    client = connect_redis(settings.redis)
    keys = RedisKeys(settings.redis.namespace)
    items = ItemStore(client, keys)
    target = model_id or items.active_model()
    if target is None:
        raise click.ClickException("no active model: nothing has been embedded yet")
    report = fit_and_publish(items, SpaceStore(client, keys), target, settings.interest)
    if report.refused is not None:
        raise click.ClickException(
            f"{report.refused} (VISREC_INTEREST__SPACE_MIN_RECALL=0 serves it regardless)"
        )
    if report.space is None:
        raise click.ClickException(
            f"no space fitted for {target}: {report.catalogue} items, or another process is "
            "fitting one now"
        )
    space = report.space
    click.echo(
        f"fitted {space.id}: {space.dim} of {space.dim_in} dims, "
        f"{'IVF' if space.ivf else 'exact'} search, on {space.meta.get('sample')} of "
        f"{report.catalogue} items in {report.seconds:.1f}s ({space.meta})"
    )


def _attach_fit_cf() -> None:
    from streams.cli.cf import fit_cf_command

    command.add_command(fit_cf_command)


_attach_fit_cf()

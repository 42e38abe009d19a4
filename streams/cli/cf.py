"""``visrec model fit-cf``: learn collaborative item vectors from an interaction log."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import click

from schemas import ProductAttributes
from streams.settings import Settings


def _events_file(path: Path, weights: dict[str, float]) -> Iterator[tuple[str, str, float]]:
    """(user, item, weight) from a JSON-lines file of ``UserEvent``s; invalid lines stop us."""
    from pydantic import ValidationError

    from schemas import UserEvent

    with path.open(encoding="utf-8") as lines:
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                event = UserEvent.from_json_bytes(line.encode("utf-8"))
            except ValidationError as exc:
                raise click.ClickException(f"{path}:{lineno}: {exc.errors()[0]['msg']}") from exc
            yield event.user_id, event.item_id, weights[event.type.value]


def _interactions(
    settings: Settings, events_path: Path | None, train_fraction: float
) -> tuple[list[tuple[str, str, float]], dict[str, ProductAttributes]]:
    """(user, item, weight) triples from an events file, or from MovieLens (with titles)."""
    weights = {str(k): v for k, v in settings.interest.event_weights.items()}
    if events_path is not None:
        return list(_events_file(events_path, weights)), {}
    from streams.exceptions import DatasetError
    from streams.tools.eval import movielens as ml

    try:
        data = ml.load()
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    rows = data.split(train_fraction)[0] if train_fraction < 1.0 else data.ratings
    triples = [(r.user_id, r.item_id, weights[r.event_type.value]) for r in rows]
    attributes = {
        m.item_id: ProductAttributes(title=m.title[:1000], category=m.category[:256])
        for m in data.movies.values()
    }
    return triples, attributes


@click.command("fit-cf")
@click.option(
    "--events",
    "events_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON lines of UserEvent (the events topic's format).",
)
@click.option("--movielens", is_flag=True, help="Use MovieLens-100k from the recbole wheel.")
@click.option(
    "--train-fraction",
    type=click.FloatRange(0, 1, min_open=True),
    default=1.0,
    show_default=True,
    help="Fit on the first part of the log by time (MovieLens).",
)
@click.option("--algorithm", type=click.Choice(["als", "bpr"]), default="als", show_default=True)
@click.option("--factors", type=click.IntRange(min=1), default=None, help="Default: 32.")
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    default=None,
    help="Default: 15 (ALS), 60 (BPR epochs).",
)
@click.option("--regularization", type=click.FloatRange(min=0), default=None)
@click.option("--alpha", type=click.FloatRange(min=0), default=None, help="ALS confidence slope.")
@click.option(
    "--publish/--no-publish",
    default=True,
    show_default=True,
    help="Store the item vectors in Redis and announce them on the item-vectors topic.",
)
@click.option(
    "--activate/--no-activate",
    default=True,
    show_default=True,
    help="Make the CF model the one interest workers serve.",
)
@click.option(
    "--save",
    "save_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the fitted model to this .npz file.",
)
def fit_cf_command(
    events_path: Path | None,
    movielens: bool,
    train_fraction: float,
    algorithm: str,
    factors: int | None,
    iterations: int | None,
    regularization: float | None,
    alpha: float | None,
    publish: bool,
    activate: bool,
    save_path: Path | None,
) -> None:
    """Fit implicit-feedback MF (ALS or BPR) and publish its item factors as ItemVectors."""
    from models.offline.cf import Interactions, default_params, fit_cf, save_model

    if (events_path is None) == (not movielens):
        raise click.UsageError("give exactly one of --events FILE or --movielens")
    settings = Settings()
    triples, attributes = _interactions(settings, events_path, train_fraction)
    if not triples:
        raise click.ClickException("no interactions to fit on")
    overrides = {
        name: value
        for name, value in (
            ("factors", factors),
            ("iterations", iterations),
            ("regularization", regularization),
            ("alpha", alpha),
        )
        if value is not None
    }
    params = default_params(algorithm, **overrides)
    matrix = Interactions.from_triples(triples)
    t0 = time.monotonic()
    model = fit_cf(matrix, params)
    vectors = model.item_vectors()
    click.echo(
        f"fitted {model.model_id}: {len(matrix.user_ids)} users x {len(matrix.item_ids)} items, "
        f"{len(matrix.users)} interactions, {model.dim} factors, {time.monotonic() - t0:.1f}s"
    )
    if save_path is not None:
        save_model(model, save_path)
        click.echo(f"saved to {save_path}")
    if publish:
        from streams.ops.item_vectors import publish_item_vectors

        report = publish_item_vectors(
            settings, model.model_id, vectors, attributes, activate=activate
        )
        click.echo(
            f"published {report.items} item vectors ({report.new_items} new items)"
            + (f"; active model is now {report.model_id}" if report.activated else "")
        )

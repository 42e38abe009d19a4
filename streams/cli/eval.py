"""``visrec eval replay|embeddings``: measure recommendations and embeddings on real data."""

from __future__ import annotations

from pathlib import Path

import click

from streams.settings import Settings


@click.group("eval")
def command() -> None:
    """Offline and replay evaluation on public datasets."""


@command.command("replay")
@click.option("--full", is_flag=True, help="Replay every user (100k events); default: a subset.")
@click.option(
    "--sequential",
    is_flag=True,
    help="Also score a GRU4Rec baseline trained with torch on the training split (minutes).",
)
@click.option(
    "--users",
    type=click.IntRange(min=1),
    default=40,
    show_default=True,
    help="Users replayed without --full (drawn among users with test events).",
)
@click.option(
    "--speedup",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Log seconds per wall second; 0 = as fast as the pacing allows.",
)
@click.option(
    "--open-loop",
    is_flag=True,
    help="Do not wait for a user's list before their next event (bursts coalesce).",
)
@click.option(
    "--lookahead",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="0: no look-ahead (nothing is sent past an unsent test event). N: other users' "
    "events may run N log positions ahead (faster; popularity sees the future).",
)
@click.option(
    "--algorithm",
    type=click.Choice(["als", "bpr"]),
    default="als",
    show_default=True,
    help="Which CF model's item vectors the streaming system serves.",
)
@click.option("--factors", type=click.IntRange(min=1), default=32, show_default=True)
@click.option(
    "--holdout",
    type=click.Choice(["test", "validation"]),
    default="test",
    show_default=True,
    help="Score the last 20 % of the log (test), or the 10 % before it with only the first "
    "70 % as training (validation: what tuning uses; the test events are never sent).",
)
@click.option(
    "--baseline-half-life-days",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Decayed most-popular's half-life (default: visrec's popularity half-life).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("eval-out/replay"),
    show_default=True,
)
@click.option("--keep-services", is_flag=True, help="Leave Kafka/Redis running if we started them.")
def replay(
    full: bool,
    sequential: bool,
    users: int,
    speedup: float,
    open_loop: bool,
    lookahead: int,
    algorithm: str,
    factors: int,
    holdout: str,
    baseline_half_life_days: float | None,
    seed: int,
    out_dir: Path,
    keep_services: bool,
) -> None:
    """Replay MovieLens-100k through Kafka and the interest worker; score it and baselines."""
    from models.offline.cf import default_params
    from models.offline.sequential import SeqParams
    from streams.exceptions import DatasetError, ReplayError
    from streams.tools.eval.replay import ReplayConfig, run_replay
    from streams.tools.eval.report import write_report
    from streams.tools.processes import local_services

    settings = Settings()
    config = ReplayConfig(
        users=None if full else users,
        seed=seed,
        speedup=speedup,
        closed_loop=not open_loop,
        lookahead=lookahead,
        cf=default_params(algorithm, factors=factors),
        holdout="validation" if holdout == "validation" else "test",
        baseline_half_life_s=baseline_half_life_days * 86400.0 if baseline_half_life_days else None,
        sequential=SeqParams() if sequential else None,
    )
    try:
        with local_services(settings, keep_services, lambda m: click.echo(m, err=True)):
            outcome = run_replay(settings, config, out_dir)
    except (DatasetError, ReplayError) as exc:
        raise click.ClickException(str(exc)) from exc
    paths = write_report(outcome, out_dir)
    click.echo(paths["markdown"].read_text())
    for name, path in paths.items():
        click.echo(f"{name}: {path}", err=True)


@command.command("embeddings")
@click.option(
    "--encoder",
    "encoders",
    multiple=True,
    help="Built-in encoder(s) to evaluate (default: every built-in one).",
)
@click.option(
    "--mnist-limit",
    type=click.IntRange(min=20, max=5000),
    default=5000,
    show_default=True,
    help="How many of the 5,000 MNIST digits to use.",
)
@click.option(
    "--copies",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Augmented copies per photo (near-duplicate retrieval, photo 1-NN).",
)
@click.option(
    "--fashion-limit",
    type=click.IntRange(min=20, max=10_000),
    default=2000,
    show_default=True,
    help="Fashion-MNIST test photos to use (1-NN by class: the semantic figure).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("eval-out/embeddings"),
    show_default=True,
)
def embeddings(
    encoders: tuple[str, ...],
    mnist_limit: int,
    copies: int,
    fashion_limit: int,
    seed: int,
    out_dir: Path,
) -> None:
    """1-NN accuracy and near-duplicate retrieval per encoder (photos, Fashion-MNIST, MNIST)."""
    from models.exceptions import ExportError
    from models.vision.export import SPECS
    from streams.tools.eval.embeddings import (
        EmbeddingEvalConfig,
        evaluate_embeddings,
        write_results,
    )

    settings = Settings()
    names = list(encoders) or sorted(SPECS)
    config = EmbeddingEvalConfig(
        mnist_limit=mnist_limit,
        copies=copies,
        fashion_limit=fashion_limit,
        fashion_copies=max(1, fashion_limit // 10),
        seed=seed,
    )
    try:
        results = evaluate_embeddings(names, settings.model_cache_dir, config)
    except (ExportError, ImportError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    table, paths = write_results(results, out_dir)
    click.echo(table)
    for name, path in paths.items():
        click.echo(f"{name}: {path}", err=True)


@command.command("hybrid")
@click.option(
    "--content-weight",
    "content_weights",
    type=click.FloatRange(0, 1),
    multiple=True,
    help="Weights of the content part to try (default: 0, 0.1, 0.25, 0.5, 1).",
)
def hybrid(content_weights: tuple[float, ...]) -> None:
    """Weighted concatenation of content (genre) vectors and CF factors, on MovieLens-100k."""
    from streams.exceptions import DatasetError
    from streams.tools.eval import movielens
    from streams.tools.eval.hybrid import hybrid_sweep

    settings = Settings()
    weights = {str(k): v for k, v in settings.interest.event_weights.items()}
    try:
        data = movielens.load()
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    results = hybrid_sweep(data, content_weights or (0.0, 0.1, 0.25, 0.5, 1.0), weights)
    click.echo("| item vectors | HitRate@10 | NDCG@10 | Recall@20 |\n|---|---:|---:|---:|")
    for r in results:
        s = r.scores
        click.echo(f"| {r.name} | {s.hit_rate(10):.4f} | {s.ndcg(10):.4f} | {s.recall(20):.4f} |")


@command.command("visual")
@click.option("--shoppers", type=click.IntRange(min=1), default=60, show_default=True)
@click.option("--days", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--initial-products", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--products-per-day", type=click.IntRange(min=0), default=80, show_default=True)
@click.option(
    "--encoder",
    "encoders",
    multiple=True,
    help="Encoder(s) to run through the pipeline: built-in ones, or raw-pixels "
    "(default: efficientnet-lite0, mobilenet-v2, raw-pixels).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("eval-out/visual"),
    show_default=True,
)
@click.option("--keep-services", is_flag=True, help="Leave Kafka/Redis running if we started them.")
def visual(
    shoppers: int,
    days: int,
    initial_products: int,
    products_per_day: int,
    encoders: tuple[str, ...],
    seed: int,
    out_dir: Path,
    keep_services: bool,
) -> None:
    """Products arriving over simulated days, shoppers with hidden tastes: cold vs warm HR@10."""
    from streams.exceptions import ReplayError
    from streams.tools.eval.visual_report import VisualConfig, run_visual, write_visual
    from streams.tools.eval.visual_sim import WorldConfig
    from streams.tools.processes import local_services

    settings = Settings()
    world = WorldConfig(
        shoppers=shoppers,
        days=days,
        initial_products=initial_products,
        products_per_day=products_per_day,
        seed=seed,
    )
    config = VisualConfig(world=world)
    if encoders:
        config = VisualConfig(world=world, encoders=encoders)
    try:
        with local_services(settings, keep_services, lambda m: click.echo(m, err=True)):
            outcome = run_visual(settings, config, out_dir / "work")
    except (ReplayError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    table, paths = write_visual(outcome, out_dir)
    click.echo(table)
    for name, path in paths.items():
        click.echo(f"{name}: {path}", err=True)

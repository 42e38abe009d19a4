"""``visrec signals show|rescale``: the half-lives popularity and co-occurrence decay with."""

from __future__ import annotations

import time

import click
from kafka.admin import KafkaAdminClient

from schemas import RedisKeys
from streams.kafka.config import kafka_python_config
from streams.ops.rescale import HalfLives, recorded, rescale
from streams.settings import Settings
from streams.state.redis import connect_redis
from streams.state.signals import SignalStore

WRITER_ROLES = ("interests", "all")
"""Worker roles whose processes write signals (their consumer groups: ``<app_id>-<role>``)."""


def running_writers(settings: Settings) -> int:
    """Members of the consumer groups of the workers that write signals."""
    admin = KafkaAdminClient(**kafka_python_config(settings.kafka, client_suffix="signals"))
    try:
        groups = [f"{settings.app_id}-{role}" for role in WRITER_ROLES]
        described = admin.describe_groups(groups)
        return sum(len(described.get(g, {}).get("members") or ()) for g in groups)
    finally:
        admin.close()


@click.group("signals")
def command() -> None:
    """Popularity and co-occurrence in Redis: their half-lives, and changing them."""


@command.command("show")
def show() -> None:
    """The half-lives the stored signals decay with, and the configured ones."""
    settings = Settings()
    client = connect_redis(settings.redis)
    try:
        found = recorded(client, RedisKeys(settings.redis.namespace))
    finally:
        client.close()
    mine = HalfLives.of(settings.interest)
    click.echo(f"recorded:   {_describe(found)}")
    click.echo(f"configured: {_describe(mine)}")
    if found is not None and found != mine:
        click.echo("they differ: interest workers will not start; see `visrec signals rescale`")


@command.command("rescale")
@click.option(
    "--from-popularity-s",
    type=click.FloatRange(min=0, min_open=True),
    help="Popularity's half-life the stored scores were written with (default: the recorded).",
)
@click.option(
    "--from-co-s",
    type=click.FloatRange(min=0, min_open=True),
    help="The pairs' half-life the stored scores were written with (default: the recorded).",
)
@click.option("--force", is_flag=True, help="Skip the check that no interest worker runs.")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
def rescale_(
    from_popularity_s: float | None, from_co_s: float | None, force: bool, dry_run: bool
) -> None:
    """Convert the stored signals to the configured half-lives.

    Stop every interest worker first. Each stored score keeps its decayed count at this
    moment and decays with the configured half-life from then on; the users' outboxes are
    drained first. The configured half-lives are then recorded, and workers start again.
    """
    settings = Settings()
    keys = RedisKeys(settings.redis.namespace)
    client = connect_redis(settings.redis)
    try:
        found = recorded(client, keys)
        if found is None and (from_popularity_s is None or from_co_s is None):
            raise click.ClickException(
                "no half-lives are recorded: give --from-popularity-s and --from-co-s, the "
                "ones the stored signals were written with"
            )
        old = HalfLives(
            from_popularity_s or (found.popularity_s if found else 0.0),
            from_co_s or (found.co_s if found else 0.0),
        )
        new = HalfLives.of(settings.interest)
        click.echo(f"from {_describe(old)}\nto   {_describe(new)}")
        if dry_run:
            return
        if not force and (n := running_writers(settings)):
            raise click.ClickException(
                f"{n} interest worker(s) are consuming: stop them first (or --force)"
            )
        params = settings.interest.interest_params()
        store = SignalStore(
            client,
            keys,
            params,
            settings.interest.co_max_neighbours,
            settings.interest.popular_max,
        )
        report = rescale(client, keys, store, old, new, int(time.time() * 1000))
    finally:
        client.close()
    click.echo(
        f"drained {report.drained_users} outbox(es); rescaled {report.members} score(s): "
        f"popularity x {report.popularity_factor:.6g}, {report.co_sets} co-occurrence set(s) "
        f"x {report.co_factor:.6g}; recorded the configured half-lives"
    )


def _describe(h: HalfLives | None) -> str:
    return "none recorded (the first interest worker records its own)" if h is None else str(h)

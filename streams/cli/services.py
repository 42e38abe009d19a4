"""``visrec services up|down|status``: the local Kafka broker and Redis server."""

from __future__ import annotations

import time

import click

from streams.exceptions import ServiceError
from streams.settings import Settings
from streams.tools.services import local_servers


@click.group("services")
def command() -> None:
    """Start, stop and inspect the local Kafka broker and Redis server."""


@command.command("up")
@click.option(
    "--broker",
    type=click.Choice(["kafka", "tansu"]),
    default="kafka",
    show_default=True,
    help="Apache Kafka (reference) or the lighter tansu broker.",
)
def up(broker: str) -> None:
    """Start (or reuse) Kafka and Redis on loopback and wait until both answer."""
    settings = Settings()
    kafka, redis_server = local_servers(settings, broker)
    try:
        t0 = time.monotonic()
        waited = redis_server.start()
        click.echo(f"redis  up on {redis_server.url} ({waited:.1f}s)")
        waited = kafka.start()
        click.echo(f"{broker:6} up on {kafka.bootstrap} ({waited:.1f}s)")
        click.echo(f"services ready in {time.monotonic() - t0:.1f}s; state in {settings.state_dir}")
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from exc


@command.command("down")
def down() -> None:
    """Stop the local Kafka broker (either kind) and Redis server."""
    settings = Settings()
    for broker in ("kafka", "tansu"):
        kafka, _ = local_servers(settings, broker)
        if kafka.stop():
            click.echo(f"{broker} stopped")
    _, redis_server = local_servers(settings, "kafka")
    if redis_server.stop():
        click.echo("redis stopped")


@command.command("status")
def status() -> None:
    """Whether the local services answer; exits 1 if one does not."""
    settings = Settings()
    kafka, redis_server = local_servers(settings, "kafka")
    tansu, _ = local_servers(settings, "tansu")
    broker_up = kafka.running() or tansu.running()
    redis_up = redis_server.running()
    click.echo(f"kafka  {'up' if broker_up else 'down'}  {settings.kafka.bootstrap_servers}")
    click.echo(f"redis  {'up' if redis_up else 'down'}  {settings.redis.url}")
    if not (broker_up and redis_up):
        raise SystemExit(1)

"""``visrec services up|down|status``: the local Kafka broker and Redis server."""

from __future__ import annotations

import time

import click

from streams.services import KafkaServer, RedisServer, ServiceError
from streams.services.tansu import TansuServer
from streams.settings import Settings


def _port(address: str) -> int:
    return int(address.split(",")[0].rsplit(":", 1)[1])


def _redis_port(url: str) -> int:
    hostport = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    return int(hostport.rsplit(":", 1)[1]) if ":" in hostport else 6379


def servers(settings: Settings, broker: str) -> tuple[KafkaServer | TansuServer, RedisServer]:
    """The local servers that match the configured endpoints."""
    kport = _port(settings.kafka.bootstrap_servers)
    kafka: KafkaServer | TansuServer
    if broker == "tansu":
        kafka = TansuServer(settings.state_dir, port=kport)
    else:
        kafka = KafkaServer(settings.state_dir, port=kport)
    return kafka, RedisServer(settings.state_dir, port=_redis_port(settings.redis.url))


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
    kafka, redis_server = servers(settings, broker)
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
        kafka, _ = servers(settings, broker)
        if kafka.stop():
            click.echo(f"{broker} stopped")
    _, redis_server = servers(settings, "kafka")
    if redis_server.stop():
        click.echo("redis stopped")


@command.command("status")
def status() -> None:
    """Whether the local services answer; exits 1 if one does not."""
    settings = Settings()
    kafka, redis_server = servers(settings, "kafka")
    tansu, _ = servers(settings, "tansu")
    broker_up = kafka.running() or tansu.running()
    redis_up = redis_server.running()
    click.echo(f"kafka  {'up' if broker_up else 'down'}  {settings.kafka.bootstrap_servers}")
    click.echo(f"redis  {'up' if redis_up else 'down'}  {settings.redis.url}")
    if not (broker_up and redis_up):
        raise SystemExit(1)

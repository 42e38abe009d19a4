"""``visrec topics create|list|delete``."""

from __future__ import annotations

import click

from streams.kafka.topics import Topics, create_topics, delete_topics
from streams.settings import Settings


@click.group("topics")
def command() -> None:
    """Create, list or delete visrec's Kafka topics."""


@command.command("create")
def create() -> None:
    """Create missing topics (idempotent; names and partitions from settings)."""
    for name, outcome in create_topics(Settings()).items():
        click.echo(f"{outcome:8} {name}")


@command.command("list")
def list_() -> None:
    """Print the declared topics with their partition counts."""
    for spec in Topics.from_settings(Settings()).all():
        config = " ".join(f"{k}={v}" for k, v in spec.config)
        click.echo(f"{spec.name:40} partitions={spec.partitions} {config}".rstrip())


@command.command("delete")
@click.confirmation_option(prompt="Delete visrec's topics and all their data?")
def delete() -> None:
    """Delete the declared topics."""
    delete_topics(Settings())
    click.echo("deleted")

"""``visrec produce events FILE`` and ``visrec produce products PATH...``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from streams.kafka.producer import image_files, product_from_file, send_events, send_products
from streams.settings import Settings


@click.group("produce")
def command() -> None:
    """Send user events or product images to Kafka."""


@command.command("events")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option(
    "--validate/--no-validate",
    default=True,
    show_default=True,
    help="Check each line against UserEvent first (--no-validate sends lines as they are).",
)
def events(file: click.utils.LazyFile, validate: bool) -> None:
    """Send UserEvent JSON lines from FILE ('-' for stdin), keyed by user_id."""
    report = send_events(Settings(), file, validate=validate)
    for lineno, why in report.rejected:
        click.echo(f"line {lineno}: not sent: {why}", err=True)
    click.echo(f"sent {report.sent} events, {len(report.rejected)} rejected")
    if report.rejected:
        sys.exit(2)


@command.command("products")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--category", default=None, help="Category for all (default: parent folder name).")
@click.option(
    "--uri/--inline",
    default=False,
    show_default=True,
    help="Send file:// URIs, not inline base64 (the embed worker's file roots must allow them).",
)
@click.option("--unavailable", is_flag=True, help="Mark the products unavailable.")
def products(paths: tuple[Path, ...], category: str | None, uri: bool, unavailable: bool) -> None:
    """Send one ProductImage per image file under PATHS, keyed by item_id (the file stem)."""
    files = list(image_files(paths))
    if not files:
        raise click.ClickException("no image files found")
    records = (
        product_from_file(f, category=category, inline=not uri, available=not unavailable)
        for f in files
    )
    report = send_products(Settings(), records)
    click.echo(f"sent {report.sent} products")

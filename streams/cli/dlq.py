"""``visrec dlq list|export|replay``: see dead letters, fix them, send them back.

The usual round trip: ``visrec dlq export --code schema_violation > bad.jsonl``, fix the
``value`` of each line (an editor, or ``jq``), ``visrec dlq replay bad.jsonl``. Without a
file, ``replay`` re-sends the selected letters unchanged (after a transient failure such as an
unreachable image host). See "Dead letters" in docs/operations.md.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, TextIO, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from schemas import ErrorCode
from streams.exceptions import DlqError, InvalidItems
from streams.kafka.topics import Topics
from streams.ops.dlq import (
    ReplayItem,
    ReplayReport,
    Selection,
    count_by_code,
    export_line,
    item_from_letter,
    parse_export_line,
    pending_letters,
    read_position,
    replay,
    replay_group,
)
from streams.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _selection_options(func: F) -> F:
    options = [
        click.option(
            "--code",
            "codes",
            multiple=True,
            type=click.Choice([c.value for c in ErrorCode]),
            help="Only letters with this error_code (repeatable).",
        ),
        click.option(
            "--source-topic",
            default=None,
            help="Only letters from this topic (full name, or `events` / `products`).",
        ),
        click.option(
            "--limit", type=click.IntRange(min=1), default=None, help="At most this many letters."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _selection(settings: Settings, codes: tuple[str, ...], source_topic: str | None) -> Selection:
    topics = Topics.from_settings(settings)
    aliases = {"events": topics.events.name, "products": topics.products.name}
    topic = aliases.get(source_topic, source_topic) if source_topic else None
    return Selection(frozenset(codes), topic)


def _warn_unreadable(partition: int, offset: int, why: str) -> None:
    click.echo(f"dead letter {partition}@{offset} is not a DeadLetter ({why}); left out", err=True)


def _position_text(settings: Settings, position: dict[int, int]) -> str:
    where = " ".join(f"{p}:{o}" for p, o in sorted(position.items())) or "nothing replayed yet"
    return f"replay position (group {replay_group(settings)}): {where}"


def _limited(items: Iterable[T], limit: int | None) -> Iterator[T]:
    return iter(items) if limit is None else islice(items, limit)


@click.group("dlq")
def command() -> None:
    """List, export and replay dead letters."""


@command.command("list")
@_selection_options
@click.option("--all", "include_replayed", is_flag=True, help="Include letters already replayed.")
def list_(
    codes: tuple[str, ...], source_topic: str | None, limit: int | None, include_replayed: bool
) -> None:
    """Show dead letters past the replay position (oldest first) and count them by error_code."""
    settings = Settings()
    try:
        letters = list(
            pending_letters(
                settings,
                _selection(settings, codes, source_topic),
                include_replayed=include_replayed,
                on_unreadable=_warn_unreadable,
            )
        )
        position = read_position(settings)
    except DlqError as exc:
        raise click.ClickException(str(exc)) from exc
    shown = letters[:limit] if limit is not None else letters
    table = Table(title=f"Dead letters ({len(shown)} of {len(letters)})")
    table.add_column("dlq", no_wrap=True)
    table.add_column("source topic", overflow="fold")
    table.add_column("partition", justify="right")
    table.add_column("offset", justify="right")
    table.add_column("error_code", no_wrap=True)
    table.add_column("error")
    for stored in shown:
        letter = stored.letter
        dlq = f"{stored.partition}@{stored.offset}"
        if stored.offset < position.get(stored.partition, 0):
            dlq += " (done)"
        table.add_row(
            dlq,
            escape(letter.source_topic),
            str(letter.partition),
            str(letter.offset),
            letter.error_code.value,
            escape(letter.error[:160]),
        )
    counts = Table(title="By error_code")
    counts.add_column("error_code")
    counts.add_column("letters", justify="right")
    for code, n in count_by_code(letters):
        counts.add_row(code, str(n))
    counts.add_row("[bold]total[/bold]", str(len(letters)))
    console = Console()
    console.print(table)
    console.print(counts)
    console.print(_position_text(settings, position), highlight=False)


@command.command("export")
@_selection_options
@click.option("--all", "include_replayed", is_flag=True, help="Include letters already replayed.")
def export(
    codes: tuple[str, ...], source_topic: str | None, limit: int | None, include_replayed: bool
) -> None:
    """Print dead letters past the replay position as JSON lines, ready to fix and replay."""
    settings = Settings()
    dlq_topic = Topics.from_settings(settings).dead_letter.name
    letters = pending_letters(
        settings,
        _selection(settings, codes, source_topic),
        include_replayed=include_replayed,
        on_unreadable=_warn_unreadable,
    )
    try:
        for stored in _limited(letters, limit):
            click.echo(json.dumps(export_line(stored, dlq_topic), ensure_ascii=False))
    except DlqError as exc:
        raise click.ClickException(str(exc)) from exc


def _items_from_file(
    file: TextIO, dlq_topic: str, problems: list[tuple[str, str]]
) -> Iterator[ReplayItem]:
    for lineno, line in enumerate(file, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            yield parse_export_line(text, dlq_topic)
        except ValueError as exc:
            problems.append((f"line {lineno}", str(exc)))


def _print_report(settings: Settings, report: ReplayReport, dry_run: bool) -> None:
    verb = "would replay" if dry_run else "replayed"
    by_code = sorted(Counter(item.error_code for item in report.replayed).items())
    detail = ", ".join(f"{code}: {n}" for code, n in by_code)
    click.echo(f"{verb} {len(report.replayed)} dead letter(s)" + (f" ({detail})" if detail else ""))
    for label, why in report.skipped:
        click.echo(f"skipped {label}: {why}", err=True)
    if report.already_replayed:
        click.echo(
            f"{report.already_replayed} already replayed (below the replay position): not sent "
            "again (--force sends them)"
        )
    if report.passed_over:
        counts = ", ".join(f"{c}: {n}" for c, n in sorted(report.passed_over.items()))
        click.echo(
            f"passed over, not replayed: {counts} (still on the topic: `visrec dlq list --all`)"
        )
    position = report.position_after if not dry_run else report.position_before
    click.echo(_position_text(settings, position))


@command.command("replay")
@click.argument("file", type=click.File("r", encoding="utf-8"), required=False)
@_selection_options
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Skip letters that would be dead-lettered again instead of sending nothing.",
)
@click.option("--force", is_flag=True, help="Also re-send letters below the replay position.")
@click.option("--dry-run", is_flag=True, help="Check and show what would be sent; send nothing.")
def replay_(
    file: TextIO | None,
    codes: tuple[str, ...],
    source_topic: str | None,
    limit: int | None,
    skip_invalid: bool,
    force: bool,
    dry_run: bool,
) -> None:
    """Re-send dead letters to their source topics: fixed ones from FILE, else unchanged.

    FILE is the output of `visrec dlq export` after fixing (`-` reads stdin). Every message is
    validated first; if any would be dead-lettered again nothing is sent (exit status 2) unless
    --skip-invalid. Letters with a truncated payload are skipped. The replay position then
    moves past the last letter sent, so the same letters are not sent twice.
    """
    settings = Settings()
    selection = _selection(settings, codes, source_topic)
    dlq_topic = Topics.from_settings(settings).dead_letter.name
    problems: list[tuple[str, str]] = []
    try:
        if file is not None:
            items: Iterable[ReplayItem] = _items_from_file(file, dlq_topic, problems)
        else:
            letters = pending_letters(settings, selection, on_unreadable=_warn_unreadable)
            items = (item_from_letter(s) for s in letters)
        selected = (i for i in items if selection.matches(i.error_code, i.source_topic))
        chosen = list(_limited(selected, limit))
        if problems and not skip_invalid:
            raise InvalidItems(problems)
        report = replay(settings, chosen, skip_invalid=skip_invalid, force=force, dry_run=dry_run)
    except InvalidItems as exc:
        for label, why in exc.problems:
            click.echo(f"{label}: {why}", err=True)
        click.echo(f"nothing sent: {exc} (fix them, or pass --skip-invalid)", err=True)
        sys.exit(2)
    except DlqError as exc:
        raise click.ClickException(str(exc)) from exc
    report.skipped[:0] = problems
    _print_report(settings, report, dry_run)
    if report.skipped:
        sys.exit(2)

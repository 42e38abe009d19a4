"""``visrec subscribe``: print recommendation lists as they arrive."""

from __future__ import annotations

import click

from streams.kafka.subscriber import subscribe
from streams.settings import Settings


@click.command("subscribe")
@click.option("--user", "users", multiple=True, help="Only these user ids (repeatable).")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest retained list.")
@click.option("--timeout", type=float, default=None, help="Stop after this many idle seconds.")
@click.option("--max", "max_lists", type=int, default=None, help="Stop after this many lists.")
@click.option("--json", "as_json", is_flag=True, help="Print each list as one JSON line.")
def command(
    users: tuple[str, ...],
    from_beginning: bool,
    timeout: float | None,
    max_lists: int | None,
    as_json: bool,
) -> None:
    """Print Recommendations events from the recommendations topic."""
    stream = subscribe(Settings(), users or None, from_beginning=from_beginning, timeout_s=timeout)
    for seen, recs in enumerate(stream, start=1):
        if as_json:
            click.echo(recs.model_dump_json())
        else:
            top = ", ".join(f"{i.item_id}({i.score:.3f},{i.reason})" for i in recs.items[:5])
            click.echo(f"{recs.user_id} <- {recs.trigger_event_id}: {top}")
        if max_lists is not None and seen >= max_lists:
            break

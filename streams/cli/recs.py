"""``visrec recs USER_ID``: the cached list for one user (pull read)."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from schemas import RedisKeys
from streams.settings import Settings
from streams.state.recs import read_cached_recs
from streams.state.redis import connect_redis


@click.command("recs")
@click.argument("user_id")
@click.option("--json", "as_json", is_flag=True, help="Print the Recommendations JSON.")
def command(user_id: str, as_json: bool) -> None:
    """Print USER_ID's latest recommendation list from the Redis cache."""
    settings = Settings()
    recs = read_cached_recs(
        connect_redis(settings.redis), RedisKeys(settings.redis.namespace), user_id
    )
    if recs is None:
        raise click.ClickException(f"no recommendations cached for {user_id!r}")
    if as_json:
        click.echo(recs.model_dump_json(indent=2))
        return
    table = Table(title=f"{user_id} (after {recs.trigger_event_id}, model {recs.model_id[:12]})")
    for col in ("#", "item", "score", "reason"):
        table.add_column(col)
    for rank, item in enumerate(recs.items, start=1):
        table.add_row(str(rank), item.item_id, f"{item.score:.3f}", item.reason)
    Console().print(table)

"""``visrec recs USER_ID``: the cached list for one user (pull read).

A user with no list of their own gets the cold list, as from the read API (``streams.api``).
"""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from schemas import RedisKeys
from streams.settings import Settings
from streams.state.recs import RecsCache, read_cached_recs
from streams.state.redis import connect_redis


@click.command("recs")
@click.argument("user_id")
@click.option("--json", "as_json", is_flag=True, help="Print the Recommendations JSON.")
def command(user_id: str, as_json: bool) -> None:
    """Print USER_ID's latest recommendation list from the Redis cache."""
    settings = Settings()
    client = connect_redis(settings.redis)
    keys = RedisKeys(settings.redis.namespace)
    recs = read_cached_recs(client, keys, user_id)
    cold = recs is None
    if cold:
        recs = RecsCache(client, keys).read_cold()
    if recs is None:
        raise click.ClickException(f"no recommendations cached for {user_id!r}, nor a cold list")
    if cold:
        recs = recs.model_copy(update={"user_id": user_id})
    if as_json:
        click.echo(recs.model_dump_json(indent=2))
        return
    after = "no events yet: the cold list" if cold else f"after {recs.trigger_event_id}"
    table = Table(title=f"{user_id} ({after}, model {recs.model_id[:12]})")
    for col in ("#", "item", "score", "reason"):
        table.add_column(col)
    for rank, item in enumerate(recs.items, start=1):
        table.add_row(str(rank), item.item_id, f"{item.score:.3f}", item.reason)
    Console().print(table)

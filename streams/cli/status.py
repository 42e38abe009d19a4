"""``visrec status [--json]``: topics, group lag, dead letters, items, Redis, worker liveness."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streams.ops.status import DEFAULT_TIMEOUT_S, GroupStatus, Status, collect_status
from streams.settings import Settings


def human_bytes(n: int) -> str:
    """``n`` bytes in binary units with one decimal (``1.5 MiB``)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _assigned(group: GroupStatus) -> str:
    parts = sorted(len(m.assigned) for m in group.members)
    return "/".join(str(p) for p in parts) if parts else "-"


def topics_table(status: Status) -> Table:
    """One row per declared topic: partitions, retained messages, end offset per partition."""
    table = Table(title="Topics")
    table.add_column("topic", no_wrap=True)
    table.add_column("partitions", justify="right")
    table.add_column("messages", justify="right")
    table.add_column("end offsets (partition:offset)")
    for topic in status.topics:
        if not topic.exists:
            table.add_row(topic.name, "-", "-", "[red]missing: run `visrec topics create`[/red]")
            continue
        ends = " ".join(f"{p.partition}:{p.end}" for p in topic.partitions)
        table.add_row(topic.name, str(len(topic.partitions)), str(topic.messages), ends)
    return table


def workers_table(status: Status) -> Table:
    """One row per consumer group: state, live members, partitions per member, total lag."""
    table = Table(title="Workers (consumer groups)")
    table.add_column("group", no_wrap=True)
    table.add_column("state")
    table.add_column("members", justify="right")
    table.add_column("partitions/member")
    table.add_column("lag", justify="right")
    table.add_column("clients", overflow="fold")
    for group in status.groups:
        state = group.state if group.alive else f"[red]{group.state} (no worker)[/red]"
        clients = ", ".join(sorted({f"{m.client_id}@{m.host}" for m in group.members})) or "-"
        clients = escape(clients)
        table.add_row(
            group.group_id,
            state,
            str(len(group.members)),
            _assigned(group),
            str(group.total_lag),
            clients,
        )
    return table


def lag_table(status: Status) -> Table:
    """One row per (group, topic, partition): end offset, committed offset, lag."""
    table = Table(title="Consumer lag per partition")
    for col in ("group", "topic", "partition", "end", "committed", "lag"):
        table.add_column(col, justify="left" if col in ("group", "topic") else "right")
    for group in status.groups:
        for lag in group.lags:
            committed = "-" if lag.committed is None else str(lag.committed)
            table.add_row(
                group.group_id, lag.topic, str(lag.partition), str(lag.end), committed, str(lag.lag)
            )
    return table


def dead_letters_table(status: Status) -> Table:
    """Dead letters counted by ``error_code`` (largest first), with the total."""
    table = Table(title="Dead letters by reason")
    table.add_column("error_code")
    table.add_column("count", justify="right")
    for code, count in status.dead_letters:
        table.add_row(escape(code), str(count))
    table.add_row("[bold]total[/bold]", str(sum(n for _, n in status.dead_letters)))
    return table


def items_table(status: Status) -> Table:
    """Items embedded per model id; the active one serves recommendations."""
    table = Table(title="Item index (Redis)")
    for col in ("model_id", "items", "active"):
        table.add_column(col, justify="right" if col == "items" else "left")
    for model in status.models:
        table.add_row(model.model_id, str(model.items), "yes" if model.active else "")
    if status.active_model is not None and not any(m.active for m in status.models):
        table.add_row(status.active_model, "0", "yes")
    return table


def redis_table(status: Status) -> Table:
    """Redis version, memory, persistence and key counts."""
    table = Table(title=f"Redis ({status.redis_url})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    r = status.redis
    if r is None:
        table.add_row("[red]unreachable[/red]", "-")
        return table
    table.add_row("version", r.version)
    table.add_row("used memory", human_bytes(r.used_memory))
    table.add_row("peak memory", human_bytes(r.used_memory_peak))
    table.add_row("maxmemory", human_bytes(r.maxmemory) if r.maxmemory else "unlimited")
    table.add_row("eviction policy", r.maxmemory_policy)
    table.add_row("AOF", "on" if r.aof_enabled else "[red]off[/red]")
    table.add_row(f"keys (db {r.db})", str(r.keys))
    for db, keys in r.keys_by_db:
        if db != r.db:
            table.add_row(f"keys (db {db})", str(keys))
    return table


def render(status: Status) -> list[Table]:
    """Every table of the status report, in display order."""
    return [
        workers_table(status),
        topics_table(status),
        lag_table(status),
        dead_letters_table(status),
        items_table(status),
        redis_table(status),
    ]


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON document.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1.0),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for the broker and for Redis.",
)
def command(as_json: bool, timeout_s: float) -> None:
    """Show topics, consumer lag, dead letters, item counts, Redis and worker liveness.

    Exits with status 1 when the broker or Redis could not be asked.
    """
    status = collect_status(Settings(), timeout_s)
    if as_json:
        click.echo(json.dumps(status.to_dict(), indent=2, sort_keys=True))
    else:
        console = Console()
        when = datetime.fromtimestamp(status.collected_at_ms / 1000, tz=UTC).isoformat()
        console.print(f"visrec status at {when}, broker {status.bootstrap_servers}")
        for table in render(status):
            console.print(table)
        for error in status.errors:
            console.print(f"[red]error:[/red] {escape(error)}", highlight=False)
    if status.errors:
        raise SystemExit(1)

"""Redis cost of applying events: user state plus popularity and co-occurrence, per event.

Applies a Zipf-like log (users and items drawn with 1/rank weights) through
``UserStateStore.apply`` in worker-sized batches (the apply script per user, then the signal
write) into a fresh Redis database, and reports events/s, the client's CPU per event and the
Redis server's command time per event (INFO commandstats: the scripts' time, which includes
every command they call) and its CPU per event (``/proc/<pid>/stat`` of the server: commands
plus protocol parsing, replies, memory). Run against a Redis on this machine.

``--compare REF`` measures the same log on the code of git ``REF`` (checked out into a temporary
worktree) and on this tree, alternating rounds in one run, and prints this tree's figures as a
ratio of REF's: how a change to the scripts moved Redis time per event.

    python bench/apply.py                      # this tree, one Redis started for the run
    python bench/apply.py --compare 5843d85    # ratio against that commit
    python bench/apply.py --compare HEAD --this-env VISREC_INTEREST__CO_MAX_NEIGHBOURS=100
                                               # what a setting costs, same code
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from procstat import cpu_seconds
from trees import ROOT, checkout, medians, run_in

NOW = 1_767_225_600_000


def _log(n_events: int, n_users: int, n_items: int, seed: int) -> list[Any]:
    from schemas import EventType, UserEvent

    rng = random.Random(seed)
    types = list(EventType)
    weights = [1.0 / (k + 1) for k in range(n_items)]
    users = rng.choices(range(n_users), weights=[1.0 / (k + 1) for k in range(n_users)], k=n_events)
    items = rng.choices(range(n_items), weights=weights, k=n_events)
    return [
        UserEvent(
            event_id=str(uuid.UUID(int=rng.getrandbits(128))),
            user_id=f"u-{u:05d}",
            item_id=f"item-{i:06d}",
            type=rng.choice(types),
            ts_ms=NOW + k * 50 + rng.randrange(-60_000, 60_000),
        )
        for k, (u, i) in enumerate(zip(users, items, strict=True))
    ]


def measure(url: str, n_events: int, batch: int, seed: int) -> dict[str, float]:
    """Apply the log once into a flushed database; figures per event."""
    import redis

    from schemas import RedisKeys
    from streams.settings import Settings
    from streams.state.user_state import UserStateStore

    client = redis.Redis.from_url(url)
    client.flushdb()
    pid = int(client.info("server")["process_id"])
    # The interest settings as the worker reads them: defaults, or VISREC_INTEREST__* if set.
    store = UserStateStore.from_settings(client, RedisKeys(), Settings().interest)
    log = _log(n_events, 2_000, 20_000, seed)
    triples = [(ev, 0, k) for k, ev in enumerate(log)]
    client.config_resetstat()
    server0, client0, wall0 = cpu_seconds(pid), time.process_time(), time.perf_counter()
    applied = 0
    for start in range(0, len(triples), batch):
        applied += sum(store.apply(triples[start : start + batch]))
    wall = time.perf_counter() - wall0
    server = cpu_seconds(pid) - server0
    cpu = time.process_time() - client0
    stats = client.info("commandstats")
    # Top-level commands only: a script's time includes the commands it called.
    scripts_us = sum(stats.get(f"cmdstat_{c}", {}).get("usec", 0) for c in ("evalsha", "eval"))
    if applied != len(log):
        raise SystemExit(f"applied {applied} of {len(log)} events")
    client.close()
    return {
        "events": len(log),
        "events_per_s": len(log) / wall,
        "redis_cpu_us_per_event": server / len(log) * 1e6,
        "redis_command_us_per_event": scripts_us / len(log),
        "client_cpu_us_per_event": cpu / len(log) * 1e6,
    }


def _run_tree(
    tree: Path, url: str, args: argparse.Namespace, env: dict[str, str] | None = None
) -> dict[str, float]:
    """One measurement on the code in ``tree`` (a subprocess: its own imports), ``env`` added."""
    sizes = ["--events", str(args.events), "--batch", str(args.batch), "--seed", str(args.seed)]
    return run_in(tree, __file__, ["--redis-url", url, "--json", *sizes], env)


def this_env(args: argparse.Namespace) -> dict[str, str]:
    """``--this-env KEY=VALUE`` pairs: settings for this tree's rounds only."""
    return dict(kv.split("=", 1) for kv in args.this_env or ())


def compare(ref: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Alternate rounds on ``ref`` and on this tree; medians and ratios."""
    rounds: dict[str, list[dict[str, float]]] = {"base": [], "this": []}
    with checkout(ref) as base:
        for _ in range(args.rounds):
            rounds["base"].append(_run_tree(base, url, args))
            rounds["this"].append(_run_tree(ROOT, url, args, this_env(args)))
    med = {side: medians(runs) for side, runs in rounds.items()}
    ratio = {k: med["this"][k] / med["base"][k] for k in med["this"] if k != "events"}
    return {
        "ref": ref,
        "this_env": this_env(args),
        "rounds": rounds,
        "median": med,
        "ratio_this_to_ref": ratio,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", help="a Redis on this machine (default: start one)")
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare", metavar="REF", help="git ref to measure against")
    parser.add_argument(
        "--this-env",
        action="append",
        metavar="KEY=VALUE",
        help="with --compare: a setting for this tree's rounds only, e.g. "
        "VISREC_INTEREST__CO_MAX_NEIGHBOURS=100 against REF=HEAD (a setting's own cost)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON line only")
    parser.add_argument("--out", type=Path, help="also write the result JSON here")
    args = parser.parse_args()
    server = None
    url = args.redis_url
    if url is None:
        from streams.tools.services import RedisServer, free_port

        server = RedisServer(Path(tempfile.mkdtemp(prefix="visrec-bench-redis-")), free_port())
        server.start()
        url = f"redis://127.0.0.1:{server.port}/0"
    try:
        if args.compare:
            result: dict[str, Any] = compare(args.compare, url, args)
        else:
            result = measure(url, args.events, args.batch, args.seed)
    finally:
        if server is not None:
            server.stop()
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
        return
    if args.compare:
        for side in ("base", "this"):
            m = result["median"][side]
            print(
                f"{side:>4}: {m['events_per_s']:,.0f} events/s, Redis command time "
                f"{m['redis_command_us_per_event']:.1f} us/event, Redis CPU "
                f"{m['redis_cpu_us_per_event']:.1f} us/event, client CPU "
                f"{m['client_cpu_us_per_event']:.1f} us/event (median of {args.rounds})"
            )
        r = result["ratio_this_to_ref"]
        print(
            f"this / {args.compare}: events/s {r['events_per_s']:.2f}x, Redis command time per "
            f"event {r['redis_command_us_per_event']:.2f}x, Redis CPU per event "
            f"{r['redis_cpu_us_per_event']:.2f}x, client CPU per event "
            f"{r['client_cpu_us_per_event']:.2f}x"
        )
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

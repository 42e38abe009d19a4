"""What ``visrec signals rescale`` takes on a shop's co-occurrence store, pipelined or not.

Fills a fresh Redis with ``--sets`` co-occurrence sets of ``--members`` members each (and a
popularity set), then converts the store back and forth between two half-lives, alternating
one script call per round trip (``chunk_size`` 1, how rescale ran before) with
``RESCALE_CHUNK`` calls per round trip, for ``--rounds`` rounds each; prints the median time of
each, sets per second and the ratio, from the same process and the same Redis. Each
conversion is checked: a score converted there and back returns to itself.

    .venv/bin/python bench/rescale.py [--sets 20000] [--members 50] [--rounds 3] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from schemas import RedisKeys  # noqa: E402
from streams.ops.rescale import RESCALE_CHUNK, HalfLives, rescale  # noqa: E402
from streams.settings import InterestSettings  # noqa: E402
from streams.state.signals import SignalStore  # noqa: E402
from streams.tools.services.base import free_port  # noqa: E402
from streams.tools.services.redis import RedisServer  # noqa: E402

NOW_MS = 1_767_225_600_000
DAY = 86400.0


def fill(client: redis.Redis[Any], keys: RedisKeys, sets: int, members: int) -> None:
    """``sets`` co-occurrence sets of ``members`` members, and the popularity set."""
    pipe = client.pipeline(transaction=False)
    for i in range(sets):
        pipe.zadd(
            keys.cooccurrence(f"item-{i}"),
            {f"item-{(i + j + 1) % sets}": j + 1.5 for j in range(members)},
        )
        if i % 1000 == 999:
            pipe.execute()
    pipe.zadd(keys.popularity(), {f"item-{i}": i + 0.5 for i in range(min(sets, 10_000))})
    pipe.execute()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", type=int, default=20_000)
    ap.add_argument("--members", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    server = RedisServer(Path(tempfile.mkdtemp(prefix="visrec-bench-rescale-")), free_port())
    server.start()
    try:
        client = redis.Redis(port=server.port)
        keys = RedisKeys("bench")
        interest = InterestSettings()
        store = SignalStore(client, keys, interest.interest_params(), 100, 1000)
        fill(client, keys, args.sets, args.members)
        probe = keys.cooccurrence("item-0")
        before = client.zscore(probe, "item-1")
        a = HalfLives(7 * DAY, 7 * DAY)
        b = HalfLives(7 * DAY, 90 * DAY)
        times: dict[int, list[float]] = {1: [], RESCALE_CHUNK: []}
        for _ in range(args.rounds):
            for chunk in times:
                for old, new in ((a, b), (b, a)):
                    t0 = time.perf_counter()
                    report = rescale(client, keys, store, old, new, NOW_MS, chunk_size=chunk)
                    times[chunk].append(time.perf_counter() - t0)
                    assert report.co_sets == args.sets, report
                after = client.zscore(probe, "item-1")
                assert before is not None and after is not None
                assert abs(after - before) <= 1e-9 * before, (before, after)
    finally:
        server.stop()
    med = {c: statistics.median(t) for c, t in times.items()}
    for c, m in med.items():
        print(f"chunk {c:>4}: {m:.3f} s per conversion, {args.sets / m:,.0f} sets/s")
    ratio = med[1] / med[RESCALE_CHUNK]
    print(f"pipelined ({RESCALE_CHUNK} per round trip) is {ratio:.1f}x one per round trip")
    if args.json:
        out = {"sets": args.sets, "members": args.members, "rounds": args.rounds}
        out |= {"median_s": {str(c): m for c, m in med.items()}, "ratio": ratio}
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What an optional ranking signal costs: ``rank_batch`` with and without it, in one process.

    .venv/bin/python bench/ranking_cost.py [--items 100000] [--users 1 10 100]
        [--set recent_weight=0.35 --set recent_items=2] [--json FILE]

Builds an index of clustered 1280-d vectors as the worker serves it (the compact space, IVF
above 50,000 items), users with Zipf-sized histories, co-occurrence lists and a popularity
list, then times ``rank_batch`` with the default settings and with ``--set`` applied,
alternating the two for ``--rounds`` rounds on one BLAS thread; prints the best time of each and
the ratio. Timing is of the pure function only: no Kafka, no Redis.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from vectors import catalogue_vectors

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.candidates import CoLists, PopularBlock  # noqa: E402
from models.index import FitParams, ItemIndex, fit_space  # noqa: E402
from models.interest import InterestColumns  # noqa: E402
from models.profile import BatchStates, profile_batch  # noqa: E402
from models.ranking import rank_batch  # noqa: E402
from streams.settings import InterestSettings  # noqa: E402

NOW_MS = 1_764_000_000_000


def build_index(n: int, seed: int) -> tuple[ItemIndex, list[str]]:
    x = catalogue_vectors(np.random.default_rng(seed), n, 1280, "clustered")
    ids = [f"item-{i}" for i in range(n)]
    rng = np.random.default_rng(seed)
    space = fit_space("m", x[rng.choice(n, min(n, 30_000), replace=False)], n, FitParams())
    index = ItemIndex(space)
    for lo in range(0, n, 5000):
        index.upsert_many(ids[lo : lo + 5000], x[lo : lo + 5000])
    return index, ids


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--users", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--set", action="append", default=[], help="NAME=VALUE of InterestSettings")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    changes = dict(kv.split("=", 1) for kv in args.set) or {
        "recent_weight": "0.35",
        "recent_items": "2",
    }
    settings = InterestSettings()
    base = settings.rank_params()
    other = InterestSettings.model_validate({**settings.model_dump(), **changes}).rank_params()
    index, ids = build_index(args.items, args.seed)
    print(f"index: {len(index)} items, {index.kind}; with: {changes}", flush=True)
    rng = np.random.default_rng(args.seed)
    rows = []
    for n_users in args.users:
        users = []
        for u in range(n_users):
            k = int(min(200, rng.zipf(1.5) * 5))
            items = rng.choice(ids, k, replace=False).tolist()
            cols = InterestColumns(items, rng.normal(0, 2, k), rng.normal(0, 2, k), NOW_MS, k)
            users.append((f"u{u}", cols))
        states = BatchStates.of(users, [NOW_MS] * n_users)
        profiles = profile_batch(states, index, settings.interest_params())
        co = CoLists.of(
            {
                c: ([f"item-{j}" for j in rng.integers(0, args.items, 20)], np.ones(20))
                for c in profiles.contributor_ids()
            },
            index,
        )
        popular = [(f"item-{j}", float(j)) for j in rng.integers(0, args.items, 200)]
        block = PopularBlock.prepare(popular, index, 100)
        reps = max(3, 300 // n_users)
        best = {"default": np.inf, "with": np.inf}
        for _ in range(args.rounds):
            for name, params in (("default", base), ("with", other)):
                t0 = time.perf_counter()
                for _ in range(reps):
                    rank_batch(profiles, index, co, block, params)
                best[name] = min(best[name], (time.perf_counter() - t0) / reps * 1e3)
        ratio = best["with"] / best["default"]
        print(
            f"{n_users} users: default {best['default']:.2f} ms, with {best['with']:.2f} ms, "
            f"ratio {ratio:.2f}",
            flush=True,
        )
        rows.append({"users": n_users, "ms_default": best["default"], "ms_with": best["with"]})
    if args.json:
        out = {"items": args.items, "kind": index.kind, "with": changes, "rows": rows}
        out["base"] = dataclasses.asdict(base)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

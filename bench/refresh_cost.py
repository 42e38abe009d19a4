"""What refreshing a batch of users costs in the pure functions (script, not a test).

    .venv/bin/python bench/refresh_cost.py [--items 1000] [--users 1 5 25 100 500]
        [--stage refresh|profile] [--rounds 5] [--compare REF] [--json FILE]

Times ``profile_batch`` + ``rank_batch`` (``--stage profile``: ``profile_batch`` alone) with
the default settings, as the interest worker calls them for one batch, on one BLAS thread (as
``make bench-pipeline`` runs the worker): best of several repetitions per batch size. The
catalogue is the one ``bench/ranking_cost.py`` builds (clustered 1280-d vectors, the compact
space and IVF where the worker would fit them);
users have Zipf-sized histories (1-200 items) with log weights of varied age; every
contributor has a co-occurrence list of the worker's length (``co_per_contributor``) with
distinct decayed scores; the popularity list holds 200 items. At 1,000 items (the default)
the index is searched exactly, as in the latency runs of ``bench/pipeline.py``, where these
functions are the largest fixed part of a small batch.

``--compare REF`` runs the same measurement on the code of git ``REF`` (a temporary worktree)
and on this tree, alternating ``--rounds`` rounds in one run, and prints this tree's time per
batch size as a ratio of REF's (medians over rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from ranking_cost import NOW_MS, build_index
from trees import ROOT, checkout, medians, run_in

sys.path.insert(0, str(ROOT))

from models.candidates import CoLists, PopularBlock
from models.interest import InterestColumns
from models.profile import BatchStates, profile_batch
from models.ranking import rank_batch
from models.refresh import co_per_contributor
from streams.settings import InterestSettings


def batch_inputs(
    n_users: int, ids: list[str], neighbours: int, rng: np.random.Generator
) -> tuple[BatchStates, dict[str, tuple[list[str], np.ndarray]], list[tuple[str, float]]]:
    """A batch's states, every item's co-occurrence list and the popularity list."""
    users = []
    for u in range(n_users):
        k = int(min(200, rng.zipf(1.5) * 3))
        items = rng.choice(ids, k, replace=False).tolist()
        age_ms = rng.integers(0, 30 * 86_400_000, k)
        log_long = np.log1p(rng.poisson(1.0, k)) - age_ms / 86_400_000 * 0.01
        log_short = log_long - age_ms / 3_600_000
        cols = InterestColumns(items, log_long, log_short, NOW_MS - int(age_ms.min()), k)
        users.append((f"user-{u}", cols))
    states = BatchStates.of(users, [NOW_MS] * n_users)
    co: dict[str, tuple[list[str], np.ndarray]] = {}
    for item in {i for _, cols in users for i in cols.item_ids}:
        scores = np.sort(rng.exponential(2.0, neighbours))[::-1] + 0.01
        co[item] = (rng.choice(ids, neighbours, replace=False).tolist(), scores)
    popular = list(
        zip(rng.choice(ids, 200).tolist(), rng.exponential(50, 200).tolist(), strict=True)
    )
    return states, co, popular


def measure(items: int, sizes: list[int], seed: int, stage: str) -> dict[str, float]:
    """Best ms per batch of profile + rank (``stage`` "refresh") or profile alone."""
    settings = InterestSettings()
    interest, ranking = settings.interest_params(), settings.rank_params()
    index, ids = build_index(items, seed)
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    for n_users in sizes:
        states, co_all, popular_list = batch_inputs(n_users, ids, co_per_contributor(ranking), rng)
        block = PopularBlock.prepare(popular_list, index, 2 * ranking.candidates)
        contributors = profile_batch(states, index, interest).contributor_ids()
        co = CoLists.of({c: co_all[c] for c in contributors}, index)
        reps = max(5, 400 // n_users)
        best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(reps):
                profiles = profile_batch(states, index, interest)
                if stage == "refresh":
                    rank_batch(profiles, index, co, block, ranking)
            best = min(best, (time.perf_counter() - t0) / reps * 1e3)
        out[str(n_users)] = best
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--users", type=int, nargs="+", default=[1, 5, 25, 100, 500])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--stage", choices=["refresh", "profile"], default="refresh", help="what to time"
    )
    ap.add_argument("--compare", metavar="REF", help="git ref to measure against")
    ap.add_argument("--one-line", action="store_true", help="print one JSON line (rounds)")
    ap.add_argument("--json", type=Path, help="write the result here")
    args = ap.parse_args()
    argv = ["--items", str(args.items), "--seed", str(args.seed), "--stage", args.stage]
    argv += ["--one-line", "--users"]
    argv += [str(n) for n in args.users]
    if args.one_line:
        print(json.dumps(measure(args.items, args.users, args.seed, args.stage)))
        return 0
    result: dict[str, Any] = {"items": args.items, "ref": args.compare, "stage": args.stage}
    if args.compare:
        rounds: dict[str, list[dict[str, float]]] = {"base": [], "this": []}
        with checkout(args.compare) as base:
            for r in range(args.rounds):
                rounds["base"].append(run_in(base, __file__, argv))
                rounds["this"].append(run_in(ROOT, __file__, argv))
                print(f"round {r + 1}: {rounds}", file=sys.stderr, flush=True)
        med = {side: medians(runs) for side, runs in rounds.items()}
        result |= {"rounds": rounds, "median_ms": med}
        what = "profile_batch + rank_batch" if args.stage == "refresh" else "profile_batch"
        print(f"{what}, {args.items} items, ms per batch (median):")
        for n in med["this"]:
            ratio = med["this"][n] / med["base"][n]
            print(
                f"  {n:>4} users: {args.compare} {med['base'][n]:.2f}, this "
                f"{med['this'][n]:.2f}, ratio {ratio:.2f}"
            )
    else:
        result["ms"] = measure(args.items, args.users, args.seed, args.stage)
        print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

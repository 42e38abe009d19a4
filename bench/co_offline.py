"""Co-occurrence alone, offline, on validation: which way of counting finds the next click.

    .venv/bin/python bench/co_offline.py

A quick screen before a pipeline trial (`bench/tune_replay.py`), in seconds rather than minutes:
a recommender that ranks items only by their co-occurrence with the user's 10 items weighing
most in visrec's interest (`UserHistories.shares`), counted from every event (training and
validation, live) as visrec's apply script counts them (clicks of one user up to 30 minutes
apart, the 10 nearest), each contributor's list cut to its 20 strongest as the worker reads
them. Variants: symmetric or directed ("clicked after") pairs; an item's count divided by its
popularity ** alpha; the largest over contributors or their sum; share ** power weighting.
Scored with the replay's protocol (`evaluate_baselines`), per-user HR@10, all / known / new
users. Nothing here reads the test split. It is not visrec (no vectors, popularity or recent
interests): a variant that wins here still has to win through the pipeline.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.interest import InterestParams  # noqa: E402
from models.offline.baselines import Catalogue, UserHistories  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.tools.eval import movielens  # noqa: E402
from streams.tools.eval.prequential import evaluate_baselines  # noqa: E402
from streams.tools.eval.replay import Plan, ReplayConfig, plan  # noqa: E402

WINDOW_MS = 1_800_000
FAN_OUT = 10
CONTRIBUTORS = 10
PER_CONTRIBUTOR = 20


@dataclass(frozen=True)
class Variant:
    directed: bool = False
    alpha: float = 0.0
    total: bool = False
    power: float = 0.5
    floor_co: bool = False
    """Popularity taken as at least the pair's count (the worker's rule) rather than 1."""

    @property
    def name(self) -> str:
        way = "directed" if self.directed else "symmetric"
        agg = "sum" if self.total else "max"
        floor = ", floor count" if self.floor_co else ""
        return f"{way}, /pop^{self.alpha:g}{floor}, {agg}, share^{self.power:g}"


class CoOnly:
    """Ranks by co-occurrence with the user's top contributors (see the module docstring)."""

    def __init__(self, p: Plan, rule: InterestParams, variant: Variant) -> None:
        self.name = variant.name
        self.v = variant
        self._cat = Catalogue(p.train)
        n = len(self._cat.item_ids)
        self.co = np.zeros((n, n))
        self.pop = np.zeros(n)
        self.hist = UserHistories(rule)
        self.recent: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for user, item, weight, ts in sorted(p.history, key=lambda e: e[3]):
            self.observe(user, item, weight, ts)

    def observe(self, user: str, item: str, weight: float, ts_ms: int | None = None) -> None:
        row = self._cat.index.get(item)
        if row is None or ts_ms is None:
            return
        near = [r for r, t in self.recent[user] if ts_ms - t <= WINDOW_MS][-FAN_OUT:]
        for r in near:
            if r != row:
                self.co[r, row] += weight
                if not self.v.directed:
                    self.co[row, r] += weight
        self.pop[row] += weight
        self.recent[user] = [*self.recent[user][-49:], (row, ts_ms)]
        self.hist.add(user, row, weight, ts_ms)

    def recommend(self, user: str, k: int, exclude: Collection[str]) -> list[str]:
        if user not in self.hist:
            return self._cat.top(self._cat.train_counts, k, exclude)
        rows, shares = self.hist.shares(user)
        top = np.argsort(-shares)[:CONTRIBUTORS]
        raw = self.co[rows[top]]
        cut = -np.sort(-raw, axis=1)[:, PER_CONTRIBUTOR - 1 : PER_CONTRIBUTOR]
        raw = np.where(raw >= cut, raw, 0.0)
        floor = raw if self.v.floor_co else 1.0
        pop = np.maximum(self.pop, floor)
        raw = np.divide(raw, pop**self.v.alpha, out=np.zeros_like(raw), where=pop > 0)
        weighted = (shares[top] ** self.v.power)[:, None] * raw
        score = weighted.sum(axis=0) if self.v.total else weighted.max(axis=0)
        return self._cat.top(score + 1e-9 * self._cat.train_counts, k, exclude)


VARIANTS = (
    Variant(),
    Variant(directed=True),
    Variant(total=True),
    Variant(alpha=0.25),
    Variant(alpha=0.25, total=True),
    Variant(alpha=0.5),
    Variant(alpha=0.5, total=True),
    Variant(alpha=0.5, total=True, floor_co=True),
    Variant(alpha=0.5, floor_co=True),
    Variant(alpha=0.75, total=True, floor_co=True),
)


def main() -> int:
    settings = Settings()
    weights = {str(k): v for k, v in settings.interest.event_weights.items()}
    p = plan(movielens.load(), ReplayConfig(users=None, holdout="validation"), weights)
    rule = settings.interest.interest_params()
    recs = [CoOnly(p, rule, v) for v in VARIANTS]
    known = set(p.train_seen)
    users = {e.user_id for e in p.events if e.test}
    print("| variant | HR@10 all | known users | new users |\n|---|---:|---:|---:|")
    for r in evaluate_baselines(recs, p.events, p.train_seen, (10,)):
        cells = [r.summary(s, 10)["hr_user"] for s in (None, users & known, users - known)]
        print(f"| {r.name} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Co-occurrence alone, as the worker keeps it: what decay and trimming cost (validation only).

    .venv/bin/python bench/co_streaming_screen.py "trim=50,half_life_days=7" "trim=0" ...

`bench/co_offline.py` screens ways of *scoring* pairs from exact all-time counts. This one
screens how the counts are *kept*: the worker's neighbour sets decay (a half-life) and are
trimmed to their strongest `co_max_neighbours` after every increment, so a pair that starts
after a set is full enters at the bottom and is cut again before it can grow. Each variant
plays the whole log in time order, counting every pair of one user's events up to 30 minutes
apart (the 10 latest, as the apply script does) in both directions, with an event weight
(views `view_weight`, clicks 1) and the half-life, trimming as Redis does (ties: the smaller
id goes). Each user's list is computed right after their previous event (the replay's
protocol): the sum over their 5 latest items, latest first weighing 0.8 ** position, of each
neighbour's count over the strongest count of that item's set (`norm`; else raw counts), or
the largest of them (`agg=max`). Scored: HR@10 of the validation split (the 70-80 % of the
log by time), per event and per user. It is not visrec (no vectors, popularity, shares): a
variant that wins here still has to win through the pipeline (`bench/tune_replay.py`).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streams.settings import InterestSettings  # noqa: E402
from streams.tools.eval import movielens  # noqa: E402

WINDOW_S = InterestSettings().co_window_s  # the worker's defaults: 30 minutes, 10 items
FAN_OUT = InterestSettings().co_max_per_event
LATEST = 5
RECENCY = 0.8


def run(
    trim: int = 0,
    half_life_days: float = 0.0,
    view_weight: float = 1.0,
    agg: str = "sum",
    norm: bool = True,
) -> tuple[float, float]:
    """(per-event, per-user) HR@10 on validation for one way of keeping the counts."""
    ratings = movielens.load().ratings
    lo, hi = int(len(ratings) * 0.7), int(len(ratings) * 0.8)
    t0 = ratings[0].ts_s
    co: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    history: dict[str, list[tuple[int, str]]] = defaultdict(list)
    lists: dict[str, list[str]] = {}
    hits: dict[str, list[bool]] = defaultdict(list)
    for k, r in enumerate(ratings):
        h = history[r.user_id]
        if lo <= k < hi and h:
            hits[r.user_id].append(r.item_id in lists.get(r.user_id, []))
        w = 1.0 if r.rating >= movielens.STRONG_RATING else view_weight
        inc = w * (2 ** ((r.ts_s - t0) / (half_life_days * 86400)) if half_life_days else 1.0)
        for ts, a in h[-FAN_OUT:]:
            if r.ts_s - ts <= WINDOW_S and a != r.item_id:
                for key, other in ((a, r.item_id), (r.item_id, a)):
                    co[key][other] += inc
                    if trim and len(co[key]) > trim:
                        weakest = min(co[key], key=lambda b, s=co[key]: (s[b], b))
                        del co[key][weakest]
        h.append((r.ts_s, r.item_id))
        if lo - 1 <= k < hi:
            lists[r.user_id] = _list(co, h, agg, norm)
    per_event = [x for xs in hits.values() for x in xs]
    per_user = [sum(xs) / len(xs) for xs in hits.values()]
    return sum(per_event) / len(per_event), sum(per_user) / len(per_user)


def _list(
    co: dict[str, dict[str, float]], h: list[tuple[int, str]], agg: str, norm: bool
) -> list[str]:
    seen = {i for _, i in h}
    score: dict[str, float] = defaultdict(float)
    for j, (_, a) in enumerate(reversed(h[-LATEST:])):
        near = co.get(a)
        if not near:
            continue
        top = max(near.values()) if norm else 1.0
        for b, c in near.items():
            if b not in seen:
                v = c / top * RECENCY**j
                score[b] = max(score[b], v) if agg == "max" else score[b] + v
    return sorted(score, key=lambda b: (-score[b], b))[:10]


PARSE = {"trim": int, "half_life_days": float, "view_weight": float, "agg": str}


def main() -> int:
    for spec in sys.argv[1:] or ["trim=0"]:
        kwargs: dict[str, object] = {}
        for part in filter(None, spec.split(",")):
            name, _, value = part.partition("=")
            kwargs[name] = value == "1" if name == "norm" else PARSE[name](value)
        ev, pu = run(**kwargs)  # type: ignore[arg-type]
        print(f"{spec}: HR@10 per event {ev:.4f}, per user {pu:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Baselines for the visual benchmark: a growing catalogue, clicks in time order.

Each is told, in log order, which products arrived (``arrive``) and who clicked what
(``observe``), and is asked for a shopper's list right after that shopper's click
(``recommend``), exactly when visrec computes its own. None of them sees an image, a later
click, or a product that has not arrived. Popularity decays with visrec's own half-life.

- ``DecayedPopularity``: clicks weighted by ``2 ** (-age / half_life)`` (visrec's rule).
- ``CoClickKNN``: item-kNN on live co-clicks (cosine over the shoppers who clicked both), the
  shopper's history as profile; lists are filled up with decayed popularity.
- ``Newest``: the most recently arrived products (the obvious way to show new products).
- ``RandomAvailable``: uniformly random products (the floor).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

from models.offline.metrics import rank_of
from streams.tools.eval.visual_sim import Click, Drop, Scored, World, previous_click


class LiveBaseline(Protocol):
    """What ``prequential`` calls, in log order."""

    name: str

    def arrive(self, item_ids: Sequence[str]) -> None:
        """Products that became available."""
        ...

    def observe(self, click: Click) -> None:
        """A click, in log order."""
        ...

    def recommend(self, user_id: str, k: int, now_ms: int) -> list[str]:
        """The shopper's top ``k`` now, none of them clicked by the shopper before."""
        ...


class _Seen:
    """Products that have arrived (in arrival order) and what each shopper clicked."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.clicked: dict[str, set[str]] = defaultdict(set)

    def arrive(self, item_ids: Sequence[str]) -> None:
        self.items.extend(item_ids)

    def observe(self, click: Click) -> None:
        self.clicked[click.user_id].add(click.item_id)


class DecayedPopularity(_Seen):
    """Clicks with exponential decay by event time (visrec's popularity rule)."""

    def __init__(self, half_life_s: float, name: str = "") -> None:
        super().__init__()
        self.half_life_ms = half_life_s * 1000.0
        self.name = name or f"decayed popularity ({half_life_s / 86_400:g}-day half-life)"
        self.score: dict[str, float] = defaultdict(float)
        self.t0: int | None = None

    def observe(self, click: Click) -> None:
        super().observe(click)
        if self.t0 is None:
            self.t0 = click.ts_ms
        # Scores kept relative to t0: the order at any later time is the same.
        self.score[click.item_id] += 2.0 ** ((click.ts_ms - self.t0) / self.half_life_ms)

    def ranked(self, exclude: set[str]) -> Iterable[str]:
        """Clicked products by decayed score (ties: item id), skipping ``exclude``."""
        order = sorted(self.score.items(), key=lambda kv: (-kv[1], kv[0]))
        return (i for i, _ in order if i not in exclude)

    def recommend(self, user_id: str, k: int, now_ms: int) -> list[str]:
        return _take(self.ranked(self.clicked[user_id]), k)


class CoClickKNN(_Seen):
    """Item-kNN on live co-clicks; the list is filled up with decayed popularity."""

    def __init__(self, popularity: DecayedPopularity) -> None:
        super().__init__()
        self.name = "item-kNN live (co-clicks), popularity fill"
        self.popularity = popularity
        self.history: dict[str, list[str]] = defaultdict(list)
        self.co: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.count: dict[str, int] = defaultdict(int)

    def observe(self, click: Click) -> None:
        super().observe(click)
        self.popularity.observe(click)
        item = click.item_id
        for other in self.history[click.user_id]:
            self.co[item][other] += 1
            self.co[other][item] += 1
        self.history[click.user_id].append(item)
        self.count[item] += 1

    def recommend(self, user_id: str, k: int, now_ms: int) -> list[str]:
        seen = self.clicked[user_id]
        scores: dict[str, float] = defaultdict(float)
        for i in self.history[user_id]:
            for j, n in self.co[i].items():
                if j not in seen:
                    scores[j] += n / math.sqrt(self.count[i] * self.count[j])
        ranked = [j for j, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]
        fill = self.popularity.ranked(seen | set(ranked))
        return _take(ranked, k) + _take(fill, max(0, k - len(ranked)))


class Newest(_Seen):
    """The most recently arrived products the shopper has not clicked."""

    name = "newest arrivals"

    def recommend(self, user_id: str, k: int, now_ms: int) -> list[str]:
        seen = self.clicked[user_id]
        return _take((i for i in reversed(self.items) if i not in seen), k)


class RandomAvailable(_Seen):
    """Uniformly random available products the shopper has not clicked."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.name = "random"
        self.rng = np.random.default_rng(seed)

    def recommend(self, user_id: str, k: int, now_ms: int) -> list[str]:
        seen = self.clicked[user_id]
        pool = [i for i in self.items if i not in seen]
        picks = self.rng.choice(len(pool), min(k, len(pool)), replace=False)
        return [pool[int(p)] for p in picks]


def _take(items: Iterable[str], k: int) -> list[str]:
    out: list[str] = []
    for i in items:
        if len(out) >= k:
            break
        out.append(i)
    return out


def prequential(
    world: World, baselines: Sequence[LiveBaseline], k: int
) -> tuple[list[Scored], dict[str, dict[str, list[str]]]]:
    """Every baseline's rank of every click that has a previous one, and its lists.

    Lists are keyed by the event id of the click they answer (as visrec's are).
    """
    prev = previous_click(world)
    scored = [Scored(b.name, {}) for b in baselines]
    lists: dict[str, dict[str, list[str]]] = {b.name: {} for b in baselines}
    latest: list[dict[str, list[str]]] = [{} for _ in baselines]
    for entry in world.log:
        if isinstance(entry, Drop):
            for b in baselines:
                b.arrive([i for i, _, _ in entry.items])
            continue
        for n, b in enumerate(baselines):
            if entry.seq in prev:
                shown = latest[n].get(entry.user_id, [])
                scored[n].ranks[entry.seq] = rank_of(shown, entry.item_id)
            b.observe(entry)
            latest[n][entry.user_id] = lists[b.name][entry.event_id] = b.recommend(
                entry.user_id, k, entry.ts_ms
            )
    return scored, lists


def standard_baselines(half_life_s: float, seed: int) -> list[LiveBaseline]:
    """The four baselines of the benchmark, popularity with visrec's half-life."""
    pop = DecayedPopularity(half_life_s)
    return [pop, CoClickKNN(DecayedPopularity(half_life_s)), Newest(), RandomAvailable(seed)]

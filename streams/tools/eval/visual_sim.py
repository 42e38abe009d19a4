"""The visual benchmark's world: products arriving over simulated days, shoppers with tastes.

Pure and seeded (no I/O): ``simulate`` lays out one time-ordered log of product drops and
clicks; ``prequential`` scores any method's lists against it; the baselines here see exactly
what visrec sees (the clicks so far, and the products that have arrived) and use the same
popularity decay.

- **Products** are labelled photos (Fashion-MNIST classes). An initial catalogue is there at
  time 0; more arrive in drops (``drops_per_day``) every simulated day.
- **Shoppers** have hidden tastes: 1-3 liked classes with Dirichlet weights, drifting (each
  day, with ``drift`` probability, one liked class is swapped for another). Each clicks
  ``Poisson(clicks_per_day)`` times a day at random moments: a class drawn from the tastes,
  then, with ``fresh_share`` probability, one of that class's products that arrived in the
  last ``fresh_hours`` (if any); otherwise a product of the class drawn in proportion to
  ``1 + clicks it had so far`` (what shoppers click gets clicked). Nobody clicks a product twice.
- **Scoring**: a click is scored against the list its shopper had just before it (the one that
  answered the shopper's previous click), split by what the clicked product was then: **cold**
  (arrived within ``fresh_hours`` and never clicked by anyone), **warm** (clicked before), or
  **old** (older, never clicked).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class WorldConfig:
    """Size and behaviour of the simulated shop (defaults: the full benchmark)."""

    shoppers: int = 60
    days: int = 8
    initial_products: int = 300
    products_per_day: int = 80
    drops_per_day: int = 4
    clicks_per_day: float = 4.0
    fresh_share: float = 0.3
    fresh_hours: float = 24.0
    drift: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.shoppers, self.days, self.initial_products, self.drops_per_day) < 1:
            raise ValueError("shoppers, days, initial_products and drops_per_day must be >= 1")
        if not (0 <= self.fresh_share <= 1 and 0 <= self.drift <= 1):
            raise ValueError("fresh_share and drift must be in [0, 1]")

    @property
    def products(self) -> int:
        """Products in the whole run."""
        return self.initial_products + self.days * self.products_per_day


@dataclass(frozen=True, slots=True)
class Drop:
    """Products that arrive together: log position, time, (item id, photo index, class)."""

    seq: int
    ts_ms: int
    items: tuple[tuple[str, int, int], ...]


@dataclass(frozen=True, slots=True)
class Click:
    """One shopper's click: log position, who, what, when, and the shopper's classes then."""

    seq: int
    event_id: str
    user_id: str
    item_id: str
    ts_ms: int
    liked: tuple[int, ...]


@dataclass
class World:
    """The whole log in time order, and what each product is."""

    log: list[Drop | Click]
    label: dict[str, int]
    arrived_ms: dict[str, int]
    photo: dict[str, int]

    def clicks(self) -> list[Click]:
        """The clicks alone, in log order."""
        return [e for e in self.log if isinstance(e, Click)]


@dataclass
class _Shopper:
    liked: list[int]
    weights: np.ndarray
    clicked: set[str] = field(default_factory=set)


def simulate(labels: Sequence[int], config: WorldConfig, start_ms: int = 0) -> World:
    """The log of one run: ``labels[i]`` is the class of photo ``i`` (products drawn from them)."""
    rng = np.random.default_rng(config.seed)
    if config.products > len(labels):
        raise ValueError(f"{config.products} products asked, {len(labels)} photos available")
    photos = rng.permutation(len(labels))[: config.products]
    n_classes = int(max(labels)) + 1
    drops = _drops(photos, labels, config, start_ms)
    shoppers = [_new_shopper(rng, n_classes) for _ in range(config.shoppers)]
    times: list[tuple[int, int]] = []
    for day in range(config.days):
        for u in range(config.shoppers):
            for t in rng.uniform(0, DAY_MS, rng.poisson(config.clicks_per_day)):
                times.append((start_ms + day * DAY_MS + int(t), u))
    times.sort()
    world = World([], {}, {}, {})
    clicks_of: dict[str, int] = defaultdict(int)
    by_class: dict[int, list[str]] = defaultdict(list)
    d, day_seen = 0, 0
    for ts, u in [*times, (drops[-1][0] + 1, -1)]:
        while d < len(drops) and drops[d][0] <= ts:
            world.log.append(Drop(len(world.log), drops[d][0], drops[d][1]))
            for item_id, photo, label in drops[d][1]:
                world.label[item_id], world.photo[item_id] = label, photo
                world.arrived_ms[item_id] = drops[d][0]
                by_class[label].append(item_id)
            d += 1
        if u < 0:
            break  # the drops after the last click
        while day_seen < (ts - start_ms) // DAY_MS:
            day_seen += 1
            for s in shoppers:
                _drift(s, rng, n_classes, config.drift)
        s = shoppers[u]
        item = _pick(s, by_class, world, clicks_of, ts, rng, config)
        if item is None:
            continue
        s.clicked.add(item)
        clicks_of[item] += 1
        seq = len(world.log)
        world.log.append(Click(seq, f"vis-{seq}", f"shopper-{u}", item, ts, tuple(s.liked)))
    return world


def _drops(
    photos: np.ndarray, labels: Sequence[int], config: WorldConfig, start_ms: int
) -> list[tuple[int, tuple[tuple[str, int, int], ...]]]:
    """(time, products) of every drop: the initial catalogue at ``start_ms``, then per day."""

    def items(chunk: np.ndarray) -> tuple[tuple[str, int, int], ...]:
        return tuple((f"fm-{int(p):05d}", int(p), int(labels[int(p)])) for p in chunk)

    out = [(start_ms, items(photos[: config.initial_products]))]
    rest = photos[config.initial_products :]
    per_drop = np.array_split(rest, config.days * config.drops_per_day)
    gap = DAY_MS // config.drops_per_day
    for n, chunk in enumerate(per_drop):
        if len(chunk):
            out.append((start_ms + (n + 1) * gap - 1, items(chunk)))
    return out


def _new_shopper(rng: np.random.Generator, n_classes: int) -> _Shopper:
    k = int(rng.integers(1, 4))
    liked = [int(c) for c in rng.choice(n_classes, k, replace=False)]
    return _Shopper(liked, rng.dirichlet(np.ones(k)))


def _drift(s: _Shopper, rng: np.random.Generator, n_classes: int, p: float) -> None:
    if rng.random() < p:
        others = [c for c in range(n_classes) if c not in s.liked]
        s.liked[int(rng.integers(len(s.liked)))] = int(rng.choice(others))


def _pick(
    s: _Shopper,
    by_class: Mapping[int, list[str]],
    world: World,
    clicks_of: Mapping[str, int],
    ts: int,
    rng: np.random.Generator,
    config: WorldConfig,
) -> str | None:
    """The product a shopper clicks at ``ts`` (None: nothing left in the class drawn)."""
    label = s.liked[int(rng.choice(len(s.liked), p=s.weights))]
    pool = [i for i in by_class.get(label, []) if i not in s.clicked]
    if not pool:
        return None
    fresh_ms = config.fresh_hours * HOUR_MS
    fresh = [i for i in pool if ts - world.arrived_ms[i] <= fresh_ms]
    if fresh and rng.random() < config.fresh_share:
        return fresh[int(rng.integers(len(fresh)))]
    w = np.array([1.0 + clicks_of.get(i, 0) for i in pool])
    return pool[int(rng.choice(len(pool), p=w / w.sum()))]


def segment_of(world: World, config: WorldConfig) -> dict[int, str]:
    """Per click (log position): cold, warm or old, from what happened strictly before it."""
    clicked: set[str] = set()
    out: dict[int, str] = {}
    fresh_ms = config.fresh_hours * HOUR_MS
    for c in world.clicks():
        if c.item_id in clicked:
            out[c.seq] = "warm"
        elif c.ts_ms - world.arrived_ms[c.item_id] <= fresh_ms:
            out[c.seq] = "cold"
        else:
            out[c.seq] = "old"
        clicked.add(c.item_id)
    return out


def previous_click(world: World) -> dict[int, Click]:
    """Per click (log position): the same shopper's previous click, if any."""
    last: dict[str, Click] = {}
    out: dict[int, Click] = {}
    for c in world.clicks():
        if c.user_id in last:
            out[c.seq] = last[c.user_id]
        last[c.user_id] = c
    return out


@dataclass
class Scored:
    """One method's rank of every scored click (None: not in its list), by log position."""

    name: str
    ranks: dict[int, int | None]

    def hit_rate(self, seqs: Sequence[int], k: int) -> float:
        """HR@k over ``seqs`` (0 when empty)."""
        if not seqs:
            return 0.0
        return sum(1 for s in seqs if (r := self.ranks[s]) is not None and r <= k) / len(seqs)

    def ndcg(self, seqs: Sequence[int], k: int) -> float:
        """NDCG@k over ``seqs`` with one relevant item per click."""
        if not seqs:
            return 0.0
        gains = [
            1.0 / math.log2(r + 1) for s in seqs if (r := self.ranks[s]) is not None and r <= k
        ]
        return sum(gains) / len(seqs)

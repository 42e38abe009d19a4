"""The visual benchmark's simulated shop, its baselines and its scoring (pure, no I/O)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streams.tools.eval.visual import first_appearance
from streams.tools.eval.visual_baselines import (
    CoClickKNN,
    DecayedPopularity,
    Newest,
    RandomAvailable,
    prequential,
    standard_baselines,
)
from streams.tools.eval.visual_sim import (
    DAY_MS,
    HOUR_MS,
    Click,
    Drop,
    Scored,
    World,
    WorldConfig,
    previous_click,
    segment_of,
    simulate,
)

LABELS = [n % 10 for n in range(2000)]
SMALL = WorldConfig(shoppers=15, days=3, initial_products=100, products_per_day=40, seed=3)


def test_simulation_is_seeded_and_ordered() -> None:
    a, b = simulate(LABELS, SMALL), simulate(LABELS, SMALL)
    assert a.log == b.log
    assert simulate(LABELS, WorldConfig(**{**SMALL.__dict__, "seed": 4})).log != a.log
    times = [e.ts_ms for e in a.log]
    assert times == sorted(times)
    assert [e.seq for e in a.log] == list(range(len(a.log)))
    assert len(a.label) == SMALL.products


def test_clicks_follow_tastes_and_never_repeat_or_precede_arrival() -> None:
    world = simulate(LABELS, SMALL)
    clicks = world.clicks()
    assert len(clicks) > 100
    seen: set[tuple[str, str]] = set()
    for c in clicks:
        assert world.arrived_ms[c.item_id] <= c.ts_ms
        assert world.label[c.item_id] in c.liked
        assert (c.user_id, c.item_id) not in seen
        seen.add((c.user_id, c.item_id))
        assert 1 <= len(c.liked) <= 3


def test_fresh_share_makes_shoppers_click_new_products() -> None:
    fresh = simulate(LABELS, WorldConfig(**{**SMALL.__dict__, "fresh_share": 1.0}))
    never = simulate(LABELS, WorldConfig(**{**SMALL.__dict__, "fresh_share": 0.0}))

    def cold_share(world: World, config: WorldConfig) -> float:
        segs = segment_of(world, config)
        return sum(s == "cold" for s in segs.values()) / len(segs)

    assert cold_share(fresh, SMALL) > 0.5 > cold_share(never, SMALL)


def _world(entries: list[Drop | Click]) -> World:
    world = World(entries, {}, {}, {})
    for e in entries:
        if isinstance(e, Drop):
            for item_id, photo, label in e.items:
                world.label[item_id], world.photo[item_id] = label, photo
                world.arrived_ms[item_id] = e.ts_ms
    return world


def _click(seq: int, user: str, item: str, ts: int, liked: tuple[int, ...] = (0,)) -> Click:
    return Click(seq, f"e{seq}", user, item, ts, liked)


def test_segments_are_decided_by_what_happened_before_the_click() -> None:
    world = _world(
        [
            Drop(0, 0, (("old", 0, 0), ("hit", 1, 0))),
            Drop(1, 2 * DAY_MS, (("new", 2, 0),)),
            _click(2, "a", "new", 2 * DAY_MS + HOUR_MS),  # fresh, never clicked: cold
            _click(3, "b", "new", 2 * DAY_MS + 2 * HOUR_MS),  # clicked before: warm
            _click(4, "a", "old", 2 * DAY_MS + 3 * HOUR_MS),  # two days old, never: old
        ]
    )
    assert segment_of(world, WorldConfig(fresh_hours=24)) == {2: "cold", 3: "warm", 4: "old"}
    assert {s: c.event_id for s, c in previous_click(world).items()} == {4: "e2"}


def test_scores_use_the_list_shown_before_the_click() -> None:
    # b clicks x after a did: co-clicks of a (y then x) put x in b's list only after
    # b's own click on y; the click on x is scored against that list, not a later one.
    world = _world(
        [
            Drop(0, 0, (("x", 0, 0), ("y", 1, 0), ("z", 2, 0))),
            _click(1, "a", "y", 10),
            _click(2, "a", "x", 20),
            _click(3, "b", "y", 30),
            _click(4, "b", "x", 40),
        ]
    )
    (knn,), lists = prequential(world, [CoClickKNN(DecayedPopularity(3600.0))], k=2)
    assert knn.ranks == {2: None, 4: 1}
    assert lists[knn.name]["e3"][0] == "x"


def test_baselines_show_only_arrived_unclicked_products() -> None:
    world = simulate(LABELS, SMALL)
    for b in standard_baselines(7 * 86_400.0, seed=0):
        clicked: dict[str, set[str]] = {}
        arrived: set[str] = set()
        for e in world.log:
            if isinstance(e, Drop):
                b.arrive([i for i, _, _ in e.items])
                arrived |= {i for i, _, _ in e.items}
                continue
            b.observe(e)
            clicked.setdefault(e.user_id, set()).add(e.item_id)
            shown = b.recommend(e.user_id, 10, e.ts_ms)
            assert len(shown) == len(set(shown)) <= 10
            assert set(shown) <= arrived - clicked[e.user_id], b.name


def test_decayed_popularity_prefers_recent_clicks_at_equal_counts() -> None:
    pop = DecayedPopularity(half_life_s=3600.0)
    pop.arrive(["old", "new"])
    pop.observe(_click(0, "u1", "old", 0))
    pop.observe(_click(1, "u2", "new", 2 * HOUR_MS))
    assert pop.recommend("u3", 2, 2 * HOUR_MS) == ["new", "old"]
    assert pop.recommend("u2", 2, 2 * HOUR_MS) == ["old"]  # never what the shopper clicked


def test_newest_and_random() -> None:
    newest, rand = Newest(), RandomAvailable(seed=1)
    for b in (newest, rand):
        b.arrive(["a", "b"])
        b.arrive(["c"])
        b.observe(_click(0, "u", "c", 5))
    assert newest.recommend("u", 5, 5) == ["b", "a"]
    assert sorted(rand.recommend("u", 5, 5)) == ["a", "b"]


def test_hit_rate_and_ndcg() -> None:
    s = Scored("m", {1: 1, 2: 3, 3: None, 4: 12})
    assert s.hit_rate([1, 2, 3, 4], 10) == pytest.approx(0.5)
    assert s.ndcg([1, 2, 3, 4], 10) == pytest.approx((1.0 + 1.0 / math.log2(4)) / 4)
    assert s.hit_rate([], 10) == 0.0


def test_first_appearance_counts_only_matching_shoppers() -> None:
    world = _world(
        [
            Drop(0, 0, (("shoe", 0, 7), ("bag", 1, 8))),
            _click(1, "a", "bag", HOUR_MS, liked=(8,)),
            _click(2, "b", "bag", 3 * HOUR_MS, liked=(7, 8)),
        ]
    )
    lists = {"e1": ["shoe"], "e2": ["shoe"]}  # a does not like shoes; b does
    assert first_appearance(world, lists, k=10) == {"shoe": (3.0, "e2")}


def test_world_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        WorldConfig(shoppers=0)
    with pytest.raises(ValueError):
        WorldConfig(fresh_share=1.5)
    with pytest.raises(ValueError):
        simulate(list(np.zeros(10, dtype=int)), SMALL)

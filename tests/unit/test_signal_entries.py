"""Outbox entries: the increment field with and without the pairs' own increment."""

from __future__ import annotations

import pytest
import redis

from models.interest import InterestParams, score_increment
from schemas import RedisKeys
from streams.state.signals import (
    Pending,
    SignalStore,
    event_increments,
    increment_field,
)

WEIGHTS = {"view": 0.25, "click": 1.0, "add_to_cart": 2.0, "purchase": 3.0}
TS = 1_735_000_000_000


def params(co_days: float) -> InterestParams:
    return InterestParams(
        half_life_long_s=30 * 86400.0,
        half_life_short_s=1800.0,
        short_term_weight=0.5,
        event_weights=WEIGHTS,
        half_life_popularity_s=7 * 86400.0,
        half_life_co_s=co_days * 86400.0,
    )


def test_pairs_decaying_as_popularity_write_the_entry_as_before() -> None:
    pop, co = event_increments("click", TS, params(7.0))
    assert co is None
    assert increment_field(pop, co) == repr(pop)
    entry = Pending.parse("u", f"3\t{increment_field(pop, co)}\ti1\ti2\ti3")
    assert (entry.seq, entry.item_id, entry.near) == (3, "i1", ("i2", "i3"))
    assert entry.increment == entry.co == pop


def test_pairs_with_their_own_half_life_carry_their_increment() -> None:
    p = params(90.0)
    pop, co = event_increments("view", TS, p)
    assert pop == score_increment("view", TS, p)
    assert co == score_increment("view", TS, p, 90 * 86400.0)
    assert co is not None and co != pop
    entry = Pending.parse("u", f"7\t{increment_field(pop, co)}\ti1\ti2".encode())
    assert (entry.increment, entry.co, entry.near) == (pop, co, ("i2",))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_a_pair_half_life_that_could_poison_scores_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="half_life_co_s"):
        params(bad)


def test_bumps_add_each_entry_s_own_increments() -> None:
    """Old entries (one increment) and new ones (two) drain side by side after an upgrade."""
    keys = RedisKeys()
    store = SignalStore(redis.Redis(), keys, params(90.0), co_max_neighbours=10, popular_max=10)
    old = Pending("u", 1, "a", 2.0, ("b",))
    new = Pending("u", 2, "a", 3.0, ("b", "c"), 0.5)
    bumps = store.bumps([old, new])
    assert bumps[keys.popularity()] == {"a": 5.0}
    assert bumps[keys.cooccurrence("a")] == {"b": 2.5, "c": 0.5}
    assert bumps[keys.cooccurrence("b")] == {"a": 2.5}
    assert bumps[keys.cooccurrence("c")] == {"a": 0.5}

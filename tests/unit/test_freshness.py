"""Freshness: arrival times in the index, the newest arrivals as candidates, the fresh term."""

from __future__ import annotations

import numpy as np
import pytest

from models.candidates import CoLists, PopularBlock
from models.index import ItemIndex, raw_space
from models.profile import BatchStates, Profiles
from models.ranking import REASON_NEW, rank_batch
from streams.settings import InterestSettings

HOUR_MS = 3_600_000
NOW_MS = 1_764_000_000_000

# (vector, arrived_ms): "a*" are old, "n*" arrived an hour or a day ago, "x1" has no known time.
ITEMS = {
    "a1": ([1.0, 0.0, 0.0, 0.0], NOW_MS - 90 * 24 * HOUR_MS),
    "a2": ([0.95, 0.3, 0.0, 0.0], NOW_MS - 90 * 24 * HOUR_MS),
    "n1": ([0.6, 0.0, 0.8, 0.0], NOW_MS - HOUR_MS),
    "n2": ([0.0, 0.0, 0.0, 1.0], NOW_MS - 24 * HOUR_MS),
    "x1": ([0.5, 0.0, 0.0, 0.8660254], 0),
}


def _index() -> ItemIndex:
    index = ItemIndex(raw_space("m", 4))
    ids = list(ITEMS)
    index.upsert_many(ids, np.array([ITEMS[i][0] for i in ids]), None, [ITEMS[i][1] for i in ids])
    return index


def _rank(
    index: ItemIndex, fresh: bool = True, **params: float | int | None
) -> list[tuple[str, float, str]]:
    items = ["a1"]  # the user touched a1 only
    zeros = np.zeros(1)
    states = BatchStates(
        ["u"], np.array([NOW_MS]), np.array([NOW_MS]), np.array([0, 1]), items, zeros, zeros
    )
    profiles = Profiles(
        states,
        index.rows(items),
        np.array([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32),
        np.array([True]),
        np.array([0, 1]),
        np.array([0], dtype=np.int64),
    )
    rank = InterestSettings.model_validate(params).rank_params()
    limit = max(rank.candidates, rank.top_k)
    popular = PopularBlock.prepare([], index, limit)
    rows = index.newest(2 * limit)
    block = PopularBlock.of(rows, np.zeros(len(rows)), index) if fresh else None
    return rank_batch(profiles, index, CoLists.of({}, index), popular, rank, block).items(0)


def test_index_keeps_arrival_times_and_lists_the_newest() -> None:
    index = _index()
    rows = index.rows(["a1", "n1", "x1", "zz"])
    assert index.arrived(rows).tolist() == [ITEMS["a1"][1], ITEMS["n1"][1], 0, 0]
    assert index.ids_of(index.newest(10)) == ["n1", "n2", "a1", "a2"]  # x1: time unknown
    assert index.ids_of(index.newest(1)) == ["n1"]
    index.upsert("n1", [0.6, 0.0, 0.8, 0.0])  # no time given: the item keeps its own
    assert index.arrived(index.rows(["n1"])).tolist() == [ITEMS["n1"][1]]
    index.set_available("n1", False)
    assert index.ids_of(index.newest(2)) == ["n2", "a1"]
    index.remove("n2")
    index.upsert("new", [0.0, 1.0, 0.0, 0.0])  # takes n2's slot, without its time
    assert index.arrived(index.rows(["new"])).tolist() == [0]
    assert "new" not in index.ids_of(index.newest(10))


def test_no_freshness_weight_is_the_ranking_without_a_fresh_block() -> None:
    index = _index()
    assert _rank(index, fresh=True, candidates=1) == _rank(index, fresh=False, candidates=1)


def test_new_arrivals_join_the_pool_with_the_documented_score() -> None:
    index = _index()
    # Two visual candidates: a2 and n1; n2 (orthogonal to the user) is not among them.
    plain = _rank(index, candidates=2, top_k=2, popularity_weight=0.0)
    assert [i for i, _, _ in plain] == ["a2", "n1"]
    got = _rank(index, candidates=2, top_k=3, popularity_weight=0.0, fresh_weight=1.2)
    scores = {item: score for item, score, _ in got}
    # n1: cos 0.6 + 1.2 * 2^(-1 h / 24 h); n2: cos 0 + 1.2 * 2^(-1); a2: old, no freshness.
    # x1 (cos 0.5, a visual candidate) falls out of the top 3 behind n2, a fresh candidate.
    assert [i for i, _, _ in got] == ["n1", "a2", "n2"]
    assert scores["n1"] == pytest.approx(0.6 + 1.2 * 2 ** (-1 / 24), abs=1e-5)
    assert scores["n2"] == pytest.approx(1.2 * 0.5, abs=1e-5)
    assert scores["a2"] == pytest.approx(0.95 / np.hypot(0.95, 0.3), abs=1e-5)
    reasons = {item: reason for item, _, reason in got}
    assert reasons["n1"] == reasons["n2"] == REASON_NEW  # their freshness terms are largest
    assert reasons["a2"] == "similar_to:a1"


def test_freshness_half_life_and_unknown_times() -> None:
    index = _index()
    got = _rank(
        index,
        candidates=5,
        top_k=5,
        popularity_weight=0.0,
        fresh_weight=1.0,
        fresh_half_life_s=3600.0,
    )
    scores = {item: score for item, score, _ in got}
    assert scores["n1"] == pytest.approx(0.6 + 0.5, abs=1e-5)  # one half-life old
    assert scores["n2"] == pytest.approx(2.0**-24, abs=1e-5)
    assert scores["x1"] == pytest.approx(0.5, abs=1e-5)  # no arrival time: no freshness


def test_fresh_half_life_must_be_positive() -> None:
    with pytest.raises(ValueError):
        InterestSettings(fresh_half_life_s=0).rank_params()


def test_newest_after_a_time_and_the_worker_cache_follow_arrivals() -> None:
    from workers.list_cache import ListCache

    index = _index()
    assert index.ids_of(index.newest(10, after_ms=ITEMS["n2"][1])) == ["n1"]
    cache = ListCache(ttl_s=1.0)
    cache.follow(index)
    assert index.ids_of(cache.newest(index, 2, now=0.0).rows) == ["n1", "n2"]
    # The index grows: the newcomer is in at once, without waiting for the TTL.
    index.upsert("n3", [0.0, 1.0, 0.0, 0.0], arrived_ms=NOW_MS - 60_000)
    assert index.ids_of(cache.newest(index, 2, now=0.1).rows) == ["n3", "n1"]
    # An item gone stays listed until the index grows or the TTL runs out.
    index.set_available("n3", False)
    assert index.ids_of(cache.newest(index, 2, now=0.2).rows) == ["n3", "n1"]
    assert index.ids_of(cache.newest(index, 2, now=1.5).rows) == ["n1", "n2"]
    index.set_available("n3", True)
    assert index.ids_of(cache.newest(index, 2, now=1.6).rows) == ["n1", "n2"]  # TTL: kept
    # An older newcomer changes nothing; a growth after an item went takes the list again.
    index.set_available("n1", False)
    index.upsert("old", [0.0, 1.0, 0.0, 0.0], arrived_ms=NOW_MS - 365 * 24 * HOUR_MS)
    assert index.ids_of(cache.newest(index, 2, now=1.7).rows) == ["n3", "n2"]
    index.set_available("n1", True)
    # A short list (fewer than asked) is taken whole again when the index grows.
    short = ListCache(ttl_s=1.0)
    everything = ["n3", "n1", "n2", "a1", "a2", "old"]
    assert index.ids_of(short.newest(index, 10, now=0.0).rows) == everything
    index.upsert("mid", [0.0, 1.0, 0.0, 0.0], arrived_ms=NOW_MS - 30 * 24 * HOUR_MS)
    assert index.ids_of(short.newest(index, 10, now=0.1).rows) == [
        *everything[:3],
        "mid",
        *everything[3:],
    ]

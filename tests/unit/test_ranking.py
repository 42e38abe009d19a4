from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

import numpy as np
import pytest

from models.candidates import CoLists, PopularBlock, lift, popularity_weights
from models.index import ItemIndex, raw_space
from models.profile import BatchStates, Profiles
from models.ranking import rank_batch
from streams.settings import InterestSettings

VECTORS = {
    "a1": [1.0, 0.0, 0.0, 0.0],
    "a2": [0.99, 0.1, 0.0, 0.0],
    "a3": [0.97, 0.0, 0.2, 0.0],
    "b1": [0.0, 1.0, 0.0, 0.0],
    "b2": [0.1, 0.95, 0.0, 0.1],
    "c1": [0.0, 0.0, 1.0, 0.0],
    "d1": [0.0, 0.0, 0.0, 1.0],
}


def _index(vectors: Mapping[str, Sequence[float]] = VECTORS, unavailable: Collection[str] = ()):
    index = ItemIndex(raw_space("m", len(next(iter(vectors.values())))))
    ids = list(vectors)
    index.upsert_many(ids, np.array([vectors[i] for i in ids]), [i not in unavailable for i in ids])
    return index


def _rank(
    user: Sequence[float] | None,
    index: ItemIndex,
    *,
    seen: Collection[str] = (),
    co: Mapping[str, tuple[float, str]] | None = None,
    popular: Sequence[tuple[str, float]] = (),
    contributors: Sequence[str] = (),
    **params: float | int | None,
) -> list[tuple[str, float, str]]:
    """One user's list from a given user vector (profiles built by hand)."""
    co = co or {}
    contributors = list(dict.fromkeys([*contributors, *(via for _, via in co.values())]))
    items = sorted(set(seen) | set(contributors))
    zeros = np.zeros(len(items))
    states = BatchStates(
        ["u"], np.array([0]), np.array([0]), np.array([0, len(items)]), items, zeros, zeros
    )
    vec = np.zeros((1, index.dim), dtype=np.float32)
    personal = False
    if user is not None and np.linalg.norm(user) > 0:
        vec[0] = np.asarray(user) / np.linalg.norm(user)
        personal = True
    profiles = Profiles(
        states,
        index.rows(items),
        vec,
        np.array([personal]),
        np.array([0, len(contributors)]),
        np.array([items.index(c) for c in contributors], dtype=np.int64),
    )
    lists: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for item_id, (score, via) in co.items():
        lists[via].append((item_id, score))
    rank = InterestSettings(**params).rank_params()  # type: ignore[arg-type]
    block = PopularBlock.prepare(popular, index, max(rank.candidates, rank.top_k))
    co_lists = CoLists.of(
        {v: ([i for i, _ in p], np.array([s for _, s in p])) for v, p in lists.items()}, index
    )
    return rank_batch(profiles, index, co_lists, block, rank).items(0)


def _ids(items: list[tuple[str, float, str]]) -> list[str]:
    return [i for i, _, _ in items]


def test_visual_order_and_seen_items_excluded() -> None:
    items = _rank([1.0, 0.0, 0.0, 0.0], _index(), seen={"a1"}, contributors=["a1"], top_k=3)
    assert _ids(items) == ["a2", "a3", "b2"]
    assert all(math.isfinite(s) for _, s, _ in items)
    assert [s for _, s, _ in items] == sorted((s for _, s, _ in items), reverse=True)


def test_unavailable_items_excluded_from_every_source() -> None:
    index = _index(unavailable={"a2", "d1", "c1"})
    items = _rank(
        [1.0, 0.0, 0.0, 0.0],
        index,
        co={"d1": (9.0, "a1")},
        popular=[("c1", 100.0), ("b1", 1.0)],
        top_k=10,
    )
    assert {"a2", "d1", "c1"}.isdisjoint(_ids(items))
    assert set(_ids(items)) == {"a3", "b1", "b2"}  # a1 is the co-occurrence contributor: seen


def test_blended_score_is_the_documented_sum() -> None:
    items = _rank(
        [1.0, 0.0, 0.0, 0.0],
        _index(),
        co={"b1": (4.0, "a1"), "c1": (2.0, "a1")},
        popular=[("c1", 10.0), ("a3", 5.0)],
        top_k=7,
    )
    scores = {i: s for i, s, _ in items}
    a3 = np.asarray(VECTORS["a3"]) / np.linalg.norm(VECTORS["a3"])
    assert scores["a3"] == pytest.approx(float(a3[0]) + 0.05 * 0.5, rel=1e-6)
    assert scores["b1"] == pytest.approx(0.0 + 0.3 * 1.0, abs=1e-6)
    assert scores["c1"] == pytest.approx(0.0 + 0.3 * 0.5 + 0.05 * 1.0, abs=1e-6)


def test_similar_to_names_the_nearest_contributor() -> None:
    items = _rank(
        [1.0, 1.0, 0.0, 0.0], _index(), seen={"a1", "b1"}, contributors=["b1", "a1"], top_k=4
    )
    reasons = {i: r for i, _, r in items}
    assert reasons["a2"] == "similar_to:a1"
    assert reasons["a3"] == "similar_to:a1"
    assert reasons["b2"] == "similar_to:b1"


def test_similar_to_profile_when_no_contributor_has_a_vector() -> None:
    items = _rank(
        [1.0, 0.0, 0.0, 0.0], _index(), seen={"pending"}, contributors=["pending"], top_k=2
    )
    assert [r for _, _, r in items] == ["similar_to_profile"] * 2


def test_also_viewed_with_when_co_occurrence_dominates() -> None:
    items = _rank(
        [1.0, 0.0, 0.0, 0.0],
        _index(),
        seen={"a1"},
        co={"d1": (3.0, "a1"), "a2": (0.1, "x")},
        contributors=["a1"],
        top_k=4,
    )
    reasons = {i: r for i, _, r in items}
    assert reasons["d1"] == "also_viewed_with:a1"  # cosine 0, co-occurrence term 0.3
    assert reasons["a2"] == "similar_to:a1"  # cosine 0.99 outweighs its small co term


def test_co_occurring_item_counts_with_its_strongest_contributor() -> None:
    index = _index()
    states_co = {"d1": (3.0, "a1")}
    items = _rank([1.0, 0.0, 0.0, 0.0], index, co=states_co, contributors=["b1", "a1"], top_k=7)
    assert dict((i, r) for i, _, r in items)["d1"] == "also_viewed_with:a1"


def test_user_without_vector_gets_popular_minus_seen_and_unavailable() -> None:
    index = _index(unavailable={"c1"})
    items = _rank(
        None,
        index,
        seen={"b1"},
        popular=[("a3", 2.0), ("c1", 50.0), ("b1", 10.0), ("d1", 7.0)],
        top_k=2,
    )
    assert _ids(items) == ["d1", "a3"]
    assert [r for _, _, r in items] == ["popular", "popular"]
    assert items[0][1] == pytest.approx(0.05 * 7.0 / 50.0)


def test_zero_user_vector_is_treated_as_no_vector() -> None:
    items = _rank([0.0, 0.0, 0.0, 0.0], _index(), popular=[("b2", 1.0)], top_k=1)
    assert _ids(items) == ["b2"] and items[0][2] == "popular"


def test_popularity_fallback_without_popularity_lists_any_available_items() -> None:
    index = _index(unavailable={"a2"})
    items = _rank(None, index, seen={"a1"}, top_k=3)
    assert _ids(items) == ["a3", "b1", "b2"]  # storage order: stable across calls
    assert all(r == "popular" and s == 0.0 for _, s, r in items)
    assert _rank(None, index, seen={"a1"}, top_k=3) == items


def test_popular_list_is_padded_up_to_k_when_short() -> None:
    items = _rank(None, _index(), popular=[("d1", 1.0)], top_k=3)
    assert _ids(items) == ["d1", "a1", "a2"]


def test_top_k_respected_and_short_catalogue_gives_fewer() -> None:
    assert len(_rank([1.0, 0.0, 0.0, 0.0], _index(), top_k=2)) == 2
    assert len(_rank([1.0, 0.0, 0.0, 0.0], _index(), seen={"a1", "a2"}, top_k=50)) == 5
    empty = ItemIndex(raw_space("m", 4))
    assert _rank(None, empty, popular=[("x", 1.0)]) == []


def test_mmr_reduces_near_duplicates() -> None:
    rng = np.random.default_rng(0)
    base = np.array([1.0, 0.2, 0.0, 0.0, 0.0, 0.0])
    vectors = {f"dup{i}": base + rng.normal(0, 0.01, 6) for i in range(5)}
    vectors["other0"] = np.array([0.7, 0.0, 0.7, 0.0, 0.0, 0.0])
    vectors["other1"] = np.array([0.7, 0.0, 0.0, 0.7, 0.0, 0.0])
    index = _index(vectors)
    user = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    plain = _rank(user, index, top_k=3)
    diverse = _rank(user, index, top_k=3, mmr_lambda=0.5)

    def dups(items: list[tuple[str, float, str]]) -> int:
        return sum(i.startswith("dup") for i in _ids(items))

    def max_pair(items: list[tuple[str, float, str]]) -> float:
        vecs = index.vectors(index.rows(_ids(items)))
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        gram = vecs @ vecs.T
        np.fill_diagonal(gram, -1.0)
        return float(gram.max())

    assert dups(plain) == 3
    assert dups(diverse) == 1
    assert max_pair(diverse) < max_pair(plain)
    assert diverse[0][0] == plain[0][0]  # the most relevant item stays first
    assert _rank(user, index, top_k=3, mmr_lambda=1.0) == plain


def test_ties_are_broken_by_item_id_whatever_the_storage_order() -> None:
    index = _index({"t3": [1.0, 0.0], "t1": [1.0, 0.0], "t2": [1.0, 0.0], "t0": [0.0, 1.0]})
    first = _rank([1.0, 0.0], index, top_k=3)
    assert _ids(first) == ["t1", "t2", "t3"]
    assert _ids(_rank([1.0, 0.0], index, top_k=2)) == ["t1", "t2"]  # the cut falls in the tie
    assert _rank([1.0, 0.0], index, top_k=3) == first


def test_non_finite_inputs_never_make_non_finite_scores() -> None:
    items = _rank(
        [1.0, 0.0, 0.0, 0.0],
        _index(),
        co={"b1": (math.inf, "a1"), "c1": (math.nan, "a1"), "d1": (-1.0, "a1")},
        popular=[("b2", math.nan), ("a3", math.inf), ("a2", 1.0)],
        top_k=7,
    )
    assert len(items) == 6  # a1 (the contributor) is seen
    assert all(math.isfinite(s) for _, s, _ in items)
    scores = {i: s for i, s, _ in items}
    # Non-finite and negative signals are ignored, not propagated.
    assert scores["b1"] == scores["c1"] == scores["d1"] == 0.0
    assert scores["a3"] == pytest.approx(0.97 / math.hypot(0.97, 0.2), rel=1e-6)
    assert scores["a2"] == pytest.approx(0.99 / math.hypot(0.99, 0.1) + 0.05, rel=1e-6)


def test_rank_params_are_validated() -> None:
    for bad in (
        {"top_k": 0},
        {"candidates": 0},
        {"co_weight": -1.0},
        {"popularity_weight": math.nan},
        {"co_share_power": -0.5},
        {"co_share_power": math.inf},
        {"popularity_prior": -1.0},
        {"popularity_prior": math.nan},
        {"popularity_idle_boost": -1.0},
        {"popularity_idle_half_life_s": math.inf},
        {"mmr_lambda": 1.5},
    ):
        with pytest.raises(ValueError):
            replace(InterestSettings().rank_params(), **bad)  # type: ignore[arg-type]


def test_only_the_strongest_co_occurring_items_are_candidates() -> None:
    # candidates=1: one visual hit (a2) and one co-occurring item (b1, the strongest). a3
    # would score 0.97 + 0.3 * 4/5 but is neither, so it is not a candidate at all.
    args = ([1.0, 0.0, 0.0, 0.0], _index())
    co = {"a3": (4.0, "a1"), "b1": (5.0, "a1")}
    items = _rank(*args, seen={"a1"}, co=co, candidates=1, top_k=1)
    assert _ids(items) == ["a2"]
    # With two candidates per source a3 is one, and wins with its full blended score.
    items = _rank(*args, seen={"a1"}, co=co, candidates=2, top_k=1)
    assert _ids(items) == ["a3"]
    assert items[0][1] == pytest.approx(0.97 / math.hypot(0.97, 0.2) + 0.3 * 4.0 / 5.0)


def test_many_users_in_one_batch_equal_each_alone() -> None:
    index = _index()
    rng = np.random.default_rng(3)
    ids = list(VECTORS)
    users = []
    for u in range(6):
        items = sorted(rng.choice(ids, int(rng.integers(1, 4)), replace=False).tolist())
        users.append((f"u{u}", items, rng.normal(size=len(items))))
    from models.interest import InterestColumns
    from models.profile import profile_batch

    cols = [(u, InterestColumns(items, w, w, 0, len(items))) for u, items, w in users]
    params = InterestSettings().interest_params()
    co = CoLists.of({"a1": (["b1", "c1"], np.array([2.0, 1.0]))}, index)
    block = PopularBlock.prepare([("d1", 3.0), ("b2", 1.0)], index, 100)
    together = rank_batch(
        profile_batch(BatchStates.of(cols, [0] * 6), index, params),
        index,
        co,
        block,
        InterestSettings(top_k=4).rank_params(),
    )
    for j, one in enumerate(cols):
        alone = rank_batch(
            profile_batch(BatchStates.of([one], [0]), index, params),
            index,
            co,
            block,
            InterestSettings(top_k=4).rank_params(),
        )
        got, want = together.items(j), alone.items(0)
        assert [(i, r) for i, _, r in got] == [(i, r) for i, _, r in want]
        assert [s for _, s, _ in got] == pytest.approx([s for _, s, _ in want], abs=1e-6)


def test_co_occurrence_weighed_by_share_normalised_and_summed_over_contributors() -> None:
    from models.interest import InterestColumns
    from models.profile import profile_batch

    # a1 weighs e^2 ~ 7x as much as b1 in the user's interest; d1 co-occurs with b1 (5),
    # c1 with a1 (3), a2 with both (2 each). Only the co-occurrence term counts here.
    index = _index()
    cols = InterestColumns(["a1", "b1"], np.array([2.0, 0.0]), np.array([2.0, 0.0]), 0, 2)
    states = BatchStates.of([("u", cols)], [0])
    profiles = profile_batch(states, index, InterestSettings().interest_params())
    assert profiles.contrib_share is not None
    share = dict(zip(["a1", "b1"], profiles.contrib_share.tolist(), strict=True))
    assert share["a1"] == pytest.approx(np.exp(2) / (np.exp(2) + 1))
    co = CoLists.of(
        {"a1": (["c1", "a2"], np.array([3.0, 2.0])), "b1": (["d1", "a2"], np.array([5.0, 2.0]))},
        index,
    )
    block = PopularBlock.prepare([], index, 100)

    def scores(**params: float | bool) -> dict[str, float]:
        rank = InterestSettings(visual_weight=0, co_weight=1, top_k=3, **params).rank_params()
        return {i: s for i, s, _ in rank_batch(profiles, index, co, block, rank).items(0)}

    assert scores() == pytest.approx({"d1": 1.0, "c1": 3 / 5, "a2": 2 / 5})
    weighed = {"c1": 3 * share["a1"], "d1": 5 * share["b1"], "a2": 2 * share["a1"]}
    top = max(weighed.values())
    got = scores(co_share_power=1.0)
    assert got == pytest.approx({k: v / top for k, v in weighed.items()})
    summed = {**weighed, "a2": 2 * share["a1"] + 2 * share["b1"]}
    top = max(summed.values())
    assert scores(co_share_power=1.0, co_sum=True) == pytest.approx(
        {k: v / top for k, v in summed.items()}
    )
    assert scores(co_sum=True) == pytest.approx({"d1": 1.0, "a2": 4 / 5, "c1": 3 / 5})
    # co_norm: each list over its strongest (a1's 3, b1's 5) before anything else.
    assert scores(co_norm=True) == pytest.approx({"c1": 1.0, "d1": 1.0, "a2": 2 / 3})
    summed_norm = {"c1": 1.0, "d1": 1.0, "a2": 2 / 3 + 2 / 5}
    assert scores(co_norm=True, co_sum=True) == pytest.approx(
        {k: v / summed_norm["a2"] for k, v in summed_norm.items()}
    )
    shared = {"c1": share["a1"], "d1": share["b1"], "a2": 2 / 3 * share["a1"]}
    top = max(shared.values())
    assert scores(co_norm=True, co_share_power=1.0) == pytest.approx(
        {k: v / top for k, v in shared.items()}
    )


def test_lift_divides_counts_by_popularity_taken_as_at_least_the_count() -> None:
    counts = np.array([4.0, 1.0, 2.0, 0.0, 9.0])
    popularity = np.array([16.0, np.nan, 1.0, 0.0, 81.0])  # NaN: not in the popularity set
    np.testing.assert_allclose(
        lift(counts, popularity, 0.5), [4 / 4, 1 / 1, 2 / math.sqrt(2), 0.0, 9 / 9]
    )
    np.testing.assert_array_equal(lift(counts, popularity, 0.0), counts)
    np.testing.assert_allclose(lift(counts, popularity, 1.0), [0.25, 1.0, 1.0, 0.0, 9 / 81])


def test_popularity_prior_weighs_popularity_more_for_a_short_history() -> None:
    # pw = 0.2 * (1 + 4 / n): 1.0 with one item (c1's 1.0 beats a2's 0.995), 0.4 with four.
    args = ([1.0, 0.0, 0.0, 0.0], _index())
    knobs = {"popularity_weight": 0.2, "popularity_prior": 4.0, "top_k": 1}
    short = _rank(*args, seen={"a1"}, popular=[("c1", 10.0)], **knobs)
    assert [(i, r) for i, _, r in short] == [("c1", "popular")]
    assert short[0][1] == pytest.approx(1.0)
    long = _rank(*args, seen={"a1", "b1", "b2", "d1"}, popular=[("c1", 10.0)], **knobs)
    assert [i for i, _, _ in long] == ["a2"]
    off = _rank(*args, seen={"a1"}, popular=[("c1", 10.0)], **{**knobs, "popularity_prior": 0.0})
    assert [i for i, _, _ in off] == ["a2"]


def _states(ptr: Sequence[int], idle_s: Sequence[float]) -> BatchStates:
    """Users with ``ptr``'s item counts, each ranked ``idle_s`` after their last event."""
    n = ptr[-1]
    now = np.full(len(idle_s), 10**12, dtype=np.int64)
    last = now - (np.asarray(idle_s) * 1000).astype(np.int64)
    users = [f"u{j}" for j in range(len(idle_s))]
    items = [f"i{j}" for j in range(n)]
    return BatchStates(users, now, last, np.array(ptr), items, np.zeros(n), np.zeros(n))


def test_popularity_weights_per_user() -> None:
    params = InterestSettings(popularity_weight=0.2, popularity_prior=3.0).rank_params()
    got = popularity_weights(params, _states([0, 0, 1, 4, 104], [0.0, 0.0, 0.0, 0.0]))
    np.testing.assert_allclose(got, [0.8, 0.8, 0.4, 0.2 * 1.03])


def test_popularity_weighs_more_for_a_list_ranked_while_the_user_is_idle() -> None:
    day = 86400.0
    knobs = {"popularity_weight": 0.2, "popularity_idle_boost": 2.0}
    params = InterestSettings(**knobs, popularity_idle_half_life_s=7 * day).rank_params()
    # Answering the user's own event (idle 0): unchanged; a week idle: half the boost (x2);
    # long idle: towards 1 + boost (x3); the prior multiplies as before.
    states = _states([0, 1, 2, 3, 4], [0.0, 7 * day, 700 * day, 7 * day])
    np.testing.assert_allclose(popularity_weights(params, states), [0.2, 0.4, 0.6, 0.4])
    prior = InterestSettings(**knobs, popularity_prior=1.0).rank_params()
    np.testing.assert_allclose(popularity_weights(prior, states)[:2], [0.4, 0.8])
    off = InterestSettings(popularity_weight=0.2).rank_params()
    np.testing.assert_allclose(popularity_weights(off, states), [0.2] * 4)

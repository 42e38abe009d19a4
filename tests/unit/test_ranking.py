from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import pytest

from models.index import ExactIndex, ItemIndex
from models.ranking import RankParams, rank
from schemas import RecommendedItem

VECTORS = {
    "a1": [1.0, 0.0, 0.0, 0.0],
    "a2": [0.99, 0.1, 0.0, 0.0],
    "a3": [0.97, 0.0, 0.2, 0.0],
    "b1": [0.0, 1.0, 0.0, 0.0],
    "b2": [0.1, 0.95, 0.0, 0.1],
    "c1": [0.0, 0.0, 1.0, 0.0],
    "d1": [0.0, 0.0, 0.0, 1.0],
}


def _index(unavailable: Collection[str] = ()) -> ItemIndex:
    index = ExactIndex()
    for item_id, vec in VECTORS.items():
        index.upsert(item_id, vec, available=item_id not in unavailable, model_id="m")
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
) -> list[RecommendedItem]:
    return rank(
        None if user is None else np.asarray(user, dtype=np.float32),
        index,
        seen,
        co or {},
        popular,
        contributors,
        RankParams(**params),  # type: ignore[arg-type]
    )


def _ids(items: list[RecommendedItem]) -> list[str]:
    return [item.item_id for item in items]


def test_visual_order_and_seen_items_excluded() -> None:
    items = _rank([1.0, 0.0, 0.0, 0.0], _index(), seen={"a1"}, contributors=["a1"], top_k=3)
    assert _ids(items) == ["a2", "a3", "b2"]
    assert all(math.isfinite(item.score) for item in items)
    assert [item.score for item in items] == sorted((item.score for item in items), reverse=True)


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
    assert set(_ids(items)) == {"a1", "a3", "b1", "b2"}


def test_blended_score_is_the_documented_sum() -> None:
    items = _rank(
        [1.0, 0.0, 0.0, 0.0],
        _index(),
        co={"b1": (4.0, "a1"), "c1": (2.0, "a1")},
        popular=[("c1", 10.0), ("a3", 5.0)],
        top_k=7,
        visual_weight=1.0,
        co_weight=0.3,
        popularity_weight=0.05,
    )
    scores = {item.item_id: item.score for item in items}
    a3 = np.asarray(VECTORS["a3"]) / np.linalg.norm(VECTORS["a3"])
    assert scores["a3"] == pytest.approx(float(a3[0]) + 0.05 * 0.5, rel=1e-6)
    assert scores["b1"] == pytest.approx(0.0 + 0.3 * 1.0, abs=1e-6)
    assert scores["c1"] == pytest.approx(0.0 + 0.3 * 0.5 + 0.05 * 1.0, abs=1e-6)


def test_similar_to_names_the_nearest_contributor() -> None:
    items = _rank(
        [1.0, 1.0, 0.0, 0.0],
        _index(),
        seen={"a1", "b1"},
        contributors=["b1", "a1"],
        top_k=4,
    )
    reasons = {item.item_id: item.reason for item in items}
    assert reasons["a2"] == "similar_to:a1"
    assert reasons["a3"] == "similar_to:a1"
    assert reasons["b2"] == "similar_to:b1"


def test_also_viewed_with_when_co_occurrence_dominates() -> None:
    items = _rank(
        [1.0, 0.0, 0.0, 0.0],
        _index(),
        seen={"a1"},
        co={"d1": (3.0, "a1"), "a2": (0.1, "x")},
        contributors=["a1"],
        top_k=4,
    )
    reasons = {item.item_id: item.reason for item in items}
    assert reasons["d1"] == "also_viewed_with:a1"  # cosine 0, co-occurrence term 0.3
    assert reasons["a2"] == "similar_to:a1"  # cosine 0.99 outweighs its small co term
    assert "d1" in _ids(items)


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
    assert [item.reason for item in items] == ["popular", "popular"]
    assert items[0].score == pytest.approx(0.05 * 7.0 / 50.0)


def test_zero_user_vector_is_treated_as_no_vector() -> None:
    items = _rank([0.0, 0.0, 0.0, 0.0], _index(), popular=[("b2", 1.0)], top_k=1)
    assert _ids(items) == ["b2"] and items[0].reason == "popular"


def test_popularity_fallback_without_popularity_lists_any_available_items() -> None:
    index = _index(unavailable={"a2"})
    items = _rank(None, index, seen={"a1"}, top_k=3)
    assert _ids(items) == ["a3", "b1", "b2"]  # storage order: stable across calls
    assert all(item.reason == "popular" and item.score == 0.0 for item in items)
    assert _rank(None, index, seen={"a1"}, top_k=3) == items


def test_popular_list_is_padded_up_to_k_when_short() -> None:
    items = _rank(None, _index(), popular=[("d1", 1.0)], top_k=3)
    assert _ids(items) == ["d1", "a1", "a2"]


def test_top_k_respected_and_short_catalogue_gives_fewer() -> None:
    assert len(_rank([1.0, 0.0, 0.0, 0.0], _index(), top_k=2)) == 2
    assert len(_rank([1.0, 0.0, 0.0, 0.0], _index(), seen={"a1", "a2"}, top_k=50)) == 5
    assert _rank(None, ExactIndex(), popular=[("x", 1.0)]) == []


def test_mmr_reduces_near_duplicates() -> None:
    index = ExactIndex()
    rng = np.random.default_rng(0)
    base = np.array([1.0, 0.2, 0.0, 0.0, 0.0, 0.0])
    for i in range(5):  # near-duplicates of one picture
        index.upsert(f"dup{i}", base + rng.normal(0, 0.01, 6), model_id="m")
    others = [[0.7, 0.0, 0.7, 0.0, 0.0, 0.0], [0.7, 0.0, 0.0, 0.7, 0.0, 0.0]]
    for i, vec in enumerate(others):
        index.upsert(f"other{i}", vec, model_id="m")
    user = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    plain = _rank(user, index, top_k=3)
    diverse = _rank(user, index, top_k=3, mmr_lambda=0.5)

    def dups(items: list[RecommendedItem]) -> int:
        return sum(item.item_id.startswith("dup") for item in items)

    def max_pair(items: list[RecommendedItem]) -> float:
        found, vecs = index.get_many(_ids(items))
        assert found == _ids(items)
        gram = vecs @ vecs.T
        np.fill_diagonal(gram, -1.0)
        return float(gram.max())

    assert dups(plain) == 3
    assert dups(diverse) == 1
    assert max_pair(diverse) < max_pair(plain)
    assert diverse[0].item_id == plain[0].item_id  # the most relevant item stays first
    assert _rank(user, index, top_k=3, mmr_lambda=1.0) == plain


def test_ties_are_broken_deterministically() -> None:
    index = ExactIndex()
    for item_id in ("t3", "t1", "t2"):
        index.upsert(item_id, [1.0, 0.0], model_id="m")
    first = _rank([1.0, 0.0], index, top_k=3)
    assert _ids(first) == ["t1", "t2", "t3"]
    assert _rank([1.0, 0.0], index, top_k=3) == first


def test_non_finite_inputs_never_make_non_finite_scores() -> None:
    items = _rank(
        [1.0, 0.0, 0.0, 0.0],
        _index(),
        co={"b1": (math.inf, "a1"), "c1": (math.nan, "a1"), "d1": (-1.0, "a1")},
        popular=[("b2", math.nan), ("a3", math.inf), ("a2", 1.0)],
        top_k=7,
    )
    assert len(items) == 7
    assert all(math.isfinite(item.score) for item in items)
    scores = {item.item_id: item.score for item in items}
    # Non-finite and negative signals are ignored, not propagated.
    assert scores["b1"] == scores["c1"] == scores["d1"] == 0.0
    assert scores["a3"] == pytest.approx(0.97 / math.hypot(0.97, 0.2), rel=1e-6)
    assert scores["a2"] == pytest.approx(0.99 / math.hypot(0.99, 0.1) + 0.05, rel=1e-6)


def test_dimension_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError):
        _rank([1.0, 0.0], _index())


def test_rank_params_are_validated() -> None:
    for bad in (
        {"top_k": 0},
        {"candidates": 0},
        {"co_weight": -1.0},
        {"popularity_weight": math.nan},
        {"mmr_lambda": 1.5},
    ):
        with pytest.raises(ValueError):
            RankParams(**bad)


def test_only_the_strongest_co_occurring_items_are_candidates() -> None:
    # candidates=1: one visual hit (a2) and one co-occurring item (b1, the strongest). a3
    # would score 0.97 + 0.3 * 4/5 but is neither, so it is not a candidate at all.
    params: dict[str, float | int | None] = {"candidates": 1, "top_k": 1}
    args = ([1.0, 0.0, 0.0, 0.0], _index())
    co = {"a3": (4.0, "a1"), "b1": (5.0, "a1")}
    items = _rank(*args, seen={"a1"}, co=co, contributors=["a1"], **params)
    assert _ids(items) == ["a2"]
    # With two candidates per source a3 is one, and wins with its full blended score.
    items = _rank(*args, seen={"a1"}, co=co, contributors=["a1"], candidates=2, top_k=1)
    assert _ids(items) == ["a3"]
    assert items[0].score == pytest.approx(0.97 / math.hypot(0.97, 0.2) + 0.3 * 4.0 / 5.0)

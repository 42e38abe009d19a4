from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.offline.metrics import (
    PrequentialScores,
    coverage,
    hit_at_k,
    loo_1nn_accuracy,
    ndcg_at_k,
    ndcg_at_k_multi,
    nearest_neighbours,
    rank_of,
    recall_at_k,
    top1_retrieval_accuracy,
)

RANKED = ["a", "b", "c", "d"]


def test_rank_of_is_one_based_and_respects_k() -> None:
    assert rank_of(RANKED, "a") == 1
    assert rank_of(RANKED, "c") == 3
    assert rank_of(RANKED, "c", k=2) is None
    assert rank_of(RANKED, "z") is None
    assert rank_of([], "a") is None


def test_hit_and_ndcg_of_one_relevant_item() -> None:
    assert hit_at_k(RANKED, "b", 1) == 0.0
    assert hit_at_k(RANKED, "b", 2) == 1.0
    assert ndcg_at_k(RANKED, "a", 10) == 1.0
    assert ndcg_at_k(RANKED, "b", 10) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k(RANKED, "d", 3) == 0.0


def test_recall_and_multi_ndcg() -> None:
    assert recall_at_k(RANKED, {"b", "d", "z"}, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, {"b", "d", "z"}, 4) == pytest.approx(2 / 3)
    assert recall_at_k(RANKED, set(), 4) == 0.0
    # All relevant items on top is the ideal ordering.
    assert ndcg_at_k_multi(RANKED, {"a", "b"}, 4) == pytest.approx(1.0)
    worst = ndcg_at_k_multi(RANKED, {"c", "d"}, 4)
    expected = (1 / math.log2(4) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert worst == pytest.approx(expected)


def test_coverage_counts_distinct_items_in_top_k() -> None:
    lists = [["a", "b", "c"], ["b", "d", "e"]]
    assert coverage(lists, 10, 2) == pytest.approx(3 / 10)  # a, b, d
    assert coverage(lists, 10, 3) == pytest.approx(5 / 10)
    with pytest.raises(ValueError, match="catalogue_size"):
        coverage(lists, 0, 2)


@pytest.mark.parametrize("fn", [hit_at_k, ndcg_at_k])
def test_k_must_be_positive(fn: object) -> None:
    with pytest.raises(ValueError, match="k must be"):
        fn(RANKED, "a", 0)  # type: ignore[operator]


@given(
    st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=8),
    st.sampled_from("abcdefgh"),
    st.integers(1, 8),
)
def test_ndcg_never_exceeds_hit_and_both_grow_with_k(ranked: list[str], item: str, k: int) -> None:
    assert 0.0 <= ndcg_at_k(ranked, item, k) <= hit_at_k(ranked, item, k) <= 1.0
    assert hit_at_k(ranked, item, k) <= hit_at_k(ranked, item, k + 1)
    assert ndcg_at_k(ranked, item, k) <= ndcg_at_k(ranked, item, k + 1)


def test_prequential_scores_average_per_user_not_per_event() -> None:
    scores = PrequentialScores(ks=(1, 10), coverage_k=2)
    assert scores.add("heavy", ["x", "y"], "z") is None
    assert scores.add("heavy", ["x", "y"], "z") is None
    assert scores.add("heavy", ["x", "y"], "w") is None
    assert scores.add("light", ["q", "r"], "r") == 2
    assert scores.users == 2
    assert scores.events == 4
    # Macro: the light user hits (1.0), the heavy one never does (0.0).
    assert scores.hit_rate(10) == pytest.approx(0.5)
    assert scores.micro_hit_rate(10) == pytest.approx(0.25)
    assert scores.hit_rate(1) == 0.0
    assert scores.ndcg(10) == pytest.approx(0.5 / math.log2(3))
    assert scores.coverage(8) == pytest.approx(4 / 8)


def test_recall_counts_distinct_items_hit_rate_counts_events() -> None:
    scores = PrequentialScores(ks=(5,))
    scores.add("u", ["a", "b"], "a")  # hit
    scores.add("u", ["b", "c"], "a")  # the same item again, missed this time
    scores.add("u", ["c"], "d")  # miss
    assert scores.hit_rate(5) == pytest.approx(1 / 3)
    assert scores.recall(5) == pytest.approx(1 / 2)  # a (found once) of {a, d}


def test_untracked_k_is_an_error_and_empty_scores_are_zero() -> None:
    scores = PrequentialScores(ks=(10,))
    assert scores.hit_rate(10) == 0.0
    assert scores.micro_hit_rate(10) == 0.0
    with pytest.raises(KeyError, match="k=5"):
        scores.hit_rate(5)
    with pytest.raises(ValueError, match="ks"):
        PrequentialScores(ks=())


def test_nearest_neighbours_and_loo_accuracy() -> None:
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.7, 0.7]])
    assert nearest_neighbours(vectors, vectors, exclude_self=True).tolist() == [1, 0, 3, 2, 1]
    # Without excluding itself every vector is its own nearest neighbour.
    assert nearest_neighbours(vectors, vectors).tolist() == [0, 1, 2, 3, 4]
    assert loo_1nn_accuracy(vectors, ["x", "x", "y", "y", "y"]) == pytest.approx(4 / 5)
    assert loo_1nn_accuracy(vectors, ["x", "x", "y", "y", "x"]) == 1.0
    with pytest.raises(ValueError, match="two"):
        loo_1nn_accuracy(vectors[:1], ["x"])


def test_top1_retrieval_accuracy_is_scale_invariant() -> None:
    gallery = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    queries = np.array([[5.0, 0.5, 0.0], [0.2, 0.1, 3.0]])
    assert top1_retrieval_accuracy(queries, gallery, [0, 2]) == 1.0
    assert top1_retrieval_accuracy(queries, gallery, [0, 1]) == 0.5
    with pytest.raises(ValueError, match="one target"):
        top1_retrieval_accuracy(queries, gallery, [0])

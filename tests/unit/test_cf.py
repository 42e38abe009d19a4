from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.offline.baselines import (
    DecayedPopular,
    ItemKNN,
    MostPopular,
    OfflineMF,
    RandomItems,
    VectorProfile,
)
from models.offline.cf import (
    CFParams,
    Interactions,
    _als_half_step,
    default_params,
    fit_cf,
    hybrid_vectors,
    load_model,
    save_model,
    top_k_ids,
)


def two_communities(seed: int = 0) -> Interactions:
    """40 users and 20 items in two taste groups; each user touches 6 of their group's 10."""
    rng = np.random.default_rng(seed)
    triples = []
    for u in range(40):
        group = u % 2
        for i in rng.choice(10, 6, replace=False):
            weight = 1.0 if rng.random() < 0.6 else 0.25
            triples.append((f"u{u}", f"i{group * 10 + int(i)}", weight))
    return Interactions.from_triples(triples)


def group(item_id: str) -> int:
    return int(item_id[1:]) // 10


def test_interactions_sum_repeats_and_build_csr() -> None:
    data = Interactions.from_triples(
        [("a", "x", 1.0), ("a", "y", 0.25), ("b", "x", 1.0), ("a", "x", 0.25)], ["x", "y", "z"]
    )
    assert data.shape == (2, 3)
    assert data.item_ids == ("x", "y", "z")
    cells = {
        (data.user_ids[u], data.item_ids[i]): w
        for u, i, w in zip(data.users, data.items, data.weights, strict=True)
    }
    assert cells == {("a", "x"): 1.25, ("a", "y"): 0.25, ("b", "x"): 1.0}
    indptr, indices, weights = data.rows("item")
    assert indptr.tolist() == [0, 2, 3, 3]  # x: a, b; y: a; z: nobody
    assert [data.user_ids[u] for u in indices[:2]] == ["a", "b"]
    assert weights[:2].tolist() == [1.25, 1.0]


def test_interactions_reject_bad_weights_and_empty_logs() -> None:
    with pytest.raises(ValueError, match="finite and > 0"):
        Interactions.from_triples([("a", "x", 0.0)])
    with pytest.raises(ValueError, match="finite and > 0"):
        Interactions.from_triples([("a", "x", float("nan"))])
    with pytest.raises(ValueError, match="no interactions"):
        Interactions.from_triples([])


def test_als_half_step_solves_the_weighted_normal_equations() -> None:
    data = two_communities()
    params = CFParams(factors=4, regularization=0.5, alpha=3.0)
    fixed = np.random.default_rng(1).normal(size=(len(data.item_ids), 4))
    solved = _als_half_step(data.rows("user"), fixed, params)
    indptr, indices, weights = data.rows("user")
    row = 3
    lo, hi = indptr[row], indptr[row + 1]
    conf = np.ones(len(data.item_ids))
    conf[indices[lo:hi]] = 1.0 + params.alpha * weights[lo:hi]
    pref = np.zeros(len(data.item_ids))
    pref[indices[lo:hi]] = 1.0
    # Gradient of sum_i c_i (p_i - x.y_i)^2 + reg |x|^2 vanishes at the solution.
    residual = fixed.T @ (conf * (pref - fixed @ solved[row])) - params.regularization * solved[row]
    assert np.abs(residual).max() < 1e-9


@pytest.mark.parametrize("algorithm", ["als", "bpr"])
def test_factors_separate_the_two_communities(algorithm: str) -> None:
    data = two_communities()
    iterations = 30 if algorithm == "bpr" else 10
    model = fit_cf(data, default_params(algorithm, factors=4, iterations=iterations))
    unit = model.item_factors / np.linalg.norm(model.item_factors, axis=1, keepdims=True)
    sim = unit @ unit.T
    groups = np.array([group(i) for i in model.item_ids])
    same_group = groups[:, None] == groups[None, :]
    same = sim[same_group & ~np.eye(len(groups), dtype=bool)].mean()
    cross = sim[~same_group].mean()
    assert same > cross + 0.5
    # A user's recommendations (own items excluded) come from their own group.
    touched = {data.item_ids[i] for u, i in zip(data.users, data.items, strict=True) if u == 0}
    recs = model.recommend(data.user_ids[0], 3, exclude=touched)
    assert recs is not None and len(recs) == 3
    assert not touched & set(recs)
    assert {group(i) for i in recs} == {group(data.user_ids[0].replace("u", "i"))}
    assert model.recommend("stranger", 3) is None


def test_model_id_is_a_content_hash() -> None:
    data = two_communities()
    a = fit_cf(data, CFParams(factors=4, iterations=3))
    b = fit_cf(data, CFParams(factors=4, iterations=3))
    c = fit_cf(data, CFParams(factors=4, iterations=3, seed=1))
    assert a.model_id == b.model_id
    assert a.model_id.startswith("cf-als-")
    assert c.model_id != a.model_id
    assert fit_cf(data, CFParams(factors=4, iterations=4)).model_id != a.model_id


def test_item_vectors_leave_out_items_nobody_touched(tmp_path: Path) -> None:
    data = Interactions.from_triples(
        [("a", "x", 1.0), ("b", "x", 1.0), ("b", "y", 1.0)], ["x", "y", "never"]
    )
    model = fit_cf(data, CFParams(factors=2, iterations=3))
    assert set(model.item_vectors()) == {"x", "y"}
    assert model.item_support.tolist() == [2, 1, 0]
    path = tmp_path / "cf.npz"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.model_id == model.model_id
    assert loaded.item_ids == model.item_ids
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)
    assert loaded.params == model.params


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="algorithm"):
        CFParams(algorithm="svd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="factors"):
        CFParams(factors=0)
    with pytest.raises(ValueError, match="alpha"):
        CFParams(alpha=float("inf"))
    with pytest.raises(ValueError, match="unknown"):
        default_params("svd")
    assert default_params("bpr").iterations == 60


def test_top_k_ids_excludes_and_orders() -> None:
    ids = ("a", "b", "c", "d")
    index = {i: n for n, i in enumerate(ids)}
    scores = np.array([0.1, 0.9, 0.5, 0.9])
    assert top_k_ids(scores, ids, index, 3) == ["b", "d", "c"]
    assert top_k_ids(scores, ids, index, 3, exclude={"b", "zz"}) == ["d", "c", "a"]
    assert top_k_ids(scores, ids, index, 9, exclude=set(ids)) == []


def test_hybrid_inner_product_is_the_weighted_sum_of_cosines() -> None:
    rng = np.random.default_rng(0)
    visual = {i: rng.normal(size=6) for i in "abc"}
    cf = {i: rng.normal(size=3) for i in "abd"}
    w = 0.3
    hybrid = hybrid_vectors(visual, cf, w)
    assert set(hybrid) == {"a", "b", "c", "d"}
    assert all(v.shape == (9,) for v in hybrid.values())

    def cos(x: np.ndarray, y: np.ndarray) -> float:
        return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))

    expected = w * cos(visual["a"], visual["b"]) + (1 - w) * cos(cf["a"], cf["b"])
    assert float(hybrid["a"] @ hybrid["b"]) == pytest.approx(expected, rel=1e-5)
    assert not hybrid["c"][6:].any()  # no CF factor: that part is zero
    assert not hybrid["d"][:6].any()  # no picture
    assert float(np.linalg.norm(hybrid["a"])) == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="visual_weight"):
        hybrid_vectors(visual, cf, 1.5)


def small_catalogue() -> Interactions:
    # x and y are always taken together; z is popular on its own.
    triples = [("u1", "x", 1.0), ("u1", "y", 1.0), ("u2", "x", 1.0), ("u2", "y", 1.0)]
    triples += [(f"p{n}", "z", 1.0) for n in range(5)] + [("u3", "w", 1.0)]
    return Interactions.from_triples(triples)


def test_most_popular_streams_counts() -> None:
    pop = MostPopular(small_catalogue())
    assert pop.recommend("anyone", 2, exclude=()) == ["z", "x"]
    for _ in range(10):
        pop.observe("someone", "w", 1.0)
    assert pop.recommend("anyone", 1, exclude=()) == ["w"]
    assert pop.recommend("anyone", 2, exclude={"w"}) == ["z", "x"]


def test_decayed_popularity_follows_visrec_s_rule_and_forgets() -> None:
    day = 86_400_000
    # Training: z taken 5 times 20 days ago, x and y twice each 1 day ago.
    events = [("z", 1.0, 0)] * 5 + [("x", 1.0, 19 * day), ("y", 1.0, 19 * day)] * 2
    pop = DecayedPopular(small_catalogue(), events, half_life_s=7 * 86_400.0)
    assert pop.name == "most-popular, decayed (7-day half-life)"
    # 5 * 2**(-20/7) = 0.68 against 2 * 2**(-1/7) = 1.81: recency wins; all-time counts differ.
    assert pop.recommend("anyone", 3, exclude=())[:2] in (["x", "y"], ["y", "x"])
    assert MostPopular(small_catalogue()).recommend("anyone", 1, exclude=()) == ["z"]
    # Scores are w * 2 ** ((t - t0) / h): the same as visrec's popularity increments up to
    # a common factor, so the order matches the decayed counts at any time.
    pop.observe("someone", "w", 3.0, 20 * day)
    assert pop.recommend("anyone", 1, exclude=()) == ["w"]
    # Order of observation does not matter.
    again = DecayedPopular(small_catalogue(), list(reversed(events)), half_life_s=7 * 86_400.0)
    again.observe("someone", "w", 3.0, 20 * day)
    assert again.recommend("x", 4, exclude=()) == pop.recommend("x", 4, exclude=())


def test_random_items_never_returns_excluded_items() -> None:
    rand = RandomItems(small_catalogue(), seed=3)
    for _ in range(20):
        got = rand.recommend("u", 2, exclude={"x", "z"})
        assert sorted(got) == ["w", "y"]


def test_item_knn_uses_cosine_and_profiles() -> None:
    data = small_catalogue()
    offline = ItemKNN(data, live_profile=False)
    live = ItemKNN(data, live_profile=True)
    # u1 took x and y; nothing else co-occurs, so popularity decides nothing here: scores are 0.
    assert offline.recommend("new", 1, exclude=()) == ["z"]  # no profile: training popularity
    live.observe("new", "x", 1.0)
    assert live.recommend("new", 1, exclude={"x"}) == ["y"]
    offline.observe("new", "x", 1.0)
    assert offline.recommend("new", 1, exclude={"x"}) == ["z"]  # offline never learns


def test_offline_mf_falls_back_to_training_popularity() -> None:
    data = two_communities()
    model = fit_cf(data, CFParams(factors=4, iterations=5))
    mf = OfflineMF(data, model)
    assert mf.name == "MF ALS (offline)"
    assert mf.recommend("u0", 3, exclude=()) == model.recommend("u0", 3)
    pop = MostPopular(data).recommend("x", 3, exclude=())
    assert mf.recommend("stranger", 3, exclude=()) == pop


def test_vector_profile_ranks_by_cosine_to_the_profile() -> None:
    data = small_catalogue()
    vectors = {"x": np.array([1.0, 0.0]), "y": np.array([0.9, 0.1]), "z": np.array([0.0, 1.0])}
    prof = VectorProfile(data, vectors, "vectors")
    assert prof.recommend("new", 1, exclude=()) == ["z"]  # no profile yet: popularity
    prof.observe("new", "x", 1.0)
    assert prof.recommend("new", 2, exclude={"x"}) == ["y", "z"]

from __future__ import annotations

import threading

import numpy as np
import pytest

from models.exceptions import IndexInputError, SpaceError
from models.index import (
    FitParams,
    ItemIndex,
    Space,
    fit_space,
    raw_space,
    unit_rows,
    user_like_queries,
)


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 200 centres in a 32-d subspace: shaped like image embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, 32))
    latent = centres[rng.integers(0, 200, n)] + 0.3 * rng.standard_normal((n, 32))
    basis = np.linalg.qr(rng.standard_normal((dim, 32)))[0]
    x = latent @ basis.T + 0.02 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute(q: np.ndarray, x: np.ndarray, k: int, banned: set[int] = frozenset()) -> list[int]:
    scores = x @ q
    order = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in banned]
    return order[:k]


def test_unit_rows_normalise_and_reject_bad_input() -> None:
    out = unit_rows([[3.0, 4.0]], 2)
    assert out.dtype == np.float32 and np.allclose(out, [[0.6, 0.8]])
    for bad in ([[0.0, 0.0]], [[np.nan, 1.0]], [[1.0, 2.0, 3.0]]):
        with pytest.raises(IndexInputError):
            unit_rows(bad, 2)


def test_raw_search_matches_brute_force_best_first() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = ItemIndex(raw_space("m", 16))
    index.upsert_many([f"i{j}" for j in range(300)], x)
    q = rng.standard_normal((5, 16)).astype(np.float32)
    rows, scores = index.search(q, 10)
    for u in range(5):
        assert rows[u].tolist() == brute(q[u], x, 10)
        assert np.all(np.diff(scores[u]) <= 0)
        np.testing.assert_allclose(scores[u], x[rows[u]] @ q[u], rtol=1e-5)
    assert index.ids_of(rows[0][:2]) == [f"i{r}" for r in rows[0][:2]]


def test_unavailable_and_excluded_never_returned_and_k_still_filled() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 8)).astype(np.float32)
    index = ItemIndex(raw_space("m", 8))
    index.upsert_many([f"i{j}" for j in range(50)], x, [j % 5 != 0 for j in range(50)])
    q = x[:2] + 0.01
    top = index.search(q, 10)[0]
    banned = [top[0, :3].tolist(), top[1, :1].tolist()]
    rows, _ = index.search(q, 10, np.array([0, 3, 4]), np.array(banned[0] + banned[1]))
    for u in range(2):
        assert len(set(rows[u].tolist())) == 10
        assert not set(rows[u].tolist()) & set(banned[u])
        assert all(r % 5 != 0 for r in rows[u].tolist())


def test_k_larger_than_catalogue_pads_with_minus_one() -> None:
    index = ItemIndex(raw_space("m", 2))
    index.upsert_many(["a", "b", "c"], [[1, 0], [0, 1], [1, 1]], [True, True, False])
    rows, _ = index.search(np.array([[1.0, 0.0]]), 5)
    assert rows.shape == (1, 2) and set(rows[0].tolist()) == {0, 1}
    assert len(index) == 2 and index.size == 3


def test_upsert_replaces_remove_frees_availability_toggles() -> None:
    index = ItemIndex(raw_space("m", 2))
    index.upsert_many(["a", "b"], [[1, 0], [0, 1]])
    index.upsert("a", [0, 1])  # re-embedded: same row, new vector
    assert index.rows(["a", "b", "zz"]).tolist() == [0, 1, -1]
    np.testing.assert_allclose(index.vectors(index.rows(["a"])), [[0, 1]])
    assert index.set_available("a", False) and not index.available([0])[0]
    assert index.search(np.array([[0.0, 1.0]]), 2)[0][0].tolist() == [1]
    assert index.remove("b") and not index.remove("b")
    index.upsert("c", [1, 1])
    assert index.rows(["c"]).tolist() == [1]  # the freed row is reused
    assert index.row_bound == 2


def test_space_projection_is_orthonormal_and_keeps_inner_products() -> None:
    x = clustered(3000, 96)
    space = fit_space("m", x[:1500], 3000, FitParams(dims=40, ivf_min_items=10**9))
    p = space.projection
    assert p is not None and p.shape == (40, 96)
    np.testing.assert_allclose(p @ p.T, np.eye(40), atol=1e-5)
    assert space.meta["energy_kept"] > 0.99 and space.ivf is None
    y = space.project(x[1500:1600])  # items the fit did not see
    full = x[1500:1600] @ x[1500:1600].T
    assert np.abs(y @ y.T - full).max() < 0.02
    seen = space.project(x[:1500])  # inside the code range by construction: half a step off
    codes = space.encode(seen)
    assert codes.dtype == np.uint8
    assert np.all(np.abs(space.decode(codes) - seen) <= space.step / 2 + 1e-6)
    # items outside the fitted range are clipped, but inner products barely move
    dec = space.decode(space.encode(y))
    assert np.abs(dec @ dec.T - full).max() < 0.04


def test_space_round_trips_through_bytes_and_rejects_damage() -> None:
    x = clustered(2500, 64)
    space = fit_space("m", x, 2500, FitParams(dims=32, ivf_min_items=1000, k=20))
    assert space.ivf is not None and space.ivf.nprobe >= 1
    back = Space.from_bytes(space.to_bytes())
    assert back.id == space.id and back.fitted_on == 2500 and back.meta == space.meta
    np.testing.assert_array_equal(back.projection, space.projection)
    np.testing.assert_array_equal(back.lo, space.lo)
    assert back.ivf is not None and back.ivf.trained == space.ivf.trained
    blob = space.to_bytes()
    for bad in (b"junk", blob[:-10], blob + b"x", blob.replace(b'"dim": 32', b'"dim": 31')):
        with pytest.raises(SpaceError):
            Space.from_bytes(bad)
    other = fit_space("m", x[::2], 2500, FitParams(dims=32, ivf_min_items=1000, k=20))
    assert other.version != space.version


def test_compact_exact_search_equals_brute_force_in_the_space() -> None:
    x = clustered(2000, 64)
    space = fit_space("m", x, 2000, FitParams(dims=24, ivf_min_items=10**9))
    index = ItemIndex(space)
    index.upsert_many([f"i{j}" for j in range(2000)], x)
    assert index.kind == "exact" and index.dim == 24
    q = space.project(user_like_queries(x, 10, np.random.default_rng(0)))
    rows, _ = index.search(q, 20)
    y = space.project(x)
    for u in range(10):
        assert rows[u].tolist() == brute(q[u], y, 20)


def test_ivf_recall_against_full_dimension_exact_search() -> None:
    n = 20_000
    x = clustered(n, 128)
    rng = np.random.default_rng(5)
    space = fit_space(
        "m", x[rng.choice(n, 8000, replace=False)], n, FitParams(dims=64, ivf_min_items=0)
    )
    index = ItemIndex(space)
    for start in range(0, n, 5000):
        index.upsert_many([f"i{j}" for j in range(start, start + 5000)], x[start : start + 5000])
    assert index.kind == "ivf"
    q = user_like_queries(x, 100, rng)
    rows, _ = index.search(space.project(q), 100)
    truth = np.argsort(-(q @ x.T), axis=1)[:, :100]
    recall = np.mean(
        [len(set(a) & set(b)) / 100 for a, b in zip(rows.tolist(), truth.tolist(), strict=True)]
    )
    assert recall >= 0.95, recall
    # ~ codes + list entries + ids, far below the 512 bytes of float32 at this dim
    assert index.memory_bytes() / n < 400


def test_ivf_respects_exclusions_availability_and_updates() -> None:
    x = clustered(3000, 32)
    space = fit_space("m", x, 3000, FitParams(dims=16, ivf_min_items=0, k=20))
    index = ItemIndex(space)
    ids = [f"i{j}" for j in range(3000)]
    index.upsert_many(ids, x, [j % 3 != 0 for j in range(3000)])
    q = space.project(x[1:3])
    rows, _ = index.search(q, 20)
    banned = rows[0, :5].tolist()
    again, _ = index.search(q, 20, np.array([0, 5, 5]), np.array(banned))
    assert not set(again[0].tolist()) & set(banned)
    assert all(r % 3 != 0 for r in again.ravel().tolist() if r >= 0)
    assert again[1].tolist() == rows[1].tolist()
    # withdrawn, then re-listed; re-embedded elsewhere
    target = int(rows[1, 0])
    index.set_available(ids[target], False)
    assert target not in index.search(q[1:], 20)[0][0].tolist()
    index.set_available(ids[target], True)
    assert target in index.search(q[1:], 20)[0][0].tolist()
    index.upsert(ids[target], -x[target])
    assert target not in index.search(q[1:], 20)[0][0].tolist()


def test_changes_from_another_thread_while_searching() -> None:
    x = clustered(4000, 32)
    index = ItemIndex(raw_space("m", 32))
    index.upsert_many([f"i{j}" for j in range(2000)], x[:2000])
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for start in range(2000, 4000, 100):
                index.upsert_many(
                    [f"i{j}" for j in range(start, start + 100)], x[start : start + 100]
                )
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    while thread.is_alive():
        rows, _ = index.search(x[:4], 10)
        assert (rows >= 0).all()
    thread.join()
    assert not errors and index.size == 4000

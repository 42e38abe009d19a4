from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from models.hnsw import HnswStore
from models.index import (
    AnnIndex,
    AutoIndex,
    ExactIndex,
    HnswParams,
    ItemIndex,
    make_index,
    unit_vector,
)

Factory = Callable[[], ItemIndex]

FACTORIES: dict[str, Factory] = {
    "exact": lambda: ExactIndex(),
    "hnsw": lambda: AnnIndex(background=False),
    "auto": lambda: AutoIndex(64, background=False),
}


def _units(n: int, dim: int, seed: int = 0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    out: npt.NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _vec(index: ItemIndex, item_id: str) -> npt.NDArray[np.float32]:
    vec = index.get(item_id)
    assert vec is not None, item_id
    return vec


def _brute(
    x: npt.NDArray[np.float32], ids: list[str], q: npt.NDArray[np.float32], k: int, drop: set[str]
) -> list[str]:
    scores = x @ q
    order = sorted(
        (i for i in range(len(ids)) if ids[i] not in drop), key=lambda i: (-scores[i], ids[i])
    )
    return [ids[i] for i in order[:k]]


@pytest.fixture(params=sorted(FACTORIES))
def make(request: pytest.FixtureRequest) -> Factory:
    return FACTORIES[request.param]


def test_unit_vector_normalises_and_rejects_bad_input() -> None:
    v = unit_vector([3.0, 4.0])
    assert v.dtype == np.float32
    np.testing.assert_allclose(v, [0.6, 0.8], rtol=1e-6)
    for bad in ([0.0, 0.0], [np.nan, 1.0], [np.inf, 1.0], []):
        with pytest.raises(ValueError):
            unit_vector(bad)


def test_search_matches_brute_force_and_is_best_first(make: Factory) -> None:
    x = _units(300, 16)
    ids = [f"item-{i}" for i in range(300)]
    index = make()
    index.upsert_many(ids, x * 3.0, model_id="m")  # stored normalised
    assert len(index) == index.size == 300
    q = _units(1, 16, seed=1)[0]
    hits = index.search(q, 10)
    assert [h[0] for h in hits] == _brute(x, ids, q, 10, set())
    scores = [h[1] for h in hits]
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_allclose(scores, np.sort(x @ q)[::-1][:10], rtol=1e-5)


def test_get_returns_unit_float32_also_when_unavailable(make: Factory) -> None:
    index = make()
    index.upsert("a", [0.0, 2.0, 0.0], available=False, category="shoes", model_id="m")
    vec = index.get("a")
    assert vec is not None and vec.dtype == np.float32
    np.testing.assert_allclose(vec, [0.0, 1.0, 0.0])
    assert not index.is_available("a")
    assert index.category("a") == "shoes"
    assert index.get("missing") is None and not index.is_available("missing")
    assert "a" in index and "missing" not in index
    assert len(index) == 0 and index.size == 1
    assert index.search([0.0, 1.0, 0.0], 5) == []


def test_unavailable_and_excluded_never_returned_and_k_still_filled(make: Factory) -> None:
    x = _units(600, 16, seed=2)
    ids = [f"i{i:03d}" for i in range(600)]
    index = make()
    index.upsert_many(ids, x, model_id="m")
    q = x[0] + x[1]
    q /= np.linalg.norm(q)
    ranked = _brute(x, ids, q, 600, set())
    # The 100 nearest go unavailable and the next 50 are excluded: k must still be filled.
    for item_id in ranked[:100]:
        index.upsert(item_id, x[ids.index(item_id)], available=False, model_id="m")
    exclude = set(ranked[100:150])
    hits = index.search(q, 20, exclude=exclude)
    assert [h[0] for h in hits] == ranked[150:170]
    assert len(index) == 500


def test_k_larger_than_catalogue_returns_everything_available(make: Factory) -> None:
    x = _units(30, 8)
    ids = [f"i{i}" for i in range(30)]
    index = make()
    index.upsert_many(ids, x, model_id="m", available=[i % 3 != 0 for i in range(30)])
    hits = index.search(x[1], 100, exclude={"i1"})
    assert sorted(h[0] for h in hits) == sorted(f"i{i}" for i in range(30) if i % 3 != 0 and i != 1)
    assert index.search(x[1], 0) == []


def test_remove_and_readd_reuse_storage(make: Factory) -> None:
    x = _units(100, 8)
    ids = [f"i{i}" for i in range(100)]
    index = make()
    index.upsert_many(ids, x, model_id="m")
    assert index.remove("i5") and not index.remove("i5")
    assert index.get("i5") is None and index.size == 99
    assert all(h[0] != "i5" for h in index.search(x[5], 99))
    index.upsert("i5", x[6], model_id="m")  # re-added with another vector
    np.testing.assert_allclose(_vec(index, "i5"), x[6], rtol=1e-6)
    top = [h[0] for h in index.search(x[6], 2)]
    assert sorted(top) == ["i5", "i6"]


def test_ties_are_broken_by_item_id(make: Factory) -> None:
    index = make()
    for item_id in ("c", "a", "b", "d"):
        index.upsert(item_id, [1.0, 0.0], model_id="m")
    index.upsert("z", [0.0, 1.0], model_id="m")
    assert [h[0] for h in index.search([1.0, 0.0], 3)] == ["a", "b", "c"]


def test_search_many_equals_single_searches(make: Factory) -> None:
    x = _units(200, 12, seed=3)
    ids = [f"i{i}" for i in range(200)]
    index = make()
    index.upsert_many(ids, x, model_id="m")
    queries = _units(4, 12, seed=4)
    excludes = [set(), {"i1", "i2"}, set(ids[:150]), set()]
    batch = index.search_many(queries, 7, excludes)
    single = [index.search(q, 7, e) for q, e in zip(queries, excludes, strict=True)]
    assert [[h[0] for h in hits] for hits in batch] == [[h[0] for h in hits] for hits in single]
    # A matrix product and a matrix-vector product may round the last bit differently.
    np.testing.assert_allclose(
        np.array([h[1] for hits in batch for h in hits]),
        np.array([h[1] for hits in single for h in hits]),
        rtol=1e-5,
    )
    assert [h[0] for h in batch[2]] == _brute(x, ids, queries[2], 7, excludes[2])


def test_bad_shapes_and_values_are_rejected(make: Factory) -> None:
    index = make()
    index.upsert("a", [1.0, 0.0, 0.0], model_id="m")
    with pytest.raises(ValueError):
        index.upsert("b", [1.0, 0.0], model_id="m")  # dim differs from the model's
    with pytest.raises(ValueError):
        index.search([1.0, 0.0], 1)
    with pytest.raises(ValueError):
        index.search([np.nan, 0.0, 0.0], 1)
    with pytest.raises(ValueError):
        index.upsert("c", [0.0, 0.0, 0.0], model_id="m")
    with pytest.raises(ValueError):
        index.upsert_many(["x", "y"], np.ones((1, 3)), model_id="m")


def test_other_model_is_staged_until_switch(make: Factory) -> None:
    index = make()
    index.upsert("a", [1.0, 0.0], model_id="old")
    index.upsert("b", [0.0, 1.0], model_id="old")
    assert index.model_id == "old"
    # The new model has another dimension; its vectors wait aside.
    index.upsert("a", [0.0, 0.0, 1.0], model_id="new")
    index.upsert("b", [0.0, 1.0, 0.0], model_id="new")
    assert index.staged_models == {"new": 2}
    assert index.dim == 2 and [h[0] for h in index.search([1.0, 0.0], 1)] == ["a"]
    # A catalogue change arriving under the old model reaches the staged copy too.
    index.upsert("b", [0.0, 1.0], available=False, model_id="old")
    index.switch_model("new")
    assert index.model_id == "new" and index.dim == 3 and index.staged_models == {}
    np.testing.assert_allclose(_vec(index, "a"), np.array([0.0, 0.0, 1.0]))
    assert not index.is_available("b")
    assert [h[0] for h in index.search([0.0, 0.0, 1.0], 5)] == ["a"]
    index.switch_model("unseen")  # nothing staged: serves an empty index, not stale vectors
    assert index.size == 0 and index.get("a") is None and index.dim is None


def test_model_adopted_from_constructor() -> None:
    index = ExactIndex(model_id="m1")
    index.upsert("a", [1.0, 0.0], model_id="m2")
    assert index.model_id == "m1" and index.size == 0 and index.staged_models == {"m2": 1}


def test_exact_storage_grows_amortised_and_reuses_slots() -> None:
    index = ExactIndex()
    x = _units(3000, 8, seed=5)
    for i in range(3000):
        index.upsert(f"i{i}", x[i], model_id="m")
    grown = index.memory_bytes()
    assert grown >= 3000 * 8 * 4
    for i in range(1000):
        index.remove(f"i{i}")
    for i in range(1000):
        index.upsert(f"n{i}", x[i], model_id="m")
    assert index.memory_bytes() <= grown * 1.05  # freed rows were reused, no new block
    assert index.size == 3000
    assert [h[0] for h in index.search(x[0], 1)] == ["n0"]


def test_hnsw_tombstones_are_compacted() -> None:
    index = AnnIndex(background=False, params=HnswParams(compact_ratio=0.2))
    x = _units(400, 16, seed=6)
    ids = [f"i{i}" for i in range(400)]
    index.upsert_many(ids, x, model_id="m")
    before = index.memory_bytes()
    for item_id in ids[:200]:
        index.remove(item_id)
    assert index.backend == "hnsw" and index.size == 200
    assert index.memory_bytes() < before  # the graph was rebuilt without the removed nodes
    q = x[300]
    assert [h[0] for h in index.search(q, 10)] == _brute(x, ids, q, 10, set(ids[:200]))


def test_hnsw_reupsert_with_new_vector_replaces_it() -> None:
    index = AnnIndex(background=False)
    x = _units(50, 8, seed=7)
    index.upsert_many([f"i{i}" for i in range(50)], x, model_id="m")
    index.upsert("i0", x[1] * -1.0, model_id="m")
    np.testing.assert_allclose(_vec(index, "i0"), -x[1], rtol=1e-6)
    assert [h[0] for h in index.search(-x[1], 1)] == ["i0"]
    assert index.size == 50


def test_auto_index_migrates_and_replays_changes_made_during_the_build() -> None:
    index = make_index(500)
    x = _units(3000, 32, seed=8)
    ids = [f"i{i}" for i in range(3000)]
    index.upsert_many(ids[:400], x[:400], model_id="m")
    assert index.backend == "exact"
    index.upsert_many(ids[400:600], x[400:600], model_id="m")  # crosses the threshold
    # Changes while the background build may still run must survive the swap.
    index.upsert_many(ids[600:], x[600:], model_id="m")
    for item_id in ids[:100]:
        index.remove(item_id)
    index.upsert("i200", x[200], available=False, model_id="m")
    assert index.wait_idle(120)
    assert index.backend == "hnsw"
    assert index.size == 2900 and len(index) == 2899
    assert index.get("i0") is None and not index.is_available("i200")
    q = x[1000]
    assert [h[0] for h in index.search(q, 10)][:5] == _brute(
        x, ids, q, 5, set(ids[:100]) | {"i200"}
    )


def test_memory_bytes_counts_vectors_and_graph() -> None:
    x = _units(2000, 64, seed=9)
    ids = [f"i{i}" for i in range(2000)]
    exact, ann = ExactIndex(), AnnIndex(background=False)
    exact.upsert_many(ids, x, model_id="m")
    ann.upsert_many(ids, x, model_id="m")
    vectors = 2000 * 64 * 4
    assert vectors <= exact.memory_bytes() < 2 * vectors
    assert ann.memory_bytes() > vectors + 2000 * 32 * 4  # level-0 links: 2 * M int32 per node


def test_hnsw_params_are_validated() -> None:
    with pytest.raises(ValueError):
        HnswParams(m=1)
    with pytest.raises(ValueError):
        HnswParams(target_recall=1.5)
    with pytest.raises(ValueError):
        HnswParams(ef_search=100, max_ef_search=10)
    with pytest.raises(ValueError):
        AutoIndex(-1)


@pytest.mark.slow
def test_hnsw_recall_at_100_on_100k_random_unit_vectors_dim_1280() -> None:
    n, dim, k, n_queries = 100_000, 1280, 100, 50
    x = _units(n, dim, seed=10)
    ids = [str(i) for i in range(n)]
    queries = _units(n_queries, dim, seed=11)
    started = time.perf_counter()
    index = AnnIndex(background=False)
    index.upsert_many(ids, x, model_id="m")
    built = time.perf_counter() - started
    truth = np.argsort(-(queries @ x.T), axis=1)[:, :k]
    found = index.search_many(queries, k)
    recall = np.mean(
        [
            len({int(h[0]) for h in hits} & set(row.tolist())) / k
            for hits, row in zip(found, truth, strict=True)
        ]
    )
    print(f"build+calibrate {built:.1f}s recall@{k}={recall:.4f}")
    assert all(len(hits) == k for hits in found)
    assert recall >= 0.95


def test_background_build_failure_is_raised_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_build(*args: object, **kwargs: object) -> None:
        raise MemoryError("no room for the graph")

    monkeypatch.setattr(HnswStore, "build", broken_build)
    index = make_index(10)
    x = _units(20, 8, seed=12)
    index.upsert_many([f"i{i}" for i in range(20)], x, model_id="m")
    assert index.wait_idle(30)
    assert index.backend == "exact" and index.size == 20  # still serving from the exact store
    with pytest.raises(RuntimeError, match="background index build failed"):
        index.upsert("late", x[0], model_id="m")


def test_hnsw_beam_is_calibrated_to_the_target_recall() -> None:
    # A sparse graph on high-dimensional random data needs a wide beam: calibration finds it.
    params = HnswParams(m=8, ef_construction=16, ef_search=16, calibration_k=50)
    x = _units(2000, 128, seed=13)
    ids = [str(i) for i in range(2000)]
    ann = AnnIndex(params=params, background=False)
    ann.upsert_many(ids, x, model_id="m")
    fixed = AnnIndex(params=HnswParams(m=8, ef_construction=16, ef_search=16, target_recall=None))
    fixed.upsert_many(ids, x, model_id="m")
    assert ExactIndex().search_beam is None and fixed.search_beam == 16
    beam = ann.search_beam
    assert beam is not None and beam > 50
    queries = _units(20, 128, seed=14)

    def recall(index: ItemIndex) -> float:
        got = [
            len({h[0] for h in index.search(q, 50)} & set(_brute(x, ids, q, 50, set()))) / 50
            for q in queries
        ]
        return float(np.mean(got))

    assert recall(ann) >= 0.9 > recall(fixed)


def test_hnsw_beam_is_rechecked_and_only_widened_as_the_catalogue_doubles() -> None:
    params = HnswParams(m=8, ef_construction=16, ef_search=16, calibration_k=50)
    x = _units(2000, 128, seed=15)
    ids = [str(i) for i in range(2000)]
    ann = AnnIndex(params=params, background=False)
    ann.upsert_many(ids[:1000], x[:1000], model_id="m")
    first = ann.search_beam
    for i in range(1000, 2000):  # one at a time, as the item-vector consumer does
        ann.upsert(ids[i], x[i], model_id="m")
    second = ann.search_beam
    assert first is not None and second is not None and second >= first
    queries = _units(20, 128, seed=16)
    got = [
        len({h[0] for h in ann.search(q, 50)} & set(_brute(x, ids, q, 50, set()))) / 50
        for q in queries
    ]
    assert float(np.mean(got)) >= 0.9


def test_batch_reads_equal_one_by_one_reads(make: Factory) -> None:
    x = _units(200, 16, seed=3)
    ids = [f"item-{i}" for i in range(200)]
    index = make()
    index.upsert_many(ids, x, available=[i % 7 != 0 for i in range(200)], model_id="m")
    index.remove("item-5")
    asked = ["item-3", "missing", "item-5", "item-7", "item-199", "item-3"]
    found, vectors = index.get_many(asked)
    assert found == ["item-3", "item-7", "item-199", "item-3"]  # order kept, unknown skipped
    assert vectors.dtype == np.float32 and vectors.shape == (4, 16)
    for row, item_id in enumerate(found):
        np.testing.assert_array_equal(vectors[row], _vec(index, item_id))
    assert index.available_flags(asked) == [index.is_available(i) for i in asked]
    assert index.available_flags(asked) == [True, False, False, False, True, True]
    empty_found, empty = index.get_many([])
    assert empty_found == [] and empty.shape == (0, 16)
    assert ExactIndex().get_many(["a"])[0] == [] and ExactIndex().available_flags(["a"]) == [False]


def test_consistent_holds_off_changes_from_other_threads() -> None:
    import threading

    index = ExactIndex()
    index.upsert("a", [1.0, 0.0], model_id="m")
    done = threading.Event()

    def writer() -> None:
        index.upsert("b", [0.0, 1.0], model_id="m")
        done.set()

    with index.consistent():
        thread = threading.Thread(target=writer)
        thread.start()
        assert not done.wait(0.2)  # the upsert waits for the block
        assert index.size == 1
    thread.join(5)
    assert done.is_set() and index.size == 2

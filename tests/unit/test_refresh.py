from __future__ import annotations

import numpy as np
import pytest

from models import profile
from models.candidates import PopularBlock
from models.index import ItemIndex, raw_space
from models.interest import InterestColumns
from models.profile import BatchStates
from models.ranking import RankParams
from models.refresh import refresh_batch
from streams.settings import InterestSettings
from tests.reference.ranking import DictIndex, reference_lists

NOW = 1_764_000_000_000


def _world(seed: int, n_items: int = 60, dim: int = 8):
    rng = np.random.default_rng(seed)
    ids = [f"it{j:03d}" for j in range(n_items)]
    vecs = {i: rng.standard_normal(dim) for i in ids[:-5]}  # the last five have no vector yet
    unavailable = set(rng.choice(ids, 6, replace=False).tolist())
    users = []
    for u in range(12):
        k = int(rng.integers(1, 25))
        # The last two users touched only items without a vector yet: no user vector.
        pool = ids[-5:] if u >= 10 else ids
        k = min(k, len(pool))
        items = sorted(rng.choice(pool, k, replace=False).tolist())
        cols = InterestColumns(
            items,
            rng.normal(0, 2, k),
            rng.normal(0, 2, k),
            NOW - int(rng.integers(0, 3_600_000)),
            k,
        )
        users.append((f"u{u}", cols, NOW + int(rng.integers(0, 60_000))))
    co = {
        i: sorted(
            ((j, float(rng.integers(1, 6))) for j in rng.choice(ids, 8, replace=False).tolist()),
            key=lambda p: -p[1],
        )
        for i in ids
        if rng.random() < 0.7
    }
    popular = [(i, float(rng.exponential())) for i in rng.choice(ids, 25, replace=False).tolist()]
    return vecs, unavailable, users, co, popular


def _batch(vecs, unavailable, users, co, popular, params: RankParams):
    index = ItemIndex(raw_space("m", 8))
    ids = list(vecs)
    index.upsert_many(ids, np.stack([vecs[i] for i in ids]), [i not in unavailable for i in ids])
    states = BatchStates.of([(u, c) for u, c, _ in users], [now for _, _, now in users])
    block = PopularBlock.prepare(popular, index, max(params.candidates, params.top_k))
    co_arrays = {i: ([j for j, _ in lst], np.array([s for _, s in lst])) for i, lst in co.items()}
    from models.refresh import co_per_contributor

    per = co_per_contributor(params)
    co_arrays = {i: (a[:per], b[:per]) for i, (a, b) in co_arrays.items()}
    lists = refresh_batch(
        states, index, co_arrays, block, InterestSettings().interest_params(), params
    )
    return [lists.items(u) for u in range(len(users))]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(
    "params",
    [
        InterestSettings(top_k=5, candidates=10).rank_params(),
        InterestSettings(top_k=20, candidates=100).rank_params(),
        InterestSettings(top_k=8, candidates=6, co_weight=2.0, popularity_weight=0.5).rank_params(),
        InterestSettings(top_k=6, candidates=12, mmr_lambda=0.6).rank_params(),
        InterestSettings(
            top_k=8, candidates=12, popularity_weight=0.3, popularity_prior=6.0
        ).rank_params(),
    ],
    ids=["small", "defaults", "co-heavy", "mmr", "popularity-prior"],
)
def test_batch_refresh_equals_the_per_user_reference(seed: int, params: RankParams) -> None:
    vecs, unavailable, users, co, popular = _world(seed)
    got = _batch(vecs, unavailable, users, co, popular, params)
    want = reference_lists(
        users,
        DictIndex(vecs, unavailable),
        co,
        popular,
        InterestSettings().interest_params(),
        params,
    )
    for g, w in zip(got, want, strict=True):
        assert [i for i, _, _ in g] == [i for i, _, _ in w]
        assert [r for _, _, r in g] == [r for _, _, r in w]
        np.testing.assert_allclose([s for _, s, _ in g], [s for _, s, _ in w], atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 7, 40])
def test_user_vectors_in_chunks_equal_the_whole_batch_at_once(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunking bounds the rows gathered at once; each user is still taken whole, so the
    vectors are the same to the bit (a user larger than a chunk is a chunk of its own)."""
    (
        vecs,
        _,
        users,
        _,
        _,
    ) = _world(3)
    index = ItemIndex(raw_space("m", 8))
    ids = list(vecs)
    index.upsert_many(ids, np.stack([vecs[i] for i in ids]), [True] * len(ids))
    states = BatchStates.of([(u, c) for u, c, _ in users], [now for _, _, now in users])
    rows = index.rows(states.item_ids)
    params = InterestSettings().interest_params()
    whole, whole_ok = profile.user_vectors(states, rows, index, params)
    monkeypatch.setattr(profile, "PROFILE_CHUNK_ROWS", chunk)
    got, ok = profile.user_vectors(states, rows, index, params)
    np.testing.assert_array_equal(ok, whole_ok)
    np.testing.assert_array_equal(got, whole)
    assert ok[:10].all() and not ok[10:].any()  # the last two users have no vector
    empty, _ = profile.user_vectors(BatchStates.of([], []), rows[:0], index, params)
    assert empty.shape == (0, 8)

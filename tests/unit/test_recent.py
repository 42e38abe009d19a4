"""Recent interests (``models.recent``): the latest items as separate interests in the ranking."""

from __future__ import annotations

import numpy as np
import pytest

from models.candidates import CoLists, PopularBlock
from models.index import ItemIndex, raw_space
from models.interest import InterestColumns
from models.profile import BatchStates, profile_batch
from models.ranking import RankParams, rank_batch
from models.recent import RecentInterests
from streams.settings import InterestSettings

NOW_MS = 1_764_000_000_000


def _unit(v: list[float]) -> list[float]:
    a = np.asarray(v, dtype=np.float64)
    return (a / np.linalg.norm(a)).tolist()


def _index(items: dict[str, list[float]]) -> ItemIndex:
    index = ItemIndex(raw_space("m", len(next(iter(items.values())))))
    index.upsert_many(list(items), np.array([_unit(v) for v in items.values()]))
    return index


def _rank(
    index: ItemIndex, users: list[tuple[str, InterestColumns]], **params: float | int
) -> list[list[tuple[str, float, str]]]:
    settings = InterestSettings.model_validate({"popularity_weight": 0.0, **params})
    states = BatchStates.of(users, [NOW_MS] * len(users))
    profiles = profile_batch(states, index, settings.interest_params())
    rank = settings.rank_params()
    popular = PopularBlock.prepare([], index, rank.candidates)
    lists = rank_batch(profiles, index, CoLists.of({}, index), popular, rank)
    return [lists.items(u) for u in range(len(users))]


def _state(items: list[str], log_long: list[float], log_short: list[float]) -> InterestColumns:
    return InterestColumns(items, np.array(log_long), np.array(log_short), NOW_MS, len(items))


def test_recent_items_are_those_with_the_largest_short_term_weight() -> None:
    index = _index({i: [float(n + 1), 1.0, 0.0] for n, i in enumerate("abcdef")})
    users = [
        ("u0", _state(["a", "b", "c", "d"], [5.0, 1.0, 1.0, 1.0], [0.0, 3.0, 2.0, 3.0])),
        ("u1", _state(["e", "zz", "f"], [1.0, 1.0, 1.0], [1.0, 9.0, 2.0])),  # zz: no vector
    ]
    states = BatchStates.of(users, [NOW_MS, NOW_MS])
    profiles = profile_batch(states, index, InterestSettings().interest_params())
    recent = RecentInterests.of(profiles, index, 2)
    assert recent.user.tolist() == [0, 0, 1, 1]
    # u0: b and d tie on the short weight (item id breaks it); u1: zz has no vector.
    assert index.ids_of(recent.row) == ["b", "d", "f", "e"]
    assert np.allclose(recent.vectors, index.vectors(recent.row))


def test_scores_are_the_documented_blend_over_every_unseen_item() -> None:
    rng = np.random.default_rng(3)
    items = {f"i{n:02d}": rng.standard_normal(8).tolist() for n in range(60)}
    index = _index(items)
    ids = list(items)
    users = []
    for u in range(4):
        touched = sorted(rng.choice(ids, 6, replace=False).tolist())
        users.append((f"u{u}", _state(touched, rng.normal(0, 1, 6), rng.normal(0, 1, 6))))
    lam, m = 0.6, 3
    got = _rank(index, users, recent_weight=lam, recent_items=m, candidates=60, top_k=10)

    states = BatchStates.of(users, [NOW_MS] * len(users))
    profiles = profile_batch(states, index, InterestSettings().interest_params())
    unit = index.vectors(index.rows(ids)).astype(np.float64)
    for u, (_, cols) in enumerate(users):
        latest = np.argsort(-cols.log_short, kind="stable")[:m]
        recent = unit[[ids.index(cols.item_ids[j]) for j in latest]]
        score = (1 - lam) * unit @ profiles.vectors[u] + lam * (unit @ recent.T).max(axis=1)
        score[[ids.index(i) for i in cols.item_ids]] = -np.inf  # seen
        want = np.argsort(-score, kind="stable")[:10]
        assert [i for i, _, _ in got[u]] == [ids[j] for j in want]
        assert np.allclose([s for _, s, _ in got[u]], score[want], atol=1e-5)


def test_an_item_near_one_recent_interest_beats_the_average_of_two() -> None:
    # The shopper looked at a boot and a lamp: "middle" is closest to their average,
    # "boot2" and "lamp2" are each close to one of them.
    index = _index(
        {
            "boot": [1.0, 0.0, 0.0],
            "lamp": [0.0, 1.0, 0.0],
            "middle": [1.0, 1.0, 0.05],
            "boot2": [1.0, 0.1, 0.1],
            "lamp2": [0.1, 1.0, 0.1],
            "far": [0.0, 0.0, 1.0],
        }
    )
    user = [("u", _state(["boot", "lamp"], [0.0, 0.0], [0.0, 0.0]))]
    plain = _rank(index, user, candidates=1, top_k=1)
    assert [i for i, _, _ in plain[0]] == ["middle"]
    recent = _rank(index, user, candidates=2, top_k=3, recent_weight=0.8, recent_items=2)
    assert [i for i, _, _ in recent[0]][:2] == ["boot2", "lamp2"]
    assert [r for _, _, r in recent[0]][:2] == ["similar_to:boot", "similar_to:lamp"]


def test_zero_weight_is_the_ranking_without_recent_interests() -> None:
    rng = np.random.default_rng(5)
    items = {f"i{n:02d}": rng.standard_normal(6).tolist() for n in range(40)}
    index = _index(items)
    users = [("u", _state(["i01", "i02", "i03"], [0.0, 1.0, 2.0], [2.0, 1.0, 0.0]))]
    assert _rank(index, users, recent_items=5) == _rank(index, users)


@pytest.mark.parametrize(
    "bad", [{"recent_weight": 1.5}, {"recent_weight": -0.1}, {"recent_items": 0}]
)
def test_rank_params_reject_bad_recent_settings(bad: dict[str, float]) -> None:
    base = InterestSettings().rank_params()
    with pytest.raises(ValueError):
        RankParams(**{**{f: getattr(base, f) for f in base.__slots__}, **bad})

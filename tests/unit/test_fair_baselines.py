"""Live-profile baselines with visrec's information and decay (``models.offline.baselines``)."""

from __future__ import annotations

import numpy as np

from models.index import ItemIndex, raw_space
from models.interest import InterestColumns, log_increment
from models.offline.baselines import ItemKNN, RuleProfile, UserHistories
from models.offline.cf import Interactions
from models.profile import BatchStates, profile_batch
from streams.settings import InterestSettings

HOUR_MS = 3_600_000
T_MS = 1_764_000_000_000


def _catalogue(n: int) -> Interactions:
    return Interactions.from_triples([(f"p{k}", f"i{k}", 1.0 + k) for k in range(n)])


def test_rule_profile_ranks_by_visrecs_own_user_vector() -> None:
    rng = np.random.default_rng(7)
    ids = [f"i{k}" for k in range(12)]
    vectors = {i: rng.standard_normal(5) for i in ids}
    params = InterestSettings().interest_params()
    # Training events days ago, then a session: times, weights and a repeated item.
    events = [("i0", "click", 0), ("i1", "view", 2), ("i2", "purchase", 30), ("i3", "click", 70)]
    events += [("i4", "click", 71), ("i3", "view", 71.5)]
    history = [("u", i, params.weight(kind), T_MS + int(h * HOUR_MS)) for i, kind, h in events]
    baseline = RuleProfile(_catalogue(12), vectors, params, "rule", history[:-2])
    for _, item, weight, ts in history[-2:]:
        baseline.observe("u", item, weight, ts)

    # visrec: the apply rule's log weights, then the batch profile at the last event's time.
    logs: dict[str, tuple[float, float]] = {}
    for item, kind, h in events:
        inc = log_increment(kind, T_MS + int(h * HOUR_MS), params)
        old = logs.get(item, (-np.inf, -np.inf))
        logs[item] = (float(np.logaddexp(old[0], inc[0])), float(np.logaddexp(old[1], inc[1])))
    items = sorted(logs)
    cols = InterestColumns(
        items,
        np.array([logs[i][0] for i in items]),
        np.array([logs[i][1] for i in items]),
        history[-1][3],
    )
    index = ItemIndex(raw_space("m", 5))
    index.upsert_many(ids, np.array([vectors[i] / np.linalg.norm(vectors[i]) for i in ids]))
    profile = profile_batch(BatchStates.of([("u", cols)], [history[-1][3]]), index, params)
    scores = index.vectors(index.rows(ids)) @ profile.vectors[0]
    want = [ids[k] for k in np.argsort(-scores) if ids[k] not in logs][:5]
    assert baseline.recommend("u", 5, exclude=set(logs)) == want


def test_rule_profile_without_history_falls_back_to_popularity() -> None:
    vectors = {"i0": np.array([1.0, 0.0]), "i1": np.array([0.0, 1.0]), "i2": np.array([1.0, 1.0])}
    baseline = RuleProfile(_catalogue(3), vectors, InterestSettings().interest_params(), "r")
    assert baseline.recommend("new", 3, exclude=()) == ["i2", "i1", "i0"]
    baseline.observe("new", "unknown-item", 1.0, T_MS)  # no vector: still no profile
    assert baseline.recommend("new", 1, exclude=()) == ["i2"]


def test_histories_weigh_items_by_their_share_of_the_blended_interest() -> None:
    params = InterestSettings(half_life_long_s=86400.0, half_life_short_s=3600.0).interest_params()
    h = UserHistories(params)
    h.add("u", 5, 1.0, T_MS)  # a day and an hour before the last event
    h.add("u", 9, 1.0, T_MS + 24 * HOUR_MS)
    h.add("u", 9, 1.0, T_MS + 25 * HOUR_MS)
    rows, long, short = h.weights("u")
    assert rows.tolist() == [5, 9]
    assert np.allclose(long, [2.0 ** (-25 / 24), 2.0 ** (-1 / 24) + 1.0])
    assert np.allclose(short, [2.0**-25, 0.5 + 1.0])
    _, shares = h.shares("u")
    b = params.short_term_weight
    want = (1 - b) * long / long.sum() + b * short / short.sum()
    assert np.allclose(shares, want) and np.isclose(shares.sum(), 1.0)


def test_item_knn_with_decay_follows_the_latest_taste() -> None:
    # Two taste groups; the user liked group A long ago and group B in the last hour.
    triples = [(f"a{u}", f"A{k}", 1.0) for u in range(3) for k in range(3)]
    triples += [(f"b{u}", f"B{k}", 1.0) for u in range(3) for k in range(3)]
    train = Interactions.from_triples(triples)
    params = InterestSettings().interest_params()
    history = [("u", "A0", 1.0, T_MS), ("u", "A1", 1.0, T_MS), ("u", "B0", 1.0, T_MS)]
    history += [("u", "B1", 1.0, T_MS + 60 * 24 * HOUR_MS)]
    decayed = ItemKNN(train, live_profile=True, decay=params, history=history)
    seen = {"A0", "A1", "B0", "B1"}
    assert decayed.recommend("u", 1, exclude=seen) == ["B2"]
    plain = ItemKNN(train, live_profile=True)
    for user, item, weight, ts in history:
        plain.observe(user, item, weight, ts)
    assert plain.recommend("u", 2, exclude=seen) == ["A2", "B2"]  # a tie, A first by id
    assert decayed.recommend("v", 1, exclude=()) == ["A0"]  # no history: training popularity
    decayed.observe("v", "B0", 1.0, T_MS)  # live events count too
    assert decayed.recommend("v", 2, exclude={"B0"}) == ["B1", "B2"]

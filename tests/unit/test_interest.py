from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.interest import (
    LN2,
    MAX_EVENT_WEIGHT,
    MAX_SCORE_EXPONENT,
    T0_MS,
    InterestColumns,
    UserInterest,
    decay_score,
    log_increment,
    score_increment,
)
from schemas import EventType, UserEvent
from schemas.base import MAX_TS_MS
from streams.settings import InterestSettings
from tests.reference.interest import (
    apply_events,
    blend_columns,
    blend_vector,
    logaddexp,
    short_term_blend,
    top_contributor_ids,
    top_contributors,
    user_vector,
)

P = InterestSettings().interest_params()
DAY_MS = 86_400_000
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
TYPES = list(EventType)


def ev(
    eid: str, item: str, ts: int, kind: EventType = EventType.CLICK, user: str = "u1"
) -> UserEvent:
    return UserEvent(event_id=eid, user_id=user, item_id=item, type=kind, ts_ms=ts)


def random_events(rng: random.Random, n: int, n_items: int, span_ms: int) -> list[UserEvent]:
    return [
        ev(
            f"e{k}",
            f"item-{rng.randrange(n_items)}",
            NOW - rng.randrange(span_ms),
            rng.choice(TYPES),
        )
        for k in range(n)
    ]


def unit_vectors(items: list[str], dim: int, seed: int) -> dict[str, np.ndarray]:
    gen = np.random.default_rng(seed)
    out = {}
    for item in items:
        v = gen.standard_normal(dim)
        out[item] = v / np.linalg.norm(v)
    return out


def assert_states_close(a: UserInterest, b: UserInterest, tol: float) -> None:
    assert [w.item_id for w in a.weights] == [w.item_id for w in b.weights]
    for x, y in zip(a.weights, b.weights, strict=True):
        assert abs(x.log_long - y.log_long) <= tol
        assert abs(x.log_short - y.log_short) <= tol
        assert x.last_ts_ms == y.last_ts_ms
    assert (a.last_ts_ms, a.n_events) == (b.last_ts_ms, b.n_events)


def test_order_independence_of_state_and_vector() -> None:
    rng = random.Random(7)
    events = random_events(rng, 400, 40, 5 * DAY_MS)
    vecs = unit_vectors([f"item-{i}" for i in range(40)], 64, seed=1)
    base = apply_events(UserInterest.empty(), events, P, max_items=200)
    u0 = user_vector(base, vecs, NOW, P)
    assert u0 is not None
    for _ in range(5):
        shuffled = events[:]
        rng.shuffle(shuffled)
        other = apply_events(UserInterest.empty(), shuffled, P, max_items=200)
        assert_states_close(base, other, 1e-9)
        u1 = user_vector(other, vecs, NOW, P)
        assert u1 is not None
        assert np.max(np.abs(u0 - u1)) <= 1e-9


def test_split_application_equals_one_pass() -> None:
    rng = random.Random(3)
    events = random_events(rng, 300, 25, 3 * DAY_MS)
    whole = apply_events(UserInterest.empty(), events, P, max_items=200)
    first = apply_events(UserInterest.empty(), events[:123], P, max_items=200)
    both = apply_events(first, events[123:], P, max_items=200)
    assert_states_close(whole, both, 1e-9)


def test_duplicate_event_ids_apply_once() -> None:
    rng = random.Random(11)
    events = random_events(rng, 100, 10, DAY_MS)
    redelivered = events + rng.sample(events, 50)
    once = apply_events(UserInterest.empty(), events, P, max_items=200)
    twice = apply_events(UserInterest.empty(), redelivered, P, max_items=200)
    assert once == twice
    assert twice.n_events == 100


def test_log_weight_matches_direct_decay_formula() -> None:
    # Timestamps near T0 keep 2 ** ((t - T0) / h) small enough for the direct linear sum.
    rng = random.Random(5)
    events = [
        ev(
            f"e{k}",
            f"item-{k % 4}",
            T0_MS + rng.randrange(-3 * 3_600_000, 3 * 3_600_000),
            rng.choice(TYPES),
        )
        for k in range(60)
    ]
    state = apply_events(UserInterest.empty(), events, P, max_items=200)
    for w in state.weights:
        mine = [e for e in events if e.item_id == w.item_id]
        direct_long = sum(
            P.weight(e.type) * 2 ** ((e.ts_ms - T0_MS) / 1000 / P.half_life_long_s) for e in mine
        )
        direct_short = sum(
            P.weight(e.type) * 2 ** ((e.ts_ms - T0_MS) / 1000 / P.half_life_short_s) for e in mine
        )
        assert w.log_long == pytest.approx(math.log(direct_long), abs=1e-12)
        assert w.log_short == pytest.approx(math.log(direct_short), abs=1e-12)
        assert w.last_ts_ms == max(e.ts_ms for e in mine)


def test_user_vector_matches_direct_formula() -> None:
    rng = random.Random(9)
    events = random_events(rng, 80, 6, 2 * DAY_MS)
    vecs = unit_vectors([f"item-{i}" for i in range(6)], 16, seed=2)
    state = apply_events(UserInterest.empty(), events, P, max_items=200)
    now = max(e.ts_ms for e in events) + 600_000

    def direction(half_life_s: float) -> np.ndarray:
        total = np.zeros(16)
        for e in events:
            total += (
                P.weight(e.type) * 2 ** (-(now - e.ts_ms) / 1000 / half_life_s) * vecs[e.item_id]
            )
        return total / np.linalg.norm(total)

    b = P.short_term_weight * 2 ** (-(now - state.last_ts_ms) / 1000 / P.half_life_short_s)
    assert short_term_blend(state, now, P) == pytest.approx(b, rel=1e-15)
    expected = (1 - b) * direction(P.half_life_long_s) + b * direction(P.half_life_short_s)
    expected /= np.linalg.norm(expected)
    got = user_vector(state, vecs, now, P)
    assert got is not None
    assert np.max(np.abs(got - expected)) <= 1e-12
    assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-12)


def test_extreme_timestamps_stay_finite() -> None:
    events = [
        ev("a", "x", 0, EventType.PURCHASE),
        ev("b", "y", MAX_TS_MS, EventType.VIEW),
        ev("c", "x", MAX_TS_MS, EventType.CLICK),
        ev("d", "z", 1),
    ]
    vecs = unit_vectors(["x", "y", "z"], 8, seed=3)
    state = apply_events(UserInterest.empty(), events, P, max_items=200)
    for w in state.weights:
        assert math.isfinite(w.log_long) and math.isfinite(w.log_short)
    for now in (0, T0_MS, MAX_TS_MS):
        u = user_vector(state, vecs, now, P)
        assert u is not None and np.all(np.isfinite(u))
        assert np.linalg.norm(u) == pytest.approx(1.0, abs=1e-12)
    assert math.isfinite(score_increment(EventType.PURCHASE, MAX_TS_MS, P))
    assert score_increment(EventType.PURCHASE, MAX_TS_MS, P) == 3.0 * 2.0**MAX_SCORE_EXPONENT
    assert score_increment(EventType.VIEW, 0, P) >= 0.0
    assert decay_score(score_increment(EventType.CLICK, MAX_TS_MS, P), 0, P) > 0
    assert decay_score(float("nan"), NOW, P) == 0.0


def test_corrupt_item_vector_is_ignored() -> None:
    state = apply_events(UserInterest.empty(), [ev("a", "x", NOW), ev("b", "y", NOW)], P, 10)
    good = unit_vectors(["x"], 4, seed=1)["x"]
    u = user_vector(state, {"x": good, "y": np.array([np.nan, 0, 0, 0])}, NOW, P)
    assert u is not None
    assert np.allclose(u, good, atol=1e-12)
    with pytest.raises(ValueError, match="dim"):
        user_vector(state, {"x": good, "y": np.ones(5) / math.sqrt(5)}, NOW, P)


def test_blend_vector_from_gathered_rows_equals_user_vector() -> None:
    rng = random.Random(4)
    events = random_events(rng, 60, 8, DAY_MS)
    vecs = unit_vectors([f"item-{i}" for i in range(8)], 16, seed=5)
    vecs["item-3"] = np.full(16, np.nan)  # corrupt: skipped by both
    state = apply_events(UserInterest.empty(), events, P, max_items=200)
    now = max(e.ts_ms for e in events) + 1000
    embedded = [w for w in state.weights if w.item_id != "item-5"]  # item-5: pending
    rows = np.stack([vecs[w.item_id] for w in reversed(embedded)]).astype(np.float32)
    got = blend_vector(state, list(reversed(embedded)), rows, now, P)
    pending = {k: v for k, v in vecs.items() if k != "item-5"}
    want = user_vector(state, {k: v.astype(np.float32) for k, v in pending.items()}, now, P)
    assert got is not None and want is not None
    assert np.max(np.abs(got - want)) <= 1e-12
    assert blend_vector(state, embedded[:1], np.full((1, 16), np.inf), now, P) is None
    with pytest.raises(ValueError, match="one vector row"):
        blend_vector(state, embedded, rows[:1], now, P)


def test_column_form_gives_the_same_vector_and_contributors() -> None:
    rng = random.Random(11)
    for trial in range(20):
        events = random_events(rng, rng.randrange(1, 120), rng.randrange(1, 30), 3 * DAY_MS)
        state = apply_events(UserInterest.empty(), events, P, max_items=200)
        cols = InterestColumns.of(state)
        assert cols.item_ids == [w.item_id for w in state.weights]
        assert (cols.last_ts_ms, cols.n_events) == (state.last_ts_ms, state.n_events)
        now = max(e.ts_ms for e in events) + rng.randrange(0, DAY_MS)
        for k in (1, 3, 10, 50):
            want = [i for i, _ in top_contributors(state, k, now_ms=now, params=P)]
            assert top_contributor_ids(cols, k, now, P) == want, (trial, k)
        vecs = unit_vectors(cols.item_ids, 8, seed=trial)
        positions = np.arange(0, len(cols.item_ids), 2)  # every other item has a vector
        rows = np.stack([vecs[cols.item_ids[p]] for p in positions])
        got = blend_columns(cols, positions, rows, now, P)
        have = {cols.item_ids[p]: vecs[cols.item_ids[p]] for p in positions}
        want_vec = user_vector(state, have, now, P)
        assert got is not None and want_vec is not None
        assert np.max(np.abs(got - want_vec)) <= 1e-12
    assert top_contributor_ids(InterestColumns.of(UserInterest.empty()), 5, NOW, P) == []


def test_short_term_session_fades() -> None:
    history = [ev(f"h{k}", "old", NOW - 20 * DAY_MS + k * 1000) for k in range(10)]
    session = [ev(f"s{k}", "new", NOW + k * 1000) for k in range(2)]
    state = apply_events(UserInterest.empty(), history + session, P, max_items=200)
    vecs = {"old": np.array([1.0, 0.0]), "new": np.array([0.0, 1.0])}
    last = state.last_ts_ms
    long_only = replace(P, short_term_weight=0.0)
    u_long = user_vector(state, vecs, last, long_only)
    assert u_long is not None
    sims = []
    half = int(P.half_life_short_s * 1000)
    for k in (0, 1, 2, 4, 8, 40):
        u = user_vector(state, vecs, last + k * half, P)
        assert u is not None
        sims.append(float(u @ vecs["new"]))
        assert short_term_blend(state, last + k * half, P) == pytest.approx(
            P.short_term_weight * 2.0**-k, rel=1e-12
        )
    # Right after the session the short-term vector (dominated by "new") pulls hard; after
    # 40 short half-lives the blend is the long-term vector.
    assert sims == sorted(sims, reverse=True)
    assert sims[0] > float(u_long @ vecs["new"]) + 0.3
    assert sims[-1] == pytest.approx(float(u_long @ vecs["new"]), abs=1e-9)
    # An event time in the future (clock skew) does not push b above the configured weight.
    assert short_term_blend(state, last - 10 * half, P) == P.short_term_weight


def test_pending_item_counts_once_its_vector_exists() -> None:
    events = [ev("a", "known", NOW - 1000), ev("b", "later", NOW, EventType.PURCHASE)]
    state = apply_events(UserInterest.empty(), events, P, max_items=200)
    vecs = unit_vectors(["known", "later"], 32, seed=4)
    assert user_vector(state, {}, NOW, P) is None
    before = user_vector(state, {"known": vecs["known"]}, NOW, P)
    assert before is not None
    assert np.allclose(before, vecs["known"], atol=1e-12)
    after = user_vector(state, vecs, NOW, P)
    assert after is not None
    # The purchase of "later" was kept while it had no vector and now dominates.
    assert float(after @ vecs["later"]) > float(after @ vecs["known"])
    lookup_calls: list[str] = []

    def lookup(item_id: str) -> np.ndarray | None:
        lookup_calls.append(item_id)
        return vecs.get(item_id)

    via_callable = user_vector(state, lookup, NOW, P)
    assert via_callable is not None
    assert np.array_equal(via_callable, after)
    assert sorted(lookup_calls) == ["known", "later"]


def test_trim_keeps_most_recent_items_with_redis_tie_order() -> None:
    events = [ev(f"e{k}", f"i{k}", NOW + k) for k in range(5)] + [ev("t", "b-tie", NOW + 4)]
    state = apply_events(UserInterest.empty(), events, P, max_items=3)
    # ts NOW+4 is shared by "i4" and "b-tie"; Redis ranks equal scores by member bytes.
    assert [w.item_id for w in state.weights] == ["b-tie", "i3", "i4"]
    assert state.n_events == 6
    # A trimmed item touched again restarts from that event alone.
    again = apply_events(state, [ev("z", "i0", NOW + 10)], P, max_items=3)
    i0 = next(w for w in again.weights if w.item_id == "i0")
    assert (i0.log_long, i0.log_short) == log_increment(EventType.CLICK, NOW + 10, P)


def test_events_of_two_users_are_rejected() -> None:
    with pytest.raises(ValueError, match="several users"):
        apply_events(UserInterest.empty(), [ev("a", "x", NOW), ev("b", "x", NOW, user="u2")], P, 5)


@pytest.mark.parametrize(
    "change",
    [
        {"half_life_long_s": 0.0},
        {"half_life_short_s": float("nan")},
        {"short_term_weight": 1.5},
        {"event_weights": {"view": 0.0, "click": 1.0, "add_to_cart": 2.0, "purchase": 3.0}},
        {"event_weights": {"view": 1.0, "click": 1.0}},
        {
            "event_weights": {
                "view": 1.0,
                "click": float("inf"),
                "add_to_cart": 2.0,
                "purchase": 3.0,
            }
        },
    ],
)
def test_params_that_could_store_nan_or_inf_are_rejected(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        replace(P, **change)  # type: ignore[arg-type]  # deliberately wrong values


def test_logaddexp_matches_numpy_and_is_symmetric() -> None:
    rng = random.Random(1)
    for _ in range(1000):
        a, b = rng.uniform(-1e5, 1e5), rng.uniform(-50, 50)
        b = a + b
        assert logaddexp(a, b) == logaddexp(b, a)
        assert logaddexp(a, b) == pytest.approx(float(np.logaddexp(a, b)), rel=1e-15, abs=1e-12)
    assert logaddexp(0.0, 0.0) == pytest.approx(LN2)


def test_top_contributors_rank_by_blended_weight() -> None:
    events = [ev(f"p{k}", "bought", NOW - 10 * DAY_MS, EventType.PURCHASE) for k in range(3)]
    events += [ev("v", "viewed", NOW, EventType.VIEW), ev("c", "clicked", NOW - DAY_MS)]
    state = apply_events(UserInterest.empty(), events, P, max_items=200)
    top = top_contributors(state, 3)
    # Right after the fresh view the short-term half of the blend is almost all "viewed".
    assert [item for item, _ in top] == ["viewed", "bought", "clicked"]
    assert sum(share for _, share in top) == pytest.approx(1.0, abs=1e-12)
    only = top_contributors(state, 5, has_vector=lambda i: i != "bought")
    assert [i for i, _ in only] == sorted([i for i, _ in only], key=lambda i: -dict(only)[i])
    assert {i for i, _ in only} == {"viewed", "clicked"}
    # A day later the short-term weight of the fresh view has faded below the old purchases'.
    late = top_contributors(state, 1, now_ms=NOW + DAY_MS, params=P)
    assert late[0][0] == "bought"
    assert top_contributors(UserInterest.empty(), 3) == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 7),
            st.integers(0, MAX_TS_MS),
            st.sampled_from(TYPES),
            st.integers(0, 30),
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(0, MAX_TS_MS),
    st.integers(1, 6),
)
def test_any_event_log_gives_bounded_finite_state(
    rows: list[tuple[int, int, EventType, int]], now: int, max_items: int
) -> None:
    events = [ev(f"e{eid}", f"i{item}", ts, kind) for item, ts, kind, eid in rows]
    state = apply_events(UserInterest.empty(), events, P, max_items=max_items)
    assert len(state.weights) <= max_items
    assert state.n_events == len({e.event_id for e in events})
    assert all(math.isfinite(w.log_long) and math.isfinite(w.log_short) for w in state.weights)
    vecs = unit_vectors([f"i{k}" for k in range(8)], 4, seed=0)
    u = user_vector(state, vecs, now, P)
    assert u is not None and np.all(np.isfinite(u))
    assert abs(float(np.linalg.norm(u)) - 1.0) <= 1e-9
    again = apply_events(state, [], P, max_items=max_items)
    assert again == state


@pytest.mark.parametrize(
    "weight", [0.0, -1.0, float("nan"), float("inf"), 1e37, MAX_EVENT_WEIGHT * 2]
)
def test_event_weights_outside_the_usable_range_are_refused_with_the_setting_named(
    weight: float,
) -> None:
    weights = {kind.value: 1.0 for kind in EventType} | {"click": weight}
    with pytest.raises(ValueError, match="VISREC_INTEREST__EVENT_WEIGHTS"):
        InterestSettings(event_weights=weights)


def test_the_largest_weight_at_the_capped_exponent_sums_finitely() -> None:
    weights = {kind.value: MAX_EVENT_WEIGHT for kind in EventType}
    params = InterestSettings(event_weights=weights).interest_params()
    far = 253_402_300_799_999  # year 9999: the exponent is capped
    inc = score_increment("purchase", far, params)
    assert math.isfinite(inc) and math.isfinite(inc * 1e30)  # 1e30 such events still sum

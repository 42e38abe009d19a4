from __future__ import annotations

import math
import random
import uuid
from collections import defaultdict

import numpy as np
import pytest
import redis

from models.interest import InterestColumns, UserInterest, score_increment
from schemas import EventType, Recommendations, RecommendedItem, RedisKeys, UserEvent
from streams.exceptions import UserStateError
from streams.settings import InterestSettings
from streams.state.backend import RedisBackend, StaleUser
from streams.state.recs import ListAge, RecsCache, decode_recs, read_cached_recs
from streams.state.user_state import UserStateStore
from tests.reference.interest import apply_events, user_vector
from tests.reference.signals import replay_signals
from tests.support.checks import assert_signals_are_offline_replay, per_user
from tests.support.signal_logs import (
    NOW,
    OWN_CO_HALF_LIFE,
    SIGNAL_SETTINGS,
    signal_log,
    triples,
)
from tests.support.standins import MemoryBackend

P = InterestSettings().interest_params()
KEYS = RedisKeys()
DEFAULTS = InterestSettings()
MIN_MS = 60_000
TYPES = list(EventType)


def make_store(client: redis.Redis, **overrides: object) -> UserStateStore:
    kwargs: dict[str, object] = {
        "seen_max": DEFAULTS.seen_max,
        "applied_max": DEFAULTS.applied_max,
        "co_window_s": 1800.0,
        "co_max_neighbours": DEFAULTS.co_max_neighbours,
        "co_max_per_event": DEFAULTS.co_max_per_event,
        "popular_max": DEFAULTS.popular_max,
    }
    kwargs.update(overrides)
    return UserStateStore(client, KEYS, DEFAULTS.interest_params(), **kwargs)  # type: ignore[arg-type]


def ev(eid: str, user: str, item: str, ts: int, kind: EventType = EventType.CLICK) -> UserEvent:
    return UserEvent(event_id=eid, user_id=user, item_id=item, type=kind, ts_ms=ts)


def apply_in_batches(store: UserStateStore, events: list[UserEvent], size: int = 500) -> list[bool]:
    out: list[bool] = []
    for start in range(0, len(events), size):
        out += store.apply(triples(events[start : start + size]))
    return out


def snapshot(client: redis.Redis) -> dict[bytes, object]:
    """Every key's full content, to show a redelivery changed nothing."""
    out: dict[bytes, object] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"hash":
            out[key] = client.hgetall(key)
        elif kind == b"zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = client.get(key)
    return out


def zipf_log(rng: random.Random, n_events: int, n_users: int, n_items: int) -> list[UserEvent]:
    weights = [1.0 / (k + 1) for k in range(n_items)]
    items = rng.choices(range(n_items), weights=weights, k=n_events)
    return [
        ev(
            str(uuid.UUID(int=rng.getrandbits(128))),
            f"u-{rng.randrange(n_users):05d}",
            f"item-{item:06d}",
            NOW - rng.randrange(7 * 86_400_000),
            rng.choice(TYPES),
        )
        for item in items
    ]


def assert_same_state(got: UserInterest, want: UserInterest, tol: float) -> None:
    assert [w.item_id for w in got.weights] == [w.item_id for w in want.weights]
    for g, w in zip(got.weights, want.weights, strict=True):
        assert abs(g.log_long - w.log_long) <= tol, g.item_id
        assert abs(g.log_short - w.log_short) <= tol, g.item_id
        assert g.last_ts_ms == w.last_ts_ms
    assert (got.last_ts_ms, got.n_events) == (want.last_ts_ms, want.n_events)


def test_duplicate_event_ids_apply_once(client: redis.Redis) -> None:
    store = make_store(client)
    a, b = ev("e1", "u1", "x", NOW), ev("e2", "u1", "y", NOW + 1000, EventType.PURCHASE)
    c = ev("e3", "u1", "x", NOW + 2000)
    assert store.apply(triples([a, b, a, c, b])) == [True, True, False, True, False]
    state = store.load("u1")
    assert state == apply_events(UserInterest.empty(), [a, b, c], P, DEFAULTS.seen_max)
    assert state.n_events == 3
    assert store.seen("u1") == {"x", "y"}
    assert client.zcard(KEYS.user_applied("u1")) == 3


def test_redelivered_batch_changes_nothing(client: redis.Redis) -> None:
    store = make_store(client)
    events = zipf_log(random.Random(1), 500, 20, 100)
    assert all(store.apply(triples(events)))
    before = snapshot(client)
    assert store.apply(triples(events)) == [False] * len(events)
    rng = random.Random(2)
    assert store.apply(triples(rng.sample(events, 100))) == [False] * 100
    assert snapshot(client) == before


def test_state_equals_offline_recomputation_in_any_order(client: redis.Redis) -> None:
    rng = random.Random(42)
    log = zipf_log(rng, 5000, 50, 300)
    # At-least-once delivery: 10% of the events arrive twice, in a shuffled order.
    delivered = log + rng.sample(log, 500)
    rng.shuffle(delivered)
    store = make_store(client)
    flags = apply_in_batches(store, delivered)
    assert sum(flags) == len(log)
    by_user: dict[str, list[UserEvent]] = defaultdict(list)
    for e in log:
        by_user[e.user_id].append(e)
    vecs = {
        f"item-{k:06d}": v
        for k, v in enumerate(np.random.default_rng(0).standard_normal((300, 64)))
    }
    vecs = {k: v / np.linalg.norm(v) for k, v in vecs.items()}
    assert len(by_user) == 50
    for user, events in by_user.items():
        # No trimming here, so the offline order (time order) may differ from the applied one.
        assert len({e.item_id for e in events}) <= DEFAULTS.seen_max
        want = apply_events(UserInterest.empty(), sorted(events, key=lambda e: e.ts_ms), P, 200)
        got = store.load(user)
        assert_same_state(got, want, 1e-9)
        u_got, u_want = user_vector(got, vecs, NOW, P), user_vector(want, vecs, NOW, P)
        assert u_got is not None and u_want is not None
        assert float(np.max(np.abs(u_got - u_want))) <= 1e-9


def test_columns_read_for_a_refresh_equal_the_full_state(client: redis.Redis) -> None:
    rng = random.Random(43)
    store = make_store(client)
    apply_in_batches(store, zipf_log(rng, 3000, 40, 500))
    users = [f"u-{k:05d}" for k in range(40)] + ["nobody"]
    columns = store.load_columns(users)
    for user in users:
        full = store.load(user)
        want = InterestColumns.of(full)
        got = columns[user]
        assert got.item_ids == want.item_ids
        assert np.array_equal(got.log_long, want.log_long)  # bit for bit: %.17g round-trips
        assert np.array_equal(got.log_short, want.log_short)
        assert (got.last_ts_ms, got.n_events) == (full.last_ts_ms, full.n_events)
    assert columns["nobody"].item_ids == [] and columns["nobody"].n_events == 0


def test_trimmed_state_equals_reference_in_log_order(client: redis.Redis) -> None:
    # With trimming the result depends on order within a user; Kafka keeps per-user order,
    # so the replay of the log in log order must match exactly.
    rng = random.Random(5)
    log = zipf_log(rng, 3000, 10, 400)
    store = make_store(client, seen_max=10, applied_max=100)
    apply_in_batches(store, log, size=250)
    by_user: dict[str, list[UserEvent]] = defaultdict(list)
    for e in log:
        by_user[e.user_id].append(e)
    for user, events in by_user.items():
        want = apply_events(UserInterest.empty(), events, P, 10)
        got = store.load(user)
        assert len(got.weights) == 10
        assert_same_state(got, want, 1e-12)
        assert store.seen(user) == {w.item_id for w in want.weights}
        assert client.zcard(KEYS.user_applied(user)) == min(100, len(events))


@pytest.mark.slow
def test_heavy_user_state_stays_bounded(client: redis.Redis) -> None:
    # One event a second for 28 hours: every event would have co-occurrence neighbours, whose
    # fan-out is tested elsewhere; a zero window keeps this test about the user's own keys.
    store = make_store(client, co_window_s=0.0)
    rng = random.Random(9)
    events = [
        ev(
            str(uuid.UUID(int=rng.getrandbits(128))),
            "heavy",
            f"item-{rng.randrange(5000):06d}",
            NOW + k * 1000,
            rng.choice(TYPES),
        )
        for k in range(100_000)
    ]
    sizes = []
    for start in range(0, len(events), 500):
        store.apply(triples(events[start : start + 500]))
        if start % 20_000 == 0:
            sizes.append(store.memory_usage("heavy"))
    assert client.zcard(KEYS.user_seen("heavy")) == DEFAULTS.seen_max
    assert client.zcard(KEYS.user_applied("heavy")) == DEFAULTS.applied_max
    assert client.hlen(KEYS.user_state("heavy")) == DEFAULTS.seen_max + 2  # + n, last_ts
    state = store.load("heavy")
    assert state.n_events == 100_000
    assert {w.item_id for w in state.weights} == store.seen("heavy")
    # The most recent applied_max events are still recognised as duplicates.
    assert store.apply(triples(events[-DEFAULTS.applied_max :])) == [False] * DEFAULTS.applied_max
    mem = store.memory_breakdown("heavy")
    sizes.append(mem.total)
    print(f"\nheavy user (100k events): {mem} total={mem.total} B; over time {sizes}")
    assert max(sizes[1:]) <= sizes[1] * 1.1  # flat once the bounds are reached
    # Never above applied_max, even within one call: a sorted set that once outgrows the
    # compact encoding's limit (1024 in our Redis config) keeps the ~8x larger one for good.
    assert client.object("encoding", KEYS.user_applied("heavy")) in (b"listpack", "listpack")


def realistic_recs(rng: random.Random, user: str) -> Recommendations:
    reasons = ["similar_to:item-{:06d}", "also_viewed_with:item-{:06d}", "popular"]
    return Recommendations(
        user_id=user,
        items=[
            RecommendedItem(
                item_id=f"item-{rng.randrange(100_000):06d}",
                score=rng.random(),  # full 17-digit floats: the worst case for compression
                reason=rng.choice(reasons).format(rng.randrange(100_000)),
            )
            for _ in range(DEFAULTS.top_k)
        ],
        model_id=f"efficientnet-lite0@{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}",
        trigger_event_id=str(uuid.UUID(int=rng.getrandbits(128))),
        generated_at_ms=NOW,
    )


def test_memory_per_active_user_at_defaults(client: redis.Redis) -> None:
    store = make_store(client)
    rng = random.Random(3)
    users = [f"u-{k:06d}" for k in range(20)]
    for user in users:
        events = [
            ev(
                str(uuid.UUID(int=rng.getrandbits(128))),
                user,
                f"item-{rng.randrange(100_000):06d}",
                NOW + k * 30_000,
                rng.choice(TYPES),
            )
            for k in range(20)
        ]
        store.apply(triples(events))
    RecsCache(client, KEYS).write_many([realistic_recs(rng, user) for user in users])
    per_user = [store.memory_breakdown(u) for u in users]
    totals = [m.total for m in per_user]
    encodings = {
        name: client.object("encoding", key(users[0]))
        for name, key in (
            ("state", KEYS.user_state),
            ("seen", KEYS.user_seen),
            ("applied", KEYS.user_applied),
        )
    }
    print(
        f"\nactive user, 20 events + {DEFAULTS.top_k}-item recs: {per_user[0]}; "
        f"total min/mean/max = {min(totals)}/{sum(totals) / len(totals):.0f}/{max(totals)} B; "
        f"encodings {encodings}"
    )
    assert all(m.recs > 0 and m.state > 0 for m in per_user)
    assert max(totals) <= 4096


def test_cooccurrence_and_popularity_once_per_applied_event(client: redis.Redis) -> None:
    store = make_store(client, co_window_s=600.0)
    a = ev("a", "u1", "A", NOW)
    b = ev("b", "u1", "B", NOW + MIN_MS, EventType.ADD_TO_CART)
    c = ev("c", "u1", "C", NOW + 60 * MIN_MS)  # outside the 10-minute window of A and B
    # Another user sees B then A out of order: the pair still counts once.
    a2 = ev("a2", "u2", "A", NOW + 2 * MIN_MS)
    b2 = ev("b2", "u2", "B", NOW + MIN_MS, EventType.VIEW)
    assert store.apply(triples([a, b, c, a2, b2])) == [True] * 5
    before = snapshot(client)
    assert store.apply(triples([a, b, c, a2, b2])) == [False] * 5
    assert snapshot(client) == before

    inc = {e.event_id: score_increment(e.type, e.ts_ms, P) for e in (a, b, c, a2, b2)}
    popular = dict(client.zrange(KEYS.popularity(), 0, -1, withscores=True))
    assert popular[b"A"] == pytest.approx(inc["a"] + inc["a2"], rel=1e-12)
    assert popular[b"B"] == pytest.approx(inc["b"] + inc["b2"], rel=1e-12)
    assert popular[b"C"] == pytest.approx(inc["c"], rel=1e-12)
    co_a = dict(client.zrange(KEYS.cooccurrence("A"), 0, -1, withscores=True))
    co_b = dict(client.zrange(KEYS.cooccurrence("B"), 0, -1, withscores=True))
    # u1: B is applied second and counts the pair; u2: B is applied second too (its event is older).
    assert co_a == {b"B": pytest.approx(inc["b"] + inc["b2"], rel=1e-12)}
    assert co_b == {b"A": pytest.approx(inc["b"] + inc["b2"], rel=1e-12)}
    assert not client.exists(KEYS.cooccurrence("C"))

    now = NOW + 61 * MIN_MS
    top = store.signals.popular(3, now_ms=now)
    assert [item for item, _ in top] == ["B", "A", "C"]
    half_life_ms = P.half_life_popularity_s * 1000
    want_c = 1.0 * 2 ** (-(now - c.ts_ms) / half_life_ms)
    assert dict(top)["C"] == pytest.approx(want_c, rel=1e-9)
    near = store.signals.co_neighbours(["A", "C", "missing"], 5, now_ms=now)
    assert [o for o, _ in near["A"]] == ["B"] and near["C"] == [] and near["missing"] == []
    # Stored popularity, as the co-occurrence reads are: in order, repeats kept, None if absent.
    assert store.signals.popularity_of(["C", "missing", "A", "C"]) == [
        pytest.approx(inc["c"], rel=1e-12),
        None,
        pytest.approx(inc["a"] + inc["a2"], rel=1e-12),
        pytest.approx(inc["c"], rel=1e-12),
    ]
    assert store.signals.popularity_of([]) == []


def test_neighbour_lists_are_trimmed(client: redis.Redis) -> None:
    store = make_store(client, co_max_neighbours=3, co_window_s=3600.0)
    events = [ev(f"e{k}", "u1", f"i{k}", NOW + k * 1000) for k in range(8)]
    store.apply(triples(events))
    assert client.zcard(KEYS.cooccurrence("i7")) == 3
    assert all(client.zcard(KEYS.cooccurrence(f"i{k}")) <= 3 for k in range(8))


def test_failed_event_is_reported_and_others_still_apply(client: redis.Redis) -> None:
    store = make_store(client)
    client.set(KEYS.user_seen("broken"), "not a zset")
    good, bad = ev("g", "ok", "x", NOW), ev("b", "broken", "x", NOW)
    with pytest.raises(UserStateError) as info:
        store.apply([(good, 3, 10), (bad, 3, 11)])
    assert [(p, o) for p, o, _ in info.value.failures] == [(3, 11)]
    assert "WRONGTYPE" in info.value.failures[0][2]
    assert info.value.applied == [True, False]
    assert store.load("ok").n_events == 1
    assert client.zscore(KEYS.popularity(), "x") == pytest.approx(score_increment("click", NOW, P))


def test_script_reloads_after_redis_forgets_it(client: redis.Redis) -> None:
    store = make_store(client)
    assert store.apply(triples([ev("1", "u", "x", NOW)])) == [True]
    client.script_flush()  # what a Redis restart does to cached scripts
    assert store.apply(triples([ev("2", "u", "y", NOW), ev("1", "u", "x", NOW)])) == [True, False]
    assert store.load("u").n_events == 2


def test_recs_cache_round_trip(client: redis.Redis) -> None:
    recs = RecsCache(client, KEYS)
    assert recs.read("nobody") is None
    lists = [
        Recommendations(
            user_id=user,
            items=[
                RecommendedItem(item_id=f"x{k}", score=0.5 - k / 100, reason="popular")
                for k in range(20)
            ],
            model_id="m",
            trigger_event_id="e9",
            generated_at_ms=NOW,
        )
        for user in ("u1", "u2")
    ]
    recs.write(lists[0])
    assert recs.read("u1") == lists[0]
    RecsCache(client, KEYS).write_many(lists)
    assert read_cached_recs(client, KEYS, "u2") == lists[1]
    stored = client.get(KEYS.user_recs("u2"))
    assert isinstance(stored, bytes)
    assert len(stored) < len(lists[1].to_json_bytes()) / 2  # compressed
    assert decode_recs(stored) == lists[1]
    # A plain-JSON value (written by another tool) reads too; garbage is an error, not a crash.
    client.set(KEYS.user_recs("u3"), lists[0].model_copy(update={"user_id": "u3"}).to_json_bytes())
    plain = recs.read("u3")
    assert plain is not None and plain.user_id == "u3"
    client.set(KEYS.user_recs("u4"), b"\x00garbage")
    with pytest.raises(ValueError, match="not zlib or JSON"):
        recs.read("u4")


def test_unicode_ids_and_far_timestamps_round_trip(client: redis.Redis) -> None:
    store = make_store(client)
    events = [
        ev("é1", "用户 1", "商品 a b", 0, EventType.PURCHASE),
        ev("é2", "用户 1", "商品 a b", 253_402_300_799_999),
        ev("é3", "用户 1", "i:n", 1),  # an item id that looks like our field prefix
        ev("é4", "用户 1", "n", 2),  # and one named like a meta field
    ]
    store.apply(triples(events))
    got = store.load("用户 1")
    assert_same_state(got, apply_events(UserInterest.empty(), events, P, 200), 0.0)
    assert all(math.isfinite(w.log_long) for w in got.weights)


@pytest.mark.parametrize("co_days", [7.0, 30.0])
def test_the_worker_tests_stand_in_answers_as_redis_does(
    client: redis.Redis, co_days: float
) -> None:
    """``tests.support.standins.MemoryBackend`` (the worker's unit tests run on it) gives the
    same applied flags, co-occurring items, states, signals and reads as the Redis backend,
    with pairs decaying as popularity does or at a half-life of their own."""
    settings = InterestSettings(
        seen_max=12,
        applied_max=40,
        max_batch=37,
        co_window_s=600,
        co_max_per_event=4,
        half_life_co_s=co_days * 86400.0,
    )
    real = RedisBackend.from_settings(client, KEYS, settings)
    stand_in = MemoryBackend(settings)
    rng = random.Random(5)
    events = [
        ev(
            f"e{k}",
            f"u{rng.randrange(5)}",
            f"i{rng.randrange(30):02d}",
            NOW + rng.randrange(3_600_000),
        )
        for k in range(300)
    ]
    events += events[100:160]  # redeliveries
    items = sorted({e.item_id for e in events})
    for start in range(0, len(events), 37):
        batch = triples(events[start : start + 37])
        got, want = real.apply_and_read(batch), stand_in.apply_and_read(batch)
        assert got[0] == want[0]
        assert [(p.user_id, p.seq, p.item_id, p.near) for p in got[1]] == [
            (p.user_id, p.seq, p.item_id, p.near) for p in want[1]
        ]
        np.testing.assert_allclose(
            [(p.increment, p.co) for p in got[1]],
            [(p.increment, p.co) for p in want[1]],
            rtol=1e-15,
        )
        assert got[2].keys() == want[2].keys()
        for user, cols in got[2].items():
            other = want[2][user]  # the reply keeps the hash's order: compare by item
            assert sorted(cols.item_ids) == other.item_ids
            assert (cols.last_ts_ms, cols.n_events) == (other.last_ts_ms, other.n_events)
            order = np.argsort(cols.item_ids)
            np.testing.assert_allclose(cols.log_long[order], other.log_long, rtol=0, atol=1e-9)
            np.testing.assert_allclose(cols.log_short[order], other.log_short, rtol=0, atol=1e-9)
        real.write_signals(got[1])
        stand_in.write_signals(want[1])
    co_got, pop_got = real.read_signals(items, 5, 10)
    co_want, pop_want = stand_in.read_signals(items, 5, 10)
    assert pop_got is not None and pop_want is not None
    assert [i for i, _ in pop_got] == [i for i, _ in pop_want]
    np.testing.assert_allclose([s for _, s in pop_got], [s for _, s in pop_want], rtol=1e-9)
    for item in items:
        assert [i for i, _ in co_got[item]] == [i for i, _ in co_want[item]], item
        np.testing.assert_allclose(
            [s for _, s in co_got[item]], [s for _, s in co_want[item]], rtol=1e-9
        )
    asked = [*items, "never-clicked", items[0]]
    got_pop, want_pop = real.read_popularity(asked), stand_in.read_popularity(asked)
    assert (
        [p is None for p in got_pop]
        == [p is None for p in want_pop]
        == [False] * len(items) + [True, False]
    )
    np.testing.assert_allclose(
        [p for p in got_pop if p is not None], [p for p in want_pop if p is not None], rtol=1e-9
    )


def test_idle_users_are_found_by_list_age_as_the_stand_in_finds_them(client: redis.Redis) -> None:
    """``RecsCache.stale`` and ``RedisBackend.stale_users`` on Redis: the users of the asked
    partitions whose lists are older than the cut, oldest first, bounded, the batch's own
    excluded; users idle past the active window leave the index; each comes with its state
    and its cached list's trigger. The stand-in the worker's unit tests use answers the same."""
    settings = InterestSettings()
    real = RedisBackend.from_settings(client, KEYS, settings)
    stand_in = MemoryBackend(settings)
    events = [ev(f"e{k}", f"u{k}", f"i{k}", NOW + k * MIN_MS) for k in range(6)]
    for backend in (real, stand_in):
        backend.apply_and_read(triples(events))
    lists = [
        (
            e.user_id,
            Recommendations(
                user_id=e.user_id,
                items=[],
                model_id="m",
                trigger_event_id=e.event_id,
                generated_at_ms=NOW,
            ).to_json_bytes(),
        )
        for e in events[:5]  # u5 has no cached list: no trigger to answer
    ]
    ages = [ListAge(k % 2, e.user_id, e.ts_ms) for k, e in enumerate(events)]
    for backend in (real, stand_in):
        backend.write_lists(lists, ages=ages)
    client.set(KEYS.user_recs("u5"), b"\x00garbage")  # another tool's value: no trigger, no error
    assert RecsCache(client, KEYS).stale([0, 1], NOW + 4 * MIN_MS, 10) == ages[:4]
    cut, active = NOW + 10 * MIN_MS, NOW + 2 * MIN_MS  # u0 and u1 idle too long
    got = _view(real.stale_users([0, 1], cut, active, 3, {"u3"}))
    assert got == _view(stand_in.stale_users([0, 1], cut, active, 3, {"u3"}))
    # The three oldest but u3: u0 and u1 leave the index (no event since ``active``).
    assert got == [(ages[2], "e2", ["i2"], events[2].ts_ms)]
    assert RecsCache(client, KEYS).stale([0, 1], cut, 10) == ages[2:]  # u0, u1 forgotten
    again = _view(real.stale_users([1], cut, active, 10, set()))
    assert (
        again
        == _view(stand_in.stale_users([1], cut, active, 10, set()))
        == [(ages[k], f"e{k}" if k < 5 else None, [f"i{k}"], events[k].ts_ms) for k in (3, 5)]
    )


def _view(found: list[StaleUser]) -> list[tuple[ListAge, str | None, list[str], int]]:
    return [(s.age, s.trigger, s.state.item_ids, s.state.last_ts_ms) for s in found]


def _assert_signals_are_offline_replay(
    client: redis.Redis, events: list[UserEvent], settings: InterestSettings
) -> None:
    items = sorted({e.item_id for e in events})
    assert_signals_are_offline_replay(client, per_user(events), settings, items, rel=1e-12)


@pytest.mark.parametrize("settings", [SIGNAL_SETTINGS, OWN_CO_HALF_LIFE], ids=["same", "own"])
def test_signals_of_a_worker_that_died_after_apply_are_drained_once_on_redelivery(
    client: redis.Redis, settings: InterestSettings
) -> None:
    """The crash the outbox exists for: state applied, the drain never ran, the batch is
    redelivered (its events now 'already applied'): every increment still counts, once.
    Also with pairs decaying at a half-life of their own (two increments per entry)."""
    events = signal_log(120, seed=1)
    dead = RedisBackend.from_settings(client, KEYS, settings)
    applied, pending, _ = dead.apply_and_read(triples(events[:80]))
    assert all(applied) and len(pending) == 80
    assert not client.exists(KEYS.popularity())  # nothing reached the global sets yet
    own = settings.half_life_co_s != settings.half_life_popularity_s
    assert all((p.co_increment is not None) == own for p in pending)

    survivor = RedisBackend.from_settings(client, KEYS, settings)
    for start in range(0, 120, 40):  # the redelivery, then the rest
        flags, pending, _ = survivor.apply_and_read(triples(events[start : start + 40]))
        assert flags == [start >= 80] * 40
        survivor.write_signals(pending)
    _assert_signals_are_offline_replay(client, events, settings)
    assert not any(client.exists(KEYS.user_outbox(f"u{k}")) for k in range(6))


def test_entries_left_by_a_worker_before_the_pairs_own_half_life_drain_as_written(
    client: redis.Redis,
) -> None:
    """A rolling change of ``half_life_co_s``: a worker of the old setting applied a batch and
    died before draining; the new worker drains those entries with the increments they were
    written with (one for both), and its own events' pairs with the new half-life."""
    events = signal_log(80, seed=4)
    old = RedisBackend.from_settings(client, KEYS, SIGNAL_SETTINGS)
    old.apply_and_read(triples(events[:40]))
    new = RedisBackend.from_settings(client, KEYS, OWN_CO_HALF_LIFE)
    _, pending, _ = new.apply_and_read(triples(events[40:]))
    # Every entry comes back, the old worker's too: each user's first ones (one increment).
    early_n = {u: len(es) for u, es in per_user(events[:40]).items()}
    assert len(pending) == len(events)
    assert [p.co_increment is None for p in pending] == [
        p.seq <= early_n.get(p.user_id, 0) for p in pending
    ]
    new.write_signals(pending)
    log = per_user(events)
    early = {e.event_id for e in events[:40]}
    old_pop, old_co = replay_signals(log, SIGNAL_SETTINGS, counted=early)
    late = {e.event_id for e in events[40:]}
    new_pop, new_co = replay_signals(log, OWN_CO_HALF_LIFE, counted=late)

    def stored(key: str) -> dict[str, float]:
        return {m.decode(): s for m, s in client.zrange(key, 0, -1, withscores=True)}

    for item in {e.item_id for e in events}:
        want = dict(old_co.get(item, {}))
        for other, score in new_co.get(item, {}).items():
            want[other] = want.get(other, 0.0) + score
        assert stored(KEYS.cooccurrence(item)) == pytest.approx(want, rel=1e-12), item
    want_pop = {i: old_pop.get(i, 0.0) + new_pop.get(i, 0.0) for i in {*old_pop, *new_pop}}
    assert stored(KEYS.popularity()) == pytest.approx(want_pop, rel=1e-12)


def test_a_drain_repeated_after_it_ran_adds_nothing(client: redis.Redis) -> None:
    """A drain whose reply was lost is retried with the same entries; a rival worker drained
    some outboxes in between: each entry still counts once, and later ones are not skipped."""
    events = signal_log(60, seed=2)
    store = RedisBackend.from_settings(client, KEYS, SIGNAL_SETTINGS)
    _, pending, _ = store.apply_and_read(triples(events[:30]))
    store.write_signals(pending)
    store.write_signals(pending)  # the retry: the outboxes no longer hold those entries
    _, newer, _ = store.apply_and_read(triples(events[30:]))
    rival = RedisBackend.from_settings(client, KEYS, SIGNAL_SETTINGS)
    rival.write_signals([p for p in newer if p.user_id == newer[0].user_id])
    store.write_signals(newer)  # stale for one user: re-read, the rest drained once
    store.write_signals(pending + newer)
    _assert_signals_are_offline_replay(client, events, SIGNAL_SETTINGS)


def test_outboxes_are_empty_between_batches(client: redis.Redis) -> None:
    store = make_store(client)
    events = signal_log(50, seed=3)
    store.apply(triples(events))
    assert [client.llen(KEYS.user_outbox(f"u{k}")) for k in range(6)] == [0] * 6

"""The ``update_interests`` worker in faust's test context: batches in, state calls and lists out.

No broker and no Redis: the agent body the worker registers runs on an in-memory stand-in of
its state (``tests.support.standins``). What Redis itself does is tested against a real server
in ``tests/integration``; here it is the worker's part: what it asks of its state, in which
order, what it sends, what it retries and what it drops.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, cast

import faust
import numpy as np
import pytest
from prometheus_client import REGISTRY

from models.candidates import lift
from models.index import ItemIndex, raw_space
from models.interest import InterestColumns, UserInterest
from models.refresh import co_per_contributor
from schemas import EventType, Recommendations, RedisKeys, UserEvent
from streams.edge.deadletter import DeadLetterSink
from streams.settings import InterestSettings, Settings
from tests.reference.interest import apply_events
from tests.reference.ranking import DictIndex, reference_lists
from tests.reference.signals import replay_signals
from tests.support.standins import DeadLetterTopic, MemoryBackend, Produced, StaticFeed
from workers.list_cache import ListCache
from workers.update_interests import InterestUpdater, agent_body

T0 = 1_764_000_000_000
DIM = 8
Message = tuple[bytes | None, bytes]


def _settings(**interest: Any) -> Settings:
    defaults: dict[str, Any] = {"top_k": 6, "candidates": 12}
    return Settings(interest=InterestSettings(**(defaults | interest)))


def _catalogue(seed: int = 3, n: int = 40) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"it{j:02d}": rng.standard_normal(DIM) for j in range(n)}


def _index(vectors: dict[str, np.ndarray]) -> ItemIndex:
    index = ItemIndex(raw_space("m1", DIM))
    ids = list(vectors)
    index.upsert_many(ids, np.stack([vectors[i] for i in ids]), [True] * len(ids))
    return index


def _event(eid: str, user: str, item: str, ts: int, kind: EventType = EventType.CLICK) -> UserEvent:
    return UserEvent(event_id=eid, user_id=user, item_id=item, type=kind, ts_ms=ts)


def _message(ev: UserEvent) -> Message:
    return ev.user_id.encode(), ev.to_json_bytes()


def _log(seed: int = 5, n: int = 30) -> list[UserEvent]:
    rng = np.random.default_rng(seed)
    kinds = [EventType.VIEW, EventType.CLICK]
    return [
        _event(
            f"e{k}",
            f"u{int(rng.integers(0, 4))}",
            f"it{int(rng.integers(0, 40)):02d}",
            T0 + 1000 * k,
            kinds[int(rng.integers(0, 2))],
        )
        for k in range(n)
    ]


class Run:
    """One worker (the registered agent body) in faust's test context, fed batch by batch."""

    def __init__(self, settings: Settings, backend: MemoryBackend, index: ItemIndex) -> None:
        self.settings = settings
        self.backend = backend
        self.feed = StaticFeed(index)
        self.produced = Produced()
        self.dead_letter_topic = DeadLetterTopic()
        sink = DeadLetterSink(
            cast(faust.TopicT, self.dead_letter_topic),
            None,
            RedisKeys("test"),
            settings.limits.max_dead_letter_payload_bytes,
        )
        self.dead_letters = sink
        self.updater = InterestUpdater(settings, self.feed, sink, self.produced.send, backend)
        self.batches: list[int] = []
        self.acked_before_processing: list[bool] = []

    def feed_batches(self, batches: Sequence[Sequence[Message]]) -> None:
        """Put each batch's messages at once, then wait until the worker processed them all."""
        process = self.updater.process

        async def recording(events: list[Any]) -> None:
            self.acked_before_processing.append(any(e.message.acked for e in events))
            await process(events)
            self.batches.append(len(events))

        self.updater.process = recording  # type: ignore[method-assign]

        async def main() -> None:
            app = faust.App("t-interests", value_serializer="raw", loop=asyncio.get_running_loop())
            topic = app.topic("events", value_type=bytes, value_serializer="raw")
            ready = asyncio.Event()
            body = agent_body(self.updater, ready, self.settings.interest.max_batch)
            agent = app.agent(topic)(body)
            try:
                async with agent.test_context() as ag:
                    for batch in batches:
                        done = sum(self.batches) + len(batch)
                        for key, value in batch:
                            await ag.put(value, key=key, wait=False)
                        ready.set()  # the agent waits for an index, as at start
                        for _ in range(500):
                            if sum(self.batches) >= done:
                                break
                            await asyncio.sleep(0.01)
                        assert sum(self.batches) == done, "the worker did not finish a batch"
            finally:
                consumer = app._consumer
                if consumer is not None:
                    consumer._thread.thread_loop.close()

        try:
            asyncio.run(main())
        finally:
            self.feed.pool.shutdown()

    def lists(self) -> list[Recommendations]:
        return [Recommendations.from_json_bytes(p) for _, p in self.produced.sent]


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _preset_signals(backend: MemoryBackend, vectors: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(11)
    ids = list(vectors)
    for i in ids:
        for j in rng.choice(ids, 5, replace=False).tolist():
            if j != i:
                backend.co[i][j] = float(rng.integers(1, 9))
    backend.popular.update({i: float(rng.exponential()) for i in ids[:15]})


@pytest.mark.parametrize("co_pop_power", [0.0, 0.5])
def test_a_batch_is_applied_once_and_every_user_gets_the_reference_list(
    co_pop_power: float,
) -> None:
    settings = _settings(co_pop_power=co_pop_power, co_weight=1.0)
    vectors = _catalogue()
    backend = MemoryBackend(settings.interest)
    _preset_signals(backend, vectors)
    co_before = {i: dict(n) for i, n in backend.co.items()}
    popular_before = dict(backend.popular)
    log = _log()
    log.insert(7, log[3])  # a redelivery inside the batch: applied once
    run = Run(settings, backend, _index(vectors))
    run.feed_batches([[_message(ev) for ev in log]])

    assert run.batches == [len(log)]
    # 1. apply: every event, in offset order, in one call.
    assert backend.called("apply_and_read") == [[ev.event_id for ev in log]]
    params = settings.interest.interest_params()
    users = sorted({ev.user_id for ev in log})
    for user in users:
        mine = [ev for ev in log if ev.user_id == user]
        want = apply_events(UserInterest.empty(), mine, params, settings.interest.seen_max)
        assert backend.users[user] == want
    # 3. signals: exactly the applied events (the redelivered copy is not counted twice),
    # drained from the outboxes, each user's in apply order.
    [written] = backend.called("write_signals")
    applied = [ev for i, ev in enumerate(log) if i != 7]
    assert sorted((u, item) for u, _, item, _ in written) == sorted(
        (ev.user_id, ev.item_id) for ev in applied
    )
    for user in users:
        seqs = [seq for u, seq, _, _ in written if u == user]
        assert seqs == list(range(1, len(seqs) + 1))
    assert not any(backend.outboxes.values())
    # 5. one list per user, answering the user's last event, equal to the per-user reference
    # on the state after the batch, at the event's time, with the signals read before writing.
    lists = run.lists()
    assert sorted(r.user_id for r in lists) == users
    last = {ev.user_id: ev for ev in log}
    rank = settings.interest.rank_params()
    limit = max(rank.candidates, rank.top_k)
    per = co_per_contributor(rank)
    co_read = {i: _strongest(n, per) for i, n in co_before.items()}
    if co_pop_power > 0:  # counts over the neighbours' popularity, read in one more call
        [asked] = backend.called("read_popularity")
        [(read, _, _)] = backend.called("read_signals")
        assert sorted(set(asked)) == sorted({j for i in read for j, _ in co_read[i]})
        co_read = {i: _lifted(pairs, popular_before, co_pop_power) for i, pairs in co_read.items()}
    else:
        assert backend.called("read_popularity") == []
    newest = max(ev.ts_ms for ev in log)
    want_lists = reference_lists(
        [(u, InterestColumns.of(backend.users[u]), last[u].ts_ms) for u in users]
        + [("*", InterestColumns.of(UserInterest.empty()), newest)],
        DictIndex(vectors),
        co_read,
        _strongest(popular_before, 2 * limit),
        params,
        rank,
    )
    by_user = {r.user_id: r for r in lists}
    # The cold list (for users with none of their own) is cached, never sent: ranked as for
    # a user without history at the batch's newest event.
    assert backend.cold is not None
    cold = Recommendations.from_json_bytes(backend.cold)
    assert (cold.user_id, cold.trigger_event_id) == ("*", None)
    assert [(i.item_id, i.reason) for i in cold.items] == [(i, r) for i, _, r in want_lists[-1]]
    assert cold.items and all(r.user_id != "*" for r in lists)
    for user, want in zip(users, want_lists[:-1], strict=True):
        got = by_user[user]
        assert got.trigger_event_id == last[user].event_id
        assert got.model_id == "m1"
        assert [(i.item_id, i.reason) for i in got.items] == [(i, r) for i, _, r in want]
        np.testing.assert_allclose([i.score for i in got.items], [s for _, s, _ in want], atol=1e-5)
    # The cache holds exactly what was sent, and nothing was acknowledged before processing.
    assert backend.lists == dict(run.produced.sent)
    assert run.acked_before_processing == [False]


def _lifted(
    pairs: list[tuple[str, float]], popular: dict[str, float], power: float
) -> list[tuple[str, float]]:
    counts = np.array([c for _, c in pairs])
    pops = np.array([popular.get(j, np.nan) for j, _ in pairs])
    return list(zip([j for j, _ in pairs], lift(counts, pops, power).tolist(), strict=True))


def _strongest(scores: dict[str, float], n: int) -> list[tuple[str, float]]:
    ranked = sorted(scores.items(), key=lambda p: (p[1], p[0].encode()), reverse=True)
    return ranked[:n]


def test_a_redelivered_batch_changes_nothing_and_answers_every_user_again() -> None:
    settings = _settings()
    vectors = _catalogue()
    backend = MemoryBackend(settings.interest)
    log = _log(n=12)
    run = Run(settings, backend, _index(vectors))
    batch = [_message(ev) for ev in log]
    run.feed_batches([batch])
    state, popular = dict(backend.users), dict(backend.popular)
    first = {r.user_id: r for r in run.lists()}

    run2 = Run(settings, backend, _index(vectors))  # a restarted worker: a fresh list cache
    run2.feed_batches([batch])
    assert backend.users == state
    assert backend.popular == popular
    assert backend.called("write_signals")[-1] == []
    again = {r.user_id: r for r in run2.lists()}
    assert again.keys() == first.keys()
    for user, recs in again.items():
        assert recs.trigger_event_id == first[user].trigger_event_id


def test_malformed_messages_are_dead_lettered_with_their_reason_and_the_rest_is_processed() -> None:
    settings = _settings()
    backend = MemoryBackend(settings.interest)
    good = _log(n=6)
    wrong_key = _event("bad-key", "u1", "it01", T0)
    broken: list[tuple[Message, str]] = [
        ((b"u1", b'{"event_id": "x", "user_id": "u1"'), "invalid_json"),
        ((b"u1", json.dumps({"event_id": "y", "user_id": "u1"}).encode()), "schema_violation"),
        ((b"u1", b"[1, 2]"), "not_an_object"),
        ((b"u1", b""), "empty_payload"),
        ((b"u1", b"\xff\xfe\x00garbage"), "invalid_encoding"),
        ((b"u9", wrong_key.to_json_bytes()), "key_mismatch"),
    ]
    batch = [_message(ev) for ev in good[:3]]
    batch += [m for m, _ in broken]
    batch += [_message(ev) for ev in good[3:]]
    run = Run(settings, backend, _index(_catalogue()))
    run.feed_batches([batch])

    assert run.batches == [len(batch)]
    assert backend.called("apply_and_read") == [[ev.event_id for ev in good]]
    letters = [json.loads(v) for _, v in run.dead_letter_topic.sent]
    assert [letter["error_code"] for letter in letters] == [code for _, code in broken]
    assert [letter["offset"] for letter in letters] == list(range(3, 3 + len(broken)))
    assert sorted(run.dead_letters.counts.elements()) == sorted(code for _, code in broken)
    assert sorted(r.user_id for r in run.lists()) == sorted({ev.user_id for ev in good})


def test_redis_away_at_apply_is_waited_out_and_the_batch_applied_once() -> None:
    settings = _settings()
    backend = MemoryBackend(settings.interest, failing={"apply_and_read": 2})
    log = _log(n=8)
    retries = _metric("visrec_redis_retries_total")
    run = Run(settings, backend, _index(_catalogue()))
    run.feed_batches([[_message(ev) for ev in log]])

    assert len(backend.called("apply_and_read")) == 3
    assert _metric("visrec_redis_retries_total") - retries == 2
    assert sum(u.n_events for u in backend.users.values()) == len(log)
    assert sorted(r.user_id for r in run.lists()) == sorted({ev.user_id for ev in log})


def _signals_of(settings: Settings, *logs: list[UserEvent]) -> tuple[dict[str, float], Any]:
    by_user: dict[str, list[UserEvent]] = {}
    for log in logs:
        for ev in log:
            by_user.setdefault(ev.user_id, []).append(ev)
    return replay_signals(by_user, settings.interest)


def _assert_signals(backend: MemoryBackend, want: tuple[dict[str, float], Any]) -> None:
    popular, co = want
    assert backend.popular.keys() == popular.keys()
    for item, score in popular.items():
        assert backend.popular[item] == pytest.approx(score, rel=1e-12)
    assert {i: n for i, n in backend.co.items() if n}.keys() == co.keys()
    for item, near in co.items():
        assert backend.co[item] == pytest.approx(near, rel=1e-12)


@pytest.mark.parametrize("how", ["refused", "reply_lost"])
def test_a_failed_signal_write_is_retried_and_counts_once(how: str) -> None:
    settings = _settings()
    fails = {"write_signals": 1}
    backend = (
        MemoryBackend(settings.interest, failing=fails)
        if how == "refused"
        else MemoryBackend(settings.interest, lose_replies=fails)
    )
    first, second = _log(n=8), _log(seed=9, n=5)
    second = [ev.model_copy(update={"event_id": f"b{ev.event_id}"}) for ev in second]
    retries = _metric("visrec_redis_retries_total")
    run = Run(settings, backend, _index(_catalogue()))
    run.feed_batches([[_message(ev) for ev in first], [_message(ev) for ev in second]])

    # The first batch's drain failed (before or after it took effect) and was retried.
    assert len(backend.called("write_signals")) == 3
    assert _metric("visrec_redis_retries_total") - retries == 1
    _assert_signals(backend, _signals_of(settings, first, second))
    assert not any(backend.outboxes.values())
    # Both batches were answered and cached all the same.
    assert len(run.produced.sent) == len({e.user_id for e in first}) + len(
        {e.user_id for e in second}
    )
    assert backend.lists == dict(run.produced.sent)


def test_a_worker_that_died_between_apply_and_drain_loses_no_signal() -> None:
    settings = _settings()
    backend = MemoryBackend(settings.interest)
    log = _log(n=10)
    batch = [(ev, 0, k) for k, ev in enumerate(log)]
    backend.apply_and_read(batch)  # the dead worker's apply; its drain never ran
    assert backend.popular == {} and sum(map(len, backend.outboxes.values())) == len(log)

    run = Run(settings, backend, _index(_catalogue()))  # the redelivery, to a new worker
    run.feed_batches([[_message(ev) for ev in log]])
    assert sum(u.n_events for u in backend.users.values()) == len(log)  # applied once
    _assert_signals(backend, _signals_of(settings, log))  # and counted once
    assert not any(backend.outboxes.values())


def test_redis_away_at_the_reads_or_the_cache_write_is_retried() -> None:
    settings = _settings()
    backend = MemoryBackend(settings.interest, failing={"read_signals": 1, "write_lists": 2})
    log = _log(n=8)
    run = Run(settings, backend, _index(_catalogue()))
    run.feed_batches([[_message(ev) for ev in log]])

    assert len(backend.called("read_signals")) == 2
    assert len(backend.called("write_lists")) == 3
    assert backend.lists == dict(run.produced.sent)
    assert len(run.produced.sent) == len({ev.user_id for ev in log})


@pytest.mark.parametrize(("co_cache_ms", "cold_writes"), [(60_000, 1), (0, 3)])
def test_the_cold_list_is_ranked_at_most_once_per_cache_period(
    co_cache_ms: int, cold_writes: int
) -> None:
    settings = _settings(co_cache_ms=co_cache_ms)
    backend = MemoryBackend(settings.interest)
    log = _log(n=9)
    run = Run(settings, backend, _index(_catalogue()))
    run.feed_batches([[_message(ev)] for ev in log[:3]])
    assert run.batches == [1, 1, 1]
    assert backend.cold_writes == cold_writes
    assert len(run.produced.sent) == 3  # never sent on the topic


def test_a_user_named_like_the_cold_list_keeps_their_own_list() -> None:
    settings = _settings()
    backend = MemoryBackend(settings.interest)
    ev = _event("e-star", "*", "it03", T0)
    run = Run(settings, backend, _index(_catalogue()))
    run.feed_batches([[_message(ev)]])
    [mine] = run.lists()
    assert (mine.user_id, mine.trigger_event_id) == ("*", "e-star")
    assert backend.lists["*"] == run.produced.sent[0][1]
    assert backend.cold is not None
    assert Recommendations.from_json_bytes(backend.cold).trigger_event_id is None


def test_the_list_cache_reuses_lists_until_they_expire_or_change() -> None:
    index = _index(_catalogue())
    cache = ListCache(ttl_s=1.0)
    cache.follow(index)
    cache.put({"it01": [("it02", 3.0), ("it03", 1.0)], "it04": []}, index, now=10.0)
    assert cache.missing(["it01", "it04", "it05"], now=10.5) == ["it05"]
    assert cache.missing(["it01", "it04"], now=11.0) == ["it01", "it04"]  # expired
    cache.drop({"it01"})
    assert cache.missing(["it01", "it04"], now=10.5) == ["it01"]
    lists = cache.lists(["it04", "it05"])
    assert lists is not None
    cache.follow(_index(_catalogue()))  # another index: row numbers mean other things
    assert cache.missing(["it04"], now=10.5) == ["it04"]


@pytest.mark.parametrize(("co_max_per_event", "near_c"), [(1, ["it02"]), (3, ["it02", "it01"])])
def test_co_occurrence_increments_follow_the_apply_window(
    co_max_per_event: int, near_c: list[str]
) -> None:
    settings = _settings(co_window_s=5.0, co_max_per_event=co_max_per_event)
    backend = MemoryBackend(settings.interest)
    # One user: it01 at 0 s, it02 at 1 s, it03 at 2 s, it04 at 30 s (outside the 5 s window).
    log = [
        _event("a", "u0", "it01", T0),
        _event("b", "u0", "it02", T0 + 1000),
        _event("c", "u0", "it03", T0 + 2000),
        _event("d", "u0", "it04", T0 + 30_000),
    ]
    run = Run(settings, backend, _index(_catalogue()))
    run.feed_batches([[_message(ev) for ev in log]])
    [written] = backend.called("write_signals")
    # Latest first, at most co_max_per_event, never the event's own item.
    assert written == [
        ("u0", 1, "it01", ()),
        ("u0", 2, "it02", ("it01",)),
        ("u0", 3, "it03", tuple(near_c)),
        ("u0", 4, "it04", ()),
    ]
    # Each pair counts in both directions, once.
    assert backend.co["it02"]["it01"] == backend.co["it01"]["it02"] > 0


HOUR = 3_600_000


def _stale_run(
    batches: Sequence[Sequence[UserEvent]], **interest: Any
) -> tuple[Run, MemoryBackend, list[Any], dict[str, np.ndarray]]:
    """Batches through a worker; also every ``read_signals`` reply, in order."""
    settings = _settings(co_cache_ms=0, co_weight=1.0, **interest)
    vectors = _catalogue()
    backend = MemoryBackend(settings.interest)
    _preset_signals(backend, vectors)
    replies: list[Any] = []
    read = backend.read_signals

    def recording(*args: Any) -> Any:
        replies.append(read(*args))
        return replies[-1]

    backend.read_signals = recording  # type: ignore[method-assign]
    run = Run(settings, backend, _index(vectors))
    run.feed_batches([[_message(ev) for ev in batch] for batch in batches])
    return run, backend, replies, vectors


def test_idle_users_lists_are_ranked_again_once_they_grow_stale() -> None:
    first = [
        _event("a1", "u0", "it01", T0),
        _event("a2", "u0", "it02", T0 + 1000),
        _event("b1", "u1", "it03", T0 + 2000),
    ]
    later = [_event("c1", "u2", "it04", T0 + 2 * HOUR)]  # u0 and u1 idle for 2 h
    again = [_event("c2", "u2", "it05", T0 + 2 * HOUR + 60_000)]  # lists 1 min old: none
    run, backend, replies, vectors = _stale_run([first, later, again], stale_after_s=3600)
    got = [(r.user_id, r.trigger_event_id) for r in run.lists()]
    # Re-ranked lists answer the user's last event (nothing new applied), oldest list first.
    rerun = [("u0", "a2"), ("u1", "b1")]
    assert got == [*rerun, ("u2", "c1"), *rerun, ("u2", "c2")]
    # Each equals the reference for the user's state at the batch's time, with that batch's
    # signals, so it carries what changed since: popularity, co-occurrence, decay.
    settings = run.settings.interest
    now = T0 + 2 * HOUR
    co_read, popular = replies[1]
    want = reference_lists(
        [(u, InterestColumns.of(backend.users[u]), now) for u in ("u0", "u1")],
        DictIndex(vectors),
        co_read,
        popular,
        settings.interest_params(),
        settings.rank_params(),
    )
    for got_list, want_list in zip(run.lists()[3:5], want, strict=True):
        assert [(i.item_id, i.reason) for i in got_list.items] == [(i, r) for i, _, r in want_list]
    assert backend.lists["u0"] == run.produced.sent[3][1]  # the cache follows
    ages = {u: at for by_user in backend.ages.values() for u, at in by_user.items()}
    assert ages == {"u0": now, "u1": now, "u2": T0 + 2 * HOUR + 60_000}
    # Asked by every batch (co_cache_ms 0) for its partitions, lists older than an hour.
    asked = backend.called("stale_users")
    assert [before for _, before, _, _ in asked] == [
        ev.ts_ms - HOUR for ev in (first[-1], later[0], again[0])
    ]


def test_users_idle_past_the_active_window_leave_the_index() -> None:
    first = [_event("a1", "u0", "it01", T0)]
    later = [_event("b1", "u1", "it02", T0 + 5 * HOUR)]
    run, backend, _, _ = _stale_run([first, later], stale_after_s=3600, stale_active_s=3 * 3600)
    assert [r.user_id for r in run.lists()] == ["u0", "u1"]
    assert {u for by_user in backend.ages.values() for u in by_user} == {"u1"}


def test_at_most_stale_per_batch_lists_are_ranked_again_per_batch() -> None:
    first = [_event(f"a{k}", f"u{k}", f"it0{k}", T0 + k) for k in range(3)]
    later = [_event(f"b{k}", "v", "it09", T0 + 2 * HOUR + k) for k in range(2)]
    run, _, _, _ = _stale_run([first, later[:1], later[1:]], stale_after_s=3600, stale_per_batch=2)
    users = [r.user_id for r in run.lists()]
    assert users == ["u0", "u1", "u2", "v", "u0", "u1", "v", "u2"]


def test_no_list_is_ranked_again_by_default() -> None:
    first = [_event("a1", "u0", "it01", T0)]
    later = [_event("b1", "u1", "it02", T0 + 50 * HOUR)]
    run, backend, _, _ = _stale_run([first, later])
    assert [r.user_id for r in run.lists()] == ["u0", "u1"]
    assert backend.called("stale_users") == [] and not backend.ages

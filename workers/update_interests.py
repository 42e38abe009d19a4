"""``update_interests``: user events in, refreshed recommendation lists out.

Events are taken in natural batches (``streams.kafka.batching``: whatever is buffered, no fixed
wait; a burst for one user gives one refresh). A batch costs three Redis round trips and two
pure array functions:

1. apply: one script call per user applies the user's events, records each ``event_id`` (a
   redelivered event changes nothing) and returns the user's state;
2. ``models.profile.profile_batch``: user vectors and top contributing items;
3. reads: the co-occurrence lists of the contributors (those not read in the last
   ``co_cache_ms``; lists changed by this worker's increments are re-read after the write)
   and the popularity list (also reused for ``co_cache_ms``; with ``interest.co_pop_power``
   the listed neighbours' popularity in a fourth round trip); then the users' outboxes (the
   popularity and co-occurrence increments the apply script queued) are drained from the
   state thread, in parallel with steps 4-5;
4. ``models.ranking.rank_batch``: one search for every user, pools, scores, reasons;
5. lists are produced (keyed by ``user_id``) and cached in Redis (from the state thread),
   with the cold list (ranked in step 4 as for a user without history, by each batch that
   re-reads the popularity list: at most once per ``co_cache_ms``) that the read API serves
   users with no list of their own, and, with ``interest.stale_after_s``, the lists of idle
   users of the batch's partitions that grew that old (found in one more round trip);
   only when both are done are the batch's offsets acknowledged: at-least-once delivery,
   exactly-once effect on user state.

Redis being unreachable (restarting, loading its AOF, a network blip) is waited out: each
step is retried with capped exponential backoff until it succeeds. Every step is idempotent:
applying skips recorded event ids, and the signal drain removes the outbox entries it adds
(``streams.state.signals``), so a retried or redelivered batch counts nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol, TypeVar

import faust
from prometheus_client import Counter, Histogram

from models.candidates import CoLists, PopularBlock
from models.index import ItemIndex
from models.interest import InterestColumns, UserInterest
from models.profile import BatchStates, profile_batch
from models.ranking import RankedLists, rank_batch
from models.refresh import co_per_contributor
from schemas import RedisKeys, UserEvent, encode_recommendations
from streams.edge.batch import decode_batch
from streams.edge.deadletter import DeadLetterSink
from streams.kafka.app import app_topics
from streams.kafka.batching import take_buffered
from streams.kafka.topics import Topics
from streams.settings import Settings
from streams.state.backend import InterestBackend, RedisBackend, StaleUser
from streams.state.recs import COLD_USER_ID, ListAge
from streams.state.redis import connect_redis
from streams.state.retry import in_background, until_redis_answers
from workers.item_index import IndexFeed
from workers.item_index import register as register_index
from workers.list_cache import ListCache

log = logging.getLogger(__name__)
T = TypeVar("T")
NO_HISTORY = InterestColumns.of(UserInterest.empty())
"""The state the cold list is ranked for: a user with no events."""


EVENTS = Counter("visrec_events_consumed_total", "User events consumed")
APPLIED = Counter("visrec_events_applied_total", "Events applied (not duplicates)")
REFRESHES = Counter("visrec_refreshes_total", "Recommendation lists emitted")
REFRESH_LATENCY = Histogram(
    "visrec_refresh_latency_seconds",
    "Event produced (Kafka timestamp) to its list acknowledged by the broker",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
)
BATCH_STAGE = Histogram(
    "visrec_interest_batch_stage_seconds",
    "Time an event batch spends in each stage: decode, apply, profile, reads, rank, send, "
    "acks (waiting for the broker and the cache write)",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BATCH_EVENTS = Histogram(
    "visrec_interest_batch_events",
    "Events per consumed batch",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
SIGNALS_RECOVERED = Counter(
    "visrec_signal_entries_recovered_total",
    "Signal increments an earlier batch left in the outboxes (a crash or a failed drain), "
    "drained by a later one",
)
STALE_RANKED = Counter(
    "visrec_stale_lists_ranked_total",
    "Lists of idle users ranked again because they grew older than interest.stale_after_s",
)
CO_READS = Counter(
    "visrec_cooccurrence_lists_total",
    "Co-occurrence lists a refresh needed, by where they came from",
    ["source"],
)


Send = Callable[[str, bytes], Awaitable[Awaitable[object]]]
"""Produce one list, (user_id, payload); returns the delivery future."""


class IndexSource(Protocol):
    """Where the worker takes its index from (``IndexFeed``) and its state thread."""

    @property
    def index(self) -> ItemIndex:
        """The index served now (read once per batch)."""
        ...

    @property
    def pool(self) -> Executor:
        """The single state thread: Redis writes and retries run there."""
        ...


def producer_send(topic: faust.TopicT) -> Send:
    """``Send`` on ``topic`` through the app's producer directly.

    faust's ``Topic.send`` costs ~0.4 ms of Python per message (channel, codecs, callbacks) for
    bytes that are already encoded.
    """
    name = topic.get_topic_name()

    async def send(user_id: str, payload: bytes) -> Awaitable[object]:
        fut: Awaitable[object] = await topic.app.producer.send(
            name, user_id.encode("utf-8"), payload, None, None, None
        )
        return fut

    return send


class InterestUpdater:
    """Applies event batches and emits one refreshed list per user of the batch."""

    def __init__(
        self,
        settings: Settings,
        feed: IndexSource,
        dead_letters: DeadLetterSink,
        send: Send,
        state: InterestBackend,
    ) -> None:
        """Wire the batch procedure to its state, index and topics."""
        self.settings = settings
        self.feed = feed
        self.dead_letters = dead_letters
        self.send = send
        self.state = state
        self.spec = Topics.from_settings(settings).events
        self.limits = settings.limits.to_limits()
        self.interest = settings.interest.interest_params()
        self.ranking = settings.interest.rank_params()
        self.cache = ListCache(settings.interest.co_cache_ms / 1000)
        self.co_per_contributor = co_per_contributor(self.ranking)

    async def process(self, events: list[Any]) -> None:
        """Apply one batch, refresh its users, send, then return (the caller acks).

        Returning only once the broker has every list (and Redis the cached lists) is also
        what makes batches grow under load: the consumer delivers while this waits, and a
        deferred acknowledgement measured worse (smaller batches, each paying the fixed cost).
        """
        EVENTS.inc(len(events))
        BATCH_EVENTS.observe(len(events))
        clock = _Clock()
        batch = await decode_batch(
            events, self.spec, limits=self.limits, dead_letters=self.dead_letters
        )
        sends: list[Awaitable[object]] = list(batch.sends)
        clock.lap("decode")
        if batch.ok:
            sends += await self._refresh(batch.ok, clock)
        clock.lap("send")
        await asyncio.gather(*sends)
        clock.lap("acks")
        now = time.time()
        for event in events:
            REFRESH_LATENCY.observe(max(0.0, now - float(event.message.timestamp)))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("batch: %d events, %d ok; %s", len(events), len(batch.ok), clock)

    async def _refresh(
        self, sourced: list[tuple[UserEvent, Any]], clock: _Clock
    ) -> list[Awaitable[object]]:
        """Steps 1-5 of the module docstring for the batch's valid events."""
        index = self.feed.index  # one index for the whole batch, even if a switch lands
        self.cache.follow(index)
        triples = [(ev, src.partition, src.offset) for ev, src in sourced]
        applied, signals, states = await self._until_redis_answers(
            self.state.apply_and_read, triples
        )
        APPLIED.inc(sum(applied))
        SIGNALS_RECOVERED.inc(max(0, len(signals) - sum(applied)))
        clock.lap("apply")
        # The last event per user in offset order: the trigger the refreshed list answers,
        # and the time it is computed at.
        last: dict[str, tuple[UserEvent, int]] = {}
        for ev, src in sourced:
            last.pop(ev.user_id, None)
            last[ev.user_id] = (ev, src.partition)
        users = list(last)
        entries = [(u, states[u]) for u in users]
        times = [last[u][0].ts_ms for u in users]
        now = max(times)
        stale, cold = await self._also_rank(users, now, {p for _, p in last.values()})
        entries += [(s.age.user_id, s.state) for s in stale]
        if cold:
            entries.append((COLD_USER_ID, NO_HISTORY))
        times += [now] * (len(entries) - len(times))
        batch_states = BatchStates.of(entries, times)
        profiles = profile_batch(batch_states, index, self.interest)
        clock.lap("profile")
        co, popular, fresh = await self._until_redis_answers(
            lambda arg: self._read(arg, index, cold), profiles.contributor_ids()
        )
        clock.lap("reads")
        # Popularity and co-occurrence increments go to Redis from the state thread while this
        # one ranks: Redis works on them in parallel with the batch's Python (after the reads,
        # which would otherwise wait behind them in Redis).
        signals_written = in_background(self.state.write_signals, signals, self.feed.pool)
        lists = rank_batch(profiles, index, co, popular, self.ranking, fresh)
        clock.lap("rank")
        triggers = [last[u][0].event_id for u in users] + [s.trigger for s in stale] + [None] * cold
        payloads = self._encode(lists, triggers, index.model_id)
        cold_list = payloads.pop()[1] if cold else None
        sends: list[Awaitable[object]] = [await self.send(u, payload) for u, payload in payloads]
        # Lists they changed are re-read from now on (this batch may have read them before
        # the increments landed).
        self.cache.drop(await signals_written)
        # The cache is written from the state thread while the producer sends.
        ages = self._ages(last, stale, now)
        write = partial(self.state.write_lists, cold=cold_list, ages=ages)
        sends.append(self._until_redis_answers(write, payloads, first_on_loop=False))
        REFRESHES.inc(len(payloads))
        return sends

    async def _also_rank(
        self, users: list[str], now: int, partitions: set[int]
    ) -> tuple[list[StaleUser], bool]:
        """Whom else a batch ranks when it re-reads the popularity list (once per co_cache_ms).

        The cold list, for users with none of their own (no history, at the batch's newest
        event), and, with ``interest.stale_after_s``, idle users of the batch's partitions
        whose lists grew that old: those partitions are this worker's now, and it ranks
        their users between its batches, so no other writer races these lists.
        """
        cold = self.cache.popular_due(time.monotonic())
        s = self.settings.interest
        if not (cold and s.stale_after_s > 0):
            return [], cold
        before = now - round(s.stale_after_s * 1000)
        active = now - round(s.stale_active_s * 1000)
        args = (sorted(partitions), before, active, s.stale_per_batch, set(users))
        stale = await self._until_redis_answers(lambda a: self.state.stale_users(*a), args)
        STALE_RANKED.inc(len(stale))
        return stale, cold

    def _ages(
        self, last: dict[str, tuple[UserEvent, int]], stale: list[StaleUser], now: int
    ) -> list[ListAge]:
        """When each list of the batch was ranked (event time), if idle users are re-ranked."""
        if self.settings.interest.stale_after_s <= 0:
            return []
        ages = [ListAge(p, u, ev.ts_ms) for u, (ev, p) in last.items()]
        return ages + [ListAge(s.age.partition, s.age.user_id, now) for s in stale]

    @staticmethod
    def _encode(
        lists: RankedLists, triggers: Sequence[str | None], model_id: str
    ) -> list[tuple[str, bytes]]:
        """Each list's wire form, in the batch's order, answering ``triggers`` (None: none)."""
        generated = int(time.time() * 1000)
        return [
            (
                u,
                encode_recommendations(
                    u,
                    lists.items(j),
                    model_id,
                    trigger,
                    generated,
                ),
            )
            for j, (u, trigger) in enumerate(zip(lists.user_ids, triggers, strict=True))
        ]

    def _read(
        self, contributors: list[str], index: ItemIndex, popular_due: bool
    ) -> tuple[CoLists, PopularBlock, PopularBlock | None]:
        """Read the co-occurrence lists (and the popularity list if due), in one round trip.

        Also the newest arrivals, when the ranking weighs freshness; with
        ``interest.co_pop_power`` the lists' neighbours' popularity, in a second one.
        """
        now = time.monotonic()
        missing = self.cache.missing(contributors, now)
        limit = max(self.ranking.candidates, self.ranking.top_k)
        fetched, popular = self.state.read_signals(
            missing, self.co_per_contributor, 2 * limit if popular_due else None
        )
        power = self.settings.interest.co_pop_power
        lift_by = None
        if power > 0 and fetched:
            neighbours = [i for pairs in fetched.values() for i, _ in pairs]
            lift_by = (self.state.read_popularity(neighbours), power)
        self.cache.put(fetched, index, now, lift_by)
        CO_READS.labels("redis").inc(len(missing))
        CO_READS.labels("cache").inc(len(contributors) - len(missing))
        if popular is not None:
            self.cache.popular = PopularBlock.prepare(popular, index, limit)
            self.cache.popular_at = now
        assert self.cache.popular is not None
        fresh = None
        if self.ranking.fresh_weight > 0:
            fresh = self.cache.newest(index, 2 * limit, now)
        return self.cache.lists(contributors), self.cache.popular, fresh

    async def _until_redis_answers(
        self, step: Callable[[Any], T], arg: Any, *, first_on_loop: bool = True
    ) -> T:
        """``streams.state.retry.until_redis_answers`` with retries on the state thread."""
        return await until_redis_answers(step, arg, pool=self.feed.pool, on_loop=first_on_loop)


class _Clock:
    """Lap times of a batch's stages, observed into ``BATCH_STAGE``."""

    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        took = now - self.t
        self.t = now
        self.laps[stage] = took
        BATCH_STAGE.labels(stage).observe(took)

    def __str__(self) -> str:
        return ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in self.laps.items())


def register(app: faust.App, settings: Settings) -> IndexFeed:
    """Add the ``update_interests`` agent and the item-index task to ``app``."""
    topics = app_topics(app, settings)
    state_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="visrec-state")
    feed = IndexFeed(settings, state_pool)
    register_index(app, feed)
    dead_letters = DeadLetterSink(
        topics["dead_letter"],
        connect_redis(settings.redis),
        RedisKeys(settings.redis.namespace),
        settings.limits.max_dead_letter_payload_bytes,
    )
    state = RedisBackend.from_settings(
        connect_redis(settings.redis), RedisKeys(settings.redis.namespace), settings.interest
    )
    updater = InterestUpdater(
        settings, feed, dead_letters, producer_send(topics["recommendations"]), state
    )
    app.agent(topics["events"], name="update_interests")(
        agent_body(updater, feed.ready, settings.interest.max_batch)
    )
    return feed


def agent_body(
    updater: InterestUpdater, ready: asyncio.Event, max_batch: int
) -> Callable[[faust.StreamT[bytes]], Awaitable[None]]:
    """The ``update_interests`` agent: once ``ready`` (an index), batches to ``updater``."""

    async def update_interests(stream: faust.StreamT[bytes]) -> None:
        await ready.wait()
        async for events in take_buffered(stream, max_batch):
            await updater.process(events)

    return update_interests

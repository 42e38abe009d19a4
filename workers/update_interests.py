"""``update_interests``: user events in, refreshed recommendation lists out.

Events are consumed in micro-batches of at most ``coalesce_ms`` (a burst for one user gives
one refresh). Each event is applied to the user's state in Redis by an atomic script that
also records its ``event_id``, so a redelivered event changes nothing; then every user of
the batch gets one refreshed list (cached in Redis and sent keyed by ``user_id``), and only
then are the batch's offsets acknowledged: at-least-once delivery, exactly-once effect.

Redis being unreachable (restarting, loading its AOF, a network blip) is waited out: the
batch's Redis work is retried with capped exponential backoff until it succeeds. It must not
raise, because faust's ``take_events`` acknowledges a batch even when its consumer raised, so
a failed batch would be committed unapplied. Retrying is safe: applying is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import faust
import redis
from prometheus_client import Counter, Histogram

from models.ranking import RankParams
from schemas import RedisKeys, UserEvent
from streams.app import app_topics, connect_redis
from streams.batch import decode_batch
from streams.deadletter import DeadLetterSink
from streams.recommender import Recommender
from streams.settings import Settings
from streams.user_state import UserStateError, UserStateStore
from workers.item_index import IndexFeed
from workers.item_index import register as register_index

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors that say "Redis is not there right now", not "this event is bad": the first two
# cover refused/closed connections and LOADING (BusyLoadingError is a ConnectionError);
# UserStateError carries per-command errors of a pipeline that ran while Redis went away.
TRANSIENT_REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    UserStateError,
)
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0

EVENTS = Counter("visrec_events_consumed_total", "User events consumed")
APPLIED = Counter("visrec_events_applied_total", "Events applied (not duplicates)")
REFRESHES = Counter("visrec_refreshes_total", "Recommendation lists emitted")
REFRESH_LATENCY = Histogram(
    "visrec_refresh_latency_seconds",
    "Event produced (Kafka timestamp) to recommendation sent",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
)
REDIS_RETRIES = Counter(
    "visrec_redis_retries_total", "Batch steps retried because Redis was unavailable"
)


def rank_params(settings: Settings) -> RankParams:
    """Ranking parameters from settings."""
    i = settings.interest
    return RankParams(
        top_k=i.top_k,
        candidates=i.candidates,
        visual_weight=i.visual_weight,
        co_weight=i.co_weight,
        popularity_weight=i.popularity_weight,
        mmr_lambda=i.mmr_lambda,
    )


class InterestUpdater:
    """Applies event batches and emits one refreshed list per user of the batch."""

    def __init__(
        self,
        settings: Settings,
        feed: IndexFeed,
        dead_letters: DeadLetterSink,
        recommendations: faust.TopicT,
    ) -> None:
        """Wire the batch procedure to its stores, index and topics."""
        self.settings = settings
        self.feed = feed
        self.dead_letters = dead_letters
        self.recommendations = recommendations
        self.store = UserStateStore.from_settings(
            connect_redis(settings.redis), RedisKeys(settings.redis.namespace), settings.interest
        )
        self.recommender = Recommender(self.store, feed, self.store.params, rank_params(settings))

    async def process(self, events: list[Any]) -> None:
        """Apply one batch, refresh its users, send, then return (the caller acks)."""
        EVENTS.inc(len(events))
        batch = await decode_batch(
            events,
            UserEvent,
            key_field="user_id",
            max_bytes=self.settings.limits.max_event_bytes,
            limits=self.settings.limits.to_limits(),
            dead_letters=self.dead_letters,
        )
        sends: list[Awaitable[object]] = list(batch.sends)
        if batch.ok:
            applied = await self._until_redis_answers(
                self.store.apply, [(ev, src.partition, src.offset) for ev, src in batch.ok]
            )
            APPLIED.inc(sum(applied))
            # Last event per user in offset order: the trigger the refreshed list answers.
            last: dict[str, UserEvent] = {}
            for ev, _ in batch.ok:
                last.pop(ev.user_id, None)
                last[ev.user_id] = ev
            lists = await self._until_redis_answers(self.recommender.refresh, list(last.values()))
            for recs in lists:
                sends.append(
                    await self.recommendations.send(
                        key=recs.user_id.encode("utf-8"), value=recs.to_json_bytes()
                    )
                )
        await asyncio.gather(*sends)
        now = time.time()
        for event in events:
            REFRESH_LATENCY.observe(max(0.0, now - float(event.message.timestamp)))
        REFRESHES.inc(len(batch.ok) and len({ev.user_id for ev, _ in batch.ok}))

    async def _until_redis_answers(self, step: Callable[[Any], T], arg: Any) -> T:
        """Run ``step(arg)`` on the state thread, retrying with backoff while Redis is away."""
        loop = asyncio.get_running_loop()
        delay = RETRY_FIRST_S
        while True:
            try:
                return await loop.run_in_executor(self.feed.pool, step, arg)
            except TRANSIENT_REDIS_ERRORS as exc:
                REDIS_RETRIES.inc()
                log.warning("redis unavailable (%s); retrying the batch in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)


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
    updater = InterestUpdater(settings, feed, dead_letters, topics["recommendations"])
    i = settings.interest

    @app.agent(topics["events"], name="update_interests")
    async def update_interests(stream: faust.StreamT[bytes]) -> None:
        await feed.ready.wait()
        batches = stream.take_events(  # type: ignore[attr-defined]  # missing in faust stubs
            i.max_batch, within=i.coalesce_ms / 1000
        )
        async for events in batches:
            await updater.process(list(events))

    return feed

"""``item_index``: every interest worker's in-memory item index, kept current.

At start the index is built from Redis for the active model in its retrieval space (fitting
the space first when the catalogue is large enough and none exists, see
``streams.state.spaces``); then the worker reads ``visrec.item-vectors.v1`` from *every* partition
(no consumer group: each worker needs all items), starting at the end offsets it noted
*before* reading Redis, so no vector written in between is missed. A new product is in the
index (projected into the space) as soon as its vector arrives.

Every ``MODEL_POLL_S`` the feed checks the active model and its space version in Redis. When
either changed (a re-embed switched models, a space was refitted) it builds the new index in
a background thread while the current one keeps serving, replays the vectors that arrived
meanwhile, and swaps it in at once: a batch sees one index from start to end. When the
catalogue has grown enough it fits a new space itself (one worker at a time, by lock).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import faust
import numpy as np
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaConsumer
from prometheus_client import Gauge
from pydantic import ValidationError

from models.exceptions import IndexInputError, SpaceError
from models.index import ItemIndex, Space, raw_space
from schemas import ItemVector, RedisKeys
from streams.kafka.config import kafka_python_config
from streams.kafka.topics import Topics
from streams.settings import Settings
from streams.state.item_store import ItemStore
from streams.state.redis import connect_redis
from streams.state.spaces import SpaceStore, build_index, current_space, fit_and_publish, refit_due

log = logging.getLogger(__name__)

INDEX_SIZE = Gauge("visrec_index_items", "Available items in this worker's index")
INDEX_BYTES = Gauge("visrec_index_bytes", "Approximate bytes of this worker's index")
MODEL_POLL_S = 2.0
FIT_RETRY_S = 60.0


def _empty_index() -> ItemIndex:
    return ItemIndex(raw_space("", 1))


class IndexFeed:
    """Owns the index: vectors are applied on the state thread, refreshes read ``index``.

    ``index`` is replaced, never rebuilt in place, so a reader that took it once sees one
    model and one space; the index serialises its own changes with a lock.
    """

    def __init__(self, settings: Settings, state_pool: ThreadPoolExecutor) -> None:
        """An empty index; ``run`` fills it."""
        self.settings = settings
        self.pool = state_pool
        self.index: ItemIndex = _empty_index()
        client = connect_redis(settings.redis)
        keys = RedisKeys(settings.redis.namespace)
        self.items = ItemStore(client, keys)
        self.spaces = SpaceStore(client, keys)
        self.ready = asyncio.Event()
        self.applied = 0
        self._build_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="visrec-build")
        self._target: tuple[str, str | None] | None = None  # what a running build makes
        self._oplog: list[ItemVector] = []
        self._task: asyncio.Future[None] | None = None
        self._fit_after = 0.0

    @property
    def active_model(self) -> str | None:
        """The model served now (None before any item was embedded)."""
        return self.index.model_id or None

    @property
    def space(self) -> Space:
        """The space served now."""
        return self.index.space

    # --- on the state thread ---------------------------------------------------------

    def _apply(self, vectors: list[ItemVector]) -> None:
        by_model: dict[str, list[ItemVector]] = defaultdict(list)
        for vec in vectors:
            by_model[vec.model_id].append(vec)
        if not self.index.model_id and self._target is None:
            # Nothing served yet (an empty catalogue at start): the first model to arrive is
            # the one the embed worker made active; serve it now, the next poll confirms it.
            first = vectors[0]
            self.index = ItemIndex(raw_space(first.model_id, first.dim))
        index = self.index
        for model_id, group in by_model.items():
            if self._target is not None and self._target[0] == model_id:
                self._oplog.extend(group)  # replayed onto the index being built
            if model_id == index.model_id:
                _upsert(index, group)
        self.applied += len(vectors)
        INDEX_SIZE.set(len(self.index))

    def _poll(self) -> _Poll:
        model = self.items.active_model()
        if model is None:
            return _Poll(None, None, 0, None)
        return _Poll(
            model,
            self.spaces.version(model),
            self.items.count(model),
            self.spaces.refused_at(model),
        )

    def _swap(self, target: tuple[str, str | None], index: ItemIndex) -> None:
        model_id = target[0]
        replay = [v for v in self._oplog if v.model_id == model_id]
        if replay:
            _upsert(index, replay)
        self._oplog = []
        self._target = None
        self.index = index
        INDEX_SIZE.set(len(index))
        INDEX_BYTES.set(index.memory_bytes())
        # Everything alive now (the index's id map, the app, the libraries) is long-lived:
        # keep it out of the cyclic collector's full passes, which otherwise walk it every
        # few seconds and stall the loop for ~50 ms at 100k items (the p99 of a list).
        gc.collect()
        gc.freeze()

    # --- in the build thread ---------------------------------------------------------

    def _build(self, model_id: str, version: str | None) -> ItemIndex:
        start = time.monotonic()
        space = current_space(self.items, self.spaces, model_id, version)
        index = _empty_index() if space is None else build_index(self.items, space)
        log.warning(
            "item index for %s built: %d items (%s) in %.1fs, ~%.0f MB",
            index.space.id,
            index.size,
            index.kind,
            time.monotonic() - start,
            index.memory_bytes() / 1e6,
        )
        return index

    def _fit(self, model_id: str) -> None:
        fitted = None
        try:
            fitted = fit_and_publish(self.items, self.spaces, model_id, self.settings.interest)
        except (SpaceError, ValueError, redis.RedisError) as exc:
            log.error("fitting a space for %s failed: %s", model_id, exc)
        if fitted is None or fitted.space is None:
            # Failed, or another process holds the lock: look again in a while, not at every
            # poll (a fit at 1M items reads 50,000 vectors).
            self._fit_after = time.monotonic() + FIT_RETRY_S

    # --- on the loop -----------------------------------------------------------------

    async def _switch(self, model_id: str, version: str | None) -> None:
        """Build the index of (model, version) in the background, then swap it in."""
        loop = asyncio.get_running_loop()
        target = (model_id, version)
        await loop.run_in_executor(self.pool, self._begin, target)
        try:
            index = await loop.run_in_executor(self._build_pool, self._build, model_id, version)
        except (SpaceError, IndexInputError, ValueError, redis.RedisError) as exc:
            log.error("building the index of %s@%s failed: %s", model_id, version, exc)
            await loop.run_in_executor(self.pool, self._abort)
            return
        await loop.run_in_executor(self.pool, self._swap, target, index)
        log.warning("item index now serves %s (%d items)", index.space.id, len(index))

    def _begin(self, target: tuple[str, str | None]) -> None:
        self._target = target
        self._oplog = []

    def _abort(self) -> None:
        self._target = None
        self._oplog = []

    async def _follow(self, poll: _Poll) -> None:
        """Start a switch or a fit if one is due (one at a time)."""
        model, version = poll.model, poll.version
        if model is None or (self._task is not None and not self._task.done()):
            return
        current = self.index
        if model != current.model_id or version != _version_of(current.space):
            self._task = asyncio.ensure_future(self._switch(model, version))
        elif (
            refit_due(current.space, poll.count, self.settings.interest, poll.refused_at)
            and time.monotonic() >= self._fit_after
        ):
            loop = asyncio.get_running_loop()
            self._task = loop.run_in_executor(self._build_pool, self._fit, model)
        if self._task is not None:
            self._task.add_done_callback(_log_failure)

    async def start_index(self) -> None:
        """The first build: fit a space first when one is due, so start-up builds once."""
        loop = asyncio.get_running_loop()
        poll = await loop.run_in_executor(self.pool, self._poll)
        if poll.model is None:
            return
        interest = self.settings.interest
        if poll.version is None and refit_due(None, poll.count, interest, poll.refused_at):
            await loop.run_in_executor(self._build_pool, self._fit, poll.model)
            for _ in range(int(600 / MODEL_POLL_S)):  # another worker may hold the lock
                poll = await loop.run_in_executor(self.pool, self._poll)
                if poll.model is None or poll.version is not None:
                    break
                if not refit_due(None, poll.count, interest, poll.refused_at):
                    break  # refused: the model stays at full dimension
                await asyncio.sleep(MODEL_POLL_S)
        if poll.model is not None:
            await self._switch(poll.model, poll.version)

    async def run(self) -> None:
        """Build the index, then follow the item-vectors topic until cancelled."""
        loop = asyncio.get_running_loop()
        topic = Topics.from_settings(self.settings).item_vectors.name
        cfg = kafka_python_config(self.settings.kafka, client_suffix="index")
        cfg.pop("request_timeout_ms", None)
        consumer = AIOKafkaConsumer(
            **cfg, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            partitions = await loop.run_in_executor(None, _partitions, self.settings, topic)
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, ends[tp])
            await self.start_index()
            log.warning("item index loaded %d items from redis", len(self.index))
            self.ready.set()
            limits = self.settings.limits.to_limits()
            next_poll = loop.time() + MODEL_POLL_S
            while True:
                fetched = await consumer.getmany(timeout_ms=200, max_records=2000)
                vectors: list[ItemVector] = []
                for records in fetched.values():
                    for record in records:
                        try:
                            vectors.append(ItemVector.from_json_bytes(record.value, limits))
                        except (ValidationError, TypeError):
                            # Only our embed worker writes this topic; a bad record is a bug there,
                            # and skipping it is safer than stopping every interest worker.
                            log.error(
                                "invalid ItemVector at %s@%d", record.partition, record.offset
                            )
                if vectors:
                    await loop.run_in_executor(self.pool, self._apply, vectors)
                if loop.time() >= next_poll:
                    try:
                        await self._follow(await loop.run_in_executor(self.pool, self._poll))
                    except redis.RedisError as exc:
                        # Redis restarting must not stop the index: vectors keep coming from
                        # Kafka, and the check runs again at the next poll.
                        log.warning("active-model check failed (%s); retrying", exc)
                    next_poll = loop.time() + MODEL_POLL_S
        finally:
            await consumer.stop()
            self._build_pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True, slots=True)
class _Poll:
    """What the feed reads from Redis every ``MODEL_POLL_S``."""

    model: str | None
    version: str | None
    count: int
    refused_at: int | None


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("item index update failed", exc_info=task.exception())


def _version_of(space: Space) -> str | None:
    return None if space.is_raw else space.version


def _upsert(index: ItemIndex, vectors: list[ItemVector]) -> None:
    """Vectors of the index's model into it; a vector it cannot take is logged, not fatal."""
    good = [v for v in vectors if v.dim == index.space.dim_in]
    for bad in (v for v in vectors if v.dim != index.space.dim_in):
        log.error("item %s has dim %d, the index %d: skipped", bad.item_id, bad.dim, index.dim)
    if not good:
        return
    try:
        index.upsert_many(
            [v.item_id for v in good],
            np.stack([v.to_array() for v in good]),
            [v.available for v in good],
            [v.ts_ms for v in good],
        )
    except IndexInputError:
        for vec in good:  # find the bad one(s); keep the rest
            try:
                index.upsert(vec.item_id, vec.to_array(), vec.available, vec.ts_ms)
            except IndexInputError as exc:
                log.error("item %s not indexed: %s", vec.item_id, exc)


def _partitions(settings: Settings, topic: str, timeout_s: float = 30.0) -> set[int]:
    """The topic's partitions, from a fresh metadata request (kafka-python, blocking)."""
    consumer = KafkaConsumer(**kafka_python_config(settings.kafka, client_suffix="meta"))
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            found = consumer.partitions_for_topic(topic)
            if found:
                return set(found)
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {topic} not found; run `visrec topics create`")
            time.sleep(0.2)
    finally:
        consumer.close()


def register(app: faust.App, feed: IndexFeed) -> None:
    """Run ``feed`` as a task of ``app`` for the worker's lifetime."""

    @app.task  # type: ignore[untyped-decorator]  # faust is untyped
    async def item_index() -> None:
        await feed.run()

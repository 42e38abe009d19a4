"""``item_index``: every interest worker's in-memory item index, kept current.

At start the index is built from Redis; then the worker reads ``visrec.item-vectors.v1`` from
*every* partition (no consumer group: each worker needs all items), starting at the end offsets
it noted *before* reading Redis, so no vector written in between is missed. It also follows the
active model id in Redis, so a re-embed switches every worker's index atomically.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import faust
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaConsumer
from prometheus_client import Gauge
from pydantic import ValidationError

from models.index import ItemIndex, make_index
from schemas import ItemVector, RedisKeys
from streams.app import connect_redis
from streams.item_store import ItemStore
from streams.kafka_config import kafka_python_config
from streams.settings import Settings
from streams.topics import Topics

log = logging.getLogger(__name__)

INDEX_SIZE = Gauge("visrec_index_items", "Available items in this worker's index")
MODEL_POLL_S = 2.0


class IndexFeed:
    """Owns the index: vectors are applied on the state thread, refreshes read it from the loop.

    The index serialises its own operations with a lock, so the two never race.
    """

    def __init__(self, settings: Settings, state_pool: ThreadPoolExecutor) -> None:
        """Build an empty index; ``start`` fills it."""
        self.settings = settings
        self.pool = state_pool
        self.index: ItemIndex = make_index(settings.interest.ann_threshold)
        self.store = ItemStore(connect_redis(settings.redis), RedisKeys(settings.redis.namespace))
        self.ready = asyncio.Event()
        self.active_model: str | None = None
        self.applied = 0

    def _load_from_redis(self, model_id: str) -> int:
        count = 0
        for item in self.store.scan(model_id):
            self.index.upsert(
                item.item_id,
                item.vector,
                available=item.attributes.available,
                category=item.attributes.category,
                model_id=model_id,
            )
            count += 1
        self.index.switch_model(model_id)
        INDEX_SIZE.set(len(self.index))
        return count

    def _apply(self, vectors: list[ItemVector]) -> None:
        for vec in vectors:
            self.index.upsert(
                vec.item_id,
                vec.to_array(),
                available=vec.available,
                category=vec.category,
                model_id=vec.model_id,
            )
        self.applied += len(vectors)
        INDEX_SIZE.set(len(self.index))

    def _check_model(self) -> None:
        model = self.store.active_model()
        if model is not None and model != self.active_model:
            if self.active_model is None:
                self._load_from_redis(model)
                self.active_model = model
            else:
                with self.index.consistent():  # a refresh sees both switched, or neither
                    self.index.switch_model(model)
                    self.active_model = model
            log.warning("item index now serves model %s (%d items)", model, len(self.index))

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
            await loop.run_in_executor(self.pool, self._check_model)
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
                        await loop.run_in_executor(self.pool, self._check_model)
                    except redis.RedisError as exc:
                        # Redis restarting must not stop the index: vectors keep coming from
                        # Kafka, and the model check runs again at the next poll.
                        log.warning("active-model check failed (%s); retrying", exc)
                    next_poll = loop.time() + MODEL_POLL_S
        finally:
            await consumer.stop()


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

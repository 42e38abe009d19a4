"""Re-embedding the whole catalogue with a new encoder, then switching every reader at once.

The products topic is compacted (latest image per item), so it *is* the catalogue: we read
it from the beginning with a plain consumer, embed every product with the new model, store
``vec:<new_model_id>`` beside the old vector and announce the new ``ItemVector``s. Progress
is checkpointed per partition in Redis, so an interrupted run resumes. Only when every
partition is done is the new model's retrieval space fitted (if the catalogue calls for one)
and the active model switched, with one SET: interest workers then build the new model's
index from Redis in the background and swap it in, so readers never mix two models.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from pydantic import ValidationError

from models.vision.embedder import Embedder
from schemas import ProductImage, RedisKeys, VectorDType
from streams.edge.image_fetch import ImageFetcher
from streams.edge.products import embed_batch
from streams.kafka.config import kafka_python_config
from streams.kafka.producer import make_producer
from streams.kafka.topics import Topics
from streams.settings import Settings
from streams.state.item_store import ItemStore, StoredItem
from streams.state.spaces import prepare_space


@dataclass
class ReembedReport:
    """What a re-embed did."""

    embedded: int = 0
    failed: int = 0
    skipped_invalid: int = 0
    switched: bool = False


def _checkpoint_key(keys: RedisKeys, model_id: str) -> str:
    return f"{keys.root}:reembed:{model_id}:offsets"


class _Reembedding:
    """One re-embed run: the stores, clients and counters ``reembed`` works with."""

    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        from streams.state.redis import connect_redis

        self.settings = settings
        self.embedder = embedder
        self.keys = RedisKeys(settings.redis.namespace)
        self.client = connect_redis(settings.redis)
        self.store = ItemStore(self.client, self.keys, settings.embed.vector_dtype)
        self.model_id = embedder.encoder.model_id
        self.topics = Topics.from_settings(settings)
        self.fetcher = ImageFetcher.from_settings(settings.embed)
        self.dtype = VectorDType(settings.embed.vector_dtype)
        self.producer: KafkaProducer = make_producer(settings)
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="visrec-fetch")
        self.report = ReembedReport()

    def checkpoint(self) -> dict[int, int]:
        raw = self.client.hgetall(_checkpoint_key(self.keys, self.model_id))
        return {int(k): int(v) for k, v in raw.items()}

    def records(self, partition: int, records: list[Any]) -> None:
        """Embed, store and announce one poll's records of a partition; checkpoint it."""
        limits = self.settings.limits.to_limits()
        products: list[ProductImage] = []
        for record in records:
            try:
                products.append(ProductImage.from_json_bytes(record.value, limits))
            except (ValidationError, ValueError, TypeError):
                self.report.skipped_invalid += 1
        stored = []
        for result in embed_batch(products, self.embedder, self.fetcher, self.pool):
            if isinstance(result, StoredItem):
                stored.append(result)
            else:
                self.report.failed += 1
        self.store.write_vectors_only(stored)
        for item in stored:
            self.producer.send(
                self.topics.item_vectors.name,
                key=item.item_id.encode("utf-8"),
                value=item.to_item_vector(self.dtype).to_json_bytes(),
            )
        self.producer.flush()
        self.report.embedded += len(stored)
        key = _checkpoint_key(self.keys, self.model_id)
        self.client.hset(key, str(partition), records[-1].offset + 1)

    def switch(self) -> None:
        """Fit the new model's space (if due), make it the active model, drop the checkpoint."""
        # Workers then build the new model's compact index directly when they follow.
        prepare_space(self.client, self.keys, self.model_id, self.settings.interest)
        self.store.set_active_model(self.model_id)
        self.client.delete(_checkpoint_key(self.keys, self.model_id))
        self.report.switched = True

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.producer.close()


def reembed(
    settings: Settings,
    embedder: Embedder,
    *,
    batch_size: int = 64,
    switch: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> ReembedReport:
    """Embed every product on the products topic with ``embedder``; then switch the model."""
    run = _Reembedding(settings, embedder)
    consumer = KafkaConsumer(
        **kafka_python_config(settings.kafka, client_suffix="reembed"),
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=settings.limits.max_product_bytes * 2,
        fetch_max_bytes=settings.limits.max_product_bytes * 4,
    )
    try:
        topic = run.topics.products.name
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        done = run.checkpoint()
        for tp in tps:
            consumer.seek(tp, done.get(tp.partition, 0))
        total = sum(ends[tp] for tp in tps)
        position = sum(min(done.get(tp.partition, 0), ends[tp]) for tp in tps)
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            polled = consumer.poll(timeout_ms=500, max_records=batch_size)
            for tp, records in polled.items():
                records = [r for r in records if r.offset < ends[tp]]
                if records:
                    run.records(tp.partition, records)
                    position += len(records)
                    if progress is not None:
                        progress(position, total)
        if switch:
            run.switch()
    finally:
        consumer.close()
        run.close()
    return run.report

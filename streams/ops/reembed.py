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


def reembed(
    settings: Settings,
    embedder: Embedder,
    *,
    batch_size: int = 64,
    switch: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> ReembedReport:
    """Embed every product on the products topic with ``embedder``; then switch the model."""
    from streams.state.redis import connect_redis

    keys = RedisKeys(settings.redis.namespace)
    client = connect_redis(settings.redis)
    store = ItemStore(client, keys, settings.embed.vector_dtype)
    model_id = embedder.encoder.model_id
    topics = Topics.from_settings(settings)
    e = settings.embed
    fetcher = ImageFetcher(
        file_roots=list(e.file_roots),
        allow_private_networks=e.allow_private_networks,
        timeout_s=e.fetch_timeout_s,
        max_bytes=e.max_image_bytes,
    )
    consumer = KafkaConsumer(
        **kafka_python_config(settings.kafka, client_suffix="reembed"),
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=settings.limits.max_product_bytes * 2,
        fetch_max_bytes=settings.limits.max_product_bytes * 4,
    )
    producer: KafkaProducer = make_producer(settings)
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="visrec-fetch")
    report = ReembedReport()
    try:
        parts = sorted(consumer.partitions_for_topic(topics.products.name) or ())
        tps = [TopicPartition(topics.products.name, p) for p in parts]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        done = {int(k): int(v) for k, v in client.hgetall(_checkpoint_key(keys, model_id)).items()}
        for tp in tps:
            consumer.seek(tp, done.get(tp.partition, 0))
        total = sum(ends[tp] for tp in tps)
        position = sum(min(done.get(tp.partition, 0), ends[tp]) for tp in tps)
        limits = settings.limits.to_limits()
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            polled = consumer.poll(timeout_ms=500, max_records=batch_size)
            for tp, records in polled.items():
                records = [r for r in records if r.offset < ends[tp]]
                if not records:
                    continue
                products: list[ProductImage] = []
                for record in records:
                    try:
                        products.append(ProductImage.from_json_bytes(record.value, limits))
                    except (ValidationError, ValueError, TypeError):
                        report.skipped_invalid += 1
                stored = []
                for result in embed_batch(products, embedder, fetcher, pool):
                    if isinstance(result, StoredItem):
                        stored.append(result)
                    else:
                        report.failed += 1
                store.write_vectors_only(stored)
                for item in stored:
                    producer.send(
                        topics.item_vectors.name,
                        key=item.item_id.encode("utf-8"),
                        value=item.to_item_vector(VectorDType(e.vector_dtype)).to_json_bytes(),
                    )
                producer.flush()
                report.embedded += len(stored)
                client.hset(
                    _checkpoint_key(keys, model_id), str(tp.partition), records[-1].offset + 1
                )
                position += len(records)
                if progress is not None:
                    progress(position, total)
        if switch:
            # Fit the new model's retrieval space first (when the catalogue is large enough):
            # workers then build its compact index directly when they follow the switch.
            prepare_space(client, keys, model_id, settings.interest)
            store.set_active_model(model_id)
            client.delete(_checkpoint_key(keys, model_id))
            report.switched = True
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        consumer.close()
        producer.close()
    return report

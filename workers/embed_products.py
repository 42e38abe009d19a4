"""``embed_products``: product images in, item vectors out (Redis + the item-vectors topic).

Micro-batches ``visrec.products.v1`` (what is buffered, waiting up to ``max_wait_ms`` for a
batch to reach ``max_batch``), fetches and decodes images in a thread pool while ONNX Runtime
embeds, writes every vector of the batch to Redis in one pipeline, then announces one
``ItemVector`` per item. Each bad product is dead-lettered with its reason; the rest of the
batch proceeds. A batch is acknowledged only once its vectors are in Redis and on the
item-vectors topic (``streams.kafka.batching``): while Redis is away the write is retried
with backoff (``streams.state.retry``; writing a vector again is an overwrite), never skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from prometheus_client import Counter, Histogram

from models.vision.embedder import Embedder
from models.vision.encoder import Encoder
from schemas import RedisKeys, VectorDType
from streams.edge.batch import decode_batch
from streams.edge.codec import Rejected, Source
from streams.edge.deadletter import DeadLetterSink
from streams.edge.image_fetch import ImageFetcher
from streams.edge.products import embed_batch, image_limits
from streams.kafka.app import app_topics
from streams.kafka.batching import take_buffered
from streams.kafka.topics import Topics
from streams.model_cache import resolve_model_dir
from streams.settings import Settings
from streams.state.item_store import ItemStore, StoredItem
from streams.state.redis import connect_redis
from streams.state.retry import until_redis_answers

log = logging.getLogger(__name__)

PRODUCTS = Counter("visrec_products_consumed_total", "Product messages consumed")
EMBEDDED = Counter("visrec_products_embedded_total", "Products embedded and stored")
BATCH_SIZE = Histogram(
    "visrec_embed_batch_size",
    "Products per embed batch",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
EMBED_SECONDS = Histogram("visrec_embed_batch_seconds", "Fetch+decode+embed time per batch")


class ProductEmbedder:
    """What one embed worker holds: encoder, fetcher, stores, and the batch procedure."""

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        dead_letters: DeadLetterSink,
        item_vectors: faust.TopicT,
    ) -> None:
        """Wire the batch procedure to its encoder, stores and topics."""
        self.settings = settings
        self.embedder = embedder
        self.dead_letters = dead_letters
        self.item_vectors = item_vectors
        self.store = ItemStore(
            connect_redis(settings.redis),
            RedisKeys(settings.redis.namespace),
            settings.embed.vector_dtype,
        )
        e = settings.embed
        self.fetcher = ImageFetcher.from_settings(e)
        self.io_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="visrec-fetch")
        self.dtype = VectorDType(e.vector_dtype)
        self.spec = Topics.from_settings(settings).products
        self.limits = settings.limits.to_limits()

    async def process(self, events: list[Any]) -> int:
        """Embed one batch; returns how many items were stored."""
        PRODUCTS.inc(len(events))
        BATCH_SIZE.observe(len(events))
        loop = asyncio.get_running_loop()
        batch = await decode_batch(
            events, self.spec, limits=self.limits, dead_letters=self.dead_letters
        )
        started = time.perf_counter()
        products = [product for product, _ in batch.ok]
        results = await loop.run_in_executor(
            None, embed_batch, products, self.embedder, self.fetcher, self.io_pool
        )
        sends: list[Awaitable[object]] = list(batch.sends)
        stored: list[StoredItem] = []
        for (_, source), result in zip(batch.ok, results, strict=True):
            if isinstance(result, Rejected):
                sends.append(await self.dead_letters.send(source, _raw(source, events), result))
            else:
                stored.append(result)
        EMBED_SECONDS.observe(time.perf_counter() - started)
        # Redis first, then the announcement: a reader that sees the ItemVector finds the item.
        await until_redis_answers(self.store.write, stored, pool=None, on_loop=False)
        for item in stored:
            sends.append(
                await self.item_vectors.send(
                    key=item.item_id.encode("utf-8"),
                    value=item.to_item_vector(self.dtype).to_json_bytes(),
                )
            )
        await asyncio.gather(*sends)
        EMBEDDED.inc(len(stored))
        return len(stored)


def _raw(source: Source, events: list[Any]) -> bytes | None:
    for event in events:
        msg = event.message
        if msg.partition == source.partition and msg.offset == source.offset:
            value: bytes | None = msg.value
            return value
    return None


def register(app: faust.App, settings: Settings) -> Callable[[], bool]:
    """Add the ``embed_products`` agent to ``app``; returns its readiness check."""
    topics = app_topics(app, settings)
    keys = RedisKeys(settings.redis.namespace)
    dead_letters = DeadLetterSink(
        topics["dead_letter"],
        connect_redis(settings.redis),
        keys,
        settings.limits.max_dead_letter_payload_bytes,
    )
    e = settings.embed
    loaded: list[bool] = []

    @app.agent(topics["products"], name="embed_products")
    async def embed_products(stream: faust.StreamT[bytes]) -> None:
        model_dir = resolve_model_dir(settings)
        encoder = Encoder.load(
            model_dir,
            device=e.device,
            intra_op_threads=e.intra_op_threads,
            cuda=e.cuda_options(),
        )
        embedder = Embedder(
            encoder,
            image_limits(e),
            decode_threads=e.decode_threads,
            gpu_decode=e.gpu_decode,
        )
        log.warning(
            "embed worker ready: model %s (%s) on %s, images decoded on %s",
            encoder.card.name,
            encoder.model_id,
            encoder.provider,
            embedder.input_path,
        )
        worker = ProductEmbedder(settings, embedder, dead_letters, topics["item_vectors"])
        loaded.append(True)
        try:
            async for events in take_buffered(stream, e.max_batch, e.max_wait_ms / 1000):
                await worker.process(events)
        finally:
            embedder.close()

    return lambda: bool(loaded)

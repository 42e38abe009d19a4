"""Re-embedding the catalogue with another encoder: every item gets a vector of the new model,
the switch is one write, and a running interest worker serves the new model afterwards."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from models.vision.embedder import Embedder
from models.vision.encoder import Encoder
from models.vision.export import ensure_encoder
from models.vision.images import ImageLimits
from schemas import (
    EventType,
    RedisKeys,
    UserEvent,
)
from streams.kafka.topics import Topics, create_topics
from streams.ops.reembed import reembed
from streams.settings import Settings
from streams.state.item_store import ItemStore
from streams.tools.processes import running_worker
from tests.photos import sample_photos
from tests.support import collect, list_answering, product_message, raw_producer


def test_reembed_switches_every_reader_to_the_new_model(settings: Settings, tmp_path: Path) -> None:
    create_topics(settings)
    topics = Topics.from_settings(settings)
    photos = dict(sorted(sample_photos().items())[:8])
    producer = raw_producer(settings)
    for item_id, data in photos.items():
        value = product_message(item_id, data, category="photo")
        producer.send(topics.products.name, key=item_id.encode(), value=value)
    producer.flush()
    store = ItemStore(redis.Redis.from_url(settings.redis.url), RedisKeys())
    new_dir = ensure_encoder("mobilenet-v2", settings.model_cache_dir)
    with (
        running_worker(settings, "embed", tmp_path / "embed.log") as embed,
        running_worker(settings, "interests", tmp_path / "interests.log") as interests,
    ):
        assert collect(settings, topics.item_vectors.name, lambda m: len(m) >= len(photos), 180), (
            embed.output()[-2000:]
        )
        old_model = store.active_model()
        assert old_model is not None and old_model.startswith("efficientnet-lite0")

        encoder = Encoder.load(new_dir, device="cpu")
        limits = ImageLimits(max_bytes=20_000_000, max_pixels=40_000_000, min_side=16)
        progress: list[tuple[int, int]] = []
        with Embedder(encoder, limits, 2) as embedder:
            report = reembed(settings, embedder, progress=lambda d, t: progress.append((d, t)))
        assert report.embedded == len(photos) and report.failed == 0 and report.switched
        assert progress[-1] == (len(photos), len(photos))
        assert store.active_model() == encoder.model_id
        assert store.count(encoder.model_id) == len(photos)
        # Old vectors stay (a rollback is one SET); new ones have the new model's dimension.
        assert store.count(old_model) == len(photos)
        assert {i.vector.shape[0] for i in store.scan(encoder.model_id)} == {encoder.dim}

        # The running interest worker follows the switch (it polls the active model).
        time.sleep(3)
        event = UserEvent(
            event_id="after-switch",
            user_id="u1",
            item_id="chelsea" if "chelsea" in photos else next(iter(photos)),
            type=EventType.CLICK,
            ts_ms=int(time.time() * 1000),
        )
        producer.send(topics.events.name, key=b"u1", value=event.to_json_bytes())
        producer.flush()
        recs = list_answering(settings, "after-switch")
        assert recs.model_id == encoder.model_id, interests.output()[-2000:]
        assert len(recs.items) == len(photos) - 1

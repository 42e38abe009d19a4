"""The whole path on the real broker and Redis: photos embedded, a click, a refreshed list;
and a SIGKILLed interest worker that, restarted, leaves exactly the state an offline replay
of the log gives: nothing lost, nothing double-counted."""

from __future__ import annotations

import io
import random
import time
from pathlib import Path

import numpy as np
import redis
from PIL import Image

from schemas import (
    EventType,
    ProductAttributes,
    RedisKeys,
    UserEvent,
)
from streams.kafka.topics import Topics, create_topics
from streams.settings import Settings
from streams.state.item_store import ItemStore, StoredItem
from streams.tools.processes import WorkerProcess, running_worker
from tests.photos import sample_photos
from tests.support import (
    assert_state_is_offline_replay,
    collect,
    latest_triggers,
    list_answering,
    per_user,
    product_message,
    raw_producer,
)


def _crop(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        out = io.BytesIO()
        img.convert("RGB").crop((w // 10, h // 10, w - w // 10, h - h // 10)).save(
            out, "JPEG", quality=90
        )
        return out.getvalue()


def test_click_on_a_photo_ranks_its_near_duplicate_first(
    settings: Settings, tmp_path: Path
) -> None:
    create_topics(settings)
    topics = Topics.from_settings(settings)
    photos = sample_photos()
    catalogue = dict(photos)
    catalogue["chelsea-crop"] = _crop(photos["chelsea"])
    catalogue["rocket-crop"] = _crop(photos["rocket"])
    producer = raw_producer(settings)
    for item_id, data in catalogue.items():
        value = product_message(item_id, data, category="photo", available=item_id != "rocket-crop")
        producer.send(topics.products.name, key=item_id.encode(), value=value)
    producer.flush()
    with (
        running_worker(settings, "embed", tmp_path / "embed.log") as embed,
        running_worker(settings, "interests", tmp_path / "interests.log") as interests,
    ):
        assert collect(
            settings, topics.item_vectors.name, lambda m: len(m) >= len(catalogue), 180
        ), embed.output()[-2000:]
        now = int(time.time() * 1000)
        clicks = [("c1", "chelsea"), ("c2", "rocket")]
        for event_id, item in clicks:
            event = UserEvent(
                event_id=f"shopper-{event_id}",
                user_id="shopper",
                item_id=item,
                type=EventType.CLICK,
                ts_ms=now,
            )
            producer.send(topics.events.name, key=b"shopper", value=event.to_json_bytes())
            producer.flush()
            recs = list_answering(settings, event.event_id)
            ids = [i.item_id for i in recs.items]
            assert item not in ids, "a clicked item is never recommended back"
            assert "rocket-crop" not in ids, "unavailable items are never recommended"
            assert all(i.reason for i in recs.items)
            if item == "chelsea":
                assert ids[0] == "chelsea-crop", (ids, interests.output()[-2000:])
                assert recs.items[0].reason == "similar_to:chelsea"
        assert interests.alive() and embed.alive()


def _random_catalogue(settings: Settings, n_items: int, dim: int, model_id: str) -> list[str]:
    rng = np.random.default_rng(7)
    store = ItemStore(redis.Redis.from_url(settings.redis.url), RedisKeys())
    items = []
    for i in range(n_items):
        vec = rng.normal(size=dim).astype(np.float32)
        vec /= np.linalg.norm(vec)
        items.append(StoredItem(f"item-{i}", model_id, vec, ProductAttributes(category="c"), 1))
    store.write(items)
    producer = raw_producer(settings)
    topic = Topics.from_settings(settings).item_vectors.name
    for item in items:
        producer.send(topic, key=item.item_id.encode(), value=item.to_item_vector().to_json_bytes())
    producer.flush()
    producer.close()
    return [i.item_id for i in items]


def test_sigkill_mid_stream_loses_nothing_and_double_counts_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    create_topics(settings)
    topics = Topics.from_settings(settings)
    items = _random_catalogue(settings, 60, 64, "random-64")
    rng = random.Random(11)
    users = [f"user-{u}" for u in range(40)]
    base_ts = 1_764_000_000_000
    log: list[UserEvent] = []
    for n in range(4000):
        user = (
            users[min(int(rng.paretovariate(1.2)) - 1, len(users) - 1)]
            if n % 3
            else rng.choice(users)
        )
        log.append(
            UserEvent(
                event_id=f"ev-{n}",
                user_id=user,
                item_id=rng.choice(items),
                type=rng.choice(list(EventType)),
                # Out of order by up to a minute: decay handles order, nothing is rejected.
                ts_ms=base_ts + n * 50 + rng.randint(-60_000, 60_000),
            )
        )
    # Client retries: 300 events sent again shortly after the original (a retry comes within
    # seconds; the idempotency record covers each user's last `applied_max` events).
    retried = set(rng.sample(range(len(log)), 300))
    sent = []
    for n, event in enumerate(log):
        sent.append(event)
        if n - 20 in retried:
            sent.append(log[n - 20])
    producer = raw_producer(settings)
    worker = WorkerProcess(settings, "interests", tmp_path / "interests-1.log").start()
    try:
        for i, event in enumerate(sent):
            producer.send(
                topics.events.name, key=event.user_id.encode(), value=event.to_json_bytes()
            )
            if i == 1500:
                producer.flush()
                # Let the worker get going, then kill it mid-batch.
                started = collect(
                    settings, topics.recommendations.name, lambda m: len(m) >= 50, 120
                )
                assert len(started) >= 50, worker.output()[-3000:]
                worker.kill()
        producer.flush()
        producer.close()
        killed_at = time.monotonic()
        worker = WorkerProcess(settings, "interests", tmp_path / "interests-2.log").start()
        last_event = {e.user_id: e.event_id for e in sent}
        lists = collect(
            settings,
            topics.recommendations.name,
            lambda m: latest_triggers(m) == last_event,
            240,
        )
        recovery_s = time.monotonic() - killed_at
        assert latest_triggers(lists) == last_event, worker.output()[-3000:]
        assert worker.alive()
    finally:
        worker.stop()

    assert_state_is_offline_replay(settings, per_user(log))
    print(f"recovery after SIGKILL: {recovery_s:.1f}s to final lists for {len(last_event)} users")

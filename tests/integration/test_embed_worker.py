"""The embed worker on the real broker and Redis: real photos in, vectors out within a second;
broken images, bombs, unreachable URIs and oversize payloads dead-lettered, the worker going on."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import redis

from schemas import DeadLetter, ErrorCode, ItemVector, ProductImage, RedisKeys
from streams.kafka.topics import Topics, create_topics
from streams.settings import EmbedSettings, Settings
from streams.state.item_store import ItemStore
from streams.tools.processes import running_worker
from tests.photos import sample_photos
from tests.support import collect, product_message, raw_producer
from tests.unit.test_images import png_bomb


def _product(item_id: str, data: bytes, **attrs: object) -> bytes:
    return product_message(item_id, data, ts_ms=int(time.time() * 1000), **attrs)


def _uri_product(item_id: str, uri: str) -> bytes:
    return ProductImage(item_id=item_id, image_uri=uri, ts_ms=1).to_json_bytes()


def test_photos_embedded_within_a_second_and_bad_images_dead_lettered(
    settings: Settings, tmp_path: Path
) -> None:
    photos = sample_photos()
    roots = tmp_path / "images"
    roots.mkdir()
    (roots / "rocket.jpg").write_bytes(photos["rocket"])
    settings = settings.model_copy(
        update={"embed": EmbedSettings(file_roots=[roots], max_wait_ms=20, fetch_timeout_s=1.0)}
    )
    create_topics(settings)
    topics = Topics.from_settings(settings)
    client = redis.Redis.from_url(settings.redis.url)
    store = ItemStore(client, RedisKeys())
    producer = raw_producer(settings)

    with running_worker(settings, "embed", tmp_path / "embed.log") as worker:
        # Warm up: the first product pays for model loading and the consumer-group join.
        producer.send(topics.products.name, key=b"warm", value=_product("warm", photos["coffee"]))
        producer.flush()
        assert collect(settings, topics.item_vectors.name, lambda m: len(m) >= 1, 120), (
            worker.output()
        )

        latencies = []
        for name in ("chelsea", "astronaut", "motorcycle_left", "china", "flower"):
            start = time.monotonic()
            producer.send(
                topics.products.name,
                key=name.encode(),
                value=_product(name, photos[name], category="photo"),
            )
            producer.flush()
            while client.hget(RedisKeys().item(name), "model_id") is None:
                assert time.monotonic() - start < 30, worker.output()[-2000:]
                time.sleep(0.005)
            latencies.append(time.monotonic() - start)
        assert statistics.median(latencies) < 1.0, latencies

        bad = {
            "truncated": (
                _product("truncated", photos["chelsea"][:5000]),
                ErrorCode.IMAGE_UNDECODABLE,
            ),
            "zero-bytes": (_product("zero-bytes", b""), ErrorCode.IMAGE_UNDECODABLE),
            "text-as-jpg": (
                _product("text-as-jpg", b"this is a text file, not a JPEG\n" * 10),
                ErrorCode.IMAGE_UNDECODABLE,
            ),
            "bomb": (_product("bomb", png_bomb(20000)), ErrorCode.IMAGE_TOO_MANY_PIXELS),
            "unreachable": (
                _uri_product("unreachable", "http://127.0.0.1:9/x.jpg"),
                ErrorCode.IMAGE_URI_FORBIDDEN,
            ),
            "outside-roots": (
                _uri_product("outside-roots", "file:///etc/passwd"),
                ErrorCode.IMAGE_URI_FORBIDDEN,
            ),
            "missing-file": (
                _uri_product("missing-file", (roots / "nope.jpg").as_uri()),
                ErrorCode.IMAGE_FETCH_FAILED,
            ),
            "30mb": (
                _product("30mb", b"\xff\xd8" + b"\x00" * (22 * 1024 * 1024)),
                ErrorCode.PAYLOAD_TOO_LARGE,
            ),
        }
        for item_id, (value, _) in bad.items():
            producer.send(topics.products.name, key=item_id.encode(), value=value)
        # Good products after the bad ones, one by URI, still go through.
        producer.send(
            topics.products.name,
            key=b"rocket",
            value=_uri_product("rocket", (roots / "rocket.jpg").as_uri()),
        )
        producer.send(
            topics.products.name,
            key=b"coffee2",
            value=_product("coffee2", photos["coffee"], available=False),
        )
        producer.flush()
        letters = collect(settings, topics.dead_letter.name, lambda m: len(m) >= len(bad), 120)
        vectors = collect(settings, topics.item_vectors.name, lambda m: len(m) >= 8, 60)
        assert worker.alive(), worker.output()[-3000:]

    codes = {}
    for message in letters:
        letter = DeadLetter.from_json_bytes(message.value)
        codes[(message.key or b"").decode()] = letter.error_code
    assert codes == {k: code for k, (_, code) in bad.items()}, codes

    by_id = {
        ItemVector.from_json_bytes(m.value).item_id: ItemVector.from_json_bytes(m.value)
        for m in vectors
    }
    assert {"warm", "chelsea", "astronaut", "rocket", "coffee2"} <= set(by_id)
    assert by_id["coffee2"].available is False
    assert by_id["rocket"].dim == 1280
    norms = [np.linalg.norm(v.to_array()) for v in by_id.values()]
    assert np.allclose(norms, 1.0, atol=1e-3)
    model_id = by_id["rocket"].model_id
    stored = {item.item_id: item for item in store.scan(model_id)}
    assert stored["coffee2"].attributes.available is False
    np.testing.assert_allclose(stored["rocket"].vector, by_id["rocket"].to_array(), atol=1e-6)
    assert store.active_model() == model_id

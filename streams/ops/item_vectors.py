"""Publishing item vectors that do not come from the embed worker (e.g. collaborative factors).

The same path the re-embed takes (``streams.ops.reembed``), so running interest workers switch
cleanly: announce every ``ItemVector`` on the item-vectors topic, store the vectors in Redis
beside any others, fit the model's retrieval space if the catalogue calls for one, and only
then switch the active model with one SET. Items new to Redis get the given attributes;
existing items keep theirs (the catalogue owns them).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from schemas import ProductAttributes, RedisKeys, VectorDType
from streams.kafka.producer import make_producer, send_record
from streams.kafka.topics import Topics
from streams.settings import Settings
from streams.state.item_store import ItemStore, StoredItem
from streams.state.redis import connect_redis
from streams.state.spaces import prepare_space

BATCH = 500


@dataclass(frozen=True)
class PublishReport:
    """What a publish wrote."""

    model_id: str
    items: int
    new_items: int
    announced: bool
    activated: bool


def publish_item_vectors(
    settings: Settings,
    model_id: str,
    vectors: Mapping[str, npt.NDArray[np.floating]],
    attributes: Mapping[str, ProductAttributes] | None = None,
    *,
    announce: bool = True,
    activate: bool = True,
    arrived_ms: Mapping[str, int] | None = None,
) -> PublishReport:
    """Store (and announce) ``vectors`` under ``model_id``; optionally make it the active model.

    ``arrived_ms``: each item's arrival in the catalogue (default: now).
    """
    if not vectors:
        raise ValueError("no vectors to publish")
    attributes = attributes or {}
    keys = RedisKeys(settings.redis.namespace)
    client = connect_redis(settings.redis)
    try:
        store = ItemStore(client, keys, dtype=settings.embed.vector_dtype)
        now = int(time.time() * 1000)
        ids = list(vectors)
        exists = _existing(client, keys, ids)
        items = [
            StoredItem(
                item_id,
                model_id,
                np.asarray(vectors[item_id], dtype=np.float32).reshape(-1),
                attributes.get(item_id, ProductAttributes()),
                (arrived_ms or {}).get(item_id, now),
            )
            for item_id in ids
        ]
        if announce:
            topic = Topics.from_settings(settings).item_vectors.name
            producer = make_producer(settings)
            try:
                dtype = VectorDType(settings.embed.vector_dtype)
                for item, known in zip(items, exists, strict=True):
                    stored = store_attributes(store, item) if known else item
                    send_record(producer, topic, item.item_id, stored.to_item_vector(dtype))
                producer.flush()
            finally:
                producer.close()
        fresh = [item for item, known in zip(items, exists, strict=True) if not known]
        known_items = [item for item, known in zip(items, exists, strict=True) if known]
        for start in range(0, len(fresh), BATCH):
            store.write(fresh[start : start + BATCH])
        for start in range(0, len(known_items), BATCH):
            store.write_vectors_only(known_items[start : start + BATCH])
        if activate:
            prepare_space(client, keys, model_id, settings.interest)
            store.set_active_model(model_id)
        return PublishReport(model_id, len(items), len(fresh), announce, activate)
    finally:
        client.close()


def store_attributes(store: ItemStore, item: StoredItem) -> StoredItem:
    """``item`` with the attributes already stored for it (if any)."""
    found = store.attributes(item.item_id)
    if found is None:
        return item
    return StoredItem(item.item_id, item.model_id, item.vector, found, item.ts_ms)


def _existing(client: redis.Redis[Any], keys: RedisKeys, item_ids: list[str]) -> list[bool]:
    out: list[bool] = []
    for start in range(0, len(item_ids), BATCH):
        pipe = client.pipeline(transaction=False)
        for item_id in item_ids[start : start + BATCH]:
            pipe.exists(keys.item(item_id))
        out.extend(bool(n) for n in pipe.execute())
    return out

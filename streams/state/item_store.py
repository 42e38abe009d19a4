"""Item vectors and attributes in Redis: written by the embed worker, read at index start-up."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from schemas import ItemVector, ProductAttributes, RedisKeys, VectorDType

_NP: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}


@dataclass(frozen=True, slots=True)
class StoredItem:
    """An embedded item as the embed worker stores it."""

    item_id: str
    model_id: str
    vector: npt.NDArray[np.float32]
    attributes: ProductAttributes
    ts_ms: int

    def to_item_vector(self, dtype: VectorDType = VectorDType.FLOAT32) -> ItemVector:
        """The ``ItemVector`` announcing this item on the item-vectors topic."""
        return ItemVector.from_array(
            self.item_id,
            self.model_id,
            self.vector,
            self.ts_ms,
            dtype=dtype,
            available=self.attributes.available,
            category=self.attributes.category,
        )


class ItemStore:
    """One hash per item: attributes plus one ``vec:<model_id>`` field per model."""

    def __init__(self, client: redis.Redis[Any], keys: RedisKeys, dtype: str = "float32") -> None:
        """Store vectors as ``dtype`` (float32 or float16, little-endian)."""
        self._r = client
        self._keys = keys
        self._dtype = _NP[dtype]
        self._dtype_name = dtype

    def write(self, items: Sequence[StoredItem]) -> None:
        """Write a batch of items in one transaction-free pipeline (each HSET is atomic)."""
        if not items:
            return
        pipe = self._r.pipeline(transaction=False)
        for item in items:
            vec = np.ascontiguousarray(item.vector, dtype=self._dtype).tobytes()
            pipe.hset(
                self._keys.item(item.item_id),
                mapping={
                    f"vec:{item.model_id}": vec,
                    "dtype": self._dtype_name,
                    "dim": int(item.vector.shape[0]),
                    "model_id": item.model_id,
                    "available": "1" if item.attributes.available else "0",
                    "category": item.attributes.category,
                    "attributes": item.attributes.model_dump_json(),
                    "ts_ms": item.ts_ms,
                },
            )
            pipe.sadd(self._keys.items_by_model(item.model_id), item.item_id)
        # The first model to embed anything becomes the active one; later switches are explicit.
        pipe.set(self._keys.active_model(), items[0].model_id, nx=True)
        pipe.execute()

    def write_vectors_only(self, items: Sequence[StoredItem]) -> None:
        """Add another model's vectors beside the current ones (re-embedding), no model switch."""
        if not items:
            return
        pipe = self._r.pipeline(transaction=False)
        for item in items:
            vec = np.ascontiguousarray(item.vector, dtype=self._dtype).tobytes()
            pipe.hset(self._keys.item(item.item_id), f"vec:{item.model_id}", vec)
            pipe.sadd(self._keys.items_by_model(item.model_id), item.item_id)
        pipe.execute()

    def active_model(self) -> str | None:
        """The model_id serving now, if any item was embedded."""
        value = self._r.get(self._keys.active_model())
        return value.decode("utf-8") if isinstance(value, bytes) else None

    def set_active_model(self, model_id: str) -> None:
        """Switch every reader to ``model_id`` (one SET: atomic)."""
        self._r.set(self._keys.active_model(), model_id)

    def attributes(self, item_id: str) -> ProductAttributes | None:
        """An item's attributes, or None if unknown."""
        raw = self._r.hget(self._keys.item(item_id), "attributes")
        if not isinstance(raw, bytes):
            return None
        return ProductAttributes.model_validate(json.loads(raw))

    def scan(self, model_id: str, batch: int = 500) -> Iterator[StoredItem]:
        """Every item with a vector for ``model_id`` (for building an index at start-up)."""
        members = [m.decode("utf-8") for m in self._r.smembers(self._keys.items_by_model(model_id))]
        field = f"vec:{model_id}"
        for start in range(0, len(members), batch):
            chunk = members[start : start + batch]
            pipe = self._r.pipeline(transaction=False)
            for item_id in chunk:
                pipe.hmget(self._keys.item(item_id), [field, "dtype", "attributes", "ts_ms"])
            for item_id, (vec, dtype, attrs, ts) in zip(chunk, pipe.execute(), strict=True):
                if vec is None or dtype is None:
                    continue
                vector = np.frombuffer(vec, dtype=_NP[dtype.decode()]).astype(np.float32)
                attributes = (
                    ProductAttributes.model_validate(json.loads(attrs))
                    if attrs
                    else ProductAttributes()
                )
                yield StoredItem(item_id, model_id, vector, attributes, int(ts or 0))

    def scan_vectors(
        self, model_id: str, batch: int = 2000
    ) -> Iterator[tuple[list[str], npt.NDArray[np.float32], list[bool], list[int]]]:
        """Every item with a vector for ``model_id`` in chunks: (ids, vectors, available, ts_ms).

        What an index build reads: no attribute parsing, one pipeline per chunk.
        """
        members = [m.decode("utf-8") for m in self._r.smembers(self._keys.items_by_model(model_id))]
        for start in range(0, len(members), batch):
            ids, vectors, flags, arrived = self._read(model_id, members[start : start + batch])
            if ids:
                yield ids, vectors, flags, arrived

    def sample(self, model_id: str, n: int) -> tuple[list[str], npt.NDArray[np.float32]]:
        """Up to ``n`` distinct items of ``model_id`` drawn at random, with their vectors."""
        raw: Any = self._r.srandmember(self._keys.items_by_model(model_id), n)
        chosen = [m.decode("utf-8") for m in (raw or [])]
        ids: list[str] = []
        parts: list[npt.NDArray[np.float32]] = []
        for start in range(0, len(chosen), 2000):
            got, vectors, _, _ = self._read(model_id, chosen[start : start + 2000])
            ids += got
            parts.append(vectors)
        return ids, (np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32))

    def _read(
        self, model_id: str, item_ids: Sequence[str]
    ) -> tuple[list[str], npt.NDArray[np.float32], list[bool], list[int]]:
        field = f"vec:{model_id}"
        pipe = self._r.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.hmget(self._keys.item(item_id), [field, "dtype", "available", "ts_ms"])
        ids: list[str] = []
        rows: list[npt.NDArray[Any]] = []
        flags: list[bool] = []
        arrived: list[int] = []
        for item_id, (vec, dtype, available, ts) in zip(item_ids, pipe.execute(), strict=True):
            if vec is None or dtype is None:
                continue
            ids.append(item_id)
            rows.append(np.frombuffer(vec, dtype=_NP[dtype.decode()]))
            flags.append(available != b"0")
            arrived.append(int(ts or 0))
        if not rows:
            return [], np.zeros((0, 0), dtype=np.float32), [], []
        dims = {len(r) for r in rows}
        if len(dims) != 1:
            raise ValueError(f"model {model_id!r} has vectors of several dims: {sorted(dims)}")
        return ids, np.stack(rows).astype(np.float32), flags, arrived

    def count(self, model_id: str) -> int:
        """Items embedded with ``model_id``."""
        return int(self._r.scard(self._keys.items_by_model(model_id)))

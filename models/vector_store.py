"""Storage of one model's item vectors behind ``ItemIndex``: the interface and the exact store.

A store holds unit float32 vectors of one dimension, an id <-> slot map, an availability mask
and categories. ``ExactStore`` keeps the vectors in one contiguous matrix and answers a query
with one matrix-vector product; ``models.hnsw.HnswStore`` keeps them in an HNSW graph.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
Hit = tuple[str, float]
"""``(item_id, inner product)``."""

_MIN_CAPACITY = 1024
_GROWTH = 1.5  # slower than doubling: at 1M x 1280 float32 each spare row is 5 KiB


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The items of a store at one moment, to build another store from."""

    ids: list[str]
    available: npt.NDArray[np.bool_]
    categories: list[str]
    read_rows: Callable[[int, int], Vector]
    """Vectors of ``ids[start:stop]`` as a fresh (start - stop, dim) array."""


def top_hits(
    scores: npt.NDArray[np.float32],
    mask: npt.NDArray[np.bool_],
    k: int,
    ids: Sequence[str | None],
) -> list[Hit]:
    """Return the ``k`` best masked-in slots; ties go by item id, so slot order never matters."""
    if k <= 0:
        return []
    masked = np.where(mask, scores, np.float32(-np.inf))
    n = masked.shape[0]
    if k < n:
        part = np.argpartition(masked, n - k)[n - k :]
        # Keep every slot tied with the k-th score: which of them wins is then decided by id.
        candidates = np.flatnonzero(masked >= masked[part].min())
    else:
        candidates = np.flatnonzero(mask)
    # Best score first (a stable numpy sort), then ids ascending within runs of equal scores.
    order = candidates[np.argsort(-masked[candidates], kind="stable")]
    scores = masked[order].tolist()
    hits = [
        (cast(str, ids[slot]), score) for slot, score in zip(order.tolist(), scores, strict=True)
    ]
    if len(set(scores)) < len(scores):
        hits.sort(key=lambda hit: (-hit[1], hit[0]))
    return hits[:k]


class Slots:
    """Item id <-> slot bookkeeping with an availability mask and categories."""

    def __init__(self) -> None:
        self.ids: list[str | None] = []
        self.of: dict[str, int] = {}
        self.available = np.zeros(0, dtype=np.bool_)
        self.categories: list[str] = []
        self.n_available = 0
        self._interned: dict[str, str] = {}  # categories repeat: one string object per value
        self._id_bytes = 0

    def grow(self, capacity: int) -> None:
        """Make room for slots ``0 .. capacity - 1``."""
        extra = capacity - len(self.ids)
        if extra <= 0:
            return
        self.ids.extend([None] * extra)
        self.categories.extend([""] * extra)
        available = np.zeros(capacity, dtype=np.bool_)
        available[: self.available.shape[0]] = self.available
        self.available = available

    def bind(self, item_id: str, slot: int, available: bool, category: str) -> None:
        """Give ``item_id`` the (free) ``slot``."""
        self.ids[slot] = item_id
        self.of[item_id] = slot
        self._id_bytes += sys.getsizeof(item_id)
        self.set(slot, available, category)

    def set(self, slot: int, available: bool, category: str) -> None:
        """Update the attributes of a bound slot."""
        if bool(self.available[slot]) != available:
            self.n_available += 1 if available else -1
            self.available[slot] = available
        self.categories[slot] = self._interned.setdefault(category, category)

    def unbind(self, item_id: str) -> int | None:
        """Free the item's slot and return it (None if unknown)."""
        slot = self.of.pop(item_id, None)
        if slot is None:
            return None
        self.set(slot, False, "")
        self.ids[slot] = None
        self._id_bytes -= sys.getsizeof(item_id)
        return slot

    def valid(self, n: int, exclude: Collection[str]) -> tuple[npt.NDArray[np.bool_], int]:
        """Mask of available, non-excluded slots among the first ``n``, and its count."""
        mask = self.available[:n].copy()
        count = self.n_available
        for item_id in exclude:
            slot = self.of.get(item_id)
            if slot is not None and mask[slot]:
                mask[slot] = False
                count -= 1
        return mask, count

    def live(self) -> npt.NDArray[np.int64]:
        """Bound slots in ascending order."""
        return np.sort(np.fromiter(self.of.values(), dtype=np.int64, count=len(self.of)))

    def memory_bytes(self) -> int:
        """Bytes of the mask, lists, map and id strings."""
        return (
            self.available.nbytes
            + sys.getsizeof(self.ids)
            + sys.getsizeof(self.categories)
            + sys.getsizeof(self.of)
            + self._id_bytes
        )


class VectorStore(ABC):
    """The vectors of one model (one dimension), as ``ItemIndex`` needs them."""

    dim: int
    kind: str = "store"
    """What serves searches: ``exact`` or ``hnsw``."""

    @abstractmethod
    def upsert(self, item_id: str, vector: Vector, available: bool, category: str) -> None:
        """Insert or replace one item; ``vector`` is a float32 unit vector of ``dim``."""

    @abstractmethod
    def upsert_many(
        self, item_ids: list[str], vectors: Vector, available: list[bool], categories: list[str]
    ) -> None:
        """Insert or replace many items (last occurrence of an id wins)."""

    @abstractmethod
    def set_attributes(self, item_id: str, available: bool, category: str) -> bool:
        """Change availability and category of a stored item; False if unknown."""

    @abstractmethod
    def remove(self, item_id: str) -> bool:
        """Forget an item; False if unknown."""

    @abstractmethod
    def get(self, item_id: str) -> Vector | None:
        """Return a copy of the item's vector, or None."""

    def get_many(self, item_ids: Sequence[str]) -> tuple[list[str], Vector]:
        """Ids that have a vector, in the given order, and their vectors stacked."""
        found: list[str] = []
        rows: list[Vector] = []
        for item_id in item_ids:
            vec = self.get(item_id)
            if vec is not None:
                found.append(item_id)
                rows.append(vec)
        return found, (np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32))

    def available_flags(self, item_ids: Sequence[str]) -> list[bool]:
        """``is_available`` for each id, in one call."""
        return [self.is_available(item_id) for item_id in item_ids]

    @abstractmethod
    def is_available(self, item_id: str) -> bool:
        """Whether the item is stored and listed."""

    @abstractmethod
    def category(self, item_id: str) -> str | None:
        """Return the item's category, or None if unknown."""

    @abstractmethod
    def search_many(
        self, queries: Vector, k: int, excludes: Sequence[Collection[str]]
    ) -> list[list[Hit]]:
        """Per query the ``k`` best available items not excluded, best first."""

    @abstractmethod
    def available_ids(self, limit: int, exclude: Collection[str]) -> list[str]:
        """Up to ``limit`` available ids not excluded, in slot order."""

    @property
    @abstractmethod
    def size(self) -> int:
        """Stored items, unavailable ones included."""

    @property
    @abstractmethod
    def available_count(self) -> int:
        """Available items."""

    @abstractmethod
    def memory_bytes(self) -> int:
        """Approximate bytes held."""

    @abstractmethod
    def snapshot(self) -> Snapshot:
        """Capture the stored items, to build another store from."""

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for background work; stores without any are always idle."""
        return True

    @property
    def search_beam(self) -> int | None:
        """HNSW beam width (ef) searches use; None for exact search."""
        return None


class SlottedStore(VectorStore):
    """The attribute side of a store, shared by the exact and the HNSW store."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._slots = Slots()

    def set_attributes(self, item_id: str, available: bool, category: str) -> bool:
        """Change availability and category of a stored item; False if unknown."""
        slot = self._slots.of.get(item_id)
        if slot is None:
            return False
        self._slots.set(slot, available, category)
        return True

    def is_available(self, item_id: str) -> bool:
        """Whether the item is stored and listed."""
        slot = self._slots.of.get(item_id)
        return slot is not None and bool(self._slots.available[slot])

    def available_flags(self, item_ids: Sequence[str]) -> list[bool]:
        """``is_available`` for each id, in one call."""
        of, available = self._slots.of, self._slots.available
        return [
            bool(available[slot]) if (slot := of.get(i)) is not None else False for i in item_ids
        ]

    def get_many(self, item_ids: Sequence[str]) -> tuple[list[str], Vector]:
        """Ids that have a vector, in the given order, and their vectors (one gather)."""
        of = self._slots.of
        found = [item_id for item_id in item_ids if item_id in of]
        slots = np.fromiter((of[i] for i in found), dtype=np.int64, count=len(found))
        return found, self._read_slots(slots)

    @abstractmethod
    def _read_slots(self, slots: npt.NDArray[np.int64]) -> Vector:
        """Vectors of bound ``slots`` as a fresh (len(slots), dim) array."""

    def category(self, item_id: str) -> str | None:
        """Return the item's category, or None if unknown."""
        slot = self._slots.of.get(item_id)
        return None if slot is None else self._slots.categories[slot]

    def available_ids(self, limit: int, exclude: Collection[str]) -> list[str]:
        """Up to ``limit`` available ids not excluded, in slot order."""
        mask, _ = self._slots.valid(self._slots.available.shape[0], exclude)
        ids = self._slots.ids
        return [cast(str, ids[slot]) for slot in np.flatnonzero(mask)[: max(limit, 0)]]

    @property
    def size(self) -> int:
        """Stored items, unavailable ones included."""
        return len(self._slots.of)

    @property
    def available_count(self) -> int:
        """Available items."""
        return self._slots.n_available


class ExactStore(SlottedStore):
    """Vectors in one contiguous float32 matrix; freed rows are reused, growth is amortised."""

    kind = "exact"

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._vecs: Vector = np.zeros((0, dim), dtype=np.float32)
        self._free: list[int] = []
        self._high = 0  # rows [0, _high) have been used; the rest is spare capacity

    def _reserve(self, extra: int) -> None:
        need = self._high + max(extra - len(self._free), 0)
        if need <= self._vecs.shape[0]:
            return
        capacity = max(need, _MIN_CAPACITY, int(self._vecs.shape[0] * _GROWTH))
        vecs = np.zeros((capacity, self.dim), dtype=np.float32)
        vecs[: self._high] = self._vecs[: self._high]
        self._vecs = vecs
        self._slots.grow(capacity)

    def _take_slot(self) -> int:
        if self._free:
            return self._free.pop()
        self._reserve(1)
        self._high += 1
        return self._high - 1

    def upsert(self, item_id: str, vector: Vector, available: bool, category: str) -> None:
        """Insert or replace one item."""
        slot = self._slots.of.get(item_id)
        if slot is None:
            slot = self._take_slot()
            self._slots.bind(item_id, slot, available, category)
        else:
            self._slots.set(slot, available, category)
        self._vecs[slot] = vector

    def upsert_many(
        self, item_ids: list[str], vectors: Vector, available: list[bool], categories: list[str]
    ) -> None:
        """Insert or replace many items (last occurrence of an id wins)."""
        self._reserve(sum(1 for item_id in set(item_ids) if item_id not in self._slots.of))
        for row, item_id in enumerate(item_ids):
            self.upsert(item_id, vectors[row], available[row], categories[row])

    def remove(self, item_id: str) -> bool:
        """Forget an item; its row is masked out and reused by the next insert."""
        slot = self._slots.unbind(item_id)
        if slot is None:
            return False
        self._free.append(slot)
        return True

    def get(self, item_id: str) -> Vector | None:
        """Return a copy of the item's vector, or None."""
        slot = self._slots.of.get(item_id)
        return None if slot is None else self._vecs[slot].copy()

    def _read_slots(self, slots: npt.NDArray[np.int64]) -> Vector:
        return self._vecs[slots]

    def search_many(
        self, queries: Vector, k: int, excludes: Sequence[Collection[str]]
    ) -> list[list[Hit]]:
        """Exact top-k: one matrix product for the whole batch, then a partial sort per row."""
        n = self._high
        scores = queries @ self._vecs[:n].T
        out: list[list[Hit]] = []
        for row, exclude in zip(scores, excludes, strict=True):
            mask, count = self._slots.valid(n, exclude)
            out.append(top_hits(row, mask, min(k, count), self._slots.ids))
        return out

    def memory_bytes(self) -> int:
        """Count the matrix (spare rows included) plus the bookkeeping."""
        return self._vecs.nbytes + self._slots.memory_bytes() + sys.getsizeof(self._free)

    def snapshot(self) -> Snapshot:
        """Capture the items now; vectors are read lazily from this matrix, chunk by chunk."""
        live = self._slots.live()
        # No copy of the matrix: growth allocates a new one and leaves this one intact, and a
        # row rewritten while a builder reads it belongs to an operation that is replayed
        # onto the built store before it is swapped in.
        vecs = self._vecs
        return Snapshot(
            ids=[cast(str, self._slots.ids[slot]) for slot in live],
            available=self._slots.available[live].copy(),
            categories=[self._slots.categories[slot] for slot in live],
            read_rows=lambda start, stop: vecs[live[start:stop]],
        )

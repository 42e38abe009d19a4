"""The in-memory item index every interest worker holds: inner-product top-k over unit vectors.

One interface (``ItemIndex``), three ways to store the vectors of a model:

- ``ExactIndex``: a contiguous float32 matrix, one matrix-vector product per query;
- ``AnnIndex``: an HNSW graph (faiss, see ``models.hnsw``), recall calibrated at build time;
- ``AutoIndex`` / ``make_index(threshold)``: exact below ``threshold`` items, then migrates to
  HNSW, building it in a background thread while the exact store keeps serving.

The index serves one active ``model_id``. Vectors for another model (a re-embedding in progress)
are staged aside and go live together in ``switch_model``. Unavailable items keep their vector
(user vectors may still be built from them) but are never returned by ``search``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt

from models.auto_store import AutoStore
from models.hnsw import HnswParams
from models.vector_store import ExactStore, Hit, Vector, VectorStore

__all__ = [
    "AnnIndex",
    "AutoIndex",
    "AutoStore",
    "ExactIndex",
    "Hit",
    "HnswParams",
    "ItemIndex",
    "StoreFactory",
    "Vector",
    "make_index",
    "unit_vector",
]

StoreFactory = Callable[[int], VectorStore]
"""Makes the (empty) store for one model's vectors, given their dimension."""


def unit_vector(vector: npt.ArrayLike) -> Vector:
    """``vector`` as a contiguous float32 unit vector; ValueError if empty, non-finite or zero."""
    arr = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
    if arr.size == 0 or not np.isfinite(arr).all():
        raise ValueError("vector must be non-empty and finite")
    norm = float(np.linalg.norm(arr))
    if norm == 0.0 or not np.isfinite(norm):
        raise ValueError("vector has zero (or overflowing) norm")
    return arr / np.float32(norm)


def _unit_rows(vectors: npt.ArrayLike) -> Vector:
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError("vectors must be a non-empty 2-D array (n, dim)")
    if not np.isfinite(arr).all():
        raise ValueError("vectors must be finite")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms == 0.0).any() or not np.isfinite(norms).all():
        raise ValueError("a vector has zero (or overflowing) norm")
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


class ItemIndex:
    """Unit vectors of the active model's items, searched by inner product; thread-safe."""

    def __init__(self, store_factory: StoreFactory, model_id: str | None = None) -> None:
        self._factory = store_factory
        self._model_id = model_id
        self._active: VectorStore | None = None
        self._staged: dict[str, VectorStore] = {}
        # One lock for all operations: searches may run in a thread pool while the
        # item-vector consumer upserts on the event loop.
        self._lock = threading.RLock()

    @contextmanager
    def consistent(self) -> Iterator[None]:
        """Hold off every change (upserts, removals, model switches) while the block runs.

        For a reader that makes several calls that must see one state of the index.
        """
        with self._lock:
            yield

    @property
    def model_id(self) -> str | None:
        """The model whose vectors are served (None until the first upsert or switch)."""
        return self._model_id

    @property
    def dim(self) -> int | None:
        """Dimension of the served vectors (None while no vector was stored)."""
        store = self._active
        return None if store is None else store.dim

    @property
    def backend(self) -> str | None:
        """What serves searches now: ``exact`` or ``hnsw`` (None while empty)."""
        store = self._active
        return None if store is None else store.kind

    @property
    def search_beam(self) -> int | None:
        """HNSW beam width (ef) in use, calibrated at build; None for exact search."""
        store = self._active
        return None if store is None else store.search_beam

    @property
    def staged_models(self) -> dict[str, int]:
        """Models with vectors kept aside for a later ``switch_model``, with their sizes."""
        with self._lock:
            return {model: store.size for model, store in self._staged.items()}

    def _store_for(self, model_id: str, dim: int) -> VectorStore:
        if self._model_id is None:
            self._model_id = model_id
        store: VectorStore | None
        if model_id == self._model_id:
            if self._active is None:
                self._active = self._factory(dim)
            store = self._active
        else:
            store = self._staged.get(model_id)
            if store is None:
                store = self._staged[model_id] = self._factory(dim)
        if store.dim != dim:
            raise ValueError(f"model {model_id!r} has dim {store.dim}, got a vector of dim {dim}")
        return store

    def _others(self, store: VectorStore) -> list[VectorStore]:
        stores = [self._active, *self._staged.values()]
        return [other for other in stores if other is not None and other is not store]

    def upsert(
        self,
        item_id: str,
        vector: npt.ArrayLike,
        *,
        available: bool = True,
        category: str = "",
        model_id: str,
    ) -> None:
        """Store (or replace) an item's vector for ``model_id``; the vector is L2-normalised."""
        unit = unit_vector(vector)
        with self._lock:
            store = self._store_for(model_id, unit.shape[0])
            store.upsert(item_id, unit, available, category)
            # Availability is a catalogue fact, not an embedding fact: keep other models' copies
            # in step so a model switch does not resurrect an item withdrawn meanwhile.
            for other in self._others(store):
                other.set_attributes(item_id, available, category)

    def upsert_many(
        self,
        item_ids: Sequence[str],
        vectors: npt.ArrayLike,
        *,
        model_id: str,
        available: Sequence[bool] | None = None,
        categories: Sequence[str] | None = None,
    ) -> None:
        """Store many items of one model at once (start-up loads); rows are L2-normalised."""
        units = _unit_rows(vectors)
        n = len(item_ids)
        avail = [True] * n if available is None else list(available)
        cats = [""] * n if categories is None else list(categories)
        if not (units.shape[0] == n == len(avail) == len(cats)):
            raise ValueError("item_ids, vectors, available and categories differ in length")
        with self._lock:
            store = self._store_for(model_id, units.shape[1])
            store.upsert_many(list(item_ids), units, avail, cats)
            for other in self._others(store):
                for item_id, flag, cat in zip(item_ids, avail, cats, strict=True):
                    other.set_attributes(item_id, flag, cat)

    def remove(self, item_id: str) -> bool:
        """Forget an item under every model; True if it was known to any."""
        with self._lock:
            stores = [s for s in (self._active, *self._staged.values()) if s is not None]
            return any([store.remove(item_id) for store in stores])

    def get(self, item_id: str) -> Vector | None:
        """Return the stored unit vector (also of unavailable items), or None."""
        with self._lock:
            return None if self._active is None else self._active.get(item_id)

    def get_many(self, item_ids: Sequence[str]) -> tuple[list[str], Vector]:
        """Return the ids that have a vector, in the given order, and their vectors stacked."""
        with self._lock:
            if self._active is None:
                return [], np.zeros((0, 0), dtype=np.float32)
            return self._active.get_many(item_ids)

    def __contains__(self, item_id: object) -> bool:
        """Whether the active model has a vector for ``item_id``."""
        with self._lock:
            return isinstance(item_id, str) and self.get(item_id) is not None

    def is_available(self, item_id: str) -> bool:
        """Tell whether the item has a vector under the active model and is listed."""
        with self._lock:
            return self._active is not None and self._active.is_available(item_id)

    def available_flags(self, item_ids: Sequence[str]) -> list[bool]:
        """``is_available`` for each id, under one lock acquisition."""
        with self._lock:
            if self._active is None:
                return [False] * len(item_ids)
            return self._active.available_flags(item_ids)

    def category(self, item_id: str) -> str | None:
        """Return the item's category, or None if unknown."""
        with self._lock:
            return None if self._active is None else self._active.category(item_id)

    def search(self, query: npt.ArrayLike, k: int, exclude: Collection[str] = ()) -> list[Hit]:
        """Top ``k`` available items by inner product with ``query``, best first, never excluded."""
        return self.search_many(np.asarray(query, dtype=np.float32).reshape(1, -1), k, [exclude])[0]

    def search_many(
        self,
        queries: npt.ArrayLike,
        k: int,
        excludes: Sequence[Collection[str]] | None = None,
    ) -> list[list[Hit]]:
        """``search`` for each row of ``queries``; a batch shares one pass over the vectors."""
        qs = np.ascontiguousarray(queries, dtype=np.float32)
        if qs.ndim != 2:
            raise ValueError("queries must be 2-D (batch, dim)")
        if not np.isfinite(qs).all():
            raise ValueError("queries must be finite")
        excl: Sequence[Collection[str]] = excludes if excludes is not None else [()] * len(qs)
        if len(excl) != len(qs):
            raise ValueError("one exclude collection per query is required")
        if k < 0:
            raise ValueError("k must be >= 0")
        with self._lock:
            store = self._active
            if store is None or k == 0 or len(qs) == 0:
                return [[] for _ in range(len(qs))]
            if qs.shape[1] != store.dim:
                raise ValueError(f"query dim {qs.shape[1]} != index dim {store.dim}")
            return store.search_many(qs, k, excl)

    def available_ids(self, limit: int, exclude: Collection[str] = ()) -> list[str]:
        """Up to ``limit`` available item ids not in ``exclude``, in a stable storage order."""
        with self._lock:
            return [] if self._active is None else self._active.available_ids(limit, exclude)

    def __len__(self) -> int:
        """Count the available items of the active model."""
        with self._lock:
            return 0 if self._active is None else self._active.available_count

    @property
    def size(self) -> int:
        """Number of items of the active model, unavailable ones included."""
        with self._lock:
            return 0 if self._active is None else self._active.size

    def switch_model(self, model_id: str) -> None:
        """Serve ``model_id`` from now on: its staged vectors replace the active ones at once."""
        with self._lock:
            if model_id == self._model_id:
                return
            self._active = self._staged.pop(model_id, None)
            self._model_id = model_id

    def memory_bytes(self) -> int:
        """Approximate bytes held: vectors, graph, id maps, masks, staged models included."""
        with self._lock:
            stores = [s for s in (self._active, *self._staged.values()) if s is not None]
            return sum(store.memory_bytes() for store in stores)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for background (re)builds of every store; True when none is running."""
        with self._lock:
            stores = [s for s in (self._active, *self._staged.values()) if s is not None]
        return all([store.wait_idle(timeout) for store in stores])


class ExactIndex(ItemIndex):
    """Exact search: one float32 matrix, one matrix-vector product per query."""

    def __init__(self, model_id: str | None = None) -> None:
        super().__init__(ExactStore, model_id)


class AutoIndex(ItemIndex):
    """Exact search below ``threshold`` items per model, HNSW at or above it (and after)."""

    def __init__(
        self,
        threshold: int,
        model_id: str | None = None,
        params: HnswParams | None = None,
        *,
        background: bool = True,
    ) -> None:
        if threshold < 0:
            raise ValueError("threshold must be >= 0")
        hnsw = params or HnswParams()
        super().__init__(
            lambda dim: AutoStore(dim, threshold, hnsw, background=background), model_id
        )


class AnnIndex(AutoIndex):
    """HNSW from the first item (faiss, inner product), compacted in the background."""

    def __init__(
        self,
        model_id: str | None = None,
        params: HnswParams | None = None,
        *,
        background: bool = True,
    ) -> None:
        super().__init__(0, model_id, params, background=background)


def make_index(
    threshold: int, model_id: str | None = None, params: HnswParams | None = None
) -> ItemIndex:
    """Make the worker's index: exact below ``threshold`` items, migrating to HNSW above it."""
    return AutoIndex(threshold, model_id, params)

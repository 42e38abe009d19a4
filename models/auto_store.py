"""A store that is exact while small and HNSW once large, (re)building in the background.

``AutoStore`` starts as an ``ExactStore`` and migrates to an ``HnswStore`` when it reaches
``threshold`` items; an HNSW store whose tombstones pile up is rebuilt the same way. A build
runs in a thread from a snapshot while the current store keeps serving; changes made meanwhile
are logged, replayed onto the new store (mostly outside the lock), and the two are swapped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence

from models.hnsw import HnswParams, HnswStore
from models.vector_store import ExactStore, Hit, Snapshot, Vector, VectorStore

_SWAP_BACKLOG = 256  # changes replayed under the lock when a background build is swapped in


class AutoStore(VectorStore):
    """Exact below ``threshold`` items, HNSW from then on; compacts HNSW when deletions pile up.

    Builds run in a background thread (``background=True``) from a snapshot while the current
    store keeps serving; changes made meanwhile are logged and replayed before the swap.
    """

    def __init__(
        self, dim: int, threshold: int, params: HnswParams, *, background: bool = True
    ) -> None:
        self.dim = dim
        self._threshold = threshold
        self._params = params
        self._background = background
        self._lock = threading.RLock()
        self._inner: VectorStore = ExactStore(dim) if threshold > 0 else HnswStore(dim, params)
        self._oplog: list[Callable[[VectorStore], object]] | None = None
        self._builder: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def search_beam(self) -> int | None:
        """The serving store's beam width (None while exact)."""
        return self._inner.search_beam

    @property
    def kind(self) -> str:  # type: ignore[override]  # follows the serving store
        """What serves searches now: ``exact`` or ``hnsw``."""
        return self._inner.kind

    def _mutate(self, op: Callable[[VectorStore], object]) -> object:
        with self._lock:
            if self._error is not None:
                error, self._error = self._error, None
                raise RuntimeError("background index build failed") from error
            result = op(self._inner)
            if self._oplog is not None:
                self._oplog.append(op)
            self._maybe_rebuild()
            return result

    def _maybe_rebuild(self) -> None:
        if self._builder is not None:
            return
        inner = self._inner
        migrate = isinstance(inner, ExactStore) and inner.size >= self._threshold
        compact = isinstance(inner, HnswStore) and inner.needs_compaction
        if not (migrate or compact):
            return
        snapshot = inner.snapshot()
        if not self._background:
            self._inner = HnswStore.build(self.dim, self._params, snapshot)
            return
        self._oplog = []
        self._builder = threading.Thread(
            target=self._build, args=(snapshot,), name="visrec-index-build", daemon=True
        )
        self._builder.start()

    def _build(self, snapshot: Snapshot) -> None:
        try:
            built = HnswStore.build(self.dim, self._params, snapshot)
            # Catch up outside the lock (the new store is private to this thread) until the
            # backlog is short, so the swap holds the lock only briefly.
            while True:
                with self._lock:
                    backlog, self._oplog = self._oplog or [], []
                    if len(backlog) <= _SWAP_BACKLOG:
                        for op in backlog:
                            op(built)
                        self._inner, self._oplog, self._builder = built, None, None
                        return
                for op in backlog:
                    op(built)
        except BaseException as exc:  # surfaced on the next mutation, never dropped
            with self._lock:
                self._error, self._oplog, self._builder = exc, None, None

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Join a running background build; True when none is running."""
        builder = self._builder
        if builder is not None:
            builder.join(timeout)
        return self._builder is None

    def upsert(self, item_id: str, vector: Vector, available: bool, category: str) -> None:
        """Insert or replace one item."""
        self._mutate(lambda s: s.upsert(item_id, vector, available, category))

    def upsert_many(
        self, item_ids: list[str], vectors: Vector, available: list[bool], categories: list[str]
    ) -> None:
        """Insert or replace many items."""
        self._mutate(lambda s: s.upsert_many(item_ids, vectors, available, categories))

    def set_attributes(self, item_id: str, available: bool, category: str) -> bool:
        """Change availability/category of a stored item; False if unknown."""
        return bool(self._mutate(lambda s: s.set_attributes(item_id, available, category)))

    def remove(self, item_id: str) -> bool:
        """Forget an item; False if unknown."""
        return bool(self._mutate(lambda s: s.remove(item_id)))

    def get(self, item_id: str) -> Vector | None:
        """Return the item's stored vector."""
        with self._lock:
            return self._inner.get(item_id)

    def is_available(self, item_id: str) -> bool:
        """Whether the item is stored and listed."""
        with self._lock:
            return self._inner.is_available(item_id)

    def available_flags(self, item_ids: Sequence[str]) -> list[bool]:
        """``is_available`` for each id, in one call."""
        with self._lock:
            return self._inner.available_flags(item_ids)

    def get_many(self, item_ids: Sequence[str]) -> tuple[list[str], Vector]:
        """Ids that have a vector, in the given order, and their vectors stacked."""
        with self._lock:
            return self._inner.get_many(item_ids)

    def category(self, item_id: str) -> str | None:
        """Return the item's category."""
        with self._lock:
            return self._inner.category(item_id)

    def search_many(
        self, queries: Vector, k: int, excludes: Sequence[Collection[str]]
    ) -> list[list[Hit]]:
        """Top-k per query over available, non-excluded items."""
        with self._lock:
            return self._inner.search_many(queries, k, excludes)

    def available_ids(self, limit: int, exclude: Collection[str]) -> list[str]:
        """List some available ids in storage order."""
        with self._lock:
            return self._inner.available_ids(limit, exclude)

    @property
    def size(self) -> int:
        """All stored items."""
        return self._inner.size

    @property
    def available_count(self) -> int:
        """Available items."""
        return self._inner.available_count

    def memory_bytes(self) -> int:
        """Bytes of the serving store."""
        with self._lock:
            return self._inner.memory_bytes()

    def snapshot(self) -> Snapshot:
        """Snapshot of the serving store."""
        with self._lock:
            return self._inner.snapshot()

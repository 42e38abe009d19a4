"""The approximate store: a faiss HNSW graph over float32 unit vectors, inner-product metric.

Picked over usearch by ``bench/index.py`` (faster build and query at equal recall here, and
filtering inside the graph walk). Unavailable and excluded items are filtered *during* the
walk with a bitmap selector, so a query still gets k results when its nearest items are
filtered out; if the walk finds too few, it retries with a wider beam and ends with an exact
scan. faiss cannot delete from an HNSW graph: removed or re-embedded items leave tombstones
(filtered like unavailable items) until ``needs_compaction`` asks for a rebuild.

The beam width ``ef_search`` is calibrated, not guessed: after a build (and whenever the
catalogue doubles) it is set to the smallest value reaching ``target_recall`` against exact
search on sample queries shaped like user vectors: weighted sums of 1 to 32 items, with those
items excluded as a user's seen items are. On image embeddings that is a small beam; on random
high-dimensional vectors, HNSW's worst case, it is large (5,632 at 100k x 1280). Such queries
measured up to 4 points of recall easier than pure random ones on small random sets, hence
the 0.97 default; at 100k x 1280 random queries then got 0.971-0.973.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, cast

import faiss
import numpy as np
import numpy.typing as npt

from models.vector_store import Hit, SlottedStore, Snapshot, Vector

_FIRST_CALIBRATION = 1000  # below this many items exact-like beams are cheap anyway


@dataclass(frozen=True, slots=True)
class HnswParams:
    """Graph and search parameters of the HNSW store."""

    m: int = 32
    """Links per node (faiss ``M``); level 0 has ``2 * m``."""
    ef_construction: int = 64
    ef_search: int = 128
    """Beam width at search: the start value when calibrating, the value when not."""
    target_recall: float | None = 0.97
    """Calibrate ``ef_search`` to this recall@``calibration_k``; None keeps it fixed."""
    calibration_k: int = 100
    calibration_queries: int = 32
    max_ef_search: int = 32768
    compact_ratio: float = 0.25
    """Rebuild once tombstones exceed this fraction of the graph."""
    build_chunk: int = 8192
    seed: int = 0

    def __post_init__(self) -> None:
        if self.m < 2 or self.ef_construction < 1 or self.ef_search < 1:
            raise ValueError("m >= 2, ef_construction >= 1 and ef_search >= 1 are required")
        if self.target_recall is not None and not 0.0 < self.target_recall <= 1.0:
            raise ValueError("target_recall must be in (0, 1]")
        if self.calibration_k < 1 or self.calibration_queries < 1 or self.build_chunk < 1:
            raise ValueError("calibration_k, calibration_queries and build_chunk must be >= 1")
        if self.max_ef_search < self.ef_search or not 0.0 < self.compact_ratio < 1.0:
            raise ValueError("max_ef_search >= ef_search and 0 < compact_ratio < 1 are required")


class _Filter:
    """A faiss bitmap selector over slots; holds the bitmap alive as long as faiss reads it."""

    def __init__(self, mask: npt.NDArray[np.bool_]) -> None:
        self.bitmap = np.packbits(mask, bitorder="little")
        self.selector = faiss.IDSelectorBitmap(mask.shape[0], faiss.swig_ptr(self.bitmap))

    def hnsw(self, ef: int) -> faiss.SearchParameters:
        # SearchParametersHNSW is missing from faiss's stubs.
        params: Any = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        params.sel = self.selector
        params.efSearch = ef
        searched: faiss.SearchParameters = params
        return searched

    def flat(self) -> faiss.SearchParameters:
        params = faiss.SearchParameters()
        params.sel = self.selector
        return params


class HnswStore(SlottedStore):
    """Vectors in a faiss ``IndexHNSWFlat``; slots are faiss labels, never reused."""

    kind = "hnsw"

    def __init__(self, dim: int, params: HnswParams) -> None:
        super().__init__(dim)
        self._params = params
        self._index = faiss.IndexHNSWFlat(dim, params.m, faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = params.ef_construction
        self.ef_search = params.ef_search
        self.calibrated_recall: float | None = None
        self._calibrated_at = 0
        self._dead = 0

    @classmethod
    def build(cls, dim: int, params: HnswParams, snapshot: Snapshot) -> HnswStore:
        """Build a new graph over the snapshot's items in chunks, then calibrate it."""
        store = cls(dim, params)
        for start in range(0, len(snapshot.ids), params.build_chunk):
            stop = min(start + params.build_chunk, len(snapshot.ids))
            store._append(
                snapshot.ids[start:stop],
                np.ascontiguousarray(snapshot.read_rows(start, stop), dtype=np.float32),
                [bool(flag) for flag in snapshot.available[start:stop]],
                snapshot.categories[start:stop],
            )
        store.maybe_calibrate(force=True)
        return store

    @property
    def search_beam(self) -> int | None:
        """The beam width (ef) searches use now."""
        return self.ef_search

    @property
    def needs_compaction(self) -> bool:
        """Whether tombstones exceed ``compact_ratio`` of the graph."""
        return self._dead > max(1.0, self._params.compact_ratio * self._index.ntotal)

    def _append(
        self, item_ids: list[str], vectors: Vector, available: list[bool], categories: list[str]
    ) -> None:
        base = self._index.ntotal
        self._index.add(vectors)  # labels are base .. base + n - 1, in order
        need = base + len(item_ids)
        if need > len(self._slots.ids):
            self._slots.grow(max(need, int(len(self._slots.ids) * 1.5)))
        for offset, item_id in enumerate(item_ids):
            self._slots.bind(item_id, base + offset, available[offset], categories[offset])

    def upsert(self, item_id: str, vector: Vector, available: bool, category: str) -> None:
        """Insert or replace one item."""
        self.upsert_many([item_id], vector.reshape(1, -1), [available], [category])

    def upsert_many(
        self, item_ids: list[str], vectors: Vector, available: list[bool], categories: list[str]
    ) -> None:
        """Insert or replace many items; a changed vector becomes a new node plus a tombstone."""
        latest = {item_id: row for row, item_id in enumerate(item_ids)}
        fresh: list[int] = []
        for item_id, row in latest.items():
            slot = self._slots.of.get(item_id)
            if slot is not None:
                if np.array_equal(self._index.reconstruct(slot), vectors[row]):
                    self._slots.set(slot, available[row], categories[row])
                    continue
                self._slots.unbind(item_id)
                self._dead += 1
            fresh.append(row)
        if fresh:
            self._append(
                [item_ids[row] for row in fresh],
                np.ascontiguousarray(vectors[fresh]),
                [available[row] for row in fresh],
                [categories[row] for row in fresh],
            )
        self.maybe_calibrate()

    def remove(self, item_id: str) -> bool:
        """Forget an item (its node stays in the graph as a filtered tombstone)."""
        if self._slots.unbind(item_id) is None:
            return False
        self._dead += 1
        return True

    def get(self, item_id: str) -> Vector | None:
        """Return a copy of the item's vector, or None."""
        slot = self._slots.of.get(item_id)
        return None if slot is None else cast(Vector, self._index.reconstruct(slot))

    def _read_slots(self, slots: npt.NDArray[np.int64]) -> Vector:
        if not len(slots):
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self._index.reconstruct_batch(slots), dtype=np.float32)

    def _walk(self, queries: Vector, k: int, flt: _Filter) -> list[list[Hit]]:
        """Graph search for ``k`` hits per query, widening the beam until each row is full."""
        ids = self._slots.ids
        ef = max(self.ef_search, k)
        while True:
            scores, labels = self._index.search(queries, k, params=flt.hnsw(ef))
            if (labels >= 0).all():
                break
            if ef >= self._params.max_ef_search:
                # The graph walk cannot reach enough unfiltered nodes: scan them all instead.
                storage = faiss.downcast_index(self._index.storage)
                scores, labels = storage.search(queries, k, params=flt.flat())
                break
            ef = min(ef * 2, self._params.max_ef_search)
        out: list[list[Hit]] = []
        for row_scores, row_labels in zip(scores, labels, strict=True):
            hits = [
                (cast(str, ids[label]), float(score))
                for score, label in zip(row_scores, row_labels, strict=True)
                if label >= 0
            ]
            hits.sort(key=lambda hit: (-hit[1], hit[0]))
            out.append(hits)
        return out

    def search_many(
        self, queries: Vector, k: int, excludes: Sequence[Collection[str]]
    ) -> list[list[Hit]]:
        """Approximate top-k per query over available, non-excluded items."""
        n = self._index.ntotal
        if not any(excludes):
            mask, count = self._slots.valid(n, ())
            want = min(k, count)
            return self._walk(queries, want, _Filter(mask)) if want else [[] for _ in queries]
        out: list[list[Hit]] = []
        for query, exclude in zip(queries, excludes, strict=True):
            mask, count = self._slots.valid(n, exclude)
            want = min(k, count)
            out.append(self._walk(query.reshape(1, -1), want, _Filter(mask))[0] if want else [])
        return out

    def maybe_calibrate(self, *, force: bool = False) -> None:
        """Calibrate ``ef_search`` after a build, then recheck it each time the catalogue doubles.

        A recheck starts from the current beam and only widens it: when the beam still holds
        it costs one round of sample queries (one exact scan and one graph search each), so
        the upsert that crosses the mark stalls the caller far less than a full calibration.
        """
        count = self._slots.n_available
        target = self._params.target_recall
        if target is None or count == 0:
            return
        if force or self._calibrated_at == 0:
            if force or count >= _FIRST_CALIBRATION:
                self.calibrate(target)
        elif count >= 2 * self._calibrated_at:
            self.calibrate(target, start_ef=self.ef_search)

    def _calibration_cases(self) -> list[tuple[Vector, _Filter, set[int], int]]:
        """Make queries shaped like user vectors, each with its filter and exact answer."""
        p = self._params
        base, count = self._slots.valid(self._index.ntotal, ())
        live = np.flatnonzero(base)
        storage = faiss.downcast_index(self._index.storage)
        rng = np.random.default_rng(p.seed)
        cases = []
        for _ in range(p.calibration_queries):
            # A user vector is a weighted sum of a few items, and those items are seen, hence
            # excluded: measure recall on the rest, as the worker's searches will.
            size = int(2 ** rng.uniform(0, 5))  # 1 to 32 items, log-uniform
            picks = rng.choice(live, size=min(size, live.size), replace=False)
            weights = (rng.random(picks.size) + 0.1).astype(np.float32)
            query = (self._index.reconstruct_batch(picks) * weights[:, None]).sum(axis=0)
            norm = float(np.linalg.norm(query))
            k = min(p.calibration_k, count - picks.size)
            if k <= 0 or norm == 0.0:
                continue
            query = np.ascontiguousarray((query / norm).reshape(1, -1), dtype=np.float32)
            mask = base.copy()
            mask[picks] = False
            flt = _Filter(mask)
            _, truth = storage.search(query, k, params=flt.flat())
            cases.append((query, flt, set(truth[0].tolist()), k))
        return cases

    def calibrate(self, target_recall: float, start_ef: int | None = None) -> float:
        """Set ``ef_search`` to the smallest beam reaching ``target_recall``; return that recall.

        With ``start_ef`` the search only widens from that beam (a recheck after growth).
        """
        p = self._params
        cases = self._calibration_cases()
        if not cases:
            return 1.0
        k = max(case[3] for case in cases)
        total = sum(case[3] for case in cases)

        def recall(ef: int) -> float:
            hits = 0
            for query, flt, truth, kk in cases:
                _, found = self._index.search(query, kk, params=flt.hnsw(max(ef, kk)))
                hits += len(truth.intersection(found[0].tolist()))
            return hits / total

        lo, hi = 0, max(start_ef or p.ef_search, k)
        reached = recall(hi)
        while reached < target_recall and hi < p.max_ef_search:
            lo, hi = hi, min(hi * 2, p.max_ef_search)
            reached = recall(hi)
        # Narrow the doubling step down: the beam sets the query cost almost linearly.
        for _ in range(3 if lo or start_ef is None else 0):
            mid = (lo + hi) // 2
            if mid <= lo or mid <= k:
                break
            mid_recall = recall(mid)
            if mid_recall >= target_recall:
                hi, reached = mid, mid_recall
            else:
                lo = mid
        self.ef_search = hi
        self.calibrated_recall = reached
        self._calibrated_at = self._slots.n_available
        return reached

    def memory_bytes(self) -> int:
        """Vectors, graph links, offsets and levels, plus the bookkeeping."""
        n = self._index.ntotal
        hnsw: Any = self._index.hnsw  # the stubs omit the link arrays
        graph: int = hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8 + hnsw.levels.size() * 4
        return n * self.dim * 4 + graph + self._slots.memory_bytes() + sys.getsizeof(self)

    def snapshot(self) -> Snapshot:
        """Copy the live items out of the graph (faiss storage may move on a later add)."""
        live = self._slots.live()
        rows = np.zeros((0, self.dim), dtype=np.float32)
        if live.size:
            rows = np.ascontiguousarray(self._index.reconstruct_batch(live))
        return Snapshot(
            ids=[cast(str, self._slots.ids[slot]) for slot in live],
            available=self._slots.available[live].copy(),
            categories=[self._slots.categories[slot] for slot in live],
            read_rows=lambda start, stop: rows[start:stop],
        )

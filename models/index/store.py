"""``ItemIndex``: one model's items in one ``Space``, searched by inner product, thread-safe.

Each item has a slot: its row in a matrix of float32 vectors (raw spaces, and fitted spaces
below ``ann_threshold``: searched exactly with one matrix product per batch of queries) or of
8-bit codes (spaces that carry an IVF: the IVF proposes candidates, the codes re-score them).
Unavailable items keep their row, because user vectors are still built from them, but are
never returned by ``search``; in an IVF they are taken out of the lists.

Everything is addressed by row (``rows`` maps ids to rows): the refresh works on arrays and
turns rows back into ids only for the items it emits.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from models.exceptions import IndexInputError
from models.index.space import Codes, Floats, Space, unit_rows
from models.index.topk import top_columns

Rows = npt.NDArray[np.int64]

_MIN_CAPACITY = 1024
_GROWTH = 1.5
_RESCORE_BLOCK = 32  # queries re-scored together: bounds the (block, fetch, dim) temporary
_EXCLUDE_FLOOR = 16  # exclusion counts are rounded up to a power of two, at least this


class ItemIndex:
    """The items of ``space.model_id`` in ``space``; see the module docstring."""

    def __init__(self, space: Space) -> None:
        """An empty index for ``space``."""
        self.space = space
        self._lock = threading.RLock()
        self._ids: list[str | None] = []
        self._slot: dict[str, int] = {}
        self._available = np.zeros(0, dtype=np.bool_)
        self._arrived = np.zeros(0, dtype=np.int64)  # ms; 0 = not known
        self._n_available = 0
        self._free: list[int] = []
        self._high = 0
        self._ivf: Any = space.ivf.new_index() if space.ivf is not None else None
        dtype = np.uint8 if self._ivf is not None else np.float32
        self._rows: npt.NDArray[Any] = np.zeros((0, space.dim), dtype=dtype)

    # --- bookkeeping -------------------------------------------------------------------

    @contextmanager
    def consistent(self) -> Iterator[None]:
        """Hold off every change while the block runs (a batch reads one state)."""
        with self._lock:
            yield

    @property
    def model_id(self) -> str:
        """The model whose vectors these are."""
        return self.space.model_id

    @property
    def dim(self) -> int:
        """Dimension of the searched vectors."""
        return self.space.dim

    @property
    def kind(self) -> str:
        """``exact`` (float32 rows) or ``ivf`` (8-bit codes behind an inverted file)."""
        return "exact" if self._ivf is None else "ivf"

    @property
    def row_bound(self) -> int:
        """Every row of this index is below this (rows are slots, reused after removal)."""
        return self._high

    @property
    def size(self) -> int:
        """Items held, unavailable ones included."""
        return len(self._slot)

    def __len__(self) -> int:
        """Available items."""
        return self._n_available

    def __contains__(self, item_id: object) -> bool:
        """Whether the item has a vector here."""
        return isinstance(item_id, str) and item_id in self._slot

    def _reserve(self, extra: int) -> None:
        need = self._high + max(extra - len(self._free), 0)
        capacity = self._rows.shape[0]
        if need > capacity:
            self._grow(max(need, _MIN_CAPACITY, int(capacity * _GROWTH)))

    def _grow(self, capacity: int) -> None:
        """Room for ``capacity`` slots in every per-slot column."""
        high = self._high
        rows = np.zeros((capacity, self.space.dim), dtype=self._rows.dtype)
        rows[:high] = self._rows[:high]
        self._rows = rows
        for name in ("_available", "_arrived"):
            old = getattr(self, name)
            new = np.zeros(capacity, dtype=old.dtype)
            new[:high] = old[:high]
            setattr(self, name, new)
        self._ids.extend([None] * (capacity - len(self._ids)))

    def _take_slot(self) -> int:
        if self._free:
            return self._free.pop()
        self._high += 1
        return self._high - 1

    # --- changes -----------------------------------------------------------------------

    def upsert_many(
        self,
        item_ids: Sequence[str],
        vectors: npt.ArrayLike,
        available: Sequence[bool] | None = None,
        arrived_ms: Sequence[int] | None = None,
    ) -> None:
        """Store (or replace) items from full-dimension vectors (L2-normalised here).

        ``arrived_ms``: when each item arrived in the catalogue (its product's time), which
        ranks by freshness; None keeps what a replaced item had (0, unknown, for a new one).
        """
        units = unit_rows(vectors, self.space.dim_in)
        n = len(item_ids)
        flags = [True] * n if available is None else [bool(a) for a in available]
        arrived = None if arrived_ms is None else np.asarray(arrived_ms, dtype=np.int64)
        if units.shape[0] != n or len(flags) != n or (arrived is not None and len(arrived) != n):
            raise IndexInputError("item_ids, vectors, available and arrived differ in length")
        if n == 0:
            return
        # Last occurrence of an id wins.
        last = {item_id: pos for pos, item_id in enumerate(item_ids)}
        keep = np.fromiter(last.values(), dtype=np.int64, count=len(last))
        projected = self.space.project(units[keep])
        stored = self.space.encode(projected) if self._ivf is not None else projected
        with self._lock:
            self._reserve(sum(1 for item_id in last if item_id not in self._slot))
            slots = np.empty(len(last), dtype=np.int64)
            was_listed = np.zeros(len(last), dtype=np.bool_)
            for j, item_id in enumerate(last):
                slot = self._slot.get(item_id)
                if slot is None:
                    slot = self._take_slot()
                    self._slot[item_id] = slot
                    self._ids[slot] = item_id
                else:
                    was_listed[j] = self._available[slot]
                slots[j] = slot
            self._rows[slots] = stored
            if arrived is not None:
                self._arrived[slots] = arrived[keep]
            new_flags = np.array([flags[p] for p in keep.tolist()], dtype=np.bool_)
            self._n_available += int(new_flags.sum()) - int(self._available[slots].sum())
            self._available[slots] = new_flags
            if self._ivf is not None:
                if was_listed.any():
                    self._ivf_remove(slots[was_listed])
                if new_flags.any():
                    self._ivf_add(projected[new_flags], slots[new_flags])

    def upsert(
        self,
        item_id: str,
        vector: npt.ArrayLike,
        available: bool = True,
        arrived_ms: int | None = None,
    ) -> None:
        """``upsert_many`` for one item."""
        vectors = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        arrived = None if arrived_ms is None else [arrived_ms]
        self.upsert_many([item_id], vectors, [available], arrived)

    def set_available(self, item_id: str, available: bool) -> bool:
        """Change an item's availability; False if the item is unknown."""
        with self._lock:
            slot = self._slot.get(item_id)
            if slot is None:
                return False
            if bool(self._available[slot]) == available:
                return True
            self._available[slot] = available
            self._n_available += 1 if available else -1
            if self._ivf is not None:
                one = np.array([slot], dtype=np.int64)
                if available:
                    self._ivf_add(self.space.decode(self._rows[one]), one)
                else:
                    self._ivf_remove(one)
            return True

    def remove(self, item_id: str) -> bool:
        """Forget an item; its slot is reused. False if unknown."""
        with self._lock:
            slot = self._slot.pop(item_id, None)
            if slot is None:
                return False
            if self._available[slot]:
                self._n_available -= 1
                if self._ivf is not None:
                    self._ivf_remove(np.array([slot], dtype=np.int64))
            self._available[slot] = False
            self._arrived[slot] = 0
            self._ids[slot] = None
            self._free.append(slot)
            return True

    def _ivf_add(self, projected: Floats, slots: Rows) -> None:
        assert self.space.ivf is not None
        lead = np.ascontiguousarray(projected[:, : self.space.ivf.dims])
        self._ivf.add_with_ids(lead, np.ascontiguousarray(slots, dtype=np.int64))

    def reserve(self, items: int) -> None:
        """Make room for ``items`` in all (a build that knows the catalogue size: no slack)."""
        with self._lock:
            extra = items - len(self._slot)
            if extra > 0 and self._high + extra > self._rows.shape[0]:
                self._grow(self._high + extra)

    def _ivf_remove(self, slots: Rows) -> None:
        ids = np.ascontiguousarray(slots, dtype=np.int64)
        self._ivf.remove_ids(faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids)))

    # --- reads -------------------------------------------------------------------------

    def rows(self, item_ids: Sequence[str]) -> Rows:
        """Row of each id (-1 where the item has no vector here)."""
        get = self._slot.get
        with self._lock:
            return np.array([get(i, -1) for i in item_ids], dtype=np.int64)

    def ids_of(self, rows: npt.ArrayLike) -> list[str]:
        """The item id of each (valid) row."""
        ids = self._ids
        with self._lock:
            return [ids[r] or "" for r in np.asarray(rows, dtype=np.int64).tolist()]

    def vectors(self, rows: npt.ArrayLike) -> Floats:
        """Vectors (in the space) of valid ``rows``, float32, one per row."""
        r = np.asarray(rows, dtype=np.int64)
        with self._lock:
            stored = self._rows[r]
        if self._ivf is not None:
            return self.space.decode(stored)
        return np.asarray(stored, dtype=np.float32)

    def available(self, rows: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Whether each row (-1 allowed: False) is an available item."""
        r = np.asarray(rows, dtype=np.int64)
        with self._lock:
            ok = r >= 0
            out = np.zeros(r.shape, dtype=np.bool_)
            out[ok] = self._available[r[ok]]
            return out

    def available_rows(self, limit: int, exclude: npt.ArrayLike = ()) -> Rows:
        """Up to ``limit`` available rows not in ``exclude``, in slot order (stable)."""
        with self._lock:
            mask = self._available[: self._high].copy()
            ex = np.asarray(exclude, dtype=np.int64)
            mask[ex[(ex >= 0) & (ex < self._high)]] = False
            return np.flatnonzero(mask)[: max(limit, 0)].astype(np.int64)

    def arrived(self, rows: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """When each row's item arrived, ms (0 where unknown, and for row -1)."""
        r = np.asarray(rows, dtype=np.int64)
        with self._lock:
            return np.where(r >= 0, self._arrived[np.maximum(r, 0)], 0)

    def newest(self, limit: int, after_ms: int = 0) -> Rows:
        """Up to ``limit`` available rows arrived after ``after_ms`` (never 0), newest first."""
        with self._lock:
            mask = (self._arrived[: self._high] > max(after_ms, 0)) & self._available[: self._high]
            known = np.flatnonzero(mask)
            arrived = self._arrived[known]
        if len(known) > limit > 0:
            part = np.argpartition(-arrived, limit - 1)[:limit]
            known, arrived = known[part], arrived[part]
        return known[np.lexsort((known, -arrived))][: max(limit, 0)].astype(np.int64)

    def search(
        self,
        queries: npt.ArrayLike,
        k: int,
        exclude_ptr: npt.ArrayLike | None = None,
        exclude_rows: npt.ArrayLike | None = None,
    ) -> tuple[Rows, npt.NDArray[np.float32]]:
        """Top ``k`` available rows per query by inner product, best first, never excluded.

        ``exclude_rows[exclude_ptr[u]:exclude_ptr[u + 1]]`` are the rows query ``u`` must not
        get. Returns (rows, scores), both (queries, k); -1 / -inf pad a short result.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.space.dim:
            raise IndexInputError(f"queries must be (n, {self.space.dim}), got {q.shape}")
        if not np.isfinite(q).all():
            raise IndexInputError("queries must be finite")
        n = len(q)
        ptr = np.zeros(n + 1, dtype=np.int64) if exclude_ptr is None else np.asarray(exclude_ptr)
        ex = np.zeros(0, dtype=np.int64) if exclude_rows is None else np.asarray(exclude_rows)
        if len(ptr) != n + 1:
            raise IndexInputError("exclude_ptr must have one entry per query plus one")
        with self._lock:
            k = min(max(k, 0), self._n_available)
            if n == 0 or k == 0:
                return (
                    np.full((n, k), -1, dtype=np.int64),
                    np.full((n, k), -np.inf, dtype=np.float32),
                )
            ex_user = np.repeat(np.arange(n, dtype=np.int64), np.diff(ptr))
            if self._ivf is None:
                return self._search_exact(q, k, ex_user, ex.astype(np.int64))
            return self._search_ivf(q, k, ptr.astype(np.int64), ex_user, ex.astype(np.int64))

    def _search_exact(
        self, q: Floats, k: int, ex_user: Rows, ex_rows: Rows
    ) -> tuple[Rows, npt.NDArray[np.float32]]:
        high = self._high
        scores = q @ self._rows[:high].T
        scores[:, ~self._available[:high]] = -np.inf
        inside = (ex_rows >= 0) & (ex_rows < high)
        scores[ex_user[inside], ex_rows[inside]] = -np.inf
        return top_columns(scores, np.arange(high, dtype=np.int64)[None, :], k)

    def _search_ivf(
        self, q: Floats, k: int, ptr: Rows, ex_user: Rows, ex_rows: Rows
    ) -> tuple[Rows, npt.NDArray[np.float32]]:
        """IVF candidates re-scored with the 8-bit codes; exclusions filtered after.

        A query asks the IVF for ``fetch * k`` plus as many as it excludes; queries are
        grouped by how many they exclude (powers of two), one IVF call per group, so a user
        with 200 seen items does not make every query of the batch fetch 200 more.
        """
        assert self.space.ivf is not None
        counts = np.diff(ptr)
        groups = np.maximum(_EXCLUDE_FLOOR, 2 ** np.ceil(np.log2(np.maximum(counts, 1))))
        rows = np.full((len(q), k), -1, dtype=np.int64)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        width = np.int64(self._rows.shape[0] + 1)
        banned = np.unique(ex_user * width + ex_rows)
        for size in np.unique(groups).tolist():
            members = np.flatnonzero(groups == size)
            fetch = min(self._n_available, self.space.ivf.fetch * k + int(size))
            lead = np.ascontiguousarray(q[members][:, : self.space.ivf.dims])
            _, cand = self._ivf.search(lead, fetch)
            got_rows, got_scores = self._rescore(q[members], cand, members, banned, width, k)
            rows[members, : got_rows.shape[1]] = got_rows
            scores[members, : got_scores.shape[1]] = got_scores
        return rows, scores

    def _rescore(
        self,
        q: Floats,
        cand: Rows,
        members: Rows,
        banned: Rows,
        width: np.int64,
        k: int,
    ) -> tuple[Rows, npt.NDArray[np.float32]]:
        """The top ``k`` per query of ``cand``, scored from the 8-bit codes.

        ``banned`` (sorted ``user * width + row`` keys) are dropped.
        """
        assert self.space.lo is not None and self.space.step is not None
        # decode(c) . q = (lo + step / 2) . q + c . (step * q): score the codes as they are.
        offset = q @ (self.space.lo + 0.5 * self.space.step)
        scaled = q * self.space.step
        valid = cand >= 0
        safe = np.where(valid, cand, 0)
        scores = np.empty(cand.shape, dtype=np.float32)
        for start in range(0, len(q), _RESCORE_BLOCK):
            block = slice(start, start + _RESCORE_BLOCK)
            codes: Codes = self._rows[safe[block]]
            scores[block] = np.einsum("ucd,ud->uc", codes, scaled[block], dtype=np.float32)
        scores += offset[:, None]
        scores[~valid] = -np.inf
        if len(banned):
            keys = members[:, None] * width + safe
            at = np.minimum(np.searchsorted(banned, keys), len(banned) - 1)
            scores[banned[at] == keys] = -np.inf
        return top_columns(scores, safe, k)

    # --- sizes -------------------------------------------------------------------------

    def memory_bytes(self) -> int:
        """Approximate bytes held: rows, masks, id map (strings and slot ints), the IVF's lists.

        The IVF's lists grow by doubling; allocator overheads are not counted: the resident
        set is measured by ``bench/index_memory.py``.
        """
        with self._lock:
            ids = sum(sys.getsizeof(i) for i in self._slot)
            total = (
                self._rows.nbytes
                + self._available.nbytes
                + self._arrived.nbytes
                + sys.getsizeof(self._ids)
                + sys.getsizeof(self._slot)
                + ids
                + 28 * len(self._slot)  # one int object per slot above 256
            )
            if self._ivf is not None:
                code_size = int(self._ivf.code_size) + 8  # codes + 64-bit id per entry
                total += int(self._ivf.ntotal) * code_size
                total += int(self._ivf.nlist) * int(self._ivf.d) * 4
            return total

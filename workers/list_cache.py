"""The interest worker's short-lived copies of global lists: co-occurrence and popularity.

Every refresh needs the co-occurrence lists of its users' top contributors and the popularity
list; most of them were read a moment ago by an earlier batch. ``ListCache`` keeps them mapped
to rows of the serving index for ``co_cache_ms`` (the popularity list too) and forgets the
lists this worker itself just changed. It also keeps the newest arrivals of the index (for a
freshness weight), taken again after ``co_cache_ms`` or as soon as the index grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.candidates import CoLists, PopularBlock, lift
from models.index import ItemIndex


@dataclass
class _Entry:
    expires: float
    rows: np.ndarray[Any, np.dtype[np.int64]]
    scores: np.ndarray[Any, np.dtype[np.float64]]


@dataclass
class ListCache:
    """Co-occurrence lists (as rows of one index) and the popularity list, reused briefly.

    Lists are global signals written by every worker; reusing one for ``ttl_s`` trades that
    much staleness of *other* workers' increments for most of the reads. Entries this worker
    changes are dropped before the read, so its own increments are always seen.
    """

    ttl_s: float
    index: ItemIndex | None = None
    co: dict[str, _Entry] = field(default_factory=dict)
    popular: PopularBlock | None = None
    popular_at: float = 0.0
    fresh: PopularBlock | None = None
    fresh_at: tuple[float, int] = (0.0, 0)

    def follow(self, index: ItemIndex) -> None:
        """Forget everything mapped to another index (a model or space switch)."""
        if index is not self.index:
            self.index, self.co, self.popular, self.fresh = index, {}, None, None

    def popular_due(self, now: float) -> bool:
        """Whether the popularity list must be read again (none yet, or older than ``ttl_s``)."""
        return self.popular is None or now - self.popular_at >= self.ttl_s

    def newest(self, index: ItemIndex, limit: int, now: float) -> PopularBlock:
        """The index's ``limit`` newest available arrivals, newest first.

        Taken again after ``ttl_s``; when only the index grew, just the items that arrived after
        the oldest one kept compete with those kept (one pass over the arrival times, no sort).
        """
        taken_at, size = self.fresh_at
        kept = self.fresh
        if kept is None or now - taken_at >= self.ttl_s:
            kept, after, taken_at = None, 0, now
        elif size != index.size:
            full = len(kept.rows) >= limit
            after = int(index.arrived(kept.rows[-1:])[0]) - 1 if full else 0
            kept = None
        if kept is None:
            rows = index.newest(limit, after)
            if after and len(rows) < limit:  # a kept item is gone: take the whole list again
                rows = index.newest(limit)
            kept = self.fresh = PopularBlock.of(rows, np.zeros(len(rows)), index)
            self.fresh_at = (taken_at, index.size)
        return kept

    def drop(self, item_ids: set[str]) -> None:
        """Forget the lists of ``item_ids`` (their lists just changed)."""
        for item_id in item_ids:
            self.co.pop(item_id, None)

    def missing(self, item_ids: Sequence[str], now: float) -> list[str]:
        """Which lists must be read."""
        co = self.co
        return [i for i in item_ids if (e := co.get(i)) is None or e.expires <= now]

    def put(
        self,
        lists: dict[str, list[tuple[str, float]]],
        index: ItemIndex,
        now: float,
        lift_by: tuple[Sequence[float | None], float] | None = None,
    ) -> None:
        """Keep freshly read lists, mapped to rows once.

        ``lift_by``: every listed neighbour's stored popularity, all lists end to end, and the
        power ``models.candidates.lift`` divides the counts by (``interest.co_pop_power``).
        """
        names = list(lists)
        rows = index.rows([i for name in names for i, _ in lists[name]])
        counts = np.fromiter(
            (s for name in names for _, s in lists[name]), dtype=np.float64, count=len(rows)
        )
        if lift_by is not None:
            pops = np.array([np.nan if p is None else p for p in lift_by[0]], dtype=np.float64)
            counts = lift(counts, pops, lift_by[1])
        start = 0
        expires = now + self.ttl_s
        for name in names:
            end = start + len(lists[name])
            self.co[name] = _Entry(expires, rows[start:end], counts[start:end])
            start = end
        if len(self.co) > 200_000:  # bound memory: expired entries go first
            self.co = {k: e for k, e in self.co.items() if e.expires > now}

    def lists(self, item_ids: Sequence[str]) -> CoLists:
        """The lists of ``item_ids`` (read or cached) as ``rank_batch`` takes them."""
        return CoLists.from_rows({i: (e.rows, e.scores) for i in item_ids if (e := self.co.get(i))})

"""Ranking metrics for evaluating recommendation lists: pure functions over item ids.

Prequential (test-then-train) evaluation scores, for every test event ``(user, item)``, the
list the user had just *before* that event: one relevant item per list. For one list,

- ``hit_at_k``: 1 if the item is in the top ``k``;
- ``ndcg_at_k``: ``1 / log2(rank + 1)`` (rank from 1) if it is, else 0 (the ideal DCG of one
  relevant item is 1, so no normalisation is needed);

and per user, over that user's test items, ``recall_at_k`` is the share of the user's distinct
test items that were in the top ``k`` of the list shown just before the user took them. A
user's hit rate averages over events, recall over distinct items; they differ only when a
user interacts with an item twice. ``PrequentialScores`` accumulates lists and reports
per-user (macro) averages, the usual convention: heavy users do not dominate the score.

For embeddings: ``loo_1nn_accuracy`` (does each vector's nearest other vector share its
label?) and ``top1_retrieval_accuracy`` (does a near-duplicate find its original first?).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


def rank_of(ranked: Sequence[str], item_id: str, k: int | None = None) -> int | None:
    """1-based rank of ``item_id`` within the first ``k`` of ``ranked`` (all if None), else None."""
    limit = len(ranked) if k is None else min(k, len(ranked))
    for position in range(limit):
        if ranked[position] == item_id:
            return position + 1
    return None


def hit_at_k(ranked: Sequence[str], item_id: str, k: int) -> float:
    """1.0 if ``item_id`` is among the first ``k`` of ``ranked``, else 0.0."""
    _check_k(k)
    return 0.0 if rank_of(ranked, item_id, k) is None else 1.0


def ndcg_at_k(ranked: Sequence[str], item_id: str, k: int) -> float:
    """NDCG@k of a list with one relevant item: ``1 / log2(rank + 1)`` within the top ``k``."""
    _check_k(k)
    rank = rank_of(ranked, item_id, k)
    return 0.0 if rank is None else 1.0 / math.log2(rank + 1)


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Share of ``relevant`` items found in the first ``k`` of ``ranked`` (0 if none relevant)."""
    _check_k(k)
    if not relevant:
        return 0.0
    wanted = set(relevant)
    return len(wanted.intersection(ranked[:k])) / len(wanted)


def ndcg_at_k_multi(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Binary-relevance NDCG@k with several relevant items (ideal: all of them ranked first)."""
    _check_k(k)
    wanted = set(relevant)
    if not wanted:
        return 0.0
    dcg = sum(1.0 / math.log2(pos + 2) for pos, i in enumerate(ranked[:k]) if i in wanted)
    ideal = sum(1.0 / math.log2(pos + 2) for pos in range(min(k, len(wanted))))
    return dcg / ideal


def coverage(lists: Iterable[Sequence[str]], catalogue_size: int, k: int) -> float:
    """Share of the catalogue that appears in the top ``k`` of at least one list."""
    _check_k(k)
    if catalogue_size < 1:
        raise ValueError("catalogue_size must be >= 1")
    shown: set[str] = set()
    for ranked in lists:
        shown.update(ranked[:k])
    return len(shown) / catalogue_size


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


@dataclass
class _UserTally:
    events: int = 0
    hits: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    gains: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    items: set[str] = field(default_factory=set)
    found: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))


class PrequentialScores:
    """Accumulates (user, list shown before the event, item taken) and reports metrics at ``ks``."""

    def __init__(self, ks: Sequence[int], coverage_k: int = 10) -> None:
        """Track hit rate, NDCG and recall at every k of ``ks``, coverage at ``coverage_k``."""
        if not ks:
            raise ValueError("ks must not be empty")
        for k in (*ks, coverage_k):
            _check_k(k)
        self.ks = tuple(sorted(set(ks)))
        self.coverage_k = coverage_k
        self._users: dict[str, _UserTally] = defaultdict(_UserTally)
        self._shown: set[str] = set()
        self.events = 0

    def add(self, user_id: str, ranked: Sequence[str], item_id: str) -> int | None:
        """Score one event; returns the item's 1-based rank in ``ranked`` (None if absent)."""
        tally = self._users[user_id]
        tally.events += 1
        tally.items.add(item_id)
        self.events += 1
        self._shown.update(ranked[: self.coverage_k])
        rank = rank_of(ranked, item_id)
        if rank is not None:
            gain = 1.0 / math.log2(rank + 1)
            for k in self.ks:
                if rank <= k:
                    tally.hits[k] += 1.0
                    tally.gains[k] += gain
                    tally.found[k].add(item_id)
        return rank

    @property
    def users(self) -> int:
        """Users with at least one scored event."""
        return len(self._users)

    def hit_rate(self, k: int) -> float:
        """Mean over users of the share of their events whose item was in the top ``k``."""
        return self._macro(k, lambda t: t.hits[k] / t.events)

    def ndcg(self, k: int) -> float:
        """Mean over users of their mean NDCG@k per event."""
        return self._macro(k, lambda t: t.gains[k] / t.events)

    def recall(self, k: int) -> float:
        """Mean over users of the share of their distinct test items found in the top ``k``."""
        return self._macro(k, lambda t: len(t.found[k]) / len(t.items))

    def micro_hit_rate(self, k: int) -> float:
        """Share of all events (not per user) whose item was in the top ``k``."""
        self._known(k)
        if not self.events:
            return 0.0
        return sum(t.hits[k] for t in self._users.values()) / self.events

    def coverage(self, catalogue_size: int) -> float:
        """Share of the catalogue shown in the top ``coverage_k`` of some scored list."""
        if catalogue_size < 1:
            raise ValueError("catalogue_size must be >= 1")
        return len(self._shown) / catalogue_size

    def _known(self, k: int) -> None:
        if k not in self.ks:
            raise KeyError(f"k={k} was not tracked; tracked: {self.ks}")

    def _macro(self, k: int, per_user: Callable[[_UserTally], float]) -> float:
        self._known(k)
        if not self._users:
            return 0.0
        return sum(per_user(t) for t in self._users.values()) / len(self._users)


def _unit_rows(vectors: npt.ArrayLike) -> npt.NDArray[np.float32]:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError("vectors must be a non-empty 2-D array")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return np.asarray(arr / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def nearest_neighbours(
    queries: npt.ArrayLike, gallery: npt.ArrayLike, *, exclude_self: bool = False, chunk: int = 1024
) -> npt.NDArray[np.int64]:
    """Row of ``gallery`` with the highest cosine to each query (ties: the lower row).

    ``exclude_self`` (queries and gallery are the same set) skips each row's own index.
    """
    q, g = _unit_rows(queries), _unit_rows(gallery)
    if exclude_self and q.shape != g.shape:
        raise ValueError("exclude_self needs the queries to be the gallery")
    out = np.empty(q.shape[0], dtype=np.int64)
    for start in range(0, q.shape[0], chunk):
        sims = q[start : start + chunk] @ g.T
        if exclude_self:
            rows = np.arange(sims.shape[0])
            sims[rows, rows + start] = -np.inf
        out[start : start + chunk] = np.argmax(sims, axis=1)
    return out


def loo_1nn_accuracy(vectors: npt.ArrayLike, labels: Sequence[object]) -> float:
    """Leave-one-out 1-nearest-neighbour (cosine) label accuracy."""
    if len(labels) < 2:
        raise ValueError("need at least two labelled vectors")
    nearest = nearest_neighbours(vectors, vectors, exclude_self=True)
    if len(nearest) != len(labels):
        raise ValueError("one label per vector")
    return float(np.mean([labels[int(j)] == labels[i] for i, j in enumerate(nearest)]))


def top1_retrieval_accuracy(
    queries: npt.ArrayLike, gallery: npt.ArrayLike, targets: Sequence[int]
) -> float:
    """Share of queries whose nearest gallery row (cosine) is ``targets[query]``."""
    nearest = nearest_neighbours(queries, gallery)
    if len(nearest) != len(targets):
        raise ValueError("one target per query")
    return float(np.mean(nearest == np.asarray(targets, dtype=np.int64)))

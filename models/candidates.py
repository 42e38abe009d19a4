"""Where each user's candidates come from, as flat arrays over a batch.

Three sources: the visual top ``candidates`` (one search for the whole batch), the
``candidates`` strongest co-occurring items of the user's top contributors, and popular items
not already in. Seen and unavailable items never become candidates. Entries are
(user, row) pairs; membership tests use keys ``user * W + row`` (W above every row).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from models.index import ItemIndex, Rows
from models.profile import BatchStates, Profiles, first_per_user

if TYPE_CHECKING:
    from models.ranking import RankParams

Floats = npt.NDArray[np.float64]
Keys = npt.NDArray[np.int64]


def _positive(value: float) -> float:
    return value if math.isfinite(value) and value > 0 else 0.0


@dataclass(frozen=True, slots=True)
class PopularBlock:
    """The popularity list prepared once for many users: available items, best first."""

    rows: Rows
    scores: Floats
    """In [0, 1]: each score over the largest of the list read (listed or not)."""
    vectors: npt.NDArray[np.float32]
    _sorted_rows: Rows
    _sorted_scores: Floats

    @classmethod
    def prepare(
        cls, popular: Sequence[tuple[str, float]], index: ItemIndex, limit: int
    ) -> PopularBlock:
        """Available items with a positive score, best first (ties by id), at most ``limit``."""
        pop = {item_id: _positive(float(v)) for item_id, v in popular}
        ranked = sorted((i for i, v in pop.items() if v > 0), key=lambda i: (-pop[i], i))
        rows = index.rows(ranked)
        ok = index.available(rows)
        listed = [i for i, flag in zip(ranked, ok.tolist(), strict=True) if flag][:limit]
        listed_rows = rows[ok][:limit]
        top = max(pop.values(), default=0.0)
        scores = np.array([pop[i] / top for i in listed] if top else [], dtype=np.float64)
        return cls.of(listed_rows, scores, index)

    @classmethod
    def of(cls, rows: Rows, scores: Floats, index: ItemIndex) -> PopularBlock:
        """A block from rows and normalised scores (same order, best first)."""
        order = np.argsort(rows, kind="stable")
        vectors = index.vectors(rows) if len(rows) else np.zeros((0, index.dim), np.float32)
        return cls(rows, scores, vectors, rows[order], scores[order])

    @classmethod
    def empty(cls, dim: int) -> PopularBlock:
        """No popular items."""
        none = np.zeros(0, dtype=np.int64)
        nil = np.zeros(0, dtype=np.float64)
        return cls(none, nil, np.zeros((0, dim), dtype=np.float32), none, nil)

    def score_of(self, rows: Rows) -> Floats:
        """Normalised popularity of each row (0 where not listed)."""
        if not len(self._sorted_rows):
            return np.zeros(len(rows), dtype=np.float64)
        at = np.searchsorted(self._sorted_rows, rows)
        at = np.minimum(at, len(self._sorted_rows) - 1)
        hit = self._sorted_rows[at] == rows
        return np.where(hit, self._sorted_scores[at], 0.0)


@dataclass(frozen=True, slots=True)
class CoLists:
    """Co-occurrence neighbours of items as index rows, all lists end to end.

    List ``at[item]`` is ``rows[start[at]:start[at + 1]]`` with ``scores`` alike, strongest first.
    """

    at: Mapping[str, int]
    start: npt.NDArray[np.int64]
    rows: Rows
    scores: Floats

    @classmethod
    def of(cls, co: Mapping[str, tuple[Sequence[str], npt.ArrayLike]], index: ItemIndex) -> CoLists:
        """Map every list's ids to rows with one lookup."""
        names = list(co)
        ids = [i for name in names for i in co[name][0]]
        sizes = [len(co[name][0]) for name in names]
        scores = [np.asarray(co[name][1], dtype=np.float64).reshape(-1) for name in names]
        if [len(x) for x in scores] != sizes:
            raise ValueError("a co-occurrence list has different numbers of ids and scores")
        start = np.zeros(len(names) + 1, dtype=np.int64)
        np.cumsum(sizes, out=start[1:])
        flat = np.concatenate(scores) if scores else np.zeros(0, dtype=np.float64)
        return cls({name: j for j, name in enumerate(names)}, start, index.rows(ids), flat)

    @classmethod
    def from_rows(cls, lists: Mapping[str, tuple[Rows, Floats]]) -> CoLists:
        """Lists whose ids were mapped to rows already."""
        names = list(lists)
        start = np.zeros(len(names) + 1, dtype=np.int64)
        np.cumsum([len(lists[name][0]) for name in names], out=start[1:])
        if not names:
            return cls({}, start, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))
        rows = np.concatenate([lists[name][0] for name in names]).astype(np.int64)
        scores = np.concatenate([lists[name][1] for name in names]).astype(np.float64)
        return cls({name: j for j, name in enumerate(names)}, start, rows, scores)


def lift(counts: Floats, popularity: Floats, power: float) -> Floats:
    """Co-occurrence counts over each neighbour's popularity ** ``power`` (same stored scale).

    A neighbour's popularity counts as at least its count here (NaN: not in the popularity
    set), so a rarely seen item keeps count ** (1 - power) instead of growing as its own
    popularity fades.
    """
    pop = np.fmax(popularity, counts)
    out = np.zeros(len(counts), dtype=np.float64)
    np.divide(counts, pop**power, out=out, where=pop > 0)
    return out


def popularity_weights(params: RankParams, states: BatchStates) -> Floats:
    """Each user's popularity weight ``w_pop``.

    ``popularity_weight * (1 + popularity_prior / n) * (1 + popularity_idle_boost * (1 - 2 **
    (-idle / popularity_idle_half_life_s)))``: n, the user's items (at least 1), a prior that a
    longer history outweighs; idle, from the user's last event to the time the list is ranked
    at: 0 for a list answering the user's own event, more for an idle user's list ranked again,
    whose tastes are older than what is popular now.
    """
    n = np.maximum(np.diff(states.ptr), 1)
    w = params.popularity_weight * (1.0 + params.popularity_prior / n)
    if params.popularity_idle_boost > 0:
        idle_s = np.maximum(states.now_ms - states.last_ts_ms, 0) / 1000.0
        grown = 1.0 - np.exp2(-idle_s / params.popularity_idle_half_life_s)
        w = w * (1.0 + params.popularity_idle_boost * grown)
    return w


def isin_sorted(keys: Keys, sorted_keys: Keys) -> npt.NDArray[np.bool_]:
    """Membership of ``keys`` in the sorted unique ``sorted_keys``."""
    if not len(sorted_keys):
        return np.zeros(keys.shape, dtype=np.bool_)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    found: npt.NDArray[np.bool_] = sorted_keys[at] == keys
    return found


def user_starts(user_of: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.int64]:
    return np.searchsorted(user_of, np.arange(n + 1)).astype(np.int64)


def visual_candidates(
    profiles: Profiles,
    index: ItemIndex,
    params: RankParams,
    seen_user: npt.NDArray[np.int64],
    seen_rows: Rows,
) -> tuple[npt.NDArray[np.int64], Rows, Floats]:
    """One search for every personal user: (user, row, similarity) of their visual top."""
    users = np.flatnonzero(profiles.personal)
    empty = np.zeros(0, dtype=np.int64)
    if not len(users) or len(index) == 0:
        return empty, empty, np.zeros(0, dtype=np.float64)
    keep = profiles.personal[seen_user]
    counts = np.bincount(seen_user[keep], minlength=len(profiles.states))[users]
    ex_ptr = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(counts, out=ex_ptr[1:])
    k = max(params.candidates, params.top_k)
    rows, scores = index.search(profiles.vectors[users], k, ex_ptr, seen_rows[keep])
    ok = rows >= 0
    user = np.broadcast_to(users[:, None], rows.shape)[ok]
    return user.astype(np.int64), rows[ok], scores[ok].astype(np.float64)


def co_candidates(
    profiles: Profiles,
    index: ItemIndex,
    co: CoLists,
    params: RankParams,
    entry_user: npt.NDArray[np.int64],
    seen_keys: Keys,
    width: np.int64,
) -> tuple[npt.NDArray[np.int64], Rows, Floats, npt.NDArray[np.int64]]:
    """Per user the ``candidates`` strongest co-occurring items (available, unseen).

    An item co-occurring with several contributors counts with its largest score (the sum of
    them with ``co_sum``), via the contributor of the largest. Each count is first divided by
    its list's strongest with ``co_norm``, weighed by the contributor's interest share ** p
    with ``co_share_power`` p > 0. Values are normalised by the user's largest.
    """
    st = profiles.states
    n = len(st)
    ptr, pos = profiles.contrib_ptr, profiles.contrib_pos
    ids = st.item_ids
    empty = np.zeros(0, dtype=np.int64)
    if not co.at:
        return empty, empty, np.zeros(0, dtype=np.float64), empty
    lists = np.array([co.at.get(ids[p], -1) for p in pos.tolist()], dtype=np.int64)
    lo = np.where(lists >= 0, co.start[np.maximum(lists, 0)], 0)
    sizes = np.where(lists >= 0, co.start[np.maximum(lists, 0) + 1] - lo, 0)
    total = int(sizes.sum())
    if total == 0:
        return empty, empty, np.zeros(0, dtype=np.float64), empty
    # Entry j of contributor c is element lo[c] + j of the lists: expand without a loop.
    owner = np.repeat(np.arange(len(pos), dtype=np.int64), sizes)
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    flat = lo[owner] + offsets
    user = np.repeat(np.arange(n, dtype=np.int64), np.diff(ptr))[owner]
    rank_ = owner - ptr[user]
    rows, scores = co.rows[flat], co.scores[flat]
    scores = _over_strongest(scores, owner, len(pos)) if params.co_norm else scores
    if params.co_share_power > 0 and profiles.contrib_share is not None:
        scores = scores * profiles.contrib_share[owner] ** params.co_share_power
    ok = (rows >= 0) & np.isfinite(scores) & (scores > 0)
    ok[ok] &= index.available(rows[ok])
    ok[ok] &= ~isin_sorted(user[ok] * width + rows[ok], seen_keys)
    user, rank_, rows, scores = user[ok], rank_[ok], rows[ok], scores[ok]
    key = user * width + rows
    order = np.lexsort((rank_, -scores, key))
    key_sorted = key[order]
    first = np.ones(len(order), dtype=np.bool_)
    first[1:] = key_sorted[1:] != key_sorted[:-1]
    sel = order[first]  # one per (user, row): the largest score, the first contributor
    summed = np.add.reduceat(scores[order], np.flatnonzero(first)) if params.co_sum else None
    user, rank_, rows = user[sel], rank_[sel], rows[sel]
    scores = summed if summed is not None else scores[sel]
    top = np.zeros(n, dtype=np.float64)
    np.maximum.at(top, user, scores)
    keep = first_per_user_by_id(
        user, -scores, np.zeros(len(user)), rows, n, params.candidates, index
    )
    user, rank_, rows, scores = user[keep], rank_[keep], rows[keep], scores[keep]
    via = pos[ptr[user] + rank_]
    return user, rows, scores / top[user], via.astype(np.int64)


def first_per_user_by_id(
    user: npt.NDArray[np.int64],
    key1: Floats,
    key2: Floats,
    rows: Rows,
    n: int,
    m: int,
    index: ItemIndex,
) -> npt.NDArray[np.int64]:
    """Positions of each user's first ``m`` entries ordered by (key1, key2, item id), in order."""
    return first_per_user(user, (key2, key1), rows, lambda sel: index.ids_of(rows[sel]), n, m)


def popular_picks(
    n: int, popular: PopularBlock, params: RankParams, width: np.int64, taken: list[Keys]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per user the first popular items not seen and not already in the pool.

    ``taken``: sorted ``user * width + row`` key arrays (duplicates allowed).
    """
    budget = min(params.candidates, 2 * params.top_k)
    if not len(popular.rows) or n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    keys = np.arange(n, dtype=np.int64)[:, None] * width + popular.rows[None, :]
    allowed = np.ones(keys.shape, dtype=np.bool_)
    for sorted_keys in taken:
        allowed &= ~isin_sorted(keys, sorted_keys)
    pick = allowed & (np.cumsum(allowed, axis=1) <= budget)
    user, pos = np.nonzero(pick)
    return user.astype(np.int64), pos.astype(np.int64)


def _over_strongest(scores: Floats, owner: npt.NDArray[np.int64], n: int) -> Floats:
    """Each score over the largest of its list (``owner``: the list of each, ``n`` lists).

    A popular contributor's counts are large; divided so, they no longer drown the others'.
    """
    strongest = np.zeros(n, dtype=np.float64)
    np.maximum.at(strongest, owner, np.where(np.isfinite(scores), scores, 0.0))
    out: Floats = scores / np.where(strongest > 0, strongest, 1.0)[owner]
    return out

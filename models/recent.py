"""Recent interests: a user's latest items, each its own interest next to the blended vector.

One vector per user averages a shopper who likes boots and lamps into a direction that is
neither. With ``recent_weight`` > 0 the ranking also keeps the user's ``recent_items`` latest
items (those weighing most in the short-term, session sums: the latest touched, a repeated one
first) as separate interests:

- each retrieves its own ``candidates // recent_items`` nearest items (one search for every
  interest of the batch), which join the pool;
- the visual term of every pool entry becomes ``(1 - recent_weight) * cos(user, item) +
  recent_weight * max_j cos(recent_j, item)``: an item close to any one recent interest
  scores, even when it is far from the average.

The state is unchanged (the short-term log weights already order the items by recency), so
this is a ranking choice, taken per deployment and tuned on validation
(``bench/tune_replay.py --knob recent_weight``). Off (0) by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.candidates import isin_sorted
from models.index import ItemIndex, Rows
from models.profile import Profiles, first_per_user

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class RecentInterests:
    """Each personal user's recent items with a vector: ``user`` ascending, latest first."""

    user: npt.NDArray[np.int64]
    row: Rows
    vectors: npt.NDArray[np.float32]

    @classmethod
    def of(cls, profiles: Profiles, index: ItemIndex, m: int) -> RecentInterests:
        """The ``m`` entries per user with the largest short-term weight (ties: item id)."""
        st = profiles.states
        n = len(st)
        entry_user = np.repeat(np.arange(n, dtype=np.int64), np.diff(st.ptr))
        pos = np.flatnonzero((profiles.item_rows >= 0) & profiles.personal[entry_user])
        ids = st.item_ids
        keep = first_per_user(
            entry_user[pos],
            (-st.log_short[pos],),
            profiles.item_rows[pos],
            lambda sel: [ids[p] for p in pos[sel].tolist()],
            n,
            m,
        )
        chosen = pos[keep]
        rows = profiles.item_rows[chosen]
        vecs = index.vectors(rows) if len(rows) else np.zeros((0, index.dim), np.float32)
        finite = np.isfinite(vecs).all(axis=1)
        return cls(entry_user[chosen][finite], rows[finite], vecs[finite].astype(np.float32))

    def candidates(
        self, index: ItemIndex, k: int, seen_user: npt.NDArray[np.int64], seen_rows: Rows
    ) -> tuple[npt.NDArray[np.int64], Rows]:
        """(user, row) of each interest's ``k`` nearest unseen items (one search for all)."""
        empty = np.zeros(0, dtype=np.int64)
        if not len(self.user) or k < 1 or len(index) == 0:
            return empty, empty
        order = np.argsort(seen_user, kind="stable")
        s_user, s_rows = seen_user[order], seen_rows[order]
        n = int(max(self.user.max(), s_user.max() if len(s_user) else 0)) + 1
        starts = np.searchsorted(s_user, np.arange(n + 1))
        counts = (starts[1:] - starts[:-1])[self.user]
        ptr = np.zeros(len(self.user) + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        # Each query's excluded rows: its user's seen rows, gathered by offset.
        offset = np.repeat(starts[:-1][self.user] - ptr[:-1], counts)
        excluded = s_rows[np.arange(int(ptr[-1]), dtype=np.int64) + offset]
        rows, _ = index.search(self.vectors, k, ptr, excluded)
        ok = rows >= 0
        user = np.broadcast_to(self.user[:, None], rows.shape)[ok]
        return user.astype(np.int64), rows[ok]

    def max_sims(self, index: ItemIndex, user: npt.NDArray[np.int64], row: Rows) -> Floats:
        """``max_j cos(recent_j, item)`` per (user, row) entry; NaN for users with none."""
        out = np.full(len(user), np.nan, dtype=np.float64)
        if not len(user) or not len(self.user):
            return out
        n = int(max(user.max(), self.user.max())) + 1
        q_starts = np.searchsorted(self.user, np.arange(n + 1))
        order = np.argsort(user, kind="stable")
        starts = np.searchsorted(user[order], np.arange(n + 1))
        vecs = index.vectors(row[order])
        for u in np.flatnonzero((np.diff(starts) > 0) & (np.diff(q_starts) > 0)).tolist():
            lo, hi = int(starts[u]), int(starts[u + 1])
            queries = self.vectors[q_starts[u] : q_starts[u + 1]]
            out[order[lo:hi]] = (vecs[lo:hi] @ queries.T).max(axis=1)
        return out


def recent_pool(
    profiles: Profiles,
    index: ItemIndex,
    m: int,
    k: int,
    seen: tuple[npt.NDArray[np.int64], Rows],
    taken: list[npt.NDArray[np.int64]],
) -> tuple[RecentInterests, npt.NDArray[np.int64], Rows]:
    """The batch's recent interests and their candidates not yet in the pool.

    ``seen``: (user, row) of every user's items with a vector. ``taken``: sorted ``user * width
    + row`` keys already in the pool, seen items first; the new entries' keys are appended.
    """
    width = np.int64(max(index.row_bound, 1))
    recent = RecentInterests.of(profiles, index, m)
    user, row = recent.candidates(index, k, *seen)
    keys, first = np.unique(user * width + row, return_index=True)
    new = np.ones(len(keys), dtype=np.bool_)
    for t in taken:
        new &= ~isin_sorted(keys, t)
    taken.append(keys[new])
    sel = first[new]
    return recent, user[sel], row[sel]


def blend_visual(visual: Floats, recent: Floats, weight: float) -> Floats:
    """``(1 - weight) * visual + weight * recent`` where ``recent`` is known, else ``visual``."""
    mixed: Floats = np.where(np.isnan(recent), visual, (1.0 - weight) * visual + weight * recent)
    return mixed

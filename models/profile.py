"""Step 1 of a refresh: users' vectors, seen rows and top contributors, for a whole batch.

The interest rule of ``models.interest`` on arrays: every user's decayed long- and short-term
sums of their items' vectors (looked up in the index by row), blended; and the items that
weigh most in them, whose co-occurrence lists are read before ranking (step 2,
``models.ranking.rank_batch``). Everything is column-wise over the batch, grouped by user.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.index import ItemIndex, Rows
from models.interest import InterestColumns, InterestParams

Floats = npt.NDArray[np.float64]

CONTRIBUTORS = 10
"""Items per user whose co-occurrence lists are read (and that name ``similar_to`` reasons)."""


@dataclass(frozen=True, slots=True)
class BatchStates:
    """The batch's users' interest states as one set of columns, grouped by user.

    User ``u`` owns entries ``ptr[u]:ptr[u + 1]`` of ``item_ids``/``log_long``/``log_short``,
    in any order (ties between items are broken by item id wherever they matter).
    """

    user_ids: list[str]
    now_ms: npt.NDArray[np.int64]
    """Per user: the time the refresh is computed at (the triggering event's)."""
    last_ts_ms: npt.NDArray[np.int64]
    ptr: npt.NDArray[np.int64]
    item_ids: list[str]
    log_long: Floats
    log_short: Floats

    @classmethod
    def of(cls, users: Sequence[tuple[str, InterestColumns]], now_ms: Sequence[int]) -> BatchStates:
        """Stack per-user columns into one batch."""
        sizes = [len(cols.item_ids) for _, cols in users]
        ptr = np.zeros(len(users) + 1, dtype=np.int64)
        np.cumsum(sizes, out=ptr[1:])
        empty = np.zeros(0, dtype=np.float64)
        return cls(
            user_ids=[user for user, _ in users],
            now_ms=np.asarray(now_ms, dtype=np.int64),
            last_ts_ms=np.array([cols.last_ts_ms for _, cols in users], dtype=np.int64),
            ptr=ptr,
            item_ids=[i for _, cols in users for i in cols.item_ids],
            log_long=np.concatenate([c.log_long for _, c in users] or [empty]),
            log_short=np.concatenate([c.log_short for _, c in users] or [empty]),
        )

    def __len__(self) -> int:
        """Users in the batch."""
        return len(self.user_ids)


@dataclass(frozen=True, slots=True)
class Profiles:
    """What ``profile_batch`` derives from the states."""

    states: BatchStates
    item_rows: Rows
    """Index row of every state entry (-1: no vector under the served model yet)."""
    vectors: npt.NDArray[np.float32]
    """(users, dim) unit user vectors; zero rows for users without one."""
    personal: npt.NDArray[np.bool_]
    """Whether the user has a vector (else the list is popularity-based)."""
    contrib_ptr: npt.NDArray[np.int64]
    contrib_pos: npt.NDArray[np.int64]
    """Per user, state entries of the top contributors, most contributing first."""
    contrib_share: Floats | None = None
    """Each contributor's share of its user's blended interest (aligned with ``contrib_pos``)."""

    def contributor_ids(self) -> list[str]:
        """Every user's contributors' item ids, deduplicated (what to read lists for)."""
        ids = self.states.item_ids
        return list(dict.fromkeys(ids[p] for p in self.contrib_pos.tolist()))


def _segment_starts(user_of: npt.NDArray[np.int64], n_users: int) -> npt.NDArray[np.int64]:
    """Start of each user's run in the sorted ``user_of`` (a user's start = next one's if none)."""
    return np.searchsorted(user_of, np.arange(n_users + 1)).astype(np.int64)


def _segment_max(values: Floats, starts: npt.NDArray[np.int64]) -> Floats:
    """Per-segment maximum (-inf for empty segments)."""
    out = np.full(len(starts) - 1, -np.inf)
    nonempty = starts[:-1] < starts[1:]
    if nonempty.any():
        out[nonempty] = np.maximum.reduceat(values, starts[:-1][nonempty])
    return out


def _segment_sums(
    rows: npt.NDArray[np.floating], starts: npt.NDArray[np.int64], weights: Floats
) -> Floats:
    """Per segment and per row of ``weights`` the weighted sum of ``rows``: (k, segments, dim).

    One small matrix product per segment (zeros if empty), which replaced a scipy sparse
    (segments x rows) product per weight column: the sparse constructor alone cost ~0.1 ms
    a call, four calls a batch. ``bench/refresh_cost.py --compare`` (1,000 items): profile +
    rank 0.78x the time for one user, 0.89-0.94x for 5 to 500 (``bench/RESULTS.md``).
    """
    out = np.zeros((len(weights), len(starts) - 1, rows.shape[1]), dtype=np.float64)
    bounds = starts.tolist()
    for u, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        if hi > lo:
            out[:, u] = weights[:, lo:hi] @ rows[lo:hi]
    return out


def short_term_blend(states: BatchStates, params: InterestParams) -> Floats:
    """Per user ``b = short_term_weight * 2 ** (-(now - last_ts) / h_short)``, age >= 0."""
    age_s = np.maximum(states.now_ms - states.last_ts_ms, 0) / 1000.0
    blend: Floats = params.short_term_weight * np.power(2.0, -age_s / params.half_life_short_s)
    return blend


def _directions(
    logs: tuple[Floats, ...], vecs: npt.NDArray[np.float32], user_of: npt.NDArray[np.int64], n: int
) -> list[tuple[Floats, npt.NDArray[np.bool_]]]:
    """Per user ``normalize(sum_i exp(L_i - max L) v_i)`` and whether it exists, for each log."""
    starts = _segment_starts(user_of, n)
    weights = np.stack([np.exp(lg - _segment_max(lg, starts)[user_of]) for lg in logs])
    found = []
    for sums in _segment_sums(vecs, starts, weights):
        norms = np.linalg.norm(sums, axis=1)
        ok = (norms > 1e-12) & np.isfinite(norms)
        out = np.zeros_like(sums)
        out[ok] = sums[ok] / norms[ok, None]
        found.append((out, ok))
    return found


PROFILE_CHUNK_ROWS = 8192
"""State entries whose vectors are gathered at once: 200 users with 200 items each would
otherwise gather 40,000 rows (205 MB at 1280-d) in one piece for a moment."""


def user_vectors(
    states: BatchStates,
    item_rows: Rows,
    index: ItemIndex,
    params: InterestParams,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Every user's vector at their ``now_ms`` from the items that have a vector in ``index``.

    ``normalize((1 - b) u_long + b u_short)`` with ``u_x`` the normalised decayed sums; a user
    whose long and short directions cancel keeps the long one (the history). Users are taken
    in chunks of about ``PROFILE_CHUNK_ROWS`` state entries (each user whole).
    """
    n = len(states)
    b = short_term_blend(states, params)
    vectors: list[npt.NDArray[np.float32]] = []
    found: list[npt.NDArray[np.bool_]] = []
    lo = 0
    while lo < n or not vectors:
        cap = np.searchsorted(states.ptr, states.ptr[lo] + PROFILE_CHUNK_ROWS, side="right")
        hi = min(n, max(lo + 1, int(cap) - 1))
        v, ok = _chunk_vectors(states, item_rows, index, b, lo, hi)
        vectors.append(v)
        found.append(ok)
        lo = hi
    return np.concatenate(vectors), np.concatenate(found)


def _chunk_vectors(
    states: BatchStates, item_rows: Rows, index: ItemIndex, b: Floats, lo: int, hi: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """``user_vectors`` of users ``lo:hi``."""
    a, z = int(states.ptr[lo]), int(states.ptr[hi])
    user_of = np.repeat(np.arange(hi - lo, dtype=np.int64), np.diff(states.ptr[lo : hi + 1]))
    rows = item_rows[a:z]
    sel = np.flatnonzero(rows >= 0)
    vecs = index.vectors(rows[sel])
    finite = np.isfinite(vecs).all(axis=1)
    if not finite.all():
        sel, vecs = sel[finite], vecs[finite]
    owner = user_of[sel]
    logs = (states.log_long[a:z][sel], states.log_short[a:z][sel])
    (long_dir, long_ok), (short_dir, short_ok) = _directions(logs, vecs, owner, hi - lo)
    bb = b[lo:hi, None]
    mixed = (1.0 - bb) * long_dir + bb * short_dir
    norms = np.linalg.norm(mixed, axis=1)
    both = long_ok & short_ok
    out = np.where(long_ok[:, None], long_dir, short_dir)
    blend = both & (norms > 1e-12)
    out[blend] = mixed[blend] / norms[blend, None]
    return out.astype(np.float32), long_ok | short_ok


def top_contributors(
    states: BatchStates, params: InterestParams, k: int = CONTRIBUTORS
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], Floats]:
    """Per user the ``k`` entries weighing most in the blended vector (ties: item id).

    Shares are ``(1 - b) * long_share + b * short_share`` over all of the user's items, with
    or without a vector. Returns (ptr, entry positions, their shares), most contributing first.
    """
    n = len(states)
    sizes = np.diff(states.ptr)
    user_of = np.repeat(np.arange(n, dtype=np.int64), sizes)
    starts = states.ptr
    b = short_term_blend(states, params)
    shares = np.zeros(len(user_of), dtype=np.float64)
    for logs, weight in ((states.log_long, 1.0 - b), (states.log_short, b)):
        w = np.exp(logs - _segment_max(logs, starts)[user_of])
        shares += weight[user_of] * (w / np.bincount(user_of, weights=w, minlength=n)[user_of])
    positions = np.arange(len(user_of), dtype=np.int64)
    ids = states.item_ids
    keep = first_per_user(
        user_of, (-shares,), positions, lambda sel: [ids[p] for p in sel.tolist()], n, k
    )
    counts = np.minimum(sizes, k)
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return ptr, keep.astype(np.int64), shares[keep]


def first_per_user(
    user: npt.NDArray[np.int64],
    keys: tuple[npt.NDArray[Any], ...],
    numeric: npt.NDArray[np.int64],
    names: Callable[[npt.NDArray[np.int64]], list[str]],
    n: int,
    m: int,
) -> npt.NDArray[np.int64]:
    """Positions of each user's first ``m`` entries, ascending by ``keys`` then by name.

    ``keys`` go least significant first (as ``np.lexsort``'s); ``names(positions)`` gives the
    names that break ties. Sorted by ``numeric`` (any stable number, e.g. a row) first, which
    is fast; runs of equal keys that reach a user's cut are then re-ordered by name, so the
    result never depends on ``numeric``. ``user`` need not be sorted; the result is grouped by
    user, in order.
    """
    order = np.lexsort((numeric, *keys, user))
    u = user[order]
    starts = _segment_starts(u, n)
    rank = np.arange(len(u)) - starts[u]
    same = np.zeros(len(u), dtype=np.bool_)
    same[1:] = u[1:] == u[:-1]
    for key in keys:
        k = key[order]
        same[1:] &= k[1:] == k[:-1]
    tied = np.flatnonzero(same)
    if len(tied):
        for run in np.split(tied, np.flatnonzero(np.diff(tied) > 1) + 1):
            lo, hi = int(run[0]) - 1, int(run[-1]) + 1
            if rank[lo] >= m:
                continue
            seg = order[lo:hi]
            by_name = names(seg)
            order[lo:hi] = seg[sorted(range(hi - lo), key=by_name.__getitem__)]
    keep: npt.NDArray[np.int64] = order[rank < m]
    return keep


def profile_batch(states: BatchStates, index: ItemIndex, params: InterestParams) -> Profiles:
    """Users' vectors, rows and top contributors (step 1 of a refresh)."""
    item_rows = index.rows(states.item_ids)
    vectors, personal = user_vectors(states, item_rows, index, params)
    contrib_ptr, contrib_pos, contrib_share = top_contributors(states, params)
    return Profiles(states, item_rows, vectors, personal, contrib_ptr, contrib_pos, contrib_share)

"""Step 2 of a refresh: rank every user's list of a batch on arrays.

``score = visual_weight * cos(user, item) + co_weight * co / max co + w_pop * popularity / max
popularity + fresh_weight * 2 ** (-age / fresh_half_life)`` over each user's
pool (``models.candidates``): the visual top ``candidates`` (one search for the whole batch),
the ``candidates`` strongest co-occurring items, up to ``min(candidates, 2 top_k)`` popular
items not already in and, with a freshness weight, as many of the newest arrivals. An item's
age is the refresh time less its arrival in the catalogue (its product's time; no freshness
where that is unknown). Seen and unavailable items never appear; ties go by popularity, then
item id. ``w_pop``: ``models.candidates.popularity_weights``. Optional MMR re-ranking trades
relevance against similarity to the items already picked. Every item says why it is there:

- ``also_viewed_with:<item>`` when the co-occurrence term is the largest of the terms;
- ``new_arrival`` when the freshness term is;
- ``popular`` when the popularity term is, and for users without a vector;
- ``similar_to:<item>`` otherwise: the user's contributing item most similar to it
  (``similar_to_profile`` if none of the contributors has a vector).

Pools are flat arrays of (user, row) entries; membership tests use keys ``user * W + row``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from models.candidates import (
    CoLists,
    PopularBlock,
    co_candidates,
    first_per_user_by_id,
    isin_sorted,
    popular_picks,
    popularity_weights,
    user_starts,
    visual_candidates,
)
from models.index import ItemIndex, Rows
from models.profile import Profiles
from models.recent import blend_visual, recent_pool

Floats = npt.NDArray[np.float64]
Keys = npt.NDArray[np.int64]

REASON_POPULAR = "popular"
REASON_NEW = "new_arrival"
REASON_PROFILE = "similar_to_profile"
SIMILAR_TO = "similar_to:"
ALSO_VIEWED_WITH = "also_viewed_with:"


@dataclass(frozen=True, slots=True)
class RankParams:
    """How a list is ranked (``InterestSettings.rank_params()``: the defaults live there)."""

    top_k: int
    candidates: int  # items retrieved by visual similarity (and co-occurrence) before blending
    visual_weight: float
    co_weight: float
    popularity_weight: float
    mmr_lambda: float | None  # 1 = pure relevance, 0 = pure diversity; None skips MMR
    fresh_weight: float = 0.0
    fresh_half_life_s: float = 86400.0
    recent_weight: float = 0.0
    """Share of the visual term taken by the nearest recent interest (``models.recent``)."""
    recent_items: int = 3
    co_share_power: float = 0.0
    """Co-occurrence scores weighed by the contributor's interest share ** this (0: not)."""
    co_sum: bool = False  # an item's co-occurrence score sums over contributors (else: max)
    co_norm: bool = False
    """Each contributor's counts are divided by its list's strongest first (else raw counts)."""
    popularity_prior: float = 0.0  # these three: ``models.candidates.popularity_weights``
    popularity_idle_boost: float = 0.0
    popularity_idle_half_life_s: float = 7 * 86400.0

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.candidates < 1 or self.recent_items < 1:
            raise ValueError("top_k, candidates and recent_items must be >= 1")
        if not 0.0 <= self.recent_weight <= 1.0:
            raise ValueError("recent_weight must be in [0, 1]")
        halves = (self.fresh_half_life_s, self.popularity_idle_half_life_s)
        if not all(math.isfinite(h) and h > 0 for h in halves):
            raise ValueError("fresh and idle half-lives must be finite and > 0")
        weights = (self.visual_weight, self.co_weight, self.popularity_weight, self.fresh_weight)
        others = (self.co_share_power, self.popularity_prior, self.popularity_idle_boost)
        if not all(math.isfinite(w) and w >= 0 for w in (*weights, *others)):
            raise ValueError("weights, co_share_power and popularity priors must be finite, >= 0")
        if self.mmr_lambda is not None and not 0.0 <= self.mmr_lambda <= 1.0:
            raise ValueError("mmr_lambda must be in [0, 1]")


@dataclass(frozen=True, slots=True)
class RankedLists:
    """Every user's list: entries ``ptr[u]:ptr[u + 1]``, best first."""

    user_ids: list[str]
    ptr: npt.NDArray[np.int64]
    rows: Rows
    item_ids: list[str]
    scores: Floats
    reasons: list[str]

    def items(self, u: int) -> list[tuple[str, float, str]]:
        """User ``u``'s list as (item_id, score, reason)."""
        lo, hi = int(self.ptr[u]), int(self.ptr[u + 1])
        return list(
            zip(self.item_ids[lo:hi], self.scores[lo:hi].tolist(), self.reasons[lo:hi], strict=True)
        )


@dataclass(slots=True)
class _Pool:
    """Every user's candidates as flat columns (grouped by user after ``_sorted``)."""

    user: npt.NDArray[np.int64]
    row: Rows
    visual: Floats
    co: Floats
    via: npt.NDArray[np.int64]  # state entry of the contributor it co-occurred with, or -1
    pop: Floats
    fresh: Floats
    score: Floats

    def take(self, sel: npt.NDArray[np.int64]) -> _Pool:
        return _Pool(
            self.user[sel],
            self.row[sel],
            self.visual[sel],
            self.co[sel],
            self.via[sel],
            self.pop[sel],
            self.fresh[sel],
            self.score[sel],
        )


def rank_batch(
    profiles: Profiles,
    index: ItemIndex,
    co: CoLists,
    popular: PopularBlock,
    params: RankParams,
    fresh: PopularBlock | None = None,
) -> RankedLists:
    """Ranked lists for every user of ``profiles`` (see the module docstring).

    ``fresh``: the newest arrivals (``ItemIndex.newest``), candidates when ``fresh_weight`` > 0.
    """
    st = profiles.states
    n = len(st)
    width = np.int64(max(index.row_bound, 1))
    entry_user = np.repeat(np.arange(n, dtype=np.int64), np.diff(st.ptr))
    has = profiles.item_rows >= 0
    seen_user, seen_rows = entry_user[has], profiles.item_rows[has]
    seen_keys = np.unique(seen_user * width + seen_rows)

    vis_user, vis_row, vis_score = visual_candidates(profiles, index, params, seen_user, seen_rows)
    vis_keys = np.sort(vis_user * width + vis_row)
    co_user, co_row, co_val, co_via = co_candidates(
        profiles, index, co, params, entry_user, seen_keys, width
    )
    co_key = co_user * width + co_row
    co_order = np.argsort(co_key)
    co_keys = co_key[co_order]
    only = ~isin_sorted(co_key, vis_keys)
    other_user, other_row = co_user[only], co_row[only]  # the pool's entries besides visual
    taken = [seen_keys, vis_keys, co_keys]
    recent = None
    if params.recent_weight > 0:
        k_each = max(params.candidates // params.recent_items, params.top_k)
        recent, r_user, r_row = recent_pool(
            profiles, index, params.recent_items, k_each, (seen_user, seen_rows), taken
        )
        other_user = np.concatenate([other_user, r_user])
        other_row = np.concatenate([other_row, r_row])
    blocks = [(popular, *popular_picks(n, popular, params, width, taken))]
    if fresh is not None and params.fresh_weight > 0:
        pop_user, pop_pos = blocks[0][1:]
        taken.append(np.sort(pop_user * width + popular.rows[pop_pos]))
        blocks.append((fresh, *popular_picks(n, fresh, params, width, taken)))

    user = np.concatenate([vis_user, other_user, *(u for _, u, _ in blocks)])
    row = np.concatenate([vis_row, other_row, *(b.rows[pos] for b, _, pos in blocks)])
    co_col, via_col = _co_columns(user * width + row, co_keys, co_val[co_order], co_via[co_order])
    visual = _visual_column(profiles, index, vis_score, other_row, other_user, blocks)
    if recent is not None:
        visual = blend_visual(visual, recent.max_sims(index, user, row), params.recent_weight)
    pool = _score(params, profiles, index, user, row, visual, co_col, via_col, popular)

    depth = params.top_k if params.mmr_lambda is None else max(params.candidates, params.top_k)
    chosen = _best(pool, n, depth, index)
    if params.mmr_lambda is not None:
        chosen = _mmr(chosen, n, index, params.top_k, params.mmr_lambda)
    personal = profiles.personal
    chosen = _fill_cold_start(chosen, n, personal, index, params.top_k, seen_user, seen_rows)
    return _finish(chosen, profiles, index, params)


def _co_columns(
    key: Keys, co_keys: Keys, co_val: Floats, co_via: npt.NDArray[np.int64]
) -> tuple[Floats, npt.NDArray[np.int64]]:
    """Each pool key's co-occurrence value and contributor entry (0 / -1 if not co-occurring)."""
    if not len(co_keys):
        return np.zeros(len(key), dtype=np.float64), np.full(len(key), -1, dtype=np.int64)
    at = np.minimum(np.searchsorted(co_keys, key), len(co_keys) - 1)
    in_co = co_keys[at] == key
    return np.where(in_co, co_val[at], 0.0), np.where(in_co, co_via[at], -1)


def _visual_column(
    profiles: Profiles,
    index: ItemIndex,
    vis_score: Floats,
    co_rows: Rows,
    co_users: npt.NDArray[np.int64],
    blocks: list[tuple[PopularBlock, npt.NDArray[np.int64], npt.NDArray[np.int64]]],
) -> Floats:
    """cos(user, item) of every pool entry: visual, other (co-occurrence-only, recent), blocks."""
    queries = profiles.vectors
    parts: list[npt.NDArray[np.floating]] = [vis_score]
    if len(co_users):
        parts.append(_dots(index.vectors(co_rows), queries, co_users))
    for block, b_user, b_pos in blocks:
        if len(b_user):
            # One small product for the whole block rather than a copy of a query per entry.
            parts.append((block.vectors @ queries.T)[b_pos, b_user])
    return np.concatenate([np.asarray(v, dtype=np.float64) for v in parts])


def _score(
    params: RankParams,
    profiles: Profiles,
    index: ItemIndex,
    user: npt.NDArray[np.int64],
    row: Rows,
    visual: Floats,
    co_col: Floats,
    via_col: npt.NDArray[np.int64],
    popular: PopularBlock,
) -> _Pool:
    """The pool's columns and blended score."""
    personal = profiles.personal
    visual[~personal[user]] = 0.0
    pop_col = popular.score_of(row)
    fresh_col = np.zeros(len(row), dtype=np.float64)
    if params.fresh_weight > 0:
        arrived = index.arrived(row)
        age_s = np.maximum(profiles.states.now_ms[user] - arrived, 0) / 1000.0
        fresh_col = np.where(arrived > 0, np.exp2(-age_s / params.fresh_half_life_s), 0.0)
    vw = np.where(personal[user], params.visual_weight, 0.0)
    pw = popularity_weights(params, profiles.states)[user]
    score = vw * visual + params.co_weight * co_col + pw * pop_col + params.fresh_weight * fresh_col
    return _Pool(user, row, visual, co_col, via_col.astype(np.int64), pop_col, fresh_col, score)


def _dots(
    vecs: npt.NDArray[np.float32], queries: npt.NDArray[np.float32], user: npt.NDArray[np.int64]
) -> Floats:
    """``vecs[j] . queries[user[j]]`` per entry, one matrix-vector product per user.

    Copying each entry's query row first (an einsum over gathered rows) moves a full vector per
    candidate: ~100 per user, 256-1280 floats each.
    """
    out = np.empty(len(user), dtype=np.float64)
    order = np.argsort(user, kind="stable")
    starts = np.searchsorted(user[order], np.arange(len(queries) + 1))
    for u in np.flatnonzero(np.diff(starts)).tolist():
        sel = order[starts[u] : starts[u + 1]]
        out[sel] = vecs[sel] @ queries[u]
    return out


def _best(pool: _Pool, n: int, m: int, index: ItemIndex) -> _Pool:
    """Per user the ``m`` best entries by (score, popularity) descending, then item id."""
    p = pool.take(np.flatnonzero(np.isfinite(pool.score)))
    return p.take(first_per_user_by_id(p.user, -p.score, -p.pop, p.row, n, m, index))


def _mmr(p: _Pool, n: int, index: ItemIndex, top_k: int, lam: float) -> _Pool:
    """Greedy maximal marginal relevance per user over the ranked pool."""
    starts = user_starts(p.user, n)
    counts = np.diff(starts)
    depth = int(counts.max()) if n and len(p.user) else 0
    if depth <= 1:
        return p
    slot = np.arange(len(p.user)) - starts[p.user]
    grid = np.full((n, depth), -1, dtype=np.int64)
    grid[p.user, slot] = np.arange(len(p.user))
    valid = grid >= 0
    vecs = np.zeros((n, depth, index.dim), dtype=np.float32)
    vecs[valid] = index.vectors(p.row[grid[valid]])
    relevance = np.where(valid, p.score[np.maximum(grid, 0)], -np.inf)
    gram = np.einsum("umd,und->umn", vecs, vecs).astype(np.float64)
    picked = np.zeros((n, depth), dtype=np.bool_)
    picked[:, 0] = valid[:, 0]
    closest = gram[:, 0, :].copy()
    order = [np.where(valid[:, 0], 0, -1)]
    users = np.arange(n)
    for _ in range(1, min(top_k, depth)):
        objective = lam * relevance - (1.0 - lam) * closest
        objective[picked | ~valid] = -np.inf
        best = np.argmax(objective, axis=1)
        ok = np.isfinite(objective[users, best])
        picked[users[ok], best[ok]] = True
        closest[ok] = np.maximum(closest[ok], gram[users[ok], best[ok], :])
        order.append(np.where(ok, best, -1))
    picks = np.stack(order, axis=1)  # (n, steps) slots, -1 after a user's pool ran out
    u, step = np.nonzero(picks >= 0)
    return p.take(grid[u, picks[u, step]])


def _fill_cold_start(
    p: _Pool,
    n: int,
    personal: npt.NDArray[np.bool_],
    index: ItemIndex,
    top_k: int,
    seen_user: npt.NDArray[np.int64],
    seen_rows: Rows,
) -> _Pool:
    """Users without a vector and a short list get any available items (stable order)."""
    counts = np.bincount(p.user, minlength=n)
    short = np.flatnonzero(~personal & (counts < top_k))
    if not len(short):
        return p
    parts = [p]
    for u in short.tolist():
        exclude = np.concatenate([seen_rows[seen_user == u], p.row[p.user == u]])
        extra = index.available_rows(top_k - int(counts[u]), exclude)
        if len(extra):
            z = np.zeros(len(extra), dtype=np.float64)
            none = np.full(len(extra), -1, dtype=np.int64)
            parts.append(_Pool(np.full(len(extra), u, dtype=np.int64), extra, z, z, none, z, z, z))
    merged = _Pool(*(np.concatenate([getattr(q, f.name) for q in parts]) for f in fields(_Pool)))
    return merged.take(np.argsort(merged.user, kind="stable"))


def _finish(p: _Pool, profiles: Profiles, index: ItemIndex, params: RankParams) -> RankedLists:
    """Reasons, ids and the per-user layout of the chosen entries."""
    st = profiles.states
    n = len(st)
    personal = profiles.personal[p.user]
    vis_t = np.where(personal, params.visual_weight * p.visual, 0.0)
    co_t = params.co_weight * p.co
    pop_t = popularity_weights(params, st)[p.user] * p.pop
    new_t = params.fresh_weight * p.fresh
    also = (co_t > 0) & (co_t >= vis_t) & (co_t >= pop_t) & (co_t >= new_t)
    new = ~also & (new_t > 0) & (new_t >= vis_t) & (new_t >= pop_t)
    popular = ~also & ~new & (~personal | ((pop_t > 0) & (pop_t > vis_t)))
    similar = ~also & ~new & ~popular
    nearest = np.full(len(p.user), -1, dtype=np.int64)
    if similar.any():
        nearest[similar] = _nearest_contributor(profiles, index, p.user[similar], p.row[similar])
    ids = index.ids_of(p.row)
    reasons: list[str] = []
    item_ids = st.item_ids
    for a, fresh, pop, near, via in zip(
        also.tolist(), new.tolist(), popular.tolist(), nearest.tolist(), p.via.tolist(), strict=True
    ):
        if a:
            reasons.append(ALSO_VIEWED_WITH + item_ids[via])
        elif fresh:
            reasons.append(REASON_NEW)
        elif pop:
            reasons.append(REASON_POPULAR)
        elif near >= 0:
            reasons.append(SIMILAR_TO + item_ids[near])
        else:
            reasons.append(REASON_PROFILE)
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(p.user, minlength=n), out=ptr[1:])
    return RankedLists(list(st.user_ids), ptr, p.row, ids, p.score.astype(np.float64), reasons)


def _nearest_contributor(
    profiles: Profiles, index: ItemIndex, users: npt.NDArray[np.int64], rows: Rows
) -> npt.NDArray[np.int64]:
    """For each (user, item row) the state entry of the most similar contributor with a vector.

    The first of equals wins (contributors come most contributing first); -1 if no
    contributor of the user has a vector.

    ``users`` must be grouped (ascending): items and contributors are laid out per user and
    compared with one batched matrix product.
    """
    n = len(profiles.states)
    cptr, cpos = profiles.contrib_ptr, profiles.contrib_pos
    crow = profiles.item_rows[cpos]
    cuser = np.repeat(np.arange(n, dtype=np.int64), np.diff(cptr))
    keep = crow >= 0
    cuser, cpos, crow = cuser[keep], cpos[keep], crow[keep]
    if not len(crow) or not len(users):
        return np.full(len(users), -1, dtype=np.int64)
    cgrid = _grid(cuser, n)
    igrid = _grid(users, n)
    cvec = np.zeros((*cgrid.shape, index.dim), dtype=np.float32)
    cvec[cgrid >= 0] = index.vectors(crow[cgrid[cgrid >= 0]])
    ivec = np.zeros((*igrid.shape, index.dim), dtype=np.float32)
    ivec[igrid >= 0] = index.vectors(rows[igrid[igrid >= 0]])
    sims = np.matmul(ivec, cvec.transpose(0, 2, 1)).astype(np.float64)  # (n, items, contribs)
    sims[np.broadcast_to((cgrid < 0)[:, None, :], sims.shape)] = -np.inf
    best = np.argmax(sims, axis=2)  # first maximum: the most contributing of equals
    found = np.take_along_axis(cgrid, best, axis=1)  # (n, items) contributor index or -1
    out = np.full(len(users), -1, dtype=np.int64)
    ok = igrid >= 0
    hit = found[ok]
    out[igrid[ok]] = np.where(hit >= 0, cpos[np.maximum(hit, 0)], -1)
    return out


def _grid(user: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.int64]:
    """(n, widest) positions of each user's entries (``user`` ascending), -1 padded."""
    starts = user_starts(user, n)
    width = int(np.diff(starts).max()) if len(user) else 0
    grid = np.full((n, width), -1, dtype=np.int64)
    grid[user, np.arange(len(user)) - starts[user]] = np.arange(len(user))
    return grid

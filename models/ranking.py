"""Ranking a user's list: blend visual, co-occurrence and popularity scores, filter, diversify.

``score = visual_weight * cos(user, item) + co_weight * co / max co + popularity_weight *
popularity / max popularity``, over the visual top ``candidates`` plus every co-occurring and
popular candidate; seen and unavailable items never appear. Optional MMR re-ranking trades
relevance against similarity to the items already picked. Every item says why it is there:

- ``also_viewed_with:<item>`` when the co-occurrence term is the largest of the three;
- ``popular`` when the popularity term is, and for users without a vector;
- ``similar_to:<item>`` otherwise: the user's contributing item most similar to it
  (``similar_to_profile`` if none of the contributors has a vector).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from models.index import ItemIndex
from schemas import RecommendedItem

REASON_POPULAR = "popular"
REASON_PROFILE = "similar_to_profile"
SIMILAR_TO = "similar_to:"
ALSO_VIEWED_WITH = "also_viewed_with:"


@dataclass(frozen=True, slots=True)
class RankParams:
    """How a list is ranked; defaults mirror the interest settings."""

    top_k: int = 20
    candidates: int = 100
    """Items retrieved by visual similarity before blending and filtering."""
    visual_weight: float = 1.0
    co_weight: float = 0.3
    popularity_weight: float = 0.05
    mmr_lambda: float | None = None
    """1 = pure relevance, 0 = pure diversity; None skips MMR."""

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.candidates < 1:
            raise ValueError("top_k and candidates must be >= 1")
        weights = (self.visual_weight, self.co_weight, self.popularity_weight)
        if not all(math.isfinite(w) and w >= 0 for w in weights):
            raise ValueError("weights must be finite and >= 0")
        if self.mmr_lambda is not None and not 0.0 <= self.mmr_lambda <= 1.0:
            raise ValueError("mmr_lambda must be in [0, 1]")


@dataclass(slots=True)
class _Candidate:
    item_id: str
    visual: float = 0.0
    co: float = 0.0  # normalised to [0, 1]
    co_via: str = ""
    popularity: float = 0.0  # normalised to [0, 1]
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class PopularBlock:
    """The popularity list prepared once for many users: listed items, normalised scores."""

    ids: tuple[str, ...]
    scores: npt.NDArray[np.float64]  # in [0, 1], same order as ids, best first
    vectors: npt.NDArray[np.float32]  # rows for ids (zero rows where an item has no vector)
    score_of: Mapping[str, float] = field(default_factory=dict)
    """``ids`` -> ``scores``, for lookups by candidate."""

    @classmethod
    def prepare(
        cls, popular: Sequence[tuple[str, float]], index: ItemIndex, limit: int
    ) -> PopularBlock:
        """Keep available items with a positive score, best first, at most ``limit`` of them."""
        pop = {i: _positive(v) for i, v in popular}
        ranked = sorted((i for i, v in pop.items() if v > 0), key=lambda i: (-pop[i], i))
        flags = index.available_flags(ranked)
        listed = [i for i, ok in zip(ranked, flags, strict=True) if ok][:limit]
        top = max(pop.values(), default=0.0)  # normalised over the whole list, listed or not
        found, vecs = index.get_many(listed)
        rows = {item_id: row for row, item_id in enumerate(found)}
        dim = vecs.shape[1] if len(found) else (index.dim or 0)
        matrix = np.zeros((len(listed), dim), dtype=np.float32)
        for pos, item_id in enumerate(listed):
            if item_id in rows:
                matrix[pos] = vecs[rows[item_id]]
        scores = np.array([pop[i] / top for i in listed], dtype=np.float64) if top else np.zeros(0)
        return cls(tuple(listed), scores, matrix, dict(zip(listed, scores.tolist(), strict=True)))


def _unit_query(user_vec: npt.ArrayLike | None) -> npt.NDArray[np.float32] | None:
    if user_vec is None:
        return None
    arr = np.asarray(user_vec, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(arr)) if arr.size and np.isfinite(arr).all() else 0.0
    if norm == 0.0 or not math.isfinite(norm):
        return None  # no usable interest yet: treat as a new user
    return (arr / norm).astype(np.float32)


def _positive(value: float) -> float:
    return value if math.isfinite(value) and value > 0 else 0.0


@dataclass(slots=True)
class _Pool:
    """Candidates as parallel columns (one row per item, first source first)."""

    ids: list[str]
    visual: npt.NDArray[np.float64]
    co: npt.NDArray[np.float64]  # normalised to [0, 1]
    co_via: list[str]
    popularity: npt.NDArray[np.float64]  # normalised to [0, 1]

    def candidate(self, row: int, score: float) -> _Candidate:
        return _Candidate(
            self.ids[row],
            float(self.visual[row]),
            float(self.co[row]),
            self.co_via[row],
            float(self.popularity[row]),
            score,
        )


def _collect(
    query: npt.NDArray[np.float32] | None,
    index: ItemIndex,
    seen: set[str],
    co_scores: Mapping[str, tuple[float, str]],
    popular: PopularBlock,
    params: RankParams,
    hits: Sequence[tuple[str, float]] | None,
) -> _Pool:
    """Candidates from the three sources, each with its visual and normalised terms.

    Visual: the top ``candidates`` by similarity. Co-occurrence: the ``candidates`` strongest
    co-occurring items (available, unseen). Popularity: up to ``min(candidates, 2 * top_k)``
    popular items not already in. Every candidate gets all three terms.
    """
    ids: list[str] = []
    visual: list[float] = []
    if query is not None:
        if hits is None:
            hits = index.search(query, max(params.candidates, params.top_k), exclude=seen)
        for item_id, similarity in hits:
            ids.append(item_id)
            visual.append(similarity)
    row_of = {item_id: row for row, item_id in enumerate(ids)}
    n_retrieved = len(ids)

    co_items = [i for i in co_scores if i not in seen]
    flags = index.available_flags(co_items)
    co = [
        (value, item_id, via)
        for item_id, ok in zip(co_items, flags, strict=True)
        if ok and (value := _positive(co_scores[item_id][0])) > 0
        for via in (co_scores[item_id][1],)
    ]
    co_max = max((value for value, _, _ in co), default=0.0)
    co.sort(key=lambda c: (-c[0], c[1]))
    co_rows: list[tuple[int, float, str]] = []
    co_only: list[str] = []
    for value, item_id, via in co[: params.candidates]:
        row = row_of.get(item_id)
        if row is None:
            row = row_of[item_id] = len(ids)
            ids.append(item_id)
            co_only.append(item_id)
        co_rows.append((row, value / co_max, via))

    pop_rows: list[tuple[int, float]] = []
    if popular.ids:
        budget = min(params.candidates, 2 * params.top_k)  # a small prior: a few top_k suffice
        picked: list[int] = []
        for pos, item_id in enumerate(popular.ids):
            if len(picked) >= budget:
                break
            if item_id in seen or item_id in row_of:
                continue
            row_of[item_id] = len(ids)
            ids.append(item_id)
            picked.append(pos)
        if picked and query is not None:
            pop_visual = popular.vectors[picked] @ query
            pop_rows = list(
                zip(range(len(ids) - len(picked), len(ids)), pop_visual.tolist(), strict=True)
            )

    n = len(ids)
    vis = np.zeros(n, dtype=np.float64)
    vis[:n_retrieved] = visual
    for row, similarity in pop_rows:
        vis[row] = similarity
    if query is not None and co_only:
        # Candidates that came from co-occurrence only still get their cosine.
        found, vectors = index.get_many(co_only)
        for item_id, similarity in zip(found, (vectors @ query).tolist(), strict=True):
            vis[row_of[item_id]] = similarity
    co_col = np.zeros(n, dtype=np.float64)
    via_col = [""] * n
    for row, value, via in co_rows:
        co_col[row] = value
        via_col[row] = via
    score_of = popular.score_of
    pop_col = np.fromiter((score_of.get(i, 0.0) for i in ids), dtype=np.float64, count=n)
    return _Pool(ids, vis, co_col, via_col, pop_col)


def _best(pool: _Pool, score: npt.NDArray[np.float64], m: int) -> list[_Candidate]:
    """The ``m`` best finite scores, ordered by (score, popularity) descending, then item id."""
    finite = np.flatnonzero(np.isfinite(score))
    if m <= 0 or not len(finite):
        return []
    if m < len(finite):
        # Keep every row tied with the m-th score: the full key below decides among them.
        part = finite[np.argpartition(-score[finite], m - 1)[:m]]
        finite = finite[score[finite] >= score[part].min()]
    rows = sorted(finite.tolist(), key=lambda r: (-score[r], -pool.popularity[r], pool.ids[r]))[:m]
    return [pool.candidate(r, float(score[r])) for r in rows]


def _mmr(ranked: list[_Candidate], index: ItemIndex, top_k: int, lam: float) -> list[_Candidate]:
    """Greedy maximal marginal relevance over the ranked pool (ties keep the ranked order)."""
    found, vectors = index.get_many([c.item_id for c in ranked])
    by_id = {c.item_id: c for c in ranked}
    pool = [by_id[item_id] for item_id in found]
    if len(pool) <= 1:
        return pool[:top_k]
    relevance = np.array([c.score for c in pool], dtype=np.float64)
    gram = (vectors @ vectors.T).astype(np.float64)
    picked = [0]
    closest = gram[0].copy()
    while len(picked) < min(top_k, len(pool)):
        objective = lam * relevance - (1.0 - lam) * closest
        objective[picked] = -np.inf
        best = int(np.argmax(objective))  # first maximum: deterministic
        picked.append(best)
        closest = np.maximum(closest, gram[best])
    return [pool[i] for i in picked]


def _reasons(
    chosen: list[_Candidate],
    index: ItemIndex,
    contributors: Sequence[str],
    personal: bool,
    params: RankParams,
) -> list[str]:
    found, contrib = index.get_many(list(dict.fromkeys(contributors)))
    item_ids, items = index.get_many([c.item_id for c in chosen])
    nearest: dict[str, str] = {}
    if found and item_ids:
        # First maximum wins: contributors come most relevant first.
        best = np.argmax(items @ contrib.T, axis=1)
        nearest = {item_id: found[int(col)] for item_id, col in zip(item_ids, best, strict=True)}
    reasons: list[str] = []
    for cand in chosen:
        visual = params.visual_weight * cand.visual if personal else 0.0
        co = params.co_weight * cand.co
        pop = params.popularity_weight * cand.popularity
        if co > 0 and co >= visual and co >= pop:
            reasons.append(ALSO_VIEWED_WITH + cand.co_via)
        elif not personal or (pop > 0 and pop > visual):
            reasons.append(REASON_POPULAR)
        elif cand.item_id in nearest:
            reasons.append(SIMILAR_TO + nearest[cand.item_id])
        else:
            reasons.append(REASON_PROFILE)
    return reasons


def rank(
    user_vec: npt.ArrayLike | None,
    index: ItemIndex,
    seen: Collection[str],
    co_scores: Mapping[str, tuple[float, str]],
    popular: Sequence[tuple[str, float]] | PopularBlock,
    contributors: Sequence[str],
    params: RankParams,
    *,
    hits: Sequence[tuple[str, float]] | None = None,
) -> list[RecommendedItem]:
    """Rank up to ``top_k`` available, unseen items for one user, each with its reason.

    ``co_scores`` maps a candidate to its co-occurrence score and the user's item it was
    co-clicked with; ``popular`` is (item, popularity) pairs or a ``PopularBlock`` prepared once
    for many users; ``contributors`` are the user's items behind the vector, most relevant
    first (they name the ``similar_to`` item). ``hits`` are the visual top candidates when the
    caller already searched (a batch of users shares one ``search_many``).
    """
    if not isinstance(popular, PopularBlock):
        popular = PopularBlock.prepare(popular, index, max(params.candidates, params.top_k))
    seen_set = set(seen)
    query = _unit_query(user_vec)
    if query is not None and index.dim not in (None, query.shape[0]):
        raise ValueError(f"user vector dim {query.shape[0]} != index dim {index.dim}")
    if index.dim is None:
        query = None  # nothing embedded yet under the served model
    personal = query is not None
    pool = _collect(query, index, seen_set, co_scores, popular, params, hits)
    vw = params.visual_weight if personal else 0.0
    score = vw * pool.visual + params.co_weight * pool.co
    score += params.popularity_weight * pool.popularity
    if params.mmr_lambda is not None:
        ranked = _best(pool, score, max(params.candidates, params.top_k))
        chosen = _mmr(ranked, index, params.top_k, params.mmr_lambda)
    else:
        chosen = _best(pool, score, params.top_k)
    if not personal and len(chosen) < params.top_k:
        # Cold start before any popularity exists: any listed items, in a stable order.
        taken = seen_set | {c.item_id for c in chosen}
        extra = index.available_ids(params.top_k - len(chosen), exclude=taken)
        chosen.extend(_Candidate(item_id) for item_id in extra)
    reasons = _reasons(chosen, index, contributors, personal, params)
    return [
        RecommendedItem(item_id=c.item_id, score=float(c.score), reason=reason)
        for c, reason in zip(chosen, reasons, strict=True)
    ]

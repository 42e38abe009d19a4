"""Per-user reference of the refresh: the object-based ranking the batch function replaced.

A test oracle, not production code: ``models.refresh.refresh_batch`` must give the same lists
(same items in the same order, scores within 1e-5 on the exact path). It works on plain
dicts (item id -> full-dimension unit vector) with brute-force search; ties go by item id.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.interest import InterestColumns, InterestParams
from models.ranking import (
    ALSO_VIEWED_WITH,
    REASON_POPULAR,
    REASON_PROFILE,
    SIMILAR_TO,
    RankParams,
)
from models.refresh import CONTRIBUTORS, co_per_contributor
from tests.reference.interest import blend_columns, top_contributor_ids


class DictIndex:
    """Unit vectors by id, an availability set, brute-force inner-product search."""

    def __init__(self, vectors: Mapping[str, Sequence[float]], unavailable: Collection[str] = ()):
        self.vectors = {
            i: (np.asarray(v, dtype=np.float32) / np.linalg.norm(np.asarray(v, dtype=np.float32)))
            for i, v in vectors.items()
        }
        self.unavailable = set(unavailable)

    @property
    def dim(self) -> int | None:
        return next(iter(self.vectors.values())).shape[0] if self.vectors else None

    def available(self, item_id: str) -> bool:
        return item_id in self.vectors and item_id not in self.unavailable

    def search(
        self, query: np.ndarray, k: int, exclude: Collection[str]
    ) -> list[tuple[str, float]]:
        hits = [
            (i, float(np.float32(v @ query)))
            for i, v in self.vectors.items()
            if self.available(i) and i not in exclude
        ]
        hits.sort(key=lambda h: (-h[1], h[0]))
        return hits[:k]


@dataclass
class _Cand:
    item_id: str
    visual: float = 0.0
    co: float = 0.0
    via: str = ""
    pop: float = 0.0
    score: float = 0.0


def _positive(v: float) -> float:
    return v if math.isfinite(v) and v > 0 else 0.0


def prepare_popular(
    popular: Sequence[tuple[str, float]], index: DictIndex, limit: int
) -> tuple[list[str], dict[str, float]]:
    pop = {i: _positive(v) for i, v in popular}
    ranked = sorted((i for i, v in pop.items() if v > 0), key=lambda i: (-pop[i], i))
    listed = [i for i in ranked if index.available(i)][:limit]
    top = max(pop.values(), default=0.0)
    return listed, {i: pop[i] / top for i in listed} if top else {}


def rank_one(
    user_vec: np.ndarray | None,
    index: DictIndex,
    seen: set[str],
    co_scores: Mapping[str, tuple[float, str]],
    popular: tuple[list[str], dict[str, float]],
    contributors: Sequence[str],
    params: RankParams,
) -> list[tuple[str, float, str]]:
    query = None
    if user_vec is not None and index.dim is not None:
        norm = float(np.linalg.norm(user_vec))
        if norm > 0 and math.isfinite(norm):
            query = (np.asarray(user_vec, dtype=np.float64) / norm).astype(np.float32)
    personal = query is not None
    pool: dict[str, _Cand] = {}
    if query is not None:
        for item_id, sim in index.search(query, max(params.candidates, params.top_k), seen):
            pool[item_id] = _Cand(item_id, visual=sim)
    co = [
        (v, i, co_scores[i][1])
        for i in co_scores
        if i not in seen and index.available(i) and (v := _positive(co_scores[i][0])) > 0
    ]
    co_max = max((v for v, _, _ in co), default=0.0)
    co.sort(key=lambda c: (-c[0], c[1]))
    for v, i, via in co[: params.candidates]:
        cand = pool.get(i)
        if cand is None:  # co-occurring only: still gets its cosine
            sim = float(np.float32(index.vectors[i] @ query)) if query is not None else 0.0
            cand = pool[i] = _Cand(i, visual=sim)
        cand.co, cand.via = v / co_max, via
    listed, score_of = popular
    budget = min(params.candidates, 2 * params.top_k)
    picked = 0
    for i in listed:
        if picked >= budget:
            break
        if i in seen or i in pool:
            continue
        pool[i] = _Cand(
            i, visual=float(np.float32(index.vectors[i] @ query)) if query is not None else 0.0
        )
        picked += 1
    vw = params.visual_weight if personal else 0.0
    # Popularity as a prior: its weight shrinks towards popularity_weight as history grows.
    pw = params.popularity_weight * (1.0 + params.popularity_prior / max(len(seen), 1))
    for cand in pool.values():
        cand.pop = score_of.get(cand.item_id, 0.0)
        cand.score = vw * cand.visual + params.co_weight * cand.co + pw * cand.pop
    ranked = sorted(pool.values(), key=lambda c: (-c.score, -c.pop, c.item_id))
    if params.mmr_lambda is not None:
        ranked = ranked[: max(params.candidates, params.top_k)]
        chosen = _mmr(ranked, index, params.top_k, params.mmr_lambda)
    else:
        chosen = ranked[: params.top_k]
    if not personal and len(chosen) < params.top_k:
        taken = seen | {c.item_id for c in chosen}
        extra = [i for i in index.vectors if index.available(i) and i not in taken]
        chosen += [_Cand(i) for i in extra[: params.top_k - len(chosen)]]
    contrib = [c for c in contributors if c in index.vectors]
    out = []
    for cand in chosen:
        visual = params.visual_weight * cand.visual if personal else 0.0
        co_t = params.co_weight * cand.co
        pop_t = pw * cand.pop
        if co_t > 0 and co_t >= visual and co_t >= pop_t:
            reason = ALSO_VIEWED_WITH + cand.via
        elif not personal or (pop_t > 0 and pop_t > visual):
            reason = REASON_POPULAR
        elif contrib:
            sims = [float(index.vectors[cand.item_id] @ index.vectors[c]) for c in contrib]
            reason = SIMILAR_TO + contrib[int(np.argmax(sims))]
        else:
            reason = REASON_PROFILE
        out.append((cand.item_id, cand.score, reason))
    return out


def _mmr(ranked: list[_Cand], index: DictIndex, top_k: int, lam: float) -> list[_Cand]:
    if len(ranked) <= 1:
        return ranked[:top_k]
    vecs = np.stack([index.vectors[c.item_id] for c in ranked])
    rel = np.array([c.score for c in ranked])
    gram = (vecs @ vecs.T).astype(np.float64)
    picked = [0]
    closest = gram[0].copy()
    while len(picked) < min(top_k, len(ranked)):
        obj = lam * rel - (1.0 - lam) * closest
        obj[picked] = -np.inf
        best = int(np.argmax(obj))
        picked.append(best)
        closest = np.maximum(closest, gram[best])
    return [ranked[i] for i in picked]


def reference_lists(
    users: Sequence[tuple[str, InterestColumns, int]],
    index: DictIndex,
    co: Mapping[str, Sequence[tuple[str, float]]],
    popular: Sequence[tuple[str, float]],
    interest: InterestParams,
    params: RankParams,
) -> list[list[tuple[str, float, str]]]:
    """Lists for (user_id, state columns, now_ms) triples, one user at a time."""
    limit = max(params.candidates, params.top_k)
    block = prepare_popular(popular, index, limit)
    per = co_per_contributor(params)
    out = []
    for _, cols, now in users:
        positions = [p for p, i in enumerate(cols.item_ids) if i in index.vectors]
        vec = None
        if positions:
            vec = blend_columns(
                cols,
                np.asarray(positions, dtype=np.intp),
                np.stack([index.vectors[cols.item_ids[p]] for p in positions]),
                now,
                interest,
            )
        contributors = top_contributor_ids(cols, CONTRIBUTORS, now, interest)
        co_scores: dict[str, tuple[float, str]] = {}
        for via in contributors:
            for item_id, score in list(co.get(via, ()))[:per]:
                if item_id not in co_scores or score > co_scores[item_id][0]:
                    co_scores[item_id] = (score, via)
        out.append(rank_one(vec, index, set(cols.item_ids), co_scores, block, contributors, params))
    return out

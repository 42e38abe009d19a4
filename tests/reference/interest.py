"""The interest rule, one user and one event at a time: the oracle the tests check against.

``apply_events`` does what ``streams/state/lua/apply_events.lua`` does, with the same
arithmetic (``logaddexp`` is written exactly as the Lua is), so Redis state can be compared
with an offline recomputation of the log tightly. ``user_vector`` and ``top_contributors``
are the per-user forms of ``models.profile``'s batch functions. Not production code: the
workers run the Lua and the batch functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from models.interest import (
    InterestColumns,
    InterestParams,
    ItemWeight,
    UserInterest,
    log_increment,
)
from schemas import UserEvent
from streams.settings import InterestSettings

Vector = npt.NDArray[np.float64]
AnyVector: TypeAlias = npt.NDArray[np.floating[Any]]
VectorSource: TypeAlias = Callable[[str], AnyVector | None] | Mapping[str, AnyVector]
"""Item vectors by item_id: a lookup, or a plain mapping."""


def logaddexp(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` without overflow, written exactly as the Lua script does it."""
    if b > a:
        m, d = b, a - b
    else:
        m, d = a, b - a
    # log(1 + x) rather than log1p: Lua 5.1 has no log1p, and bit-equal arithmetic on both
    # sides lets tests compare Redis state with this reference tightly.
    return m + math.log(1.0 + math.exp(d))


def _seen_order(w: ItemWeight) -> tuple[int, bytes]:
    # Redis orders equal scores by member bytes; trimming must pick the same victims.
    return (w.last_ts_ms, w.item_id.encode("utf-8"))


def apply_events(
    state: UserInterest,
    events: Iterable[UserEvent],
    params: InterestParams,
    max_items: int,
) -> UserInterest:
    """Apply one user's events in the given order, as the Redis script does, and return the state.

    A repeated ``event_id`` within ``events`` is skipped (the store remembers ids across calls).
    After each event the items are trimmed to the ``max_items`` with the latest events.
    """
    if max_items < 1:
        raise ValueError("max_items must be >= 1")
    items = {w.item_id: w for w in state.weights}
    last_ts, n = state.last_ts_ms, state.n_events
    applied: set[str] = set()
    user: str | None = None
    for ev in events:
        if user is None:
            user = ev.user_id
        elif ev.user_id != user:
            raise ValueError(f"events of several users ({user!r}, {ev.user_id!r})")
        if ev.event_id in applied:
            continue
        applied.add(ev.event_id)
        inc_long, inc_short = log_increment(ev.type, ev.ts_ms, params)
        cur = items.get(ev.item_id)
        if cur is None:
            items[ev.item_id] = ItemWeight(ev.item_id, inc_long, inc_short, ev.ts_ms)
        else:
            items[ev.item_id] = ItemWeight(
                ev.item_id,
                logaddexp(cur.log_long, inc_long),
                logaddexp(cur.log_short, inc_short),
                max(cur.last_ts_ms, ev.ts_ms),
            )
        if len(items) > max_items:
            for victim in sorted(items.values(), key=_seen_order)[: len(items) - max_items]:
                del items[victim.item_id]
        last_ts = max(last_ts, ev.ts_ms)
        n += 1
    return UserInterest(tuple(sorted(items.values(), key=lambda w: w.item_id)), last_ts, n)


def short_term_blend(
    interest: UserInterest | InterestColumns, now_ms: int, params: InterestParams
) -> float:
    """``b = short_term_weight * 2 ** (-(now - last_ts) / h_short)``, never above the weight."""
    age_s = max(0, int(now_ms) - interest.last_ts_ms) / 1000.0
    return params.short_term_weight * math.pow(2.0, -age_s / params.half_life_short_s)


def _lookup(vectors: VectorSource) -> Callable[[str], AnyVector | None]:
    if isinstance(vectors, Mapping):
        return vectors.get
    return vectors


def _weighted_mean_direction(logs: npt.ArrayLike, vecs: Vector) -> Vector | None:
    arr = np.asarray(logs, dtype=np.float64)
    weights = np.exp(arr - arr.max())
    total = weights @ vecs
    norm = float(np.linalg.norm(total))
    if not (norm > 1e-12 and math.isfinite(norm)):
        return None
    return np.asarray(total / norm, dtype=np.float64)


def user_vector(
    interest: UserInterest,
    vectors: VectorSource,
    now_ms: int,
    params: InterestParams,
) -> Vector | None:
    """Return the unit float64 user vector at ``now_ms``; None if no item has a vector yet."""
    get = _lookup(vectors)
    found: list[ItemWeight] = []
    rows: list[Vector] = []
    dim: int | None = None
    for w in interest.weights:
        raw = get(w.item_id)
        if raw is None:
            continue  # pending: not embedded yet, counts once its vector exists
        vec = np.asarray(raw, dtype=np.float64).reshape(-1)
        if dim is None:
            dim = vec.shape[0]
        elif vec.shape[0] != dim:
            raise ValueError(f"item {w.item_id!r} has dim {vec.shape[0]}, others {dim}")
        found.append(w)
        rows.append(vec)
    if not found:
        return None
    return blend_vector(interest, found, np.stack(rows), now_ms, params)


def blend_vector(
    interest: UserInterest,
    weights: Sequence[ItemWeight],
    vectors: AnyVector,
    now_ms: int,
    params: InterestParams,
) -> Vector | None:
    """``user_vector`` from the items of ``interest`` that have a vector, given as rows.

    ``weights`` are those items (in any order) and row ``r`` of ``vectors`` is the vector of
    ``weights[r]``. Rows that are not finite are skipped (a corrupt vector must not poison the
    user).
    """
    if np.ndim(vectors) != 2 or np.shape(vectors)[0] != len(weights):
        raise ValueError("one vector row per weight is required")
    columns = InterestColumns(
        [w.item_id for w in weights],
        np.array([w.log_long for w in weights], dtype=np.float64),
        np.array([w.log_short for w in weights], dtype=np.float64),
        interest.last_ts_ms,
        interest.n_events,
    )
    return blend_columns(columns, np.arange(len(weights)), vectors, now_ms, params)


def blend_columns(
    interest: InterestColumns,
    rows: npt.NDArray[np.intp],
    vectors: AnyVector,
    now_ms: int,
    params: InterestParams,
) -> Vector | None:
    """``user_vector`` for the items at positions ``rows`` of ``interest``, vectors given.

    Row ``r`` of ``vectors`` belongs to item ``interest.item_ids[rows[r]]``: a caller that
    gathered the vectors of many users at once passes them here. Rows that are not finite
    are skipped (a corrupt vector must not poison the user).
    """
    vecs = np.asarray(vectors, dtype=np.float64)
    if vecs.ndim != 2 or vecs.shape[0] != len(rows):
        raise ValueError("one vector row per item position is required")
    finite = np.isfinite(vecs).all(axis=1)
    if not finite.all():
        rows, vecs = rows[finite], vecs[finite]
    if not len(rows):
        return None
    u_long = _weighted_mean_direction(interest.log_long[rows], vecs)
    u_short = _weighted_mean_direction(interest.log_short[rows], vecs)
    if u_long is None or u_short is None:
        return u_long if u_long is not None else u_short
    b = short_term_blend(interest, now_ms, params)
    mixed = (1.0 - b) * u_long + b * u_short
    norm = float(np.linalg.norm(mixed))
    if not norm > 1e-12:
        return u_long  # long and short point in opposite directions: trust the history
    return np.asarray(mixed / norm, dtype=np.float64)


def _shares(logs: list[float]) -> list[float]:
    m = max(logs)
    ws = [math.exp(x - m) for x in logs]
    total = sum(ws)
    return [x / total for x in ws]


def top_contributors(
    interest: UserInterest,
    k: int,
    *,
    now_ms: int | None = None,
    params: InterestParams | None = None,
    has_vector: Callable[[str], bool] | None = None,
) -> list[tuple[str, float]]:
    """Return the ``k`` items weighing most in the blended vector, with their weight share.

    Shares are ``(1 - b) * long_share + b * short_share`` over the items ``has_vector`` accepts
    (all items when None); ``now_ms`` defaults to the user's last event. Used for
    ``similar_to:<item_id>`` reasons.
    """
    params = params or InterestSettings().interest_params()
    items = [w for w in interest.weights if has_vector is None or has_vector(w.item_id)]
    if not items or k < 1:
        return []
    b = short_term_blend(interest, interest.last_ts_ms if now_ms is None else now_ms, params)
    long_s = _shares([w.log_long for w in items])
    short_s = _shares([w.log_short for w in items])
    scored = [
        (w.item_id, (1.0 - b) * ls + b * ss)
        for w, ls, ss in zip(items, long_s, short_s, strict=True)
    ]
    scored.sort(key=lambda p: (-p[1], p[0]))
    return scored[:k]


def top_contributor_ids(
    interest: InterestColumns, k: int, now_ms: int, params: InterestParams
) -> list[str]:
    """``top_contributors`` of every item, ids only, on columns (numpy, for many users)."""
    n = len(interest.item_ids)
    if not n or k < 1:
        return []
    b = short_term_blend(interest, now_ms, params)
    long_w = np.exp(interest.log_long - interest.log_long.max())
    short_w = np.exp(interest.log_short - interest.log_short.max())
    share = (1.0 - b) * (long_w / long_w.sum()) + b * (short_w / short_w.sum())
    if k < n:
        # Keep every position tied with the k-th share: the id decides among them below.
        best = np.argpartition(-share, k - 1)[:k]
        candidates = np.flatnonzero(share >= share[best].min()).tolist()
    else:
        candidates = list(range(n))
    ids = interest.item_ids
    candidates.sort(key=lambda i: (-share[i], ids[i]))
    return [ids[i] for i in candidates[:k]]

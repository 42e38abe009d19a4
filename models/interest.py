"""The user-interest rule: per-item decayed weights in the log domain, blended into a vector.

A user's interest is not stored as a dense vector (1280 floats x 2 would not fit the per-user
Redis budget). For every item ``i`` the user touched we keep, for a long and a short half-life
``h``::

    L_i = log( sum_e w(type_e) * 2 ** ((t_e - T0) / h) )

``T0`` is a fixed epoch, so ``L_i`` does not depend on when it is read and an event is applied
with ``L_i <- logaddexp(L_i, log w + (t_e - T0) / h * ln 2)``. That update is commutative, so
out-of-order events apply with their own timestamps and an offline replay of the log in any
order gives the same state within float tolerance. Working in the log domain means nothing
overflows: ``(t - T0) / h`` stays below ~1e8 even for a year-9999 timestamp.

The user vector at ``now`` is ``normalize((1 - b) u_long + b u_short)`` with
``u_x = normalize(sum_i exp(L_i^x - max L^x) v_i)`` and ``b = short_term_weight *
2 ** (-(now - last_ts) / h_short)``, so a stale session fades. An item without a vector yet
(not embedded) contributes nothing until its vector exists; its weight is already kept, which
is how events for unknown items stay pending with no separate queue.

``apply_events`` is the reference of what the Redis script in ``streams/user_state.py`` does,
with the same arithmetic (``logaddexp`` below is written exactly as the Lua is).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

from schemas import EventType, UserEvent

T0_MS = 1_704_067_200_000
"""2024-01-01T00:00:00Z: the fixed epoch of every stored log weight and decayed score."""

LN2 = math.log(2.0)

MAX_SCORE_EXPONENT = 900.0
"""Cap on ``(t - T0) / h`` for linear-domain scores (popularity, co-occurrence).

``2 ** 900`` is ~8.5e270, far enough from the double limit (~1.8e308) that 2e37 capped
increments still sum finitely. With the default 7-day popularity half-life the cap is reached
in 2041 (T0 + 900 x 7 days); events after that count without further relative decay until
the scores are rebased (scale every score by ``2 ** -k`` and move ``T0`` with a key version).
"""

Vector = npt.NDArray[np.float64]
AnyVector: TypeAlias = npt.NDArray[np.floating[Any]]
VectorSource: TypeAlias = Callable[[str], AnyVector | None] | Mapping[str, AnyVector]
"""Item vectors by item_id: the in-memory index's lookup, or a plain mapping."""


@dataclass(frozen=True)
class InterestParams:
    """Half-lives (seconds), the short-term blend weight and per-event-type weights (> 0)."""

    half_life_long_s: float
    half_life_short_s: float
    short_term_weight: float
    event_weights: Mapping[str, float]
    half_life_popularity_s: float = 7 * 86400.0

    def __post_init__(self) -> None:
        """Reject parameters that could put NaN or inf into stored state."""
        for name in ("half_life_long_s", "half_life_short_s", "half_life_popularity_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        if not (math.isfinite(self.short_term_weight) and 0 <= self.short_term_weight <= 1):
            raise ValueError(f"short_term_weight must be in [0, 1], got {self.short_term_weight}")
        weights = {str(k): float(v) for k, v in self.event_weights.items()}
        for kind in EventType:
            if kind.value not in weights:
                raise ValueError(f"event_weights has no weight for {kind.value!r}")
        for name, w in weights.items():
            # log(0) would be -inf in stored state; a type that should not count is a
            # filtering decision for the caller, not a weight.
            if not (math.isfinite(w) and w > 0):
                raise ValueError(f"event weight for {name!r} must be finite and > 0, got {w}")
        object.__setattr__(self, "event_weights", MappingProxyType(weights))

    @classmethod
    def default(cls) -> InterestParams:
        """Build the defaults of ``InterestSettings`` (30-day long, 30-minute short half-life)."""
        return cls(
            half_life_long_s=30 * 86400.0,
            half_life_short_s=1800.0,
            short_term_weight=0.5,
            event_weights={
                EventType.VIEW.value: 0.25,
                EventType.CLICK.value: 1.0,
                EventType.ADD_TO_CART.value: 2.0,
                EventType.PURCHASE.value: 3.0,
            },
        )

    def weight(self, event_type: str) -> float:
        """Return the weight of one event type (ValueError if unknown)."""
        try:
            return self.event_weights[str(event_type)]
        except KeyError:
            raise ValueError(f"unknown event type {event_type!r}") from None


def _exponent(ts_ms: int, half_life_s: float) -> float:
    """``(t - T0) / h`` with the millisecond difference taken exactly in integers."""
    return (int(ts_ms) - T0_MS) / (half_life_s * 1000.0)


def log_increment(event_type: str, ts_ms: int, params: InterestParams) -> tuple[float, float]:
    """``log w + (t - T0) / h * ln 2`` for the long and the short half-life."""
    log_w = math.log(params.weight(event_type))
    return (
        log_w + _exponent(ts_ms, params.half_life_long_s) * LN2,
        log_w + _exponent(ts_ms, params.half_life_short_s) * LN2,
    )


def logaddexp(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` without overflow, written exactly as the Lua script does it."""
    if b > a:
        m, d = b, a - b
    else:
        m, d = a, b - a
    # log(1 + x) rather than log1p: Lua 5.1 has no log1p, and bit-equal arithmetic on both
    # sides lets tests compare Redis state with this reference tightly.
    return m + math.log(1.0 + math.exp(d))


def score_increment(event_type: str, ts_ms: int, params: InterestParams) -> float:
    """Linear-domain decayed increment ``w * 2 ** ((t - T0) / h_pop)``, exponent capped."""
    e = min(_exponent(ts_ms, params.half_life_popularity_s), MAX_SCORE_EXPONENT)
    return params.weight(event_type) * math.pow(2.0, e)


def decay_score(score: float, now_ms: int, params: InterestParams) -> float:
    """Convert a stored linear-domain score to a decayed count at ``now_ms`` (0 if <= 0)."""
    if not score > 0 or not math.isfinite(score):
        return 0.0
    e = min(_exponent(now_ms, params.half_life_popularity_s), MAX_SCORE_EXPONENT)
    # Scores from events after ``now_ms`` grow when read "backwards"; cap below exp's limit.
    return math.exp(min(math.log(score) - e * LN2, 700.0))


class ItemWeight(NamedTuple):
    """One touched item: its long/short log weights and the latest event time on it.

    A named tuple, not a dataclass: a refresh builds thousands of these per batch.
    """

    item_id: str
    log_long: float
    log_short: float
    last_ts_ms: int


@dataclass(frozen=True)
class UserInterest:
    """A user's whole interest state: item weights sorted by item_id, last event time, count."""

    weights: tuple[ItemWeight, ...] = field(default_factory=tuple)
    last_ts_ms: int = 0
    n_events: int = 0

    @classmethod
    def empty(cls) -> UserInterest:
        """Return the state of a user with no applied events."""
        return cls()


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


@dataclass(frozen=True, slots=True)
class InterestColumns:
    """A user's state as columns (item ids sorted), for code that handles many users at once.

    Holds what ``UserInterest`` holds except each item's latest event time, which neither the
    user vector nor the ranking needs.
    """

    item_ids: list[str]
    log_long: npt.NDArray[np.float64]
    log_short: npt.NDArray[np.float64]
    last_ts_ms: int = 0
    n_events: int = 0

    @classmethod
    def of(cls, interest: UserInterest) -> InterestColumns:
        """The columns of ``interest``."""
        return cls(
            [w.item_id for w in interest.weights],
            np.array([w.log_long for w in interest.weights], dtype=np.float64),
            np.array([w.log_short for w in interest.weights], dtype=np.float64),
            interest.last_ts_ms,
            interest.n_events,
        )


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
    params = params or InterestParams.default()
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

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

The rule runs in two places, each once: the per-event update in Redis
(``streams/state/lua/apply_events.lua``, atomically with the event-id record) and the
vectors of a whole batch of users (``models.profile``). This module holds what both share:
the parameters, the increments, the decay, and the shapes of a user's state. The tests check
both against a per-user oracle (``tests/reference/interest.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from schemas import EventType

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


MAX_EVENT_WEIGHT = 1e6
"""Largest event-type weight. Weights are relative (only their ratios matter), and a capped
popularity increment is ``w * 2 ** 900``: with ``w`` up to 1e6, 2e31 events still sum below
the double limit, where a weight of ~1e37 overflowed a score to inf with the first events."""


@dataclass(frozen=True)
class InterestParams:
    """Half-lives (seconds), the short-term blend weight and per-event-type weights (> 0)."""

    half_life_long_s: float
    half_life_short_s: float
    short_term_weight: float
    event_weights: Mapping[str, float]
    half_life_popularity_s: float = 7 * 86400.0
    half_life_co_s: float = 7 * 86400.0
    """Half-life of co-occurrence counts."""

    def __post_init__(self) -> None:
        """Reject parameters that could put NaN or inf into stored state."""
        for name in (
            "half_life_long_s",
            "half_life_short_s",
            "half_life_popularity_s",
            "half_life_co_s",
        ):
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
            if not (math.isfinite(w) and 0 < w <= MAX_EVENT_WEIGHT):
                raise ValueError(
                    f"event weight for {name!r} must be > 0 and <= {MAX_EVENT_WEIGHT:g} "
                    f"(weights are relative: scale them down), got {w}"
                )
        object.__setattr__(self, "event_weights", MappingProxyType(weights))

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


def score_increment(
    event_type: str, ts_ms: int, params: InterestParams, half_life_s: float | None = None
) -> float:
    """Linear-domain decayed increment ``w * 2 ** ((t - T0) / h)``, exponent capped.

    ``h``: ``half_life_s``, by default popularity's (``params.half_life_co_s`` for pairs).
    """
    h = params.half_life_popularity_s if half_life_s is None else half_life_s
    e = min(_exponent(ts_ms, h), MAX_SCORE_EXPONENT)
    return params.weight(event_type) * math.pow(2.0, e)


def decay_score(
    score: float, now_ms: int, params: InterestParams, half_life_s: float | None = None
) -> float:
    """Convert a stored linear-domain score to a decayed count at ``now_ms`` (0 if <= 0)."""
    if not score > 0 or not math.isfinite(score):
        return 0.0
    h = params.half_life_popularity_s if half_life_s is None else half_life_s
    e = min(_exponent(now_ms, h), MAX_SCORE_EXPONENT)
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


@dataclass(frozen=True, slots=True)
class InterestColumns:
    """A user's state as columns, for code that handles many users at once.

    Holds what ``UserInterest`` holds except each item's latest event time, which neither the
    user vector nor the ranking needs. Items come in any order (``of`` and a hash read give
    them sorted by id, the apply script's reply in the hash's own order); nothing that takes
    columns depends on it.
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

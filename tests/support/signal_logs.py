"""Event logs the signal tests (outbox drains, half-life changes) share, on a real Redis."""

from __future__ import annotations

import random

from schemas import EventType, UserEvent
from streams.settings import InterestSettings

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z

SIGNAL_SETTINGS = InterestSettings(co_window_s=1800.0, co_max_neighbours=100)
"""Pairs decay with popularity's half-life (7 days); sets large enough that nothing is trimmed."""
OWN_CO_HALF_LIFE = InterestSettings(
    co_window_s=1800.0, co_max_neighbours=100, half_life_co_s=90 * 86400.0
)
"""The same with pairs at a half-life of their own (90 days)."""


def signal_log(n: int, seed: int) -> list[UserEvent]:
    """``n`` clicks 20 s apart by 6 users on 25 items: many pairs within the window."""
    rng = random.Random(seed)
    return [
        UserEvent(
            event_id=f"s{k}",
            user_id=f"u{rng.randrange(6)}",
            item_id=f"i{rng.randrange(25)}",
            type=EventType.CLICK,
            ts_ms=NOW + k * 20_000,
        )
        for k in range(n)
    ]


def triples(events: list[UserEvent]) -> list[tuple[UserEvent, int, int]]:
    """The events as (event, partition 0, offset) in the order given."""
    return [(e, 0, off) for off, e in enumerate(events)]

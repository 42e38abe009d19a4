"""Popularity and co-occurrence, recomputed offline from a log: the oracle for the signals.

Each user's events are applied in log order with ``tests.reference.interest.apply_events``
(a repeated ``event_id`` counts once); each applied event adds its ``score_increment`` to its
item's popularity and, in both directions, its increment at the pairs' half-life
(``InterestParams.half_life_co_s``) to every pair it forms with the items the user
touched within the co-occurrence window (``near_items``: what ``lua/apply_events.lua``
finds). Sums are order-free, so whatever batches and crashes the workers went through, Redis
must hold these counts (to rounding) as long as no set outgrew its trim limit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence

from models.interest import UserInterest, score_increment
from schemas import UserEvent
from streams.settings import InterestSettings
from tests.reference.interest import apply_events


def near_items(state: UserInterest, ev: UserEvent, window_ms: int, co_max: int) -> list[str]:
    """The apply script's co-occurring items: seen within the window of ``ev``, latest first."""
    if co_max <= 0:
        return []
    seen = [
        (w.last_ts_ms, w.item_id)
        for w in state.weights
        if ev.ts_ms - window_ms <= w.last_ts_ms <= ev.ts_ms + window_ms
    ]
    seen.sort(key=lambda p: (p[0], p[1].encode()), reverse=True)
    return [i for _, i in seen[: co_max + 1] if i != ev.item_id][:co_max]


def replay_signals(
    events_by_user: Mapping[str, Sequence[UserEvent]],
    settings: InterestSettings,
    counted: Collection[str] | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(popularity, co-occurrence) as stored scores: item -> sum, item -> neighbour -> sum.

    ``counted``: only these events' increments (all are applied to the states); default all.
    """
    params = settings.interest_params()
    window_ms = round(settings.co_window_s * 1000)
    popular: dict[str, float] = defaultdict(float)
    co: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for events in events_by_user.values():
        state = UserInterest.empty()
        applied: set[str] = set()
        for ev in events:
            if ev.event_id in applied:
                continue
            applied.add(ev.event_id)
            state = apply_events(state, [ev], params, settings.seen_max)
            if counted is not None and ev.event_id not in counted:
                continue
            inc = score_increment(ev.type, ev.ts_ms, params)
            co_inc = score_increment(ev.type, ev.ts_ms, params, params.half_life_co_s)
            if inc > 0:
                popular[ev.item_id] += inc
            if not co_inc > 0:
                continue
            for other in near_items(state, ev, window_ms, settings.co_max_per_event):
                co[ev.item_id][other] += co_inc
                co[other][ev.item_id] += co_inc
    return dict(popular), {item: dict(near) for item, near in co.items()}

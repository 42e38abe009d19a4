"""What the interest worker needs of Redis, as one interface.

``InterestBackend`` is the seam between ``workers.update_interests`` and the stores: the worker
applies events and reads users' state, writes and reads the global signals, and caches the
lists, through these calls only. ``RedisBackend`` is the production implementation (the
Lua scripts of ``streams.state.user_state``, ``streams.state.signals``, ``streams.state.recs``);
the worker's unit tests run it on an in-memory stand-in (``tests.standins``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from models.interest import InterestColumns
from schemas import RedisKeys, UserEvent
from streams.settings import InterestSettings
from streams.state.recs import ListAge, RecsCache
from streams.state.signals import Signals
from streams.state.user_state import UserStateStore

Pairs = list[tuple[str, float]]


@dataclass(frozen=True, slots=True)
class StaleUser:
    """An idle user whose list is ranked again: its age entry, the state, the list's trigger."""

    age: ListAge
    state: InterestColumns
    trigger: str | None


class InterestBackend(Protocol):
    """The state calls of one event batch, in the order the worker makes them."""

    def apply_and_read(
        self, events: Sequence[tuple[UserEvent, int, int]]
    ) -> tuple[list[bool], Signals, dict[str, InterestColumns]]:
        """Apply (event, partition, offset) triples idempotently; read touched users back.

        Returns which events were new, the touched users' pending popularity/co-occurrence
        increments (their outboxes: this batch's and any a crash left), and every touched
        user's state. Raises ``UserStateError`` when some events were rejected.
        """
        ...

    def write_signals(self, signals: Signals) -> set[str]:
        """Drain the increments into popularity and co-occurrence, exactly once (retry freely).

        Returns the items whose co-occurrence lists changed.
        """
        ...

    def read_signals(
        self, co_items: Sequence[str], co_n: int, popular_n: int | None
    ) -> tuple[dict[str, Pairs], Pairs | None]:
        """Neighbour lists of ``co_items`` and, if ``popular_n`` is given, the popular list."""
        ...

    def read_popularity(self, item_ids: Sequence[str]) -> list[float | None]:
        """Stored popularity of each item (None: not in the set); ``interest.co_pop_power``."""
        ...

    def write_lists(
        self,
        payloads: Sequence[tuple[str, bytes]],
        cold: bytes | None = None,
        ages: Sequence[ListAge] = (),
    ) -> None:
        """Cache each user's latest list, (user_id, JSON bytes), and the cold list if given.

        ``ages``: when the lists were ranked, the index ``stale_users`` reads.
        """
        ...

    def stale_users(
        self,
        partitions: Sequence[int],
        before_ms: int,
        active_after_ms: int,
        n: int,
        exclude: Collection[str],
    ) -> list[StaleUser]:
        """Up to ``n`` users of ``partitions`` whose list was ranked before ``before_ms``.

        Oldest lists first, none of ``exclude``, each with their state and their list's
        trigger. Users with no event since ``active_after_ms`` leave the index instead.
        """
        ...


class RedisBackend:
    """``InterestBackend`` on Redis."""

    def __init__(self, store: UserStateStore, recs: RecsCache) -> None:
        """Users' state and signals from ``store``, the list cache in ``recs``."""
        self.store = store
        self.recs = recs

    @classmethod
    def from_settings(
        cls, client: redis.Redis[Any], keys: RedisKeys, settings: InterestSettings
    ) -> RedisBackend:
        """Stores on ``client`` configured by the interest settings."""
        return cls(UserStateStore.from_settings(client, keys, settings), RecsCache(client, keys))

    def apply_and_read(
        self, events: Sequence[tuple[UserEvent, int, int]]
    ) -> tuple[list[bool], Signals, dict[str, InterestColumns]]:
        """See ``UserStateStore.apply_and_read``."""
        return self.store.apply_and_read(events)

    def write_signals(self, signals: Signals) -> set[str]:
        """See ``SignalStore.write``."""
        return self.store.signals.write(signals)

    def read_signals(
        self, co_items: Sequence[str], co_n: int, popular_n: int | None
    ) -> tuple[dict[str, Pairs], Pairs | None]:
        """See ``SignalStore.read_raw``."""
        return self.store.signals.read_raw(co_items, co_n, popular_n)

    def read_popularity(self, item_ids: Sequence[str]) -> list[float | None]:
        """See ``SignalStore.popularity_of``."""
        return self.store.signals.popularity_of(item_ids)

    def write_lists(
        self,
        payloads: Sequence[tuple[str, bytes]],
        cold: bytes | None = None,
        ages: Sequence[ListAge] = (),
    ) -> None:
        """See ``RecsCache.write_payloads``."""
        self.recs.write_payloads(payloads, cold, ages)

    def stale_users(
        self,
        partitions: Sequence[int],
        before_ms: int,
        active_after_ms: int,
        n: int,
        exclude: Collection[str],
    ) -> list[StaleUser]:
        """``RecsCache.stale``, the users' states, idle ones forgotten, then the triggers."""
        ages = self.recs.stale(partitions, before_ms, n, exclude)
        if not ages:
            return []
        states = self.store.load_columns([a.user_id for a in ages])
        active = [a for a in ages if states[a.user_id].last_ts_ms >= active_after_ms]
        if len(active) < len(ages):
            self.recs.forget_ages([a for a in ages if a not in active])
        triggers = self.recs.triggers([a.user_id for a in active])
        return [StaleUser(a, states[a.user_id], t) for a, t in zip(active, triggers, strict=True)]

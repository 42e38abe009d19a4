"""In-memory stand-ins for the worker's unit tests: Redis state, the list producer, the feed.

``MemoryBackend`` implements ``streams.state.backend.InterestBackend`` with the reference rule
(``tests.reference.interest.apply_events``), the apply script's co-occurrence window
(``tests.reference.signals.near_items``) and its outbox (drained once per entry), keeps every
call it received, and can be told to fail the next calls of one kind the way an
unreachable Redis does. Only the worker's unit tests use it; everything that claims Redis
behaviour runs on a real Redis server.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Awaitable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis

from models.index import ItemIndex
from models.interest import InterestColumns, UserInterest
from schemas import UserEvent
from streams.settings import InterestSettings
from streams.state.backend import StaleUser
from streams.state.recs import ListAge
from streams.state.signals import Pending, Signals, event_increments
from tests.reference.interest import apply_events
from tests.reference.signals import near_items

Pairs = list[tuple[str, float]]


@dataclass
class MemoryBackend:
    """Users' state, signals and cached lists in dicts; every call recorded in ``calls``."""

    settings: InterestSettings
    users: dict[str, UserInterest] = field(default_factory=dict)
    applied_ids: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    co: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    popular: dict[str, float] = field(default_factory=dict)
    lists: dict[str, bytes] = field(default_factory=dict)
    cold: bytes | None = None
    cold_writes: int = 0
    ages: dict[int, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    """Events partition -> user -> event time their list was ranked at."""
    outboxes: dict[str, list[Pending]] = field(default_factory=lambda: defaultdict(list))
    calls: list[tuple[str, Any]] = field(default_factory=list)
    failing: dict[str, int] = field(default_factory=dict)
    """Call name -> how many of its next calls raise ``redis.ConnectionError``."""
    lose_replies: dict[str, int] = field(default_factory=dict)
    """Call name -> how many of its next calls take effect and then raise, as when the
    connection drops after Redis ran the command but before its reply arrived."""

    def _call(self, name: str, arg: Any) -> None:
        self.calls.append((name, arg))
        if self.failing.get(name, 0) > 0:
            self.failing[name] -= 1
            raise redis.ConnectionError(f"stand-in: {name} while Redis is away")

    def _reply(self, name: str) -> None:
        if self.lose_replies.get(name, 0) > 0:
            self.lose_replies[name] -= 1
            raise redis.ConnectionError(f"stand-in: {name} ran, its reply was lost")

    def called(self, name: str) -> list[Any]:
        """The arguments of every call of ``name`` (failed ones included), in order."""
        return [arg for n, arg in self.calls if n == name]

    def apply_and_read(
        self, events: Sequence[tuple[UserEvent, int, int]]
    ) -> tuple[list[bool], Signals, dict[str, InterestColumns]]:
        self._call("apply_and_read", [ev.event_id for ev, _, _ in events])
        s = self.settings
        params = s.interest_params()
        window_ms = round(s.co_window_s * 1000)
        applied: list[bool] = []
        for ev, _, _ in events:
            ids = self.applied_ids[ev.user_id]
            if ev.event_id in ids:
                applied.append(False)
                continue
            state = self.users.get(ev.user_id, UserInterest.empty())
            state = apply_events(state, [ev], params, s.seen_max)
            self.users[ev.user_id] = state
            ids.append(ev.event_id)
            del ids[: max(0, len(ids) - s.applied_max)]
            applied.append(True)
            near = near_items(state, ev, window_ms, s.co_max_per_event)
            inc, co_inc = event_increments(ev.type, ev.ts_ms, params)
            entry = Pending(ev.user_id, state.n_events, ev.item_id, inc, tuple(near), co_inc)
            self.outboxes[ev.user_id].append(entry)
        touched = list(dict.fromkeys(ev.user_id for ev, _, _ in events))
        states = {u: InterestColumns.of(self.users.get(u, UserInterest.empty())) for u in touched}
        pending = [p for u in touched for p in self.outboxes.get(u, [])]
        return applied, pending, states

    def write_signals(self, signals: Signals) -> set[str]:
        self._call("write_signals", [(p.user_id, p.seq, p.item_id, p.near) for p in signals])
        changed: set[str] = set()
        for p in signals:
            box = self.outboxes.get(p.user_id, [])
            if p not in box:
                continue  # drained before: each entry counts once
            box.remove(p)
            if p.increment > 0:
                self.popular[p.item_id] = self.popular.get(p.item_id, 0.0) + p.increment
            if not p.co > 0:
                continue
            for other in p.near:
                self.co[p.item_id][other] = self.co[p.item_id].get(other, 0.0) + p.co
                self.co[other][p.item_id] = self.co[other].get(p.item_id, 0.0) + p.co
            if p.near:
                changed.add(p.item_id)
                changed.update(p.near)
        self._reply("write_signals")
        return changed

    def read_signals(
        self, co_items: Sequence[str], co_n: int, popular_n: int | None
    ) -> tuple[dict[str, Pairs], Pairs | None]:
        self._call("read_signals", (list(co_items), co_n, popular_n))
        co = {i: _strongest(self.co.get(i, {}), co_n) for i in co_items}
        return co, (None if popular_n is None else _strongest(self.popular, popular_n))

    def read_popularity(self, item_ids: Sequence[str]) -> list[float | None]:
        self._call("read_popularity", list(item_ids))
        return [self.popular.get(i) for i in item_ids]

    def write_lists(
        self,
        payloads: Sequence[tuple[str, bytes]],
        cold: bytes | None = None,
        ages: Sequence[ListAge] = (),
    ) -> None:
        self._call("write_lists", [u for u, _ in payloads])
        self.lists.update(payloads)
        if cold is not None:
            self.cold = cold
            self.cold_writes += 1
        for a in ages:
            self.ages[a.partition][a.user_id] = a.at_ms

    def stale_users(
        self,
        partitions: Sequence[int],
        before_ms: int,
        active_after_ms: int,
        n: int,
        exclude: Collection[str],
    ) -> list[StaleUser]:
        self._call("stale_users", (list(partitions), before_ms, active_after_ms, n))
        found = sorted(
            (at, p, u)
            for p in partitions
            for u, at in self.ages.get(p, {}).items()
            if at < before_ms and u not in exclude
        )[:n]
        out = []
        for at, p, u in found:
            state = InterestColumns.of(self.users.get(u, UserInterest.empty()))
            if state.last_ts_ms < active_after_ms:
                del self.ages[p][u]  # idle too long: no more re-ranking
                continue
            listed = self.lists.get(u)
            trigger = None if listed is None else json.loads(listed)["trigger_event_id"]
            out.append(StaleUser(ListAge(p, u, at), state, trigger))
        return out


def _strongest(scores: dict[str, float], n: int) -> Pairs:
    """ZREVRANGE 0 n-1 WITHSCORES: score descending, then member bytes descending."""
    ranked = sorted(scores.items(), key=lambda p: (p[1], p[0].encode()), reverse=True)
    return ranked[: max(0, n)]


def _delivered() -> asyncio.Future[object]:
    """A delivery future that has already completed, as a broker's acknowledgement would."""
    done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


@dataclass
class Produced:
    """Everything a stand-in producer was given, in order."""

    sent: list[tuple[str, bytes]] = field(default_factory=list)

    async def send(self, user_id: str, payload: bytes) -> Awaitable[object]:
        self.sent.append((user_id, payload))
        return _delivered()


@dataclass
class DeadLetterTopic:
    """Stands in for the dead-letter topic: ``send`` records (key, value)."""

    sent: list[tuple[bytes | None, bytes]] = field(default_factory=list)

    async def send(self, *, key: bytes | None, value: bytes) -> Awaitable[object]:
        self.sent.append((key, value))
        return _delivered()


@dataclass
class StaticFeed:
    """An ``IndexSource`` that serves one index."""

    index: ItemIndex
    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="test-state")
    )

"""The global signals in Redis: popularity and co-occurrence, as decayed counts.

Popularity is a ZSET item -> sum of ``w * 2 ** ((t - T0) / h_pop)`` (``score_increment``): the
log-weight trick in the linear domain, so old counts fade relative to new ones without ever
rewriting them. The exponent is capped at ``MAX_SCORE_EXPONENT``; with the 7-day half-life that
horizon is 2041, after which scores must be rebased (see ``models.interest``). Co-occurrence:
the apply script (``streams.state.user_state``) finds up to ``co_max_per_event`` items the
user touched within ``co_window_s`` of each applied event, and ``co:{i:<item>}`` gains the
same increment in both directions, trimmed to ``co_max_neighbours``. Pairs decay with their own
half-life, ``interest.half_life_co_s`` (an increment of its own in the outbox entry where it
differs from popularity's): which items go together changes more slowly than which are in
demand.

Exactly once per event: the apply script records an event's id and pushes its increments to
the user's outbox in one atomic step, and ``SignalStore.write`` drains outboxes into the
global sets in one script (``lua/drain_signals.lua``) that adds the increments and removes the
entries together, after checking that the outboxes still hold what the client read. A worker
that dies between the two steps leaves the entries in the outbox; the redelivered events are
reported as applied already, but the apply reply returns the outbox, and they are drained
then. A drain that may have run (a reply lost with the connection) is simply retried: the
entries are gone, so nothing is added twice.

In a Redis Cluster the global sets live in other slots than the user's keys, and no script can
span slots: increments are added per key first and the outbox entries removed after, so a
crash between the two counts that batch's increments again (at least once, never lost).

Reads return stored (undecayed) scores where the reader normalises by the largest (decay
scales every score alike), decayed counts otherwise.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.cluster import RedisCluster

from models.interest import InterestParams, decay_score, score_increment
from schemas import RedisKeys
from streams.exceptions import DrainConflict
from streams.state.lua import lua, run_script

DRAIN_ATTEMPTS = 5
"""Drains retried with re-read outboxes before giving up (only a rival worker forces one)."""


@dataclass(frozen=True, slots=True)
class Pending:
    """One applied event's increments, waiting in its user's outbox."""

    user_id: str
    seq: int
    """The user's apply count after the event: unique per user, increasing along the outbox."""
    item_id: str
    increment: float
    """What the event adds to popularity."""
    near: tuple[str, ...]
    """Items the user touched within the co-occurrence window of the event."""
    co_increment: float | None = None
    """What it adds to each of its co-occurrence pairs (None: ``increment``)."""

    @property
    def co(self) -> float:
        """The co-occurrence increment."""
        return self.increment if self.co_increment is None else self.co_increment

    @classmethod
    def parse(cls, user_id: str, entry: bytes | str) -> Pending:
        """An outbox entry: ``seq<TAB>increment[;co increment]<TAB>item<TAB>near...``.

        The co-occurrence increment is written only when its half-life differs from
        popularity's (entries from before ``interest.half_life_co_s`` have none).
        """
        seq, inc, item, *near = _text(entry).split("\t")
        pop, _, co = inc.partition(";")
        return cls(user_id, int(seq), item, float(pop), tuple(near), float(co) if co else None)


def event_increments(
    event_type: str, ts_ms: int, params: InterestParams
) -> tuple[float, float | None]:
    """An event's popularity increment and, where pairs decay otherwise, its pairs' own."""
    pop = score_increment(event_type, ts_ms, params)
    h = params.half_life_co_s
    if h == params.half_life_popularity_s:
        return pop, None
    return pop, score_increment(event_type, ts_ms, params, h)


def increment_field(increment: float, co_increment: float | None) -> str:
    """The outbox entry's increment field (``Pending.parse`` reads it back)."""
    if co_increment is None:
        return repr(increment)
    return f"{increment!r};{co_increment!r}"


Signals = list[Pending]
"""Outbox entries of a batch's users, each user's in order: what ``SignalStore.write`` drains."""


class SignalStore:
    """Writes and reads popularity and co-occurrence."""

    def __init__(
        self,
        client: redis.Redis[Any],
        keys: RedisKeys,
        params: InterestParams,
        co_max_neighbours: int,
        popular_max: int,
    ) -> None:
        """Neighbour lists keep ``co_max_neighbours``, the popularity set ``popular_max``."""
        if co_max_neighbours < 1 or popular_max < 1:
            raise ValueError("co_max_neighbours and popular_max must be >= 1")
        self._r = client
        self._keys = keys
        self._params = params
        self._co_max_neighbours = co_max_neighbours
        self._popular_max = popular_max
        self._cluster = isinstance(client, RedisCluster)
        self._bump = client.register_script(lua("bump"))
        self._drain = client.register_script(lua("drain_signals"))

    def write(self, pending: Signals) -> set[str]:
        """Drain ``pending`` (outbox entries from apply replies) into the global sets.

        Exactly once per entry (see the module docstring): safe to retry after any error,
        including one that left unknown whether the drain ran. Returns the items whose
        co-occurrence lists changed. Raises ``DrainConflict`` if the outboxes still differed
        from what was read after ``DRAIN_ATTEMPTS`` re-reads.
        """
        changed = _changed(pending)  # whichever attempt drains them, these lists change
        for _ in range(DRAIN_ATTEMPTS):
            if not pending:
                return changed
            if self._cluster:
                self._write_per_slot(pending)
                return changed
            if self._drain_atomically(pending):
                return changed
            pending = self.read_outboxes(sorted({p.user_id for p in pending}))
            changed |= _changed(pending)
        raise DrainConflict(f"outboxes of {len({p.user_id for p in pending})} users kept changing")

    def read_outboxes(self, user_ids: Sequence[str]) -> Signals:
        """Every entry now in the users' outboxes, each user's in order."""
        pipe: Any = self._r.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.execute_command("LRANGE", self._keys.user_outbox(user_id), 0, -1)
        replies = pipe.execute()
        return [
            Pending.parse(user_id, entry)
            for user_id, entries in zip(user_ids, replies, strict=True)
            for entry in entries
        ]

    def _drain_atomically(self, pending: Signals) -> bool:
        """One script: check the outboxes, add the increments, remove the entries."""
        runs = _runs(pending)
        bumps = self.bumps(pending)
        popular = self._keys.popularity()
        keys = [self._keys.user_outbox(user_id) for user_id, _ in runs] + list(bumps)
        pop_at = keys.index(popular) + 1 if popular in bumps else 0
        args: list[str | int] = [len(runs), self._popular_max, self._co_max_neighbours, pop_at]
        for _, entries in runs:
            args += (len(entries), entries[0].seq, entries[-1].seq)
        for members in bumps.values():
            args.append(len(members))
            for member, inc in members.items():
                args += (member, repr(inc))
        return bool(self._drain(keys=keys, args=args))

    def _write_per_slot(self, pending: Signals) -> None:
        """Cluster: one script per signal key, then the outbox entries removed (per user)."""
        bumps = self.bumps(pending)
        popular = self._keys.popularity()
        pipe = self._r.pipeline(transaction=False)
        for key, members in bumps.items():
            keep = self._popular_max if key == popular else self._co_max_neighbours
            args: list[str | int] = [keep]
            for member, inc in members.items():
                args += (member, repr(inc))
            run_script(pipe, self._bump, [key], args, True)
        pipe.execute()
        pipe = self._r.pipeline(transaction=False)
        for user_id, entries in _runs(pending):
            check: list[str | int] = [1, self._popular_max, self._co_max_neighbours, 0]
            check += (len(entries), entries[0].seq, entries[-1].seq)
            run_script(pipe, self._drain, [self._keys.user_outbox(user_id)], check, True)
        pipe.execute()

    def bumps(self, pending: Signals) -> dict[str, dict[str, float]]:
        """The entries' increments summed per (key, member)."""
        bumps: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        popular = self._keys.popularity()
        for p in pending:
            # An increment that underflowed (an event from long before T0) counts for nothing.
            if p.increment > 0:
                bumps[popular][p.item_id] += p.increment
            inc = p.co
            if not inc > 0:
                continue
            mine = self._keys.cooccurrence(p.item_id)
            for other in p.near:
                bumps[mine][other] += inc
                bumps[self._keys.cooccurrence(other)][p.item_id] += inc
        return bumps

    def read_raw(
        self, co_items: Sequence[str], co_n: int, popular_n: int | None
    ) -> tuple[dict[str, list[tuple[str, float]]], list[tuple[str, float]] | None]:
        """What a refresh reads, in one round trip, with stored (undecayed) scores.

        The ``co_n`` strongest neighbours of each of ``co_items`` and, when ``popular_n`` is
        given, the ``popular_n`` most popular items. Decaying to now multiplies every stored
        score by the same factor ``2 ** -((now - T0) / h)``, so whoever normalises by the
        largest score (the ranking does) can skip it.
        """
        empty: dict[str, list[tuple[str, float]]] = {}
        if co_n < 1:  # ZREVRANGE 0 -1 would read whole lists
            empty, co_items = {i: [] for i in co_items}, []
        if not co_items and popular_n is None:
            return empty, None
        pipe: Any = self._r.pipeline(transaction=False)
        for item in co_items:
            # Raw commands: redis-py's reply callback would build float pairs one by one.
            key = self._keys.cooccurrence(item)
            pipe.execute_command("ZREVRANGE", key, 0, co_n - 1, "WITHSCORES")
        if popular_n is not None:
            pipe.execute_command(
                "ZREVRANGE", self._keys.popularity(), 0, popular_n - 1, "WITHSCORES"
            )
        replies = pipe.execute()
        co = {item: _pairs(reply) for item, reply in zip(co_items, replies, strict=False)}
        return co | empty, (_pairs(replies[-1]) if popular_n is not None else None)

    def popularity_of(self, item_ids: Sequence[str]) -> list[float | None]:
        """Each item's stored (undecayed) popularity, None where the set does not hold it."""
        if not item_ids:
            return []
        unique = list(dict.fromkeys(item_ids))
        reply = self._r.execute_command("ZMSCORE", self._keys.popularity(), *unique)
        score = {i: None if v is None else float(v) for i, v in zip(unique, reply, strict=True)}
        return [score[i] for i in item_ids]

    def popular(self, n: int, now_ms: int | None = None) -> list[tuple[str, float]]:
        """Return the ``n`` most popular items with decayed counts at ``now_ms`` (default: now)."""
        if n < 1:
            return []
        now = _now_ms() if now_ms is None else now_ms
        rows = self._r.zrevrange(self._keys.popularity(), 0, n - 1, withscores=True)
        return [(_text(item), decay_score(float(s), now, self._params)) for item, s in rows]

    def co_neighbours(
        self, item_ids: Sequence[str], n: int, now_ms: int | None = None
    ) -> dict[str, list[tuple[str, float]]]:
        """For each item, its ``n`` strongest co-occurring items with decayed counts."""
        if n < 1 or not item_ids:
            return {i: [] for i in item_ids}
        now = _now_ms() if now_ms is None else now_ms
        h = self._params.half_life_co_s
        pipe = self._r.pipeline(transaction=False)
        for item in item_ids:
            pipe.zrevrange(self._keys.cooccurrence(item), 0, n - 1, withscores=True)
        return {
            item: [(_text(o), decay_score(float(s), now, self._params, h)) for o, s in rows]
            for item, rows in zip(item_ids, pipe.execute(), strict=True)
        }


def _runs(pending: Signals) -> list[tuple[str, list[Pending]]]:
    """The entries grouped by user, in order (one outbox each)."""
    by_user: dict[str, list[Pending]] = defaultdict(list)
    for p in pending:
        by_user[p.user_id].append(p)
    return list(by_user.items())


def _changed(pending: Signals) -> set[str]:
    """Items whose co-occurrence lists the entries change."""
    changed: set[str] = set()
    for p in pending:
        if p.near:
            changed.add(p.item_id)
            changed.update(p.near)
    return changed


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _pairs(reply: list[Any]) -> list[tuple[str, float]]:
    """(member, score) pairs of a raw ZRANGE ... WITHSCORES reply (RESP2 flat or RESP3)."""
    if reply and isinstance(reply[0], list | tuple):  # RESP3: [member, score] pairs
        return [(_text(m), float(v)) for m, v in reply]
    return [(_text(m), float(v)) for m, v in zip(reply[::2], reply[1::2], strict=True)]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000

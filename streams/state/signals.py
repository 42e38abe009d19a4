"""The global signals in Redis: popularity and co-occurrence, as decayed counts.

Popularity is a ZSET item -> sum of ``w * 2 ** ((t - T0) / h_pop)`` (``score_increment``): the
log-weight trick in the linear domain, so old counts fade relative to new ones without ever
rewriting them. The exponent is capped at ``MAX_SCORE_EXPONENT``; with the 7-day half-life that
horizon is 2041, after which scores must be rebased (see ``models.interest``). Co-occurrence:
the apply script (``streams.state.user_state``) returns up to ``co_max_per_event`` items the
user touched within ``co_window_s`` of each applied event, and ``co:{i:<item>}`` gains the
same increment in both directions, trimmed to ``co_max_neighbours``.

They live in other Redis Cluster slots than the user's keys, and one script may only touch
keys of one slot, so they are written in a second step, only for events the script applied.
A crash between the two steps therefore loses (never doubles) those increments: on
redelivery the script reports the event as already applied and the second step skips it.
Both signals are approximate decayed counts, for which an occasional lost increment is the
right trade. Reads return stored (undecayed) scores where the reader normalises by the
largest (decay scales every score alike), decayed counts otherwise.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import redis
from redis.cluster import RedisCluster

from models.interest import InterestParams, decay_score, score_increment
from schemas import RedisKeys, UserEvent
from streams.state.lua import lua, run_script

Signals = list[tuple[UserEvent, list[str]]]
"""Applied events with the items each co-occurred with: what ``SignalStore.write`` adds up."""


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
        self._bump_many = client.register_script(lua("bump_many"))

    def write(self, applied: Signals) -> None:
        """Add the popularity and co-occurrence increments of applied events.

        Not idempotent (increments): never retry a call that may have partly run; a lost call
        loses increments, which the approximate decayed counts tolerate.
        """
        # Summed per (key, member) over the batch, sent in one script call: client-side command
        # packing, not Redis, bounds throughput here.
        bumps = self.bumps(applied)
        if not bumps:
            return
        pipe = self._r.pipeline(transaction=False)
        self.queue(pipe, bumps)
        pipe.execute()

    def bumps(self, applied: Signals) -> dict[str, dict[str, float]]:
        """The batch's increments summed per (key, member)."""
        bumps: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        popular = self._keys.popularity()
        for ev, near in applied:
            inc = score_increment(ev.type, ev.ts_ms, self._params)
            if not inc > 0:
                continue  # underflowed (an event from long before T0): counts for nothing
            bumps[popular][ev.item_id] += inc
            mine = self._keys.cooccurrence(ev.item_id)
            for other in near:
                bumps[mine][other] += inc
                bumps[self._keys.cooccurrence(other)][ev.item_id] += inc
        return bumps

    def queue(self, pipe: Any, bumps: dict[str, dict[str, float]]) -> int:
        """Add the increments to ``pipe``; return how many commands that queued.

        One script call for all keys; in a cluster one per key (keys of one call must share a
        slot).
        """
        popular = self._keys.popularity()
        if self._cluster:
            for key, members in bumps.items():
                keep = self._popular_max if key == popular else self._co_max_neighbours
                args: list[str | int] = [keep]
                for member, inc in members.items():
                    args += (member, repr(inc))
                run_script(pipe, self._bump, [key], args, self._cluster)
            return len(bumps)
        keys = list(bumps)
        many: list[str | int] = [self._popular_max, self._co_max_neighbours]
        for key in keys:
            members = bumps[key]
            many += ("1" if key == popular else "0", len(members))
            for member, inc in members.items():
                many += (member, repr(inc))
        run_script(pipe, self._bump_many, keys, many, self._cluster)
        return 1

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
        pipe = self._r.pipeline(transaction=False)
        for item in item_ids:
            pipe.zrevrange(self._keys.cooccurrence(item), 0, n - 1, withscores=True)
        return {
            item: [(_text(o), decay_score(float(s), now, self._params)) for o, s in rows]
            for item, rows in zip(item_ids, pipe.execute(), strict=True)
        }


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _pairs(reply: list[Any]) -> list[tuple[str, float]]:
    """(member, score) pairs of a raw ZRANGE ... WITHSCORES reply (RESP2 flat or RESP3)."""
    if reply and isinstance(reply[0], list | tuple):  # RESP3: [member, score] pairs
        return [(_text(m), float(v)) for m, v in reply]
    return [(_text(m), float(v)) for m, v in zip(reply[::2], reply[1::2], strict=True)]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000

"""Users' interest state in Redis: idempotent per-event updates, global signals, the recs cache.

Per event, a Lua function (``_APPLY_EVENTS`` calls it for each event of one user's part of a
batch: one script call per user) touches only that user's hash-tagged keys (``user_state``,
``user_seen``, ``user_applied``) and atomically: skips an ``event_id`` already applied; else
merges the event into the item's two log weights (``models.interest``), updates the seen set
and trims it (with the trimmed items' weights), and records the ``event_id``.
So a redelivered event changes nothing: at-least-once delivery, exactly-once effect.

The global signals (popularity, co-occurrence) are written in a second pipelined step, only
for events the script applied. They live in other Redis Cluster slots than the user's keys,
and one script may only touch keys of one slot, so they cannot join the atomic update. A crash
between the two steps therefore loses (never doubles) those increments: on redelivery the
script reports the event as already applied and the second step skips it. Both signals are
approximate decayed counts, for which an occasional lost increment is the right trade.

Popularity is a ZSET item -> sum of ``w * 2 ** ((t - T0) / h_pop)`` (``score_increment``): the
log-weight trick in the linear domain, so old counts fade relative to new ones without ever
rewriting them. The exponent is capped at ``MAX_SCORE_EXPONENT``; with the 7-day half-life that
horizon is 2041, after which scores must be rebased (see ``models.interest``). Co-occurrence:
the script also returns up to ``co_max_per_event`` items the user touched within
``co_window_s`` of the event's time on either side (a symmetric window counts a pair once
whichever event is applied second), and ``co:{i:<item>}`` gains the same increment in both
directions, trimmed to ``co_max_neighbours``.

Layout of ``user_state`` (a hash): ``i:<item_id>`` -> 17 bytes, a tag byte 1 and the item's
long- and short-term log weights as little-endian doubles (exact, and no text to format in
Lua or parse in Python; values written as ``"%.17g %.17g"`` text by earlier versions are read
and rewritten in binary when the user is next touched), plus ``n`` (events applied) and
``last_ts``. An item's latest event time is its score in ``user_seen``, which is trimmed
together with the hash, so it is not stored twice (14 bytes per item of the ~4 KiB per-user
budget). The apply script returns the user's state after the events in the same reply.
The applied set scores ids by ``n`` (apply order), not by event time: trimming then keeps the
``applied_max`` most recently *applied* ids, so any redelivery of the last ``applied_max``
events per user is caught however old their timestamps are. Keep ``applied_max`` >= the
largest batch that can be redelivered (the worker's uncommitted batch).
"""

from __future__ import annotations

import math
import time
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script

from models.interest import (
    InterestColumns,
    InterestParams,
    ItemWeight,
    UserInterest,
    decay_score,
    log_increment,
    score_increment,
)
from schemas import Recommendations, RedisKeys, UserEvent
from streams.settings import InterestSettings

# 1000 items (the contract's maximum) of generous size: bounds what a cached value inflates to.
MAX_RECS_JSON_BYTES = 4 * 1024 * 1024

Signals = list[tuple[UserEvent, list[str]]]
"""Applied events with the items each co-occurred with: what ``write_signals`` adds up."""

# Most events of one user applied by one script call.
MAX_EVENTS_PER_CALL = 256

# Defaults for signals InterestSettings has no field for yet.
DEFAULT_CO_WINDOW_S = 1800.0
DEFAULT_CO_MAX_PER_EVENT = 10
DEFAULT_POPULAR_MAX = 10_000

# Numbers go to redis.call as strings formatted with %.17g: Lua 5.1 turns a bare number into
# a string with %.14g, which would round timestamps past 1e14 ms and log weights.
_APPLY_EVENTS = """
local state, seen, applied = KEYS[1], KEYS[2], KEYS[3]
local seen_max, applied_max = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, co_max = tonumber(ARGV[3]), tonumber(ARGV[4])

-- exactly models.interest.logaddexp
local function lae(a, b)
  local m, d
  if b > a then m, d = b, a - b else m, d = a, b - a end
  return m + math.log(1 + math.exp(d))
end

-- An item's two log weights: 17 bytes, tag 1 then two little-endian doubles (exact, and no
-- text to format or parse); "%.17g %.17g" text written by earlier versions is read too.
local function weights(v)
  if string.byte(v, 1) == 1 then
    local _, l, s = struct.unpack('<Bdd', v)
    return l, s
  end
  local l, s = string.match(v, '^(%S+) (%S+)$')
  return tonumber(l), tonumber(s)
end

local function packed(l, s)
  return struct.pack('<Bdd', 1, l, s)
end

-- The user's event count and latest time, read once and written once per call.
local head = redis.call('HMGET', state, 'last_ts', 'n')
local last, n = head[1], tonumber(head[2] or '0')
local changed = false

-- One event: 0 if its id was applied before, else {1, co-occurring items...}.
local function apply(eid, item, ts_s, inc_l, inc_s)
  if redis.call('ZSCORE', applied, eid) then
    return 0
  end
  local ts = tonumber(ts_s)
  local field = 'i:' .. item
  local l, s = inc_l, inc_s
  local cur = redis.call('HGET', state, field)
  if cur then
    local cl, cs = weights(cur)
    l = lae(cl, inc_l)
    s = lae(cs, inc_s)
  end
  redis.call('HSET', state, field, packed(l, s))
  if (not last) or tonumber(last) < ts then last = ts_s end
  n = n + 1
  changed = true

  redis.call('ZADD', seen, 'GT', ts_s, item)
  local cnt = redis.call('ZCARD', seen)
  if cnt > seen_max then
    local stop = cnt - seen_max - 1
    local drop = redis.call('ZRANGE', seen, 0, stop)
    redis.call('ZREMRANGEBYRANK', seen, 0, stop)
    for i = 1, #drop do drop[i] = 'i:' .. drop[i] end
    redis.call('HDEL', state, unpack(drop))
  end

  -- Items touched within the window on either side: a symmetric window makes a pair count
  -- once whichever of its two events is applied second.
  local out = {1}
  if co_max > 0 then
    local near = redis.call('ZREVRANGEBYSCORE', seen, string.format('%.17g', ts + window),
      string.format('%.17g', ts - window), 'LIMIT', 0, co_max + 1)
    for i = 1, #near do
      if near[i] ~= item and #out <= co_max then out[#out + 1] = near[i] end
    end
  end

  redis.call('ZADD', applied, string.format('%d', n), eid)
  -- Trimmed after every event, never above applied_max: a set that outgrew Redis's compact
  -- (listpack) encoding limit would stay in the ~8x larger skiplist encoding for good.
  local ac = redis.call('ZCARD', applied)
  if ac > applied_max then
    redis.call('ZREMRANGEBYRANK', applied, 0, ac - applied_max - 1)
  end
  return out
end

-- ARGV[5..]: (event_id, item_id, ts_ms, inc_long, inc_short) per event, in order.
local results = {}
for e = 5, #ARGV, 5 do
  results[#results + 1] = apply(ARGV[e], ARGV[e + 1], ARGV[e + 2],
    tonumber(ARGV[e + 3]), tonumber(ARGV[e + 4]))
end
if changed then
  redis.call('HSET', state, 'last_ts', last, 'n', string.format('%d', n))
end

-- Then the state the refresh reads, packed: item ids joined by newlines (ids hold no control
-- characters) and their 17-byte weights end to end, last_ts, n: two strings, where HGETALL
-- would return two per item. Text weights met here are rewritten in binary, once.
local all = redis.call('HGETALL', state)
local ids, vals = {}, {}
for i = 1, #all, 2 do
  local f = all[i]
  if string.byte(f, 1) == 105 and string.byte(f, 2) == 58 then -- 'i:'
    local v = all[i + 1]
    if string.byte(v, 1) ~= 1 then
      v = packed(weights(v))
      redis.call('HSET', state, f, v)
    end
    ids[#ids + 1] = string.sub(f, 3)
    vals[#vals + 1] = v
  end
end
results[#results + 1] = table.concat(ids, '\\n')
results[#results + 1] = table.concat(vals)
results[#results + 1] = last or '0'
results[#results + 1] = string.format('%d', n)
return results
"""

# Every (key, member, increment) of a batch in one call: ARGV[1], ARGV[2] = how many members
# the popularity set and each neighbour set keep; then per key: "is popularity" flag, the
# number of pairs, the (member, increment) pairs. Only for keys of one node (not a cluster).
_BUMP_MANY = """
local keep_pop, keep_co = tonumber(ARGV[1]), tonumber(ARGV[2])
local a = 3
for k = 1, #KEYS do
  local is_pop, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  for i = 1, n do
    redis.call('ZINCRBY', KEYS[k], ARGV[a + 1], ARGV[a])
    a = a + 2
  end
  local keep = keep_co
  if is_pop == '1' then keep = keep_pop end
  redis.call('ZREMRANGEBYRANK', KEYS[k], 0, -(keep + 1))
end
return 0
"""


# One sorted set: ZINCRBY each (member, increment) pair, then keep the ARGV[1] highest.
_BUMP = """
for i = 2, #ARGV, 2 do
  redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i])
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[1]) + 1))
return 0
"""


class UserStateError(RuntimeError):
    """Some events of a batch failed in Redis; the others were applied (see ``applied``)."""

    def __init__(self, failures: list[tuple[int, int, str]], applied: list[bool]) -> None:
        """``failures`` are (partition, offset, error) of the events that failed."""
        first = failures[0]
        super().__init__(
            f"{len(failures)} event(s) failed, first at partition {first[0]} "
            f"offset {first[1]}: {first[2]}"
        )
        self.failures = failures
        self.applied = applied


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _pairs(reply: list[Any]) -> list[tuple[str, float]]:
    """(member, score) pairs of a raw ZRANGE ... WITHSCORES reply (RESP2 flat or RESP3)."""
    if reply and isinstance(reply[0], list | tuple):  # RESP3: [member, score] pairs
        return [(_text(m), float(v)) for m, v in reply]
    return [(_text(m), float(v)) for m, v in zip(reply[::2], reply[1::2], strict=True)]


def params_from_settings(settings: InterestSettings) -> InterestParams:
    """Build the pure update rule's parameters from the interest settings."""
    return InterestParams(
        half_life_long_s=settings.half_life_long_s,
        half_life_short_s=settings.half_life_short_s,
        short_term_weight=settings.short_term_weight,
        event_weights={str(k): v for k, v in settings.event_weights.items()},
        half_life_popularity_s=settings.half_life_popularity_s,
    )


@dataclass(frozen=True, slots=True)
class MemoryBreakdown:
    """MEMORY USAGE of each of one user's keys, in bytes (0 when the key does not exist)."""

    state: int
    seen: int
    applied: int
    recs: int

    @property
    def total(self) -> int:
        """All of the user's keys together."""
        return self.state + self.seen + self.applied + self.recs


class UserStateStore:
    """Reads and writes users' interest state, the global signals and the recs cache."""

    def __init__(
        self,
        client: redis.Redis[Any],
        keys: RedisKeys,
        params: InterestParams,
        seen_max: int,
        applied_max: int,
        co_window_s: float,
        co_max_neighbours: int,
        *,
        co_max_per_event: int = DEFAULT_CO_MAX_PER_EVENT,
        popular_max: int = DEFAULT_POPULAR_MAX,
    ) -> None:
        """Bounds: ``seen_max`` items and ``applied_max`` event ids per user; neighbour lists."""
        if seen_max < 1 or applied_max < 1 or co_max_neighbours < 1 or popular_max < 1:
            raise ValueError("seen_max, applied_max, co_max_neighbours, popular_max must be >= 1")
        if not (math.isfinite(co_window_s) and co_window_s >= 0) or co_max_per_event < 0:
            raise ValueError("co_window_s and co_max_per_event must be finite and >= 0")
        self._r = client
        self._keys = keys
        self._params = params
        self._seen_max = seen_max
        self._applied_max = applied_max
        self._co_window_ms = round(co_window_s * 1000)
        self._co_max_neighbours = co_max_neighbours
        self._co_max_per_event = co_max_per_event
        self._popular_max = popular_max
        self._cluster = isinstance(client, RedisCluster)
        self._script = client.register_script(_APPLY_EVENTS)
        self._bump = client.register_script(_BUMP)
        self._bump_many = client.register_script(_BUMP_MANY)

    @classmethod
    def from_settings(
        cls, client: redis.Redis[Any], keys: RedisKeys, settings: InterestSettings
    ) -> UserStateStore:
        """Build a store configured by the interest settings."""
        return cls(
            client,
            keys,
            params_from_settings(settings),
            seen_max=settings.seen_max,
            applied_max=settings.applied_max,
            co_window_s=settings.co_window_s,
            co_max_neighbours=settings.co_max_neighbours,
            co_max_per_event=settings.co_max_per_event,
            popular_max=settings.popular_max,
        )

    @property
    def params(self) -> InterestParams:
        """The update rule's parameters."""
        return self._params

    def apply(self, events: Sequence[tuple[UserEvent, int, int]]) -> list[bool]:
        """Apply (event, partition, offset) triples in order; True where an event was new.

        Raises ``UserStateError`` after writing everything else if Redis rejected some events.
        """
        applied, signals = self.apply_state(events)
        self.write_signals(signals)
        return applied

    def apply_state(
        self, events: Sequence[tuple[UserEvent, int, int]]
    ) -> tuple[list[bool], Signals]:
        """``apply`` without the global signals: they are returned, for ``write_signals``.

        If Redis rejected some events this writes the signals of the others and raises
        ``UserStateError``.
        """
        applied, signals, _ = self.apply_and_read(events)
        return applied, signals

    def apply_and_read(
        self, events: Sequence[tuple[UserEvent, int, int]]
    ) -> tuple[list[bool], Signals, dict[str, InterestColumns]]:
        """Apply events (in order per user) and read back every touched user's state.

        One script call per user (per ``MAX_EVENTS_PER_CALL`` of their events): a user's keys
        share a slot, and per-call overhead, not the work, dominates. The call's reply ends
        with the user's state after the events, as columns sorted by item id: what the
        refresh reads, without a second round trip. Signals as in ``apply_state``.
        """
        if not events:
            return [], [], {}
        chunk = MAX_EVENTS_PER_CALL
        by_user: dict[str, list[int]] = defaultdict(list)
        for pos, (ev, _, _) in enumerate(events):
            by_user[ev.user_id].append(pos)
        calls = [
            (user_id, positions[start : start + chunk])
            for user_id, positions in by_user.items()
            for start in range(0, len(positions), chunk)
        ]
        pipe = self._r.pipeline(transaction=False)
        head = [self._seen_max, self._applied_max, self._co_window_ms, self._co_max_per_event]
        for user_id, positions in calls:
            args: list[Any] = list(head)
            for pos in positions:
                ev = events[pos][0]
                inc_long, inc_short = log_increment(ev.type, ev.ts_ms, self._params)
                args += (ev.event_id, ev.item_id, str(ev.ts_ms), repr(inc_long), repr(inc_short))
            keys = [
                self._keys.user_state(user_id),
                self._keys.user_seen(user_id),
                self._keys.user_applied(user_id),
            ]
            self._run(pipe, self._script, keys, args)
        replies = pipe.execute(raise_on_error=False)
        results: list[Any] = [None] * len(events)
        states: dict[str, InterestColumns] = {}
        for (user_id, positions), reply in zip(calls, replies, strict=True):
            if isinstance(reply, Exception):
                for pos in positions:
                    results[pos] = reply
                continue
            for k, pos in enumerate(positions):
                results[pos] = reply[k]
            states[user_id] = _packed_columns(reply[len(positions) :])
        applied: list[bool] = []
        failures: list[tuple[int, int, str]] = []
        neighbours: list[tuple[UserEvent, list[str]]] = []
        for (ev, partition, offset), res in zip(events, results, strict=True):
            if isinstance(res, Exception):
                failures.append((partition, offset, str(res)))
                applied.append(False)
            elif isinstance(res, list):
                applied.append(True)
                neighbours.append((ev, [_text(x) for x in res[1:]]))
            else:
                applied.append(False)  # 0: already applied
        if failures:
            self.write_signals(neighbours)
            raise UserStateError(failures, applied)
        return applied, neighbours, states

    def write_signals(self, applied: Signals) -> None:
        """Add the popularity and co-occurrence increments of applied events.

        Not idempotent (increments): never retry a call that may have partly run; a lost call
        loses increments, which the approximate decayed counts tolerate.
        """
        # Summed per (key, member) over the batch, sent in one script call: client-side command
        # packing, not Redis, bounds throughput here.
        bumps = self.signal_bumps(applied)
        if not bumps:
            return
        pipe = self._r.pipeline(transaction=False)
        self.queue_signals(pipe, bumps)
        pipe.execute()

    def signal_bumps(self, applied: Signals) -> dict[str, dict[str, float]]:
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

    def queue_signals(self, pipe: Any, bumps: dict[str, dict[str, float]]) -> int:
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
                self._run(pipe, self._bump, [key], args)
            return len(bumps)
        keys = list(bumps)
        many: list[str | int] = [self._popular_max, self._co_max_neighbours]
        for key in keys:
            members = bumps[key]
            many += ("1" if key == popular else "0", len(members))
            for member, inc in members.items():
                many += (member, repr(inc))
        self._run(pipe, self._bump_many, keys, many)
        return 1

    def pipeline(self) -> Any:
        """A transaction-free pipeline on this store's client."""
        return self._r.pipeline(transaction=False)

    def queue_co_read(self, pipe: Any, item_id: str, n: int) -> None:
        """Queue a read of the ``n`` strongest co-occurring items of ``item_id``.

        Stored (undecayed) scores; parse the reply with ``parse_pairs``.
        """
        pipe.execute_command("ZREVRANGE", self._keys.cooccurrence(item_id), 0, n - 1, "WITHSCORES")

    def queue_popular_read(self, pipe: Any, n: int) -> None:
        """Queue a read of the ``n`` most popular items (stored scores)."""
        pipe.execute_command("ZREVRANGE", self._keys.popularity(), 0, n - 1, "WITHSCORES")

    @staticmethod
    def parse_pairs(reply: list[Any]) -> list[tuple[str, float]]:
        """(member, score) pairs of a queued read's reply."""
        return _pairs(reply)

    def _run(self, pipe: Any, script: Script, keys: list[str], args: list[Any]) -> None:
        if self._cluster:
            # redis-py's ClusterPipeline refuses EVALSHA and has no eval(); a raw EVAL is routed
            # by its keys' slot, and Redis caches the compiled script, so only its text travels.
            pipe.execute_command(
                "EVAL",
                script.script,  # type: ignore[attr-defined]  # set by redis-py, not in stubs
                len(keys),
                *keys,
                *args,
            )
        else:
            script(keys=keys, args=args, client=pipe)

    def load(self, user_id: str) -> UserInterest:
        """Read the user's interest state (empty if the user has none)."""
        return self.load_many([user_id])[user_id]

    def load_many(self, user_ids: Sequence[str]) -> dict[str, UserInterest]:
        """Read several users' states in one round trip (only their one writer changes them)."""
        pipe: Any = self._r.pipeline(transaction=False)
        for user_id in user_ids:
            # Raw HGETALL: a flat field/value list, no per-reply dict built by redis-py.
            pipe.execute_command("HGETALL", self._keys.user_state(user_id))
            pipe.zrange(self._keys.user_seen(user_id), 0, -1, withscores=True)
        replies = pipe.execute()
        return {
            user_id: _interest(replies[2 * i], replies[2 * i + 1])
            for i, user_id in enumerate(user_ids)
        }

    def load_columns(self, user_ids: Sequence[str]) -> dict[str, InterestColumns]:
        """Several users' states as columns, one round trip: what a refresh reads."""
        pipe: Any = self._r.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.execute_command("HGETALL", self._keys.user_state(user_id))
        return {
            user_id: _columns(raw) for user_id, raw in zip(user_ids, pipe.execute(), strict=True)
        }

    def seen(self, user_id: str) -> set[str]:
        """Items the user touched recently (at most ``seen_max``)."""
        return {_text(x) for x in self._r.zrange(self._keys.user_seen(user_id), 0, -1)}

    def popular(self, n: int, now_ms: int | None = None) -> list[tuple[str, float]]:
        """Return the ``n`` most popular items with decayed counts at ``now_ms`` (default: now)."""
        if n < 1:
            return []
        now = _now_ms() if now_ms is None else now_ms
        rows = self._r.zrevrange(self._keys.popularity(), 0, n - 1, withscores=True)
        return [(_text(item), decay_score(float(s), now, self._params)) for item, s in rows]

    def popular_raw(self, n: int) -> list[tuple[str, float]]:
        """The ``n`` most popular items with their stored (undecayed) scores.

        Decay scales every score alike, so whoever normalises by the largest may skip it.
        """
        if n < 1:
            return []
        rows = self._r.execute_command("ZREVRANGE", self._keys.popularity(), 0, n - 1, "WITHSCORES")
        return _pairs(rows)

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

    def co_neighbours_raw(
        self, item_ids: Sequence[str], n: int
    ) -> dict[str, list[tuple[str, float]]]:
        """``co_neighbours`` without the decay to now: stored scores, one round trip.

        Decaying multiplies every stored score by the same factor ``2 ** -((now - T0) / h)``,
        so whoever normalises by the largest score (the ranking does) can skip it.
        """
        if n < 1 or not item_ids:
            return {i: [] for i in item_ids}
        pipe: Any = self._r.pipeline(transaction=False)
        for item in item_ids:
            # A raw command: redis-py's reply callback would build float pairs one by one.
            pipe.execute_command("ZREVRANGE", self._keys.cooccurrence(item), 0, n - 1, "WITHSCORES")
        return {item: _pairs(reply) for item, reply in zip(item_ids, pipe.execute(), strict=True)}

    def write_recs(self, recs: Recommendations) -> None:
        """Cache the user's latest list for pull reads."""
        self._r.set(self._keys.user_recs(recs.user_id), encode_recs(recs))

    def write_recs_many(self, lists: Sequence[Recommendations]) -> None:
        """Cache several users' lists in one pipeline."""
        if not lists:
            return
        pipe = self._r.pipeline(transaction=False)
        for recs in lists:
            pipe.set(self._keys.user_recs(recs.user_id), encode_recs(recs))
        pipe.execute()

    def write_recs_payloads(self, payloads: Sequence[tuple[str, bytes]]) -> None:
        """Cache lists already in their wire form, (user_id, JSON bytes), in one pipeline."""
        if not payloads:
            return
        pipe = self._r.pipeline(transaction=False)
        for user_id, payload in payloads:
            pipe.set(self._keys.user_recs(user_id), zlib.compress(payload, 6))
        pipe.execute()

    def read_recs(self, user_id: str) -> Recommendations | None:
        """Read the user's cached list, if one was written."""
        return read_cached_recs(self._r, self._keys, user_id)

    def memory_breakdown(self, user_id: str) -> MemoryBreakdown:
        """MEMORY USAGE (exact, SAMPLES 0) of each of the user's keys."""
        pipe = self._r.pipeline(transaction=False)
        for key in (
            self._keys.user_state(user_id),
            self._keys.user_seen(user_id),
            self._keys.user_applied(user_id),
            self._keys.user_recs(user_id),
        ):
            pipe.memory_usage(key, samples=0)
        state, seen, applied, recs = (int(x or 0) for x in pipe.execute())
        return MemoryBreakdown(state, seen, applied, recs)

    def memory_usage(self, user_id: str) -> int:
        """Bytes Redis uses for all of the user's keys."""
        return self.memory_breakdown(user_id).total


def _interest(raw: dict[Any, Any] | list[Any], seen_rows: list[tuple[Any, float]]) -> UserInterest:
    """Parse a state hash (see ``_columns``) with each item's latest time from the seen set."""
    seen_ts = {_text(item): int(ts) for item, ts in seen_rows}
    cols = _columns(raw)
    weights = zip(cols.item_ids, cols.log_long.tolist(), cols.log_short.tolist(), strict=True)
    return UserInterest(
        tuple(ItemWeight(i, lo, sh, seen_ts.get(i, 0)) for i, lo, sh in weights),
        cols.last_ts_ms,
        cols.n_events,
    )


_WEIGHTS = np.dtype([("tag", "u1"), ("long", "<f8"), ("short", "<f8")])
"""One stored item value: tag 1, then the long- and short-term log weights."""


def _packed_columns(reply: list[Any]) -> InterestColumns:
    """Parse the state the apply script returns: ids (newline-joined), weights, last_ts, n."""
    ids_blob, weights_blob, last_ts, n = reply
    ids = ids_blob.decode("utf-8").split("\n") if ids_blob else []
    rec = np.frombuffer(weights_blob, dtype=_WEIGHTS)
    if len(ids) != len(rec):
        raise ValueError("state reply has different numbers of items and weights")
    return InterestColumns(ids, rec["long"].copy(), rec["short"].copy(), int(last_ts), int(n))


def _weights(value: bytes) -> tuple[float, float]:
    """An item's stored (long, short) log weights: binary, or text from earlier versions."""
    if value[:1] == b"\x01" and len(value) == _WEIGHTS.itemsize:
        rec = np.frombuffer(value, dtype=_WEIGHTS)[0]
        return float(rec["long"]), float(rec["short"])
    long_, short = value.split()
    return float(long_), float(short)


def _columns(raw: dict[Any, Any] | list[Any]) -> InterestColumns:
    """Parse a state hash (HGETALL as a dict or a flat list) into columns sorted by item id."""
    pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
    items: list[tuple[str, tuple[float, float]]] = []
    last_ts = n = 0
    for k, v in pairs:
        name = k.decode("utf-8") if isinstance(k, bytes) else k
        if name.startswith("i:"):
            items.append((name[2:], _weights(v if isinstance(v, bytes) else v.encode())))
        elif name == "last_ts":
            last_ts = int(v)
        elif name == "n":
            n = int(v)
    items.sort()
    logs = np.array([w for _, w in items], dtype=np.float64).reshape(-1, 2)
    return InterestColumns([i for i, _ in items], logs[:, 0].copy(), logs[:, 1].copy(), last_ts, n)


def encode_recs(recs: Recommendations) -> bytes:
    """Encode a list for the cache: its JSON, zlib-compressed (RFC 1950)."""
    # A 20-item list is ~1.7 KB of JSON and ~0.5 KB compressed: the difference is most of
    # the per-user Redis budget. A zlib stream never starts with "{", so readers can tell.
    return zlib.compress(recs.to_json_bytes(), 6)


def decode_recs(raw: bytes | str) -> Recommendations:
    """Parse a cached list (compressed or plain JSON); ValueError if it is neither."""
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if not data.startswith(b"{"):
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(data, MAX_RECS_JSON_BYTES)
        except zlib.error as exc:
            raise ValueError(f"cached recommendations are not zlib or JSON: {exc}") from exc
        if inflater.unconsumed_tail:
            raise ValueError(f"cached recommendations exceed {MAX_RECS_JSON_BYTES} bytes")
    return Recommendations.from_json_bytes(data)


def read_cached_recs(
    client: redis.Redis[Any], keys: RedisKeys, user_id: str
) -> Recommendations | None:
    """Read one user's cached list (pull reads: ``visrec recs``)."""
    raw = client.get(keys.user_recs(user_id))
    return None if raw is None else decode_recs(raw)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000

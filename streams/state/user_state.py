"""Users' interest state in Redis: idempotent per-event updates, read back in the same call.

Per event, a Lua function (``lua/apply_events.lua`` calls it for each event of one user's part
of a batch: one script call per user) touches only that user's hash-tagged keys
(``user_state``, ``user_seen``, ``user_applied``, ``user_outbox``) and atomically: skips an
``event_id`` already applied; else merges the event into the item's two log weights
(``models.interest``), updates the seen set and trims it (with the trimmed items' weights),
records the ``event_id``, and pushes the event's popularity and co-occurrence increments (with
the items the user touched within ``co_window_s`` of it, on either side: a symmetric window
counts a pair once whichever event is applied second) to the user's outbox. So a redelivered
event changes nothing: at-least-once delivery, exactly-once effect. The reply carries the
outbox, which ``streams.state.signals`` drains into the global sets, also exactly once.

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
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from redis.cluster import RedisCluster

from models.interest import (
    InterestColumns,
    InterestParams,
    ItemWeight,
    UserInterest,
    log_increment,
)
from schemas import RedisKeys, UserEvent
from streams.exceptions import UserStateError
from streams.settings import InterestSettings
from streams.state.lua import lua, run_script
from streams.state.signals import (
    Pending,
    Signals,
    SignalStore,
    event_increments,
    increment_field,
)

# Most events of one user applied by one script call.
MAX_EVENTS_PER_CALL = 256


def _calls(events: Sequence[tuple[UserEvent, int, int]]) -> list[tuple[str, list[int]]]:
    """One script call per user (per ``MAX_EVENTS_PER_CALL`` of their events), in order."""
    chunk = MAX_EVENTS_PER_CALL
    by_user: dict[str, list[int]] = defaultdict(list)
    for pos, (ev, _, _) in enumerate(events):
        by_user[ev.user_id].append(pos)
    return [
        (user_id, positions[start : start + chunk])
        for user_id, positions in by_user.items()
        for start in range(0, len(positions), chunk)
    ]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


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
    """Applies events to users' interest state and reads it."""

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
        co_max_per_event: int,
        popular_max: int,
    ) -> None:
        """Bounds: ``seen_max`` items and ``applied_max`` event ids per user; neighbour lists."""
        if seen_max < 1 or applied_max < 1:
            raise ValueError("seen_max and applied_max must be >= 1")
        if not (math.isfinite(co_window_s) and co_window_s >= 0) or co_max_per_event < 0:
            raise ValueError("co_window_s and co_max_per_event must be finite and >= 0")
        self._r = client
        self._keys = keys
        self._params = params
        self._seen_max = seen_max
        self._applied_max = applied_max
        self._co_window_ms = round(co_window_s * 1000)
        self._co_max_per_event = co_max_per_event
        self._cluster = isinstance(client, RedisCluster)
        self._script = client.register_script(lua("apply_events"))
        self.signals = SignalStore(client, keys, params, co_max_neighbours, popular_max)
        """Popularity and co-occurrence, which the applied events feed."""

    @classmethod
    def from_settings(
        cls, client: redis.Redis[Any], keys: RedisKeys, settings: InterestSettings
    ) -> UserStateStore:
        """Build a store configured by the interest settings."""
        return cls(
            client,
            keys,
            settings.interest_params(),
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

        The global signals are drained too. Raises ``UserStateError`` after applying everything
        else (signals included) if Redis rejected some events.
        """
        applied, signals, _ = self.apply_and_read(events)
        self.signals.write(signals)
        return applied

    def apply_and_read(
        self, events: Sequence[tuple[UserEvent, int, int]]
    ) -> tuple[list[bool], Signals, dict[str, InterestColumns]]:
        """Apply events (in order per user) and read back every touched user's state.

        One script call per user (per ``MAX_EVENTS_PER_CALL`` of their events): a user's keys
        share a slot, and per-call overhead, not the work, dominates. The call's reply ends
        with the user's state after the events, as columns (in the hash's order, not sorted:
        the refresh takes any order): what it reads, without a second round trip. The signals
        are the touched users' outbox entries, for ``signals.write`` to drain.
        """
        if not events:
            return [], [], {}
        calls = _calls(events)
        pipe = self._r.pipeline(transaction=False)
        for user_id, positions in calls:
            self._queue_apply(pipe, user_id, [events[pos][0] for pos in positions])
        replies = pipe.execute(raise_on_error=False)
        results: list[Any] = [None] * len(events)
        states: dict[str, InterestColumns] = {}
        outboxes: dict[str, Signals] = {}
        for (user_id, positions), reply in zip(calls, replies, strict=True):
            if isinstance(reply, Exception):
                for pos in positions:
                    results[pos] = reply
                continue
            k = len(positions)
            for j, pos in enumerate(positions):
                results[pos] = reply[j]
            states[user_id] = _packed_columns(reply[k : k + 4])
            # The user's whole outbox: a later call of the same user (a long run of events is
            # split) returns everything an earlier one did, and more.
            outboxes[user_id] = [Pending.parse(user_id, entry) for entry in reply[k + 4 :]]
        applied: list[bool] = []
        failures: list[tuple[int, int, str]] = []
        for (_, partition, offset), res in zip(events, results, strict=True):
            if isinstance(res, Exception):
                failures.append((partition, offset, str(res)))
                applied.append(False)
            else:
                applied.append(res == 1)  # 0: already applied
        pending = [p for entries in outboxes.values() for p in entries]
        if failures:
            self.signals.write(pending)  # the others' increments count now (exactly once)
            raise UserStateError(failures, applied)
        return applied, pending, states

    def _queue_apply(self, pipe: Any, user_id: str, events: list[UserEvent]) -> None:
        args: list[Any] = [
            self._seen_max,
            self._applied_max,
            self._co_window_ms,
            self._co_max_per_event,
        ]
        for ev in events:
            inc_long, inc_short = log_increment(ev.type, ev.ts_ms, self._params)
            args += (
                ev.event_id,
                ev.item_id,
                str(ev.ts_ms),
                repr(inc_long),
                repr(inc_short),
                increment_field(*event_increments(ev.type, ev.ts_ms, self._params)),
            )
        keys = [
            self._keys.user_state(user_id),
            self._keys.user_seen(user_id),
            self._keys.user_applied(user_id),
            self._keys.user_outbox(user_id),
        ]
        run_script(pipe, self._script, keys, args, self._cluster)

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

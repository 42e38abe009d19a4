"""Each user's latest list in Redis, for pull reads: zlib-compressed JSON (RFC 1950).

A 20-item list is ~1.7 KB of JSON and ~0.5 KB compressed: the difference is most of the
per-user Redis budget. A zlib stream never starts with "{", so readers accept plain JSON too.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from schemas import Recommendations, RedisKeys

COLD_USER_ID = "*"
"""The ``user_id`` the cold list is stored with (``RedisKeys.cold_recs``): readers put the
asking user's id in its place."""

# 1000 items (the contract's maximum) of generous size: bounds what a cached value inflates to.
MAX_RECS_JSON_BYTES = 4 * 1024 * 1024


class RecsCache:
    """Writes and reads the cached lists (``RedisKeys.user_recs``)."""

    def __init__(self, client: redis.Redis[Any], keys: RedisKeys) -> None:
        """Lists under ``keys``."""
        self._r = client
        self._keys = keys

    def write(self, recs: Recommendations) -> None:
        """Cache one user's latest list."""
        self._r.set(self._keys.user_recs(recs.user_id), encode_recs(recs))

    def write_many(self, lists: Sequence[Recommendations]) -> None:
        """Cache several users' lists in one pipeline."""
        self.write_payloads([(recs.user_id, recs.to_json_bytes()) for recs in lists])

    def write_payloads(
        self,
        payloads: Sequence[tuple[str, bytes]],
        cold: bytes | None = None,
        ages: Sequence[ListAge] = (),
    ) -> None:
        """Cache lists already in their wire form, (user_id, JSON bytes), in one pipeline.

        ``cold``: the list for users with none of their own (``RedisKeys.cold_recs``).
        ``ages``: when lists were ranked, recorded for ``stale`` (``RedisKeys.list_ages``).
        """
        if not payloads and cold is None and not ages:
            return
        pipe = self._r.pipeline(transaction=False)
        for user_id, payload in payloads:
            pipe.set(self._keys.user_recs(user_id), zlib.compress(payload, 6))
        if cold is not None:
            pipe.set(self._keys.cold_recs(), zlib.compress(cold, 6))
        for partition, members in _by_partition(ages).items():
            pipe.zadd(self._keys.list_ages(partition), dict(members))
        pipe.execute()

    def stale(
        self, partitions: Sequence[int], before_ms: int, n: int, exclude: Collection[str] = ()
    ) -> list[ListAge]:
        """Users of ``partitions`` whose list was ranked before ``before_ms``, oldest first.

        At most ``n``, none of ``exclude``; one round trip.
        """
        pipe = self._r.pipeline(transaction=False)
        for p in partitions:
            key = self._keys.list_ages(p)
            pipe.zrangebyscore(key, "-inf", f"({before_ms}", 0, n + len(exclude), True, int)
        found = [
            ListAge(p, _text(user), at)
            for p, rows in zip(partitions, pipe.execute(), strict=True)
            for user, at in rows
        ]
        found = [a for a in found if a.user_id not in exclude]
        found.sort(key=lambda a: (a.at_ms, a.partition, a.user_id))
        return found[:n]

    def forget_ages(self, ages: Sequence[ListAge]) -> None:
        """Drop users from the list-age index (idle for too long: no more re-ranking)."""
        pipe = self._r.pipeline(transaction=False)
        for partition, members in _by_partition(ages).items():
            pipe.zrem(self._keys.list_ages(partition), *(u for u, _ in members))
        pipe.execute()

    def triggers(self, user_ids: Sequence[str]) -> list[str | None]:
        """The ``trigger_event_id`` of each user's cached list.

        None: no list, a list answering no event, or a value that is not a list (written by
        another tool): the worker then ranks the user again without a trigger, never fails.
        """
        pipe = self._r.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.get(self._keys.user_recs(user_id))
        return [_trigger(raw) for raw in pipe.execute()]

    def read_cold(self) -> Recommendations | None:
        """The cold list, if a worker wrote one (``user_id`` is ``COLD_USER_ID``)."""
        raw = self._r.get(self._keys.cold_recs())
        return None if raw is None else decode_recs(raw)

    def read(self, user_id: str) -> Recommendations | None:
        """The user's cached list, if one was written."""
        return read_cached_recs(self._r, self._keys, user_id)


@dataclass(frozen=True, slots=True)
class ListAge:
    """When a user's cached list was ranked (event time), under their events partition."""

    partition: int
    user_id: str
    at_ms: int


def _by_partition(ages: Sequence[ListAge]) -> dict[int, list[tuple[str, int]]]:
    out: dict[int, list[tuple[str, int]]] = {}
    for a in ages:
        out.setdefault(a.partition, []).append((a.user_id, a.at_ms))
    return out


def _trigger(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    try:
        return decode_recs(raw).trigger_event_id
    except ValueError:  # not zlib or JSON, or not a valid list (pydantic's errors are too)
        return None


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8") if isinstance(raw, bytes) else raw


def encode_recs(recs: Recommendations) -> bytes:
    """Encode a list for the cache: its JSON, zlib-compressed."""
    return zlib.compress(recs.to_json_bytes(), 6)


def inflate_recs(raw: bytes | str) -> bytes:
    """A cached list's JSON bytes (compressed or plain); ValueError if it is neither."""
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if data.startswith(b"{"):
        return data
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(data, MAX_RECS_JSON_BYTES)
    except zlib.error as exc:
        raise ValueError(f"cached recommendations are not zlib or JSON: {exc}") from exc
    if inflater.unconsumed_tail:
        raise ValueError(f"cached recommendations exceed {MAX_RECS_JSON_BYTES} bytes")
    if not data.startswith(b"{"):
        raise ValueError("cached recommendations inflate to something else than a JSON object")
    return data


def decode_recs(raw: bytes | str) -> Recommendations:
    """Parse a cached list (compressed or plain JSON); ValueError if it is neither."""
    return Recommendations.from_json_bytes(inflate_recs(raw))


def read_cached_recs(
    client: redis.Redis[Any], keys: RedisKeys, user_id: str
) -> Recommendations | None:
    """Read one user's cached list (pull reads: ``visrec recs``)."""
    raw = client.get(keys.user_recs(user_id))
    return None if raw is None else decode_recs(raw)

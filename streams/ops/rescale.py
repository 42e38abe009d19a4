"""The half-lives the stored signals decay with, and changing them on a running shop.

Popularity and co-occurrence are stored as sums of ``w * 2 ** ((t - T0) / h)``
(``streams.state.signals``): a score written under one half-life means nothing under another.
Changing ``interest.half_life_popularity_s`` or ``interest.half_life_co_s`` and restarting would
mix two scales in one set (lengthening a half-life makes every new increment count next to
nothing against the stored ones). So:

- the store records the half-lives its signals were written with (``RedisKeys.
  signal_half_lives``): the first interest worker writes them (``claim``), and every later one
  refuses to start when its settings differ (``HalfLifeMismatch``);
- ``rescale`` converts every stored score to new half-lives. Each score keeps its decayed count
  at the moment of the conversion, ``S' = S * 2 ** (E_new(now) - E_old(now))`` with
  ``E(t) = (t - T0) / h`` (capped as ``score_increment`` caps it); from then on it decays
  with the new half-life. The shape of the history before that moment stays as it decayed.

``rescale`` first drains every user's outbox (entries hold increments at the old scale), then
multiplies each set in one script call (``RESCALE_CHUNK`` sets per round trip), then records
the new half-lives. It must run with no
interest worker consuming (``visrec signals rescale`` checks the consumer group): a worker
draining meanwhile would add old-scale increments to rescaled sets.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from redis.cluster import RedisCluster

from models.interest import MAX_SCORE_EXPONENT, T0_MS
from schemas import RedisKeys
from streams.exceptions import HalfLifeMismatch
from streams.state.lua import lua, run_script
from streams.state.redis import connect_redis
from streams.state.retry import RETRY_FIRST_S, RETRY_MAX_S
from streams.state.signals import SignalStore

if TYPE_CHECKING:
    from streams.settings import InterestSettings, Settings

log = logging.getLogger(__name__)

DRAIN_CHUNK = 500
"""Users whose outboxes one drain call takes."""
RESCALE_CHUNK = 500
"""Co-occurrence sets rescaled per round trip (one script call each, pipelined)."""


@dataclass(frozen=True, slots=True)
class HalfLives:
    """The half-lives (seconds) of popularity and of co-occurring pairs."""

    popularity_s: float
    co_s: float

    def __post_init__(self) -> None:
        for h in (self.popularity_s, self.co_s):
            if not (math.isfinite(h) and h > 0):
                raise ValueError(f"half-lives must be finite and > 0, got {h}")

    @classmethod
    def of(cls, interest: InterestSettings) -> HalfLives:
        """The half-lives ``interest`` configures."""
        return cls(interest.half_life_popularity_s, interest.half_life_co_s)

    def __str__(self) -> str:
        return f"popularity {self.popularity_s / 86400:g} d, pairs {self.co_s / 86400:g} d"

    def fields(self) -> dict[str | bytes, bytes | float | int | str]:
        """The hash fields they are stored as (``repr``: the float comes back exactly)."""
        return {"popularity": repr(self.popularity_s), "co": repr(self.co_s)}


@dataclass(frozen=True, slots=True)
class RescaleReport:
    """What ``rescale`` did."""

    before: HalfLives
    after: HalfLives
    drained_users: int
    popularity_factor: float
    co_factor: float
    co_sets: int
    """Co-occurrence sets rescaled (0 when the pairs' half-life did not change)."""
    members: int
    """Scores rescaled, popularity and pairs together."""


def recorded(client: redis.Redis[Any], keys: RedisKeys) -> HalfLives | None:
    """The half-lives the stored signals were written with (None: none recorded yet)."""
    raw = client.hmget(keys.signal_half_lives(), ["popularity", "co"])
    if raw[0] is None or raw[1] is None:
        return None
    return HalfLives(float(raw[0]), float(raw[1]))


def claim(client: redis.Redis[Any], keys: RedisKeys, mine: HalfLives) -> HalfLives:
    """Record ``mine`` if nothing is recorded; raise ``HalfLifeMismatch`` if other ones are.

    A worker calls this before it writes a signal. Returns what is recorded.
    """
    key = keys.signal_half_lives()
    for name, value in mine.fields().items():
        client.hsetnx(key, name, value)
    found = recorded(client, keys)
    if found != mine:
        raise HalfLifeMismatch(
            f"the signals in Redis ({key}) decay with half-lives of {found or 'none'}, this "
            f"worker is configured with {mine}: stop every interest worker and run "
            "`visrec signals rescale` to convert them, or configure the recorded ones "
            "(VISREC_INTEREST__HALF_LIFE_POPULARITY_S, VISREC_INTEREST__HALF_LIFE_CO_S)"
        )
    return found


def claim_configured(settings: Settings) -> HalfLives:
    """``claim`` the configured half-lives for a starting worker, waiting for Redis.

    Like every worker step, the wait for Redis is unbounded (``streams.state.retry``): a
    worker started before Redis answers starts once it does.
    """
    mine = HalfLives.of(settings.interest)
    keys = RedisKeys(settings.redis.namespace)
    client = connect_redis(settings.redis)
    wait = RETRY_FIRST_S
    try:
        while True:
            try:
                return claim(client, keys, mine)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("Redis not answering (%s); retrying in %.1f s", exc, wait)
                time.sleep(wait)
                wait = min(2 * wait, RETRY_MAX_S)
    finally:
        client.close()


def rescale_factor(now_ms: int, old_s: float, new_s: float) -> float:
    """``2 ** (E_new(now) - E_old(now))``: what keeps a score's decayed count at ``now_ms``."""
    if old_s == new_s:
        return 1.0

    def exponent(h: float) -> float:
        return min((int(now_ms) - T0_MS) / (h * 1000.0), MAX_SCORE_EXPONENT)

    return math.pow(2.0, exponent(new_s) - exponent(old_s))


def rescale(
    client: redis.Redis[Any],
    keys: RedisKeys,
    store: SignalStore,
    old: HalfLives,
    new: HalfLives,
    now_ms: int,
    chunk_size: int = RESCALE_CHUNK,
) -> RescaleReport:
    """Drain every outbox, convert every stored score from ``old`` to ``new``, record ``new``.

    ``store`` drains the outboxes (their entries carry their own increments). Run with no
    interest worker consuming. ``chunk_size``: co-occurrence sets per round trip.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    drained = drain_all(client, keys, store)
    f_pop = rescale_factor(now_ms, old.popularity_s, new.popularity_s)
    f_co = rescale_factor(now_ms, old.co_s, new.co_s)
    for f in (f_pop, f_co):
        if not (math.isfinite(f) and f > 0):
            raise ValueError(f"rescale factor {f} out of range (half-lives {old} -> {new})")
    script = client.register_script(lua("rescale_zset"))
    members = 0
    if f_pop != 1.0:
        members += int(script(keys=[keys.popularity()], args=[repr(f_pop)]))
    co_sets = 0
    if f_co != 1.0:
        found = client.scan_iter(match=keys.cooccurrence_pattern(), count=1000)
        for sets in _chunks(found, chunk_size):
            members += _rescale_sets(client, script, sets, f_co)
            co_sets += len(sets)
    client.hset(keys.signal_half_lives(), mapping=new.fields())
    return RescaleReport(old, new, drained, f_pop, f_co, co_sets, members)


def _chunks(keys: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``keys`` (a SCAN) in lists of up to ``size``."""
    chunk: list[Any] = []
    for key in keys:
        chunk.append(key)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _rescale_sets(client: redis.Redis[Any], script: Any, sets: list[Any], factor: float) -> int:
    """Multiply every score of ``sets`` by ``factor``: one pipelined round trip."""
    pipe = client.pipeline(transaction=False)
    cluster = isinstance(client, RedisCluster)
    for key in sets:
        run_script(pipe, script, [key], [repr(factor)], cluster)
    return sum(int(n) for n in pipe.execute())


def drain_all(client: redis.Redis[Any], keys: RedisKeys, store: SignalStore) -> int:
    """Drain every user's outbox into the global sets; returns the users drained."""
    prefix, suffix = f"{keys.root}:{{u:", "}:outbox"
    drained = 0
    outboxes = client.scan_iter(match=keys.outbox_pattern(), count=1000)
    for chunk in _chunks(outboxes, DRAIN_CHUNK):
        texts = [k.decode() if isinstance(k, bytes) else str(k) for k in chunk]
        drained += _drain(store, [t[len(prefix) : -len(suffix)] for t in texts])
    return drained


def _drain(store: SignalStore, users: list[str]) -> int:
    pending = store.read_outboxes(users)
    if pending:
        store.write(pending)
    return len({p.user_id for p in pending})

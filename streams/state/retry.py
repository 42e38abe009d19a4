"""Waiting out Redis: one retry loop for every worker's Redis steps.

A worker never crashes and never acknowledges a batch because Redis is away (restarting,
loading its AOF, a network blip): the step is retried with capped exponential backoff until
it succeeds, then the batch goes on. So every step given to ``until_redis_answers`` must be
idempotent: the user-state script skips recorded event ids, the signal drain removes what it
adds, vectors and cached lists are plain overwrites. redis-py's own ``Retry`` retries a
command a fixed number of times on the calling thread; here the wait is unbounded and runs
off the event loop, so heartbeats, the item-vector consumer and ``/metrics`` keep going.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import redis
from prometheus_client import Counter

from streams.exceptions import DrainConflict, UserStateError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors that say "Redis is not there right now", not "this input is bad": the first two
# cover refused/closed connections and LOADING (BusyLoadingError is a ConnectionError);
# UserStateError carries per-command errors of a pipeline that ran while Redis went away;
# DrainConflict, outboxes another worker drains too (a rebalance in flight).
TRANSIENT_REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    UserStateError,
    DrainConflict,
)
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0

REDIS_RETRIES = Counter(
    "visrec_redis_retries_total", "Batch steps retried because Redis was unavailable"
)


async def until_redis_answers(
    step: Callable[[Any], T],
    arg: Any,
    *,
    pool: Executor | None,
    on_loop: bool = True,
    first: Awaitable[T] | None = None,
) -> T:
    """Run ``step(arg)``, retrying with backoff while Redis is away.

    The first try runs on the event loop's thread if ``on_loop`` (a batch that is the agent's
    only work: a second thread would only trade the GIL back and forth with the consumer),
    else on ``pool``; or it is ``first``, already started. Retries run on ``pool`` (``None``:
    the loop's default executor), so that an unreachable Redis's socket timeouts never stall
    the loop.
    """
    loop = asyncio.get_running_loop()
    delay = RETRY_FIRST_S
    while True:
        try:
            if first is not None:
                started, first = first, None
                return await started
            if on_loop:
                return step(arg)
            return await loop.run_in_executor(pool, step, arg)
        except TRANSIENT_REDIS_ERRORS as exc:
            REDIS_RETRIES.inc()
            log.warning("redis unavailable (%s); retrying the step in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            on_loop = False


def in_background(step: Callable[[Any], T], arg: Any, pool: Executor | None) -> asyncio.Future[T]:
    """``until_redis_answers`` with its first try handed to ``pool`` right now."""
    first = asyncio.get_running_loop().run_in_executor(pool, step, arg)
    return asyncio.ensure_future(until_redis_answers(step, arg, pool=pool, first=first))

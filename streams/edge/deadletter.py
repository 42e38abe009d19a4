"""The dead-letter path: every rejected message is published with its reason and counted."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable
from typing import Any

import faust
import redis
from prometheus_client import Counter as PromCounter

from schemas import DeadLetter, RedisKeys
from streams.edge.codec import Rejected, Source, to_dead_letter

log = logging.getLogger(__name__)

DEAD_LETTERS = PromCounter(
    "visrec_dead_letters_total",
    "Messages sent to the dead-letter topic",
    ["source_topic", "error_code"],
)


class DeadLetterSink:
    """Publishes dead letters on the faust dead-letter topic and counts them (memory + Redis)."""

    def __init__(
        self,
        topic: faust.TopicT,
        redis_client: redis.Redis[Any] | None,
        keys: RedisKeys,
        max_payload_bytes: int,
    ) -> None:
        """Publish to ``topic``; keep running counts in Redis under ``keys.deadletter_counts()``."""
        self._topic = topic
        self._redis = redis_client
        self._keys = keys
        self._max_payload = max_payload_bytes
        self.counts: Counter[str] = Counter()

    def letter(self, source: Source, value: bytes | None, rejected: Rejected) -> DeadLetter:
        """Build the dead letter for a rejected message."""
        return to_dead_letter(
            source,
            value,
            rejected,
            now_ms=int(time.time() * 1000),
            max_payload_bytes=self._max_payload,
        )

    async def send(
        self, source: Source, value: bytes | None, rejected: Rejected
    ) -> Awaitable[object]:
        """Publish one dead letter; returns the delivery future (await it before acking)."""
        letter = self.letter(source, value, rejected)
        self.counts[rejected.code.value] += 1
        DEAD_LETTERS.labels(source.topic, rejected.code.value).inc()
        log.warning(
            "dead letter %s from %s[%d]@%d: %s",
            rejected.code.value,
            source.topic,
            source.partition,
            source.offset,
            rejected.error[:200],
        )
        if self._redis is not None:
            try:
                self._redis.hincrby(self._keys.deadletter_counts(), rejected.code.value, 1)
            except redis.RedisError as exc:  # counting must not stop the dead letter itself
                log.warning("could not count dead letter in redis: %s", exc)
        fut: Awaitable[object] = await self._topic.send(
            key=source.key, value=letter.to_json_bytes()
        )
        return fut

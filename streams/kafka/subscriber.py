"""Reading ``Recommendations`` as they arrive, for applications and the CLI."""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Iterator

from kafka import KafkaConsumer
from pydantic import ValidationError

from schemas import Recommendations
from streams.kafka.config import kafka_python_config
from streams.kafka.topics import Topics
from streams.settings import Settings


def subscribe(
    settings: Settings,
    user_ids: Collection[str] | None = None,
    *,
    from_beginning: bool = False,
    timeout_s: float | None = None,
    group_id: str | None = None,
) -> Iterator[Recommendations]:
    """Yield recommendation lists (optionally only for ``user_ids``) until ``timeout_s`` idle.

    Without ``group_id`` every subscriber sees every list (a private, uncommitted reader);
    with one, subscribers of the same group share the partitions as usual.
    """
    topic = Topics.from_settings(settings).recommendations.name
    wanted = set(user_ids) if user_ids else None
    consumer = KafkaConsumer(
        topic,
        **kafka_python_config(settings.kafka, client_suffix="subscriber"),
        group_id=group_id,
        enable_auto_commit=group_id is not None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        consumer_timeout_ms=int(timeout_s * 1000) if timeout_s is not None else float("inf"),
    )
    limits = settings.limits.to_limits()
    try:
        if group_id is None:
            _wait_for_assignment(consumer)
        for message in consumer:
            if wanted is not None and (message.key or b"").decode("utf-8", "replace") not in wanted:
                continue
            try:
                yield Recommendations.from_json_bytes(message.value, limits)
            except ValidationError:
                continue  # not ours to dead-letter: the producer side validated it
    finally:
        consumer.close()


def _wait_for_assignment(consumer: KafkaConsumer, timeout_s: float = 30.0) -> None:
    """Poll until partitions are assigned, so 'latest' is fixed before we return to callers."""
    deadline = time.monotonic() + timeout_s
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(timeout_ms=100)
    for tp in consumer.assignment():
        consumer.position(tp)


def unique_group(prefix: str = "visrec-sub") -> str:
    """A consumer group id nobody else uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"

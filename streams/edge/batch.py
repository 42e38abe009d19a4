"""Turning a batch of faust events into typed records, dead-lettering the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from schemas import Limits, Record
from streams.edge.codec import Rejected, Source, decode_message
from streams.edge.deadletter import DeadLetterSink
from streams.kafka.topics import TopicSpec

R = TypeVar("R", bound=Record)


@dataclass
class DecodedBatch(Generic[R]):
    """The records that validated, in arrival order, with their sources; pending sends."""

    ok: list[tuple[R, Source]] = field(default_factory=list)
    rejected: int = 0
    sends: list[Awaitable[object]] = field(default_factory=list)

    async def flush(self) -> None:
        """Wait until every dead letter of this batch is acknowledged by the broker."""
        if self.sends:
            await asyncio.gather(*self.sends)
            self.sends.clear()


def source_of(event: Any) -> Source:
    """The topic/partition/offset/key of a faust event."""
    msg = event.message
    return Source(topic=msg.topic, partition=msg.partition, offset=msg.offset, key=msg.key)


async def decode_batch(
    events: Sequence[Any],
    spec: TopicSpec[R],
    *,
    limits: Limits,
    dead_letters: DeadLetterSink,
) -> DecodedBatch[R]:
    """Validate every event of a batch of ``spec``'s topic; rejects are dead-lettered."""
    batch: DecodedBatch[R] = DecodedBatch()
    for event in events:
        source = source_of(event)
        value = event.message.value
        result = decode_message(spec, value, source.key, limits)
        if isinstance(result, Rejected):
            batch.rejected += 1
            batch.sends.append(await dead_letters.send(source, value, result))
        else:
            batch.ok.append((result, source))
    return batch

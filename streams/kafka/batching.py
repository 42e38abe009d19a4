"""Natural batching: a faust stream's events taken as they come, with no fixed wait.

``take_buffered`` yields whatever the stream has buffered when the previous batch is done,
up to ``max_batch``: one event per batch on an idle worker (no window to wait out), large
batches under load (a burst for one user is still one refresh). With ``fill_s`` it waits up to
that long after a batch's first event for the batch to fill (the embed worker: a GPU batch of
one wastes the device). Unlike faust's ``take_events``, a batch is acknowledged only after
the consumer of the generator asks for the next one, never when processing it raised, so an
event is committed only once its effects are written.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any


async def take_buffered(
    stream: Any, max_batch: int, fill_s: float = 0.0
) -> AsyncIterator[list[Any]]:
    """Batches of faust events from ``stream``: what is buffered now, at most ``max_batch``.

    With ``fill_s`` > 0, a batch waits up to that long from its first event to fill up.
    """
    if max_batch < 1 or not fill_s >= 0:
        raise ValueError("max_batch must be >= 1 and fill_s >= 0")
    events: list[Any] = []
    ready = asyncio.Event()  # the buffer holds at least one event
    room = asyncio.Event()  # the buffer may take more (not full, no batch in hand)
    room.set()
    full = asyncio.Event()  # the buffer holds max_batch events

    async def buffer(value: Any) -> Any:
        # Runs in the stream's passive drainer, once per event, in offset order.
        while not room.is_set():
            await room.wait()
        event = stream.current_event
        if event is None:
            raise RuntimeError("a buffered value has no current event")
        events.append(event)
        ready.set()
        if len(events) >= max_batch:
            room.clear()
            full.set()
        return value

    acks = stream.enable_acks
    stream.enable_acks = False  # we ack, after the batch is processed
    stream.add_processor(buffer)
    channel = stream.channel
    stream._enable_passive(channel)
    queue = channel.queue
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(ready)
            if not events:
                continue
            if fill_s > 0 and len(events) < max_batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(full.wait(), fill_s)
            # What the consumer already delivered joins this batch: the drainer moves one
            # queued event per turn of the loop, and the queue empties without any wait.
            while len(events) < max_batch and not queue.empty():
                await asyncio.sleep(0)
            room.clear()
            batch = list(events)
            yield batch
            events.clear()
            ready.clear()
            full.clear()
            for event in batch:
                await stream.ack(event)
            room.set()
    finally:
        stream.enable_acks = acks
        stream._processors.remove(buffer)

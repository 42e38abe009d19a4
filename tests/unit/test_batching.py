from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import faust
import pytest

from streams.kafka.batching import take_buffered

Body = Callable[[Any], AsyncIterator[Any]]
Feed = Callable[[Any], Awaitable[None]]


def run_agent(body: Body, feed: Feed) -> None:
    """Run an agent with ``body`` in faust's test context (no broker), fed by ``feed``."""

    async def main() -> None:
        app = faust.App(
            "t-batching", store="memory://", value_serializer="raw", loop=asyncio.get_running_loop()
        )
        topic = app.topic("t", value_type=bytes, value_serializer="raw")
        agent = app.agent(topic)(body)
        try:
            async with agent.test_context() as ag:
                await feed(ag)
        finally:
            # A stream makes the app's consumer, whose (never started) thread owns a loop.
            consumer = app._consumer
            if consumer is not None:
                consumer._thread.thread_loop.close()

    asyncio.run(main())


def test_what_is_queued_is_taken_at_once_up_to_max_batch_in_order() -> None:
    batches: list[list[bytes]] = []

    async def body(stream: Any) -> AsyncIterator[int]:
        async for events in take_buffered(stream, 3):
            batches.append([e.value for e in events])
            await asyncio.sleep(0.02)  # processing: later events queue up meanwhile
            yield len(events)

    async def feed(ag: Any) -> None:
        await asyncio.gather(*(ag.put(f"v{i}".encode()) for i in range(7)))
        await asyncio.sleep(0.2)

    run_agent(body, feed)
    assert batches == [[b"v0", b"v1", b"v2"], [b"v3", b"v4", b"v5"], [b"v6"]]


def test_an_event_alone_is_a_batch_of_one() -> None:
    batches: list[list[bytes]] = []

    async def body(stream: Any) -> AsyncIterator[int]:
        async for events in take_buffered(stream, 500):
            batches.append([e.value for e in events])
            yield len(events)

    async def feed(ag: Any) -> None:
        for i in range(3):  # one at a time: each is processed before the next arrives
            await ag.put(f"v{i}".encode())
            await asyncio.sleep(0.01)

    run_agent(body, feed)
    assert batches == [[b"v0"], [b"v1"], [b"v2"]]


def test_a_batch_is_acknowledged_only_after_it_was_processed() -> None:
    seen: list[tuple[list[bool], list[bool]]] = []

    async def body(stream: Any) -> AsyncIterator[int]:
        previous: list[Any] = []
        async for events in take_buffered(stream, 3):
            seen.append(([e.message.acked for e in events], [e.message.acked for e in previous]))
            previous = events
            await asyncio.sleep(0.02)
            yield len(events)

    async def feed(ag: Any) -> None:
        await asyncio.gather(*(ag.put(f"v{i}".encode()) for i in range(5)))
        await asyncio.sleep(0.2)

    run_agent(body, feed)
    assert seen == [([False] * 3, []), ([False] * 2, [True] * 3)]


def test_a_batch_whose_processing_raised_is_never_acknowledged() -> None:
    taken: list[Any] = []

    async def body(stream: Any) -> AsyncIterator[None]:
        async for events in take_buffered(stream, 10):
            taken.extend(events)
            raise RuntimeError("processing failed")
        yield None  # pragma: no cover

    async def feed(ag: Any) -> None:
        await ag.put(b"v0")
        await asyncio.sleep(0.05)

    with pytest.raises(RuntimeError, match="processing failed"):
        run_agent(body, feed)  # the test context hands the agent's crash to the producer
    assert taken and not any(e.message.acked for e in taken)


def test_max_batch_must_be_positive() -> None:
    async def run() -> None:
        async for _ in take_buffered(object(), 0):
            pass  # pragma: no cover

    with pytest.raises(ValueError):
        asyncio.run(run())


def test_with_fill_s_a_batch_waits_for_more_events_up_to_max_batch() -> None:
    batches: list[list[bytes]] = []

    async def body(stream: Any) -> AsyncIterator[int]:
        async for events in take_buffered(stream, 4, fill_s=0.3):
            batches.append([e.value for e in events])
            yield len(events)

    async def feed(ag: Any) -> None:
        for i in range(6):  # 20 ms apart: the first four fill a batch within the window
            await ag.put(f"v{i}".encode(), wait=False)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # the last two wait out the window, then go as they are

    run_agent(body, feed)
    assert batches == [[b"v0", b"v1", b"v2", b"v3"], [b"v4", b"v5"]]


def test_fill_s_must_not_be_negative() -> None:
    async def run() -> None:
        async for _ in take_buffered(object(), 1, fill_s=-1.0):
            pass  # pragma: no cover

    with pytest.raises(ValueError):
        asyncio.run(run())

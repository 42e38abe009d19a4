"""Baseline workers for bench/pipeline.py, on the same faust app as the interest worker.

``VISREC_BENCH_ROLE=passthrough`` (default): the interest worker minus the work. Same app
settings, same natural batching (``streams.kafka.batching.take_buffered``), the same decoding of
every event into ``UserEvent`` (dead letters included), and one message per distinct user of
a batch (its last event, as the worker emits one list per user) sent through the same raw
producer path; a batch is acknowledged after its sends, as the worker's is.

``VISREC_BENCH_ROLE=idle``: faust's own ceiling, an agent that takes
``take_events(max_batch, within=0.05)`` and does nothing with them.

``VISREC_BENCH_ROLE=raw``: the pass-through without faust: an aiokafka consumer in the same
consumer group layout (``<app_id>-raw``) that takes what ``getmany`` has buffered (up to
``interest.max_batch``), validates every event as the edge does (``decode_message``; the
benchmark sends no malformed events, so there is no dead-letter sink), sends one message per
distinct user with acks from all replicas, and commits once a second after the sends (faust's
commit interval here). It answers ``/readyz`` once it has partitions. What a worker outside
faust's stream machinery would start from.

``VISREC_BENCH_ROLE=interests-raw``: the interest worker's own batch procedure
(``workers.update_interests.InterestUpdater``, the same index feed, Redis state and ranking)
fed by that aiokafka loop instead of faust's agent, its lists sent through an aiokafka
producer: what the interest worker would measure outside faust's stream machinery. Its
``/metrics`` page serves the batch stages as the worker's does. A benchmark role only: it has
no rebalance handling beyond aiokafka's and no dead-letter topic (the benchmark sends no
malformed events; a rejected one would raise).
"""

from __future__ import annotations

import asyncio
import os
import time

# As ``visrec`` itself does (streams/cli): one BLAS thread, or the ranking's small products spin
# a second thread on the 2-core box.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import faust
from prometheus_client import generate_latest

from schemas import RedisKeys
from streams.edge.batch import decode_batch
from streams.edge.codec import Rejected, decode_message
from streams.edge.deadletter import DeadLetterSink
from streams.kafka.app import app_topics, create_app
from streams.kafka.batching import take_buffered
from streams.kafka.topics import Topics
from streams.observability import configure_logging, install
from streams.settings import Settings
from streams.state.redis import connect_redis


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, False)
    role = os.environ.get("VISREC_BENCH_ROLE", "passthrough")
    if role == "raw":
        asyncio.run(raw_passthrough(settings))
        return
    if role == "interests-raw":
        asyncio.run(raw_interests(settings))
        return
    app = create_app(settings, role)
    topics = app_topics(app, settings)
    out = topics["recommendations"]
    dead_letters = DeadLetterSink(
        topics["dead_letter"],
        connect_redis(settings.redis),
        RedisKeys(settings.redis.namespace),
        settings.limits.max_dead_letter_payload_bytes,
    )

    spec = Topics.from_settings(settings).events
    limits = settings.limits.to_limits()

    async def forward(events: list[Any]) -> None:
        batch = await decode_batch(events, spec, limits=limits, dead_letters=dead_letters)
        by_source = {(e.message.partition, e.message.offset): e for e in events}
        last: dict[str, Any] = {}
        for ev, src in batch.ok:
            last.pop(ev.user_id, None)
            last[ev.user_id] = by_source[(src.partition, src.offset)]
        producer = app.producer
        topic = out.get_topic_name()
        sends = list(batch.sends)
        for user_id, event in last.items():
            value = event.message.value
            sends.append(await producer.send(topic, user_id.encode(), value, None, None, None))
        await asyncio.gather(*sends)

    if role == "idle":

        @app.agent(topics["events"], name="idle")  # type: ignore[untyped-decorator]
        async def idle(stream: Any) -> None:
            async for _ in stream.take_events(settings.interest.max_batch, within=0.05):
                pass

    else:

        @app.agent(topics["events"], name="passthrough")  # type: ignore[untyped-decorator]
        async def passthrough(stream: Any) -> None:
            async for events in take_buffered(stream, settings.interest.max_batch):
                await forward(events)

    if settings.web_port is not None:
        install(app, lambda: True)
    worker = faust.Worker(
        app, loglevel=settings.log_level, redirect_stdouts=False, override_logging=False
    )
    worker.execute_from_commandline()


def _raw_consumer(settings: Settings, role: str) -> Any:
    """An aiokafka consumer of the events topic in the group ``<app_id>-<role>``."""
    from aiokafka import AIOKafkaConsumer

    k = settings.kafka
    return AIOKafkaConsumer(
        Topics.from_settings(settings).events.name,
        bootstrap_servers=k.bootstrap_servers,
        group_id=f"{settings.app_id}-{role}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=int(k.session_timeout_s * 1000),
        heartbeat_interval_ms=int(k.heartbeat_interval_s * 1000),
        request_timeout_ms=int(k.request_timeout_s * 1000),
    )


async def _raw_loop(
    settings: Settings, consumer: Any, handle: Callable[[list[Any]], Awaitable[None]]
) -> None:
    """Take what ``getmany`` has buffered (up to ``max_batch``), ``handle`` it, commit ~1/s."""
    committed = time.monotonic()
    while True:
        fetched = await consumer.getmany(timeout_ms=1000, max_records=settings.interest.max_batch)
        records = [m for messages in fetched.values() for m in messages]
        if records:
            await handle(records)
        if time.monotonic() - committed >= 1.0:
            await consumer.commit()  # every record handled so far, faust's interval here
            committed = time.monotonic()


async def raw_passthrough(settings: Settings) -> None:
    """The ``raw`` role (see the module docstring)."""
    from aiokafka import AIOKafkaProducer

    topics = Topics.from_settings(settings)
    spec, limits, out = topics.events, settings.limits.to_limits(), topics.recommendations.name
    consumer = _raw_consumer(settings, "raw")
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", linger_ms=0
    )
    await consumer.start()
    await producer.start()
    await _serve_readyz(settings.web_port, lambda: bool(consumer.assignment()))

    async def forward(records: list[Any]) -> None:
        last: dict[str, bytes] = {}
        for m in records:
            result = decode_message(spec, m.value, m.key, limits)
            if not isinstance(result, Rejected):
                last.pop(result.user_id, None)
                last[result.user_id] = m.value
        sends = [await producer.send(out, v, key=u.encode()) for u, v in last.items()]
        await asyncio.gather(*sends)

    await _raw_loop(settings, consumer, forward)


@dataclass(frozen=True, slots=True)
class _Message:
    """The fields of a faust message that the interest worker reads, from an aiokafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: float  # seconds, as faust's


@dataclass(frozen=True, slots=True)
class _Event:
    message: _Message


class _NoDeadLetters:
    """The dead-letter topic of the ``interests-raw`` role: the benchmark sends none."""

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("interests-raw has no dead-letter topic")


async def raw_interests(settings: Settings) -> None:
    """The ``interests-raw`` role (see the module docstring)."""
    from aiokafka import AIOKafkaProducer

    from streams.state.backend import RedisBackend
    from workers.item_index import IndexFeed
    from workers.update_interests import InterestUpdater

    feed = IndexFeed(settings, ThreadPoolExecutor(max_workers=1, thread_name_prefix="state"))
    index_task = asyncio.ensure_future(feed.run())
    await feed.ready.wait()
    out = Topics.from_settings(settings).recommendations.name
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", linger_ms=0
    )
    await producer.start()

    async def send(user_id: str, payload: bytes) -> Awaitable[object]:
        fut: Awaitable[object] = await producer.send(out, payload, key=user_id.encode("utf-8"))
        return fut

    keys = RedisKeys(settings.redis.namespace)
    sink = DeadLetterSink(cast(faust.TopicT, _NoDeadLetters()), None, keys, 1024)
    state = RedisBackend.from_settings(connect_redis(settings.redis), keys, settings.interest)
    updater = InterestUpdater(settings, feed, sink, send, state)
    consumer = _raw_consumer(settings, "interests-raw")
    await consumer.start()
    await _serve_readyz(settings.web_port, lambda: bool(consumer.assignment()))

    async def refresh(records: list[Any]) -> None:
        await updater.process(
            [
                _Event(_Message(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp / 1000))
                for m in records
            ]
        )

    try:
        await _raw_loop(settings, consumer, refresh)
    finally:
        index_task.cancel()


async def _serve_readyz(port: int | None, ready: Callable[[], bool]) -> None:
    """A minimal HTTP server: ``/readyz`` 200 once ``ready()`` (else 503), ``/metrics``."""
    if port is None:
        return

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        while (await reader.readline()).strip():
            pass
        path = line.split()[1] if len(line.split()) > 1 else b"/"
        body = b""
        if path == b"/readyz":
            status = b"200 OK" if ready() else b"503 Unavailable"
        elif path == b"/metrics":
            status, body = b"200 OK", generate_latest()
        else:
            status = b"404 Not Found"
        head = b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode()
        writer.write(head + b"\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    await asyncio.start_server(answer, "127.0.0.1", port)


if __name__ == "__main__":
    main()

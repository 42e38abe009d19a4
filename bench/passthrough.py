"""Baseline workers for bench/pipeline.py, on the same faust app as the interest worker.

``VISREC_BENCH_ROLE=passthrough`` (default): the interest worker minus the work. Same app
settings, same natural batching (``streams.kafka.batching.take_buffered``), the same decoding of
every event into ``UserEvent`` (dead letters included), and one message per distinct user of
a batch (its last event, as the worker emits one list per user) sent through the same raw
producer path; a batch is acknowledged after its sends, as the worker's is.

``VISREC_BENCH_ROLE=idle``: faust's own ceiling, an agent that takes
``take_events(max_batch, within=0.05)`` and does nothing with them.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import faust

from schemas import RedisKeys
from streams.edge.batch import decode_batch
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


if __name__ == "__main__":
    main()

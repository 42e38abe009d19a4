"""Baseline worker for bench/pipeline.py: forwards every event to the recommendations topic.

Same faust app settings, same micro-batching and the same topics as the interest worker, and
no work in between: what it costs is the broker + client round trip the pipeline figure
is measured against.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from streams.app import app_topics, create_app
from streams.observability import configure_logging, install
from streams.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, False)
    app = create_app(settings, "passthrough")
    topics = app_topics(app, settings)
    out = topics["recommendations"]

    @app.agent(topics["events"], name="passthrough")  # type: ignore[untyped-decorator]
    async def passthrough(stream: Any) -> None:
        batches = stream.take_events(
            settings.interest.max_batch, within=settings.interest.coalesce_ms / 1000
        )
        async for events in batches:
            sends = [await out.send(key=e.message.key, value=e.message.value) for e in events]
            await asyncio.gather(*sends)

    if settings.web_port is not None:
        install(app, lambda: True)
    worker = faust.Worker(
        app, loglevel=settings.log_level, redirect_stdouts=False, override_logging=False
    )
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()

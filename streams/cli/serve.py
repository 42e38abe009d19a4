"""``visrec serve``: the HTTP read API on its own (Redis only; see ``streams/api.py``)."""

from __future__ import annotations

import asyncio
import gc

import click
from aiohttp import web

try:
    import uvloop
except ImportError:  # not on this platform (pyproject: Linux and macOS only)
    uvloop = None  # type: ignore[assignment]

from streams.api import ReadApi, serve_app
from streams.observability import configure_logging
from streams.settings import Settings

DEFAULT_PORT = 8080


@click.command("serve")
@click.option("--port", type=int, default=None, help="Port (default: VISREC_WEB_PORT, else 8080).")
@click.option("--bind", default=None, help="Address (default: VISREC_WEB_BIND).")
def command(port: int | None, bind: str | None) -> None:
    """Serve GET /v1/users/{user_id}/recommendations from the Redis cache over HTTP."""
    settings = Settings()
    # uvloop's event loop answers the same request for much less CPU than asyncio's.
    if uvloop is not None:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    configure_logging(settings.log_level, settings.log_json)
    api = ReadApi.from_settings(settings.redis, settings.limits.to_limits())
    app = serve_app(api)
    # What start-up imported lives as long as the process: out of the collector's way, so
    # that a full collection walks only what requests allocate (measured: ~100 ms pauses
    # without this, bench/http_api.py).
    gc.collect()
    gc.freeze()
    web.run_app(
        app,
        host=bind or settings.web_bind,
        port=port or settings.web_port or DEFAULT_PORT,
        access_log=None,
        print=lambda text: click.echo(text, err=True),
    )

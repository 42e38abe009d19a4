"""``visrec serve``: the HTTP read API on its own (Redis only; see ``streams/api.py``)."""

from __future__ import annotations

import click
from aiohttp import web

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
    configure_logging(settings.log_level, settings.log_json)
    api = ReadApi.from_settings(settings.redis, settings.limits.to_limits())
    web.run_app(
        serve_app(api),
        host=bind or settings.web_bind,
        port=port or settings.web_port or DEFAULT_PORT,
        access_log=None,
        print=lambda text: click.echo(text, err=True),
    )

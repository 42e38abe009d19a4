"""``visrec worker embed|interests|all``: run worker processes."""

from __future__ import annotations

import logging

import click

from streams.app import create_app
from streams.settings import Settings


def build_app(settings: Settings, role: str) -> object:
    """A faust app with the agents of ``role`` registered."""
    app = create_app(settings, role)
    if role in ("embed", "all"):
        from workers.embed_products import register as register_embed

        register_embed(app, settings)
    if role in ("interests", "all"):
        from workers.update_interests import register as register_interests

        register_interests(app, settings)
    return app


@click.command("worker")
@click.argument("role", type=click.Choice(["embed", "interests", "all"]))
def command(role: str) -> None:
    """Run a worker: `embed` (product images), `interests` (user events), or `all` in one."""
    import faust

    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper().replace("WARN", "WARNING"))
    app = build_app(settings, role)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        redirect_stdouts=False,
        override_logging=False,
    )
    worker.execute_from_commandline()

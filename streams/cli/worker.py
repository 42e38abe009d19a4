"""``visrec worker embed|interests|all``: run worker processes."""

from __future__ import annotations

from collections.abc import Callable

import click
import faust

from streams.api import ReadApi
from streams.api import install as install_read_api
from streams.kafka.app import create_app
from streams.observability import configure_logging, install
from streams.settings import Settings


def build_app(settings: Settings, role: str) -> faust.App:
    """A faust app with the agents of ``role`` registered (and its web pages, if enabled)."""
    app = create_app(settings, role)
    checks: list[Callable[[], bool]] = []
    if role in ("embed", "all"):
        from workers.embed_products import register as register_embed

        checks.append(register_embed(app, settings))
    if role in ("interests", "all"):
        from workers.update_interests import register as register_interests

        feed = register_interests(app, settings)
        checks.append(feed.ready.is_set)
    if settings.web_port is not None:
        install(app, lambda: all(check() for check in checks))
        if role in ("interests", "all"):
            # The workers that write the lists also serve them (streams/api.py).
            install_read_api(
                app, ReadApi.from_settings(settings.redis, settings.limits.to_limits())
            )
    return app


@click.command("worker")
@click.argument("role", type=click.Choice(["embed", "interests", "all"]))
def command(role: str) -> None:
    """Run a worker: `embed` (product images), `interests` (user events), or `all` in one."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    if role in ("interests", "all"):
        from streams.exceptions import HalfLifeMismatch
        from streams.ops.rescale import claim_configured

        try:
            claim_configured(settings)  # before anything is written with them
        except HalfLifeMismatch as exc:
            raise click.ClickException(str(exc)) from None
    app = build_app(settings, role)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        redirect_stdouts=False,
        override_logging=False,
    )
    # SIGTERM: stop consuming, finish the batch in hand, commit, exit within this bound
    # (mode's Service attribute; the Worker takes no constructor argument for it).
    worker.shutdown_timeout = settings.shutdown_timeout_s
    worker.execute_from_commandline()

"""The Redis client every process uses, built from ``RedisSettings``.

Secrets are read from ``SecretStr`` only here, at the moment a client is built.
"""

from __future__ import annotations

from typing import Any

import redis

from streams.settings import RedisSettings


def redis_client_kwargs(settings: RedisSettings) -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis.from_url`` (ACL user, password, TLS CA)."""
    kwargs: dict[str, Any] = {"socket_timeout": settings.socket_timeout_s}
    if settings.username:
        kwargs["username"] = settings.username
    if settings.password is not None:
        kwargs["password"] = settings.password.get_secret_value()
    if settings.ssl_ca_certs is not None:
        kwargs["ssl_ca_certs"] = str(settings.ssl_ca_certs)
    return kwargs


def connect_redis(settings: RedisSettings) -> redis.Redis[Any]:
    """A Redis client for ``settings`` (bytes responses)."""
    return redis.Redis.from_url(settings.url, **redis_client_kwargs(settings))

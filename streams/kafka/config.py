"""Client configuration for kafka-python, aiokafka and faust from ``KafkaSettings``.

Secrets are read from ``SecretStr`` only here, at the moment a client is built.
"""

from __future__ import annotations

import ssl
from typing import Any

from streams.settings import KafkaSettings


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """A TLS context for SSL/SASL_SSL listeners, else None."""
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    ctx = ssl.create_default_context(
        cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
    )
    if settings.ssl_certfile and settings.ssl_keyfile:
        ctx.load_cert_chain(str(settings.ssl_certfile), str(settings.ssl_keyfile))
    return ctx


def _sasl(settings: KafkaSettings) -> dict[str, Any]:
    if settings.security_protocol not in ("SASL_PLAINTEXT", "SASL_SSL"):
        return {}
    password = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    return {
        "sasl_mechanism": settings.sasl_mechanism or "PLAIN",
        "sasl_plain_username": settings.sasl_username,
        "sasl_plain_password": password,
    }


def kafka_python_config(settings: KafkaSettings, client_suffix: str = "") -> dict[str, Any]:
    """Keyword arguments shared by kafka-python's producer, consumer and admin client."""
    cfg: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "client_id": f"{settings.client_id}-{client_suffix}"
        if client_suffix
        else settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": int(settings.request_timeout_s * 1000),
    }
    ctx = ssl_context(settings)
    if ctx is not None:
        cfg["ssl_context"] = ctx
    cfg.update(_sasl(settings))
    return cfg


def faust_broker_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Faust ``App`` keyword arguments for the broker connection and fast group joins."""
    import faust

    kwargs: dict[str, Any] = {
        "broker": ";".join(f"kafka://{s.strip()}" for s in settings.bootstrap_servers.split(",")),
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": settings.heartbeat_interval_s,
        "broker_request_timeout": settings.request_timeout_s,
        "broker_client_id": settings.client_id,
    }
    ctx = ssl_context(settings)
    if settings.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
        mechanism = settings.sasl_mechanism or "PLAIN"
        if mechanism == "PLAIN":
            kwargs["broker_credentials"] = faust.SASLCredentials(
                username=settings.sasl_username or "",
                password=password,
                ssl_context=ctx,
            )
        else:
            kwargs["broker_credentials"] = faust.SASLCredentials(
                username=settings.sasl_username or "",
                password=password,
                mechanism=mechanism,
                ssl_context=ctx,
            )
    elif ctx is not None:
        kwargs["broker_credentials"] = faust.SSLCredentials(ctx)
    return kwargs

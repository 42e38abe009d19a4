"""The faust ``App`` every worker runs in, built from ``Settings`` alone."""

from __future__ import annotations

from typing import Any

import faust

from streams.kafka.config import faust_broker_kwargs
from streams.kafka.topics import Topics, TopicSpec, product_topic_max_bytes
from streams.settings import Settings


def create_app(settings: Settings, role: str) -> faust.App:
    """A faust app for one worker role; its consumer group is ``<app_id>-<role>``."""
    web: dict[str, Any] = {"web_enabled": False}
    if settings.web_port is not None:
        web = {"web_enabled": True, "web_port": settings.web_port, "web_bind": settings.web_bind}
    return faust.App(
        f"{settings.app_id}-{role}",
        **faust_broker_kwargs(settings.kafka),
        # We declare and create topics ourselves (`visrec topics create`), never implicitly.
        topic_allow_declare=False,
        topic_disable_leader=True,
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=0,
        producer_acks=-1,
        producer_max_request_size=product_topic_max_bytes(settings) + 2_097_152,
        consumer_max_fetch_size=product_topic_max_bytes(settings) + 1_048_576,
        broker_commit_interval=1.0,
        stream_wait_empty=True,
        worker_redirect_stdouts=False,
        **web,
    )


def faust_topic(app: faust.App, spec: TopicSpec[Any]) -> faust.TopicT:
    """A raw-bytes faust topic for ``spec`` (payloads are decoded at the edge by us)."""
    return app.topic(
        spec.name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=spec.partitions,
    )


def app_topics(app: faust.App, settings: Settings) -> dict[str, faust.TopicT]:
    """All five topics as faust topics, by attribute name of ``Topics``."""
    topics = Topics.from_settings(settings)
    return {
        "events": faust_topic(app, topics.events),
        "products": faust_topic(app, topics.products),
        "item_vectors": faust_topic(app, topics.item_vectors),
        "recommendations": faust_topic(app, topics.recommendations),
        "dead_letter": faust_topic(app, topics.dead_letter),
    }

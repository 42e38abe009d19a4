"""Real local services for development, tests and CI: Apache Kafka (KRaft) and Redis."""

from __future__ import annotations

from streams.services.base import ServiceError, free_port, wait_until
from streams.services.kafka import KafkaServer
from streams.services.redis import RedisServer

__all__ = ["KafkaServer", "RedisServer", "ServiceError", "free_port", "wait_until"]

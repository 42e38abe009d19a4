"""Real local services for development, tests and CI: Apache Kafka (KRaft) and Redis."""

from __future__ import annotations

from streams.settings import Settings
from streams.tools.services.base import free_port, wait_until
from streams.tools.services.kafka import KafkaServer
from streams.tools.services.redis import RedisServer
from streams.tools.services.tansu import TansuServer

__all__ = [
    "KafkaServer",
    "RedisServer",
    "TansuServer",
    "free_port",
    "local_servers",
    "wait_until",
]


def _port(address: str) -> int:
    return int(address.split(",")[0].rsplit(":", 1)[1])


def _redis_port(url: str) -> int:
    hostport = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    return int(hostport.rsplit(":", 1)[1]) if ":" in hostport else 6379


def local_servers(
    settings: Settings, broker: str = "kafka"
) -> tuple[KafkaServer | TansuServer, RedisServer]:
    """The local servers that match the configured endpoints (``broker``: kafka or tansu)."""
    kport = _port(settings.kafka.bootstrap_servers)
    kafka: KafkaServer | TansuServer
    if broker == "tansu":
        kafka = TansuServer(settings.state_dir, port=kport)
    else:
        kafka = KafkaServer(settings.state_dir, port=kport)
    return kafka, RedisServer(settings.state_dir, port=_redis_port(settings.redis.url))

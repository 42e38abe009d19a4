"""The fault suite's own Kafka broker and Redis server, so that tests can restart them.

They replace the session's ``kafka_bootstrap`` and ``redis_base_url`` for tests in this folder
(``VISREC_TEST_KAFKA``/``VISREC_TEST_REDIS_URL`` are ignored here: an external server cannot be
restarted by a test). Both keep their data folders across restarts, so topics, committed
offsets and AOF-persisted keys survive.

Redis runs with ``appendfsync always``: a write is on disk before Redis replies, so a SIGKILLed
Redis restarts with every write the worker saw acknowledged. With the default ``everysec`` up
to a second of acknowledged writes can vanish in a crash, and a worker that already committed
the Kafka offsets of those events could never redeliver them: exactly-once effect across a
Redis crash needs ``always`` (or a replica with WAIT), which is what production should run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streams.tools.services import KafkaServer, RedisServer, free_port


@pytest.fixture(scope="module")
def fault_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    """A KRaft broker this module may stop and start (same ports, same data)."""
    server = KafkaServer(
        tmp_path_factory.mktemp("fault-kafka"), port=free_port(), controller_port=free_port()
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def fault_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis with AOF and ``appendfsync always`` this module may kill and restart."""
    server = RedisServer(
        tmp_path_factory.mktemp("fault-redis"), port=free_port(), appendfsync="always"
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def kafka_bootstrap(fault_kafka: KafkaServer) -> str:
    """The fault broker, for the shared ``settings`` fixture."""
    return fault_kafka.bootstrap


@pytest.fixture(scope="module")
def redis_base_url(fault_redis: RedisServer) -> str:
    """The fault Redis, for the shared ``redis_url``/``settings`` fixtures."""
    return fault_redis.url

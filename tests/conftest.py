"""Shared fixtures: real Apache Kafka and Redis for integration tests.

By default the session starts a local KRaft broker and a ``redis-server`` on free loopback
ports in a temporary state folder (the same launchers as ``visrec services up``). Set
``VISREC_TEST_KAFKA`` / ``VISREC_TEST_REDIS_URL`` to use servers already running, or
``VISREC_TEST_CONTAINERS=1`` to start them with testcontainers where a Docker engine exists.
Every test gets its own topic prefix and its own Redis database, cleaned up afterwards.
"""

from __future__ import annotations

import gc
import itertools
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streams.settings import KafkaSettings, RedisSettings, Settings, TopicSettings
from streams.tools.services import KafkaServer, RedisServer, free_port


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts or "faults" in parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("visrec-services")


def _containers_wanted() -> bool:
    return os.environ.get("VISREC_TEST_CONTAINERS") == "1"


@pytest.fixture(scope="session")
def redis_base_url(services_dir: Path) -> Iterator[str]:
    external = os.environ.get("VISREC_TEST_REDIS_URL")
    if external:
        yield external
        return
    if _containers_wanted():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
        return
    server = RedisServer(services_dir, port=free_port())
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(services_dir: Path) -> Iterator[str]:
    external = os.environ.get("VISREC_TEST_KAFKA")
    if external:
        yield external
        return
    if _containers_wanted():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    server = KafkaServer(services_dir, port=free_port(), controller_port=free_port())
    server.start()
    try:
        yield server.bootstrap
    finally:
        server.stop()


_DB_NUMBERS = itertools.cycle(range(1, 64))


@pytest.fixture
def redis_url(redis_base_url: str) -> Iterator[str]:
    """A Redis URL whose database is this test's alone (flushed before and after)."""
    base = redis_base_url.rsplit("/", 1)[0]
    url = f"{base}/{next(_DB_NUMBERS)}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of this test's own Redis database."""
    r = redis.Redis.from_url(redis_url)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def topic_prefix() -> str:
    """Topic names unique to this test."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str, topic_prefix: str, tmp_path: Path) -> Settings:
    """Settings pointing at the test's Kafka, Redis database and topics, small partition counts."""
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
        redis=RedisSettings(url=redis_url),
        topics=TopicSettings(
            prefix=topic_prefix,
            events_partitions=3,
            products_partitions=2,
            item_vectors_partitions=2,
            recommendations_partitions=3,
            dead_letter_partitions=1,
        ),
        state_dir=_shared_state_dir(tmp_path),
        app_id=f"visrec-{topic_prefix}",
    )


def _shared_state_dir(tmp_path: Path) -> Path:
    """Per-test state, but the exported-model cache is shared so models export once."""
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    cache = Path(os.environ.get("VISREC_TEST_MODEL_CACHE", Path.home() / ".cache/visrec/models"))
    cache.mkdir(parents=True, exist_ok=True)
    link = state / "models"
    if not link.exists():
        link.symlink_to(cache, target_is_directory=True)
    return state


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_state() -> Iterator[None]:
    yield
    shutil.rmtree(".pytest-visrec", ignore_errors=True)


@pytest.fixture(autouse=True)
def _garbage_of_this_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Collect an integration test's cyclic garbage in its own teardown.

    Network clients (kafka-python's connections among them) sit in reference cycles, so a
    socket one test leaks is otherwise finalised by whichever later test triggers the cyclic
    collector, and its ResourceWarning fails that innocent test, under that test's warning
    filters. Collected here, it is reported against, and filtered by, the test that made it.

    One leak is not ours: kafka-python 3.0 can leave a TCP socket to the broker unclosed after
    its client's ``close()`` (a connection attempt it retried; seen in CI on a busy machine),
    so unclosed sockets whose peer is the test broker are let through. Every other unclosed
    socket (Redis, HTTP, anything of ours) still fails the test.
    """
    yield
    if request.node.get_closest_marker("integration") is None:
        return
    with warnings.catch_warnings():
        if "kafka_bootstrap" in request.fixturenames:
            port = str(request.getfixturevalue("kafka_bootstrap")).rsplit(":", 1)[-1]
            warnings.filterwarnings(
                "ignore",
                message=rf"unclosed <socket\.socket .*raddr=\('127\.0\.0\.1', {port}\)>",
                category=ResourceWarning,
            )
        gc.collect()

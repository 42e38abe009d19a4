from __future__ import annotations

import json
import time
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from click.testing import CliRunner
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from schemas import ProductAttributes, RedisKeys
from streams.cli.status import command
from streams.kafka.config import kafka_python_config
from streams.kafka.topics import Topics, create_topics, delete_topics
from streams.ops.status import Status, collect_status
from streams.settings import Settings
from streams.state.item_store import ItemStore, StoredItem
from streams.tools.processes import settings_env

# Messages produced per partition of the events topic (3 partitions in the test settings).
PRODUCED = {0: 5, 1: 3, 2: 0}
COMMITTED = {0: 2, 1: 3}


@pytest.fixture
def topics(settings: Settings) -> Iterator[Topics]:
    create_topics(settings)
    try:
        yield Topics.from_settings(settings)
    finally:
        delete_topics(settings)


def _produce(settings: Settings, topic: str) -> None:
    producer = KafkaProducer(**kafka_python_config(settings.kafka, client_suffix="test"))
    try:
        for partition, n in PRODUCED.items():
            for i in range(n):
                producer.send(topic, key=f"u{i}".encode(), value=b"{}", partition=partition)
        producer.flush(timeout=30)
    finally:
        producer.close()


def _join(settings: Settings, topic: str) -> KafkaConsumer:
    consumer = KafkaConsumer(
        topic,
        **kafka_python_config(settings.kafka, client_suffix="test-member"),
        group_id=f"{settings.app_id}-interests",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    deadline = time.monotonic() + 30
    while len(consumer.assignment()) < len(PRODUCED):
        assert time.monotonic() < deadline, "consumer never got its partitions"
        consumer.poll(timeout_ms=200, max_records=1)
    return consumer


def _lags(status: Status, group_id: str) -> dict[int, tuple[int, int | None, int]]:
    group = next(g for g in status.groups if g.group_id == group_id)
    return {lag.partition: (lag.end, lag.committed, lag.lag) for lag in group.lags}


def _seed_redis(settings: Settings) -> RedisKeys:
    keys = RedisKeys(settings.redis.namespace)
    client = redis.Redis.from_url(settings.redis.url)
    try:
        client.hincrby(keys.deadletter_counts(), "invalid_json", 4)
        client.hincrby(keys.deadletter_counts(), "missing_key", 1)
        store = ItemStore(client, keys)
        vec = np.ones(8, dtype=np.float32)
        store.write([StoredItem(f"i{i}", "m-one", vec, ProductAttributes(), 1) for i in range(3)])
        store.write_vectors_only([StoredItem("i0", "m-two", vec, ProductAttributes(), 2)])
    finally:
        client.close()
    return keys


def test_status_reports_lag_members_dead_letters_items_and_redis(
    settings: Settings, topics: Topics
) -> None:
    _produce(settings, topics.events.name)
    _seed_redis(settings)
    interests = f"{settings.app_id}-interests"
    consumer = _join(settings, topics.events.name)
    try:
        consumer.commit(
            {
                TopicPartition(topics.events.name, p): OffsetAndMetadata(off, "", -1)
                for p, off in COMMITTED.items()
            }
        )
        live = collect_status(settings)
    finally:
        consumer.close()
    assert live.errors == ()
    events = next(t for t in live.topics if t.name == topics.events.name)
    assert {p.partition: p.end for p in events.partitions} == PRODUCED
    assert events.messages == sum(PRODUCED.values())
    assert all(t.exists for t in live.topics)
    assert [t.name for t in live.topics] == [t.name for t in topics.all()]

    group = next(g for g in live.groups if g.group_id == interests)
    assert group.state == "Stable" and group.alive and len(group.members) == 1
    assert sorted(p for _, p in group.members[0].assigned) == sorted(PRODUCED)
    expected = {p: (n, COMMITTED.get(p), n - COMMITTED.get(p, 0)) for p, n in PRODUCED.items()}
    assert _lags(live, interests) == expected
    assert group.total_lag == 3
    embed = next(g for g in live.groups if g.group_id == f"{settings.app_id}-embed")
    assert not embed.alive and embed.lags == ()

    assert live.dead_letters == (("invalid_json", 4), ("missing_key", 1))
    assert live.active_model == "m-one"
    assert [(m.model_id, m.items, m.active) for m in live.models] == [
        ("m-one", 3, True),
        ("m-two", 1, False),
    ]
    assert live.redis is not None and live.redis.aof_enabled
    client = redis.Redis.from_url(settings.redis.url)
    try:
        assert live.redis.keys == client.dbsize()
        assert live.redis.used_memory > 0
    finally:
        client.close()

    # After the member leaves, the group is empty but its committed offsets (and lag) remain.
    after = collect_status(settings)
    left = next(g for g in after.groups if g.group_id == interests)
    assert left.state == "Empty" and not left.alive
    assert _lags(after, interests) == expected


def test_status_cli_json_matches_the_broker(settings: Settings, topics: Topics) -> None:
    _produce(settings, topics.events.name)
    result = CliRunner().invoke(command, ["--json"], env=settings_env(settings))
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    events = next(t for t in data["topics"] if t["name"] == topics.events.name)
    assert events["messages"] == sum(PRODUCED.values())
    assert [g["group_id"] for g in data["groups"]] == [
        f"{settings.app_id}-embed",
        f"{settings.app_id}-interests",
    ]
    assert all(g["alive"] is False for g in data["groups"])
    assert data["errors"] == [] and data["dead_letters"] == {} and data["models"] == []


def test_status_names_an_unreachable_redis_and_exits_nonzero(settings: Settings) -> None:
    env = {**settings_env(settings), "VISREC_REDIS__URL": "redis://127.0.0.1:1/0"}
    result = CliRunner().invoke(command, ["--json"], env=env)
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["redis"] is None
    assert len(data["errors"]) == 1 and data["errors"][0].startswith("redis: ")


def test_status_names_an_unreachable_broker_and_still_reports_redis(settings: Settings) -> None:
    _seed_redis(settings)
    env = {**settings_env(settings), "VISREC_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    started = time.monotonic()
    result = CliRunner().invoke(command, ["--json", "--timeout", "2"], env=env)
    assert time.monotonic() - started < 15
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["topics"] == [] and data["groups"] == []
    assert len(data["errors"]) == 1 and data["errors"][0].startswith("kafka (127.0.0.1:1): ")
    assert data["dead_letters"] == {"invalid_json": 4, "missing_key": 1}
    assert data["active_model"] == "m-one"

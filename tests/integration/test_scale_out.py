"""Two interest workers and two embed workers against 12-partition topics on the real broker:
each consumer group splits the partitions between its two members, both members do work, and
the result is what one worker gives: every user's Redis state equals the offline replay of
the same log, and every user's last list answers their last event."""

from __future__ import annotations

import random
import time
from pathlib import Path

from kafka.errors import KafkaError

from schemas import (
    EventType,
    ItemVector,
    UserEvent,
)
from streams.kafka.topics import Topics, create_topics, delete_topics
from streams.ops.status import GroupStatus, collect_kafka
from streams.settings import Settings, TopicSettings
from streams.tools.processes import WorkerProcess
from streams.tools.services import free_port
from tests.photos import derived_catalogue
from tests.support import (
    assert_state_is_offline_replay,
    collect,
    latest_triggers,
    per_user,
    product_message,
    raw_producer,
    scrape_metric,
)

PARTITIONS = 12
N_ITEMS, N_USERS, N_EVENTS = 20, 50, 2000


def _groups(settings: Settings) -> dict[str, GroupStatus]:
    _, groups = collect_kafka(settings)
    return {g.group_id: g for g in groups}


def _split(group: GroupStatus, topic: str) -> list[set[int]]:
    return [{p for t, p in m.assigned if t == topic} for m in group.members]


def _wait_for_split(
    settings: Settings, roles: dict[str, str], timeout_s: float
) -> dict[str, list[set[int]]]:
    """Poll the broker until each role's group has two members sharing all the partitions."""
    deadline = time.monotonic() + timeout_s
    splits: dict[str, list[set[int]]] = {}
    while time.monotonic() < deadline:
        try:
            groups = _groups(settings)
        except KafkaError:  # a fresh broker has no group coordinator for the first seconds
            time.sleep(1)
            continue
        splits = {
            role: _split(groups[f"{settings.app_id}-{role}"], topic)
            for role, topic in roles.items()
            if f"{settings.app_id}-{role}" in groups
        }
        if len(splits) == len(roles) and all(
            len(parts) == 2 and all(parts) and set().union(*parts) == set(range(PARTITIONS))
            for parts in splits.values()
        ):
            return splits
        time.sleep(1)
    raise AssertionError(f"partitions were not split between two members in time: {splits}")


def _log() -> list[UserEvent]:
    rng = random.Random(5)
    users = [f"user-{u:02d}" for u in range(N_USERS)]
    base_ts = 1_764_000_000_000
    return [
        UserEvent(
            event_id=f"ev-{n}",
            user_id=rng.choice(users),
            item_id=f"item-{rng.randrange(N_ITEMS)}",
            type=rng.choice(list(EventType)),
            ts_ms=base_ts + n * 100 + rng.randint(-30_000, 30_000),
        )
        for n in range(N_EVENTS)
    ]


def test_two_workers_per_role_split_partitions_and_match_one_worker(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={
            "topics": TopicSettings(
                prefix=settings.topics.prefix,
                events_partitions=PARTITIONS,
                products_partitions=PARTITIONS,
                item_vectors_partitions=2,
                recommendations_partitions=3,
                dead_letter_partitions=1,
            )
        }
    )
    create_topics(settings)
    topics = Topics.from_settings(settings)
    ports = {name: free_port() for name in ("interests-a", "interests-b", "embed-a", "embed-b")}
    workers = [
        WorkerProcess(
            settings,
            name.split("-")[0],
            tmp_path / f"{name}.log",
            extra_env={"VISREC_WEB_PORT": str(port)},
        ).start()
        for name, port in ports.items()
    ]
    roles = {"interests": topics.events.name, "embed": topics.products.name}
    started = time.monotonic()
    producer = raw_producer(settings)
    try:
        splits = _wait_for_split(settings, roles, 150)
        for role, parts in splits.items():
            assert not parts[0] & parts[1], (role, parts)
            print(f"{role}: partitions {sorted(parts[0])} | {sorted(parts[1])}")

        # Real photos through both embed workers.
        catalogue = derived_catalogue(N_ITEMS, seed=3)
        for i, (_, data) in enumerate(catalogue):
            value = product_message(f"item-{i}", data, category="photo")
            producer.send(topics.products.name, key=f"item-{i}".encode(), value=value)
        producer.flush()
        vectors = collect(
            settings,
            topics.item_vectors.name,
            lambda m: len({ItemVector.from_json_bytes(x.value).item_id for x in m}) >= N_ITEMS,
            120,
        )
        assert len({ItemVector.from_json_bytes(x.value).item_id for x in vectors}) == N_ITEMS, [
            w.output()[-1500:] for w in workers
        ]

        log = _log()
        for event in log:
            producer.send(
                topics.events.name, key=event.user_id.encode(), value=event.to_json_bytes()
            )
        producer.flush()
        last_event = {e.user_id: e.event_id for e in log}
        lists = collect(
            settings,
            topics.recommendations.name,
            lambda m: latest_triggers(m) == last_event,
            120,
        )
        assert latest_triggers(lists) == last_event, [w.output()[-1500:] for w in workers]

        # Both members of each group did part of the work (their own /metrics), and nobody
        # left or joined meanwhile: the split seen before is the split that did the work.
        consumed = [
            scrape_metric(ports[n], "visrec_events_consumed_total")
            for n in ("interests-a", "interests-b")
        ]
        embedded = [
            scrape_metric(ports[n], "visrec_products_embedded_total")
            for n in ("embed-a", "embed-b")
        ]
        assert all(c > 0 for c in consumed) and sum(consumed) >= N_EVENTS, consumed
        assert all(e > 0 for e in embedded) and sum(embedded) >= N_ITEMS, embedded
        after = _groups(settings)
        for role, parts in splits.items():
            now = _split(after[f"{settings.app_id}-{role}"], roles[role])
            assert sorted(map(sorted, now)) == sorted(map(sorted, parts)), (role, now, parts)
        assert all(w.alive() for w in workers)
        elapsed = time.monotonic() - started
    finally:
        producer.close()
        for worker in workers:
            worker.stop()
        delete_topics(settings)

    by_user = per_user(log)
    assert len(by_user) == N_USERS
    assert_state_is_offline_replay(settings, by_user)
    print(
        f"scale-out: events consumed per interest worker {consumed}, products embedded per "
        f"embed worker {embedded}, {elapsed:.0f} s from start to the last list"
    )

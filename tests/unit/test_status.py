from __future__ import annotations

import json

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata
from rich.console import Console

from schemas import RedisKeys
from streams.cli.status import human_bytes, render
from streams.ops.status import (
    GroupStatus,
    MemberStatus,
    ModelItems,
    PartitionOffsets,
    Status,
    TopicStatus,
    decode_counts,
    group_status,
    model_ids_from_keys,
    parse_keyspace,
    parse_member,
    parse_redis_info,
    partition_lags,
    redact_url,
)

EVENTS = "p.events.v1"


def test_lag_is_end_minus_committed_or_everything_retained_when_never_committed() -> None:
    offsets = [PartitionOffsets(1, 0, 7), PartitionOffsets(0, 2, 10), PartitionOffsets(2, 5, 9)]
    rows = partition_lags(EVENTS, offsets, {0: 4, 2: 3})
    assert [(r.partition, r.end, r.committed, r.lag) for r in rows] == [
        (0, 10, 4, 6),
        (1, 7, None, 7),  # never committed: all of 0..7 is still to read
        (2, 9, 3, 4),  # committed offset fell below retention: only 5..9 can still be read
    ]


def test_lag_never_negative_when_committed_is_past_a_stale_end_offset() -> None:
    (row,) = partition_lags(EVENTS, [PartitionOffsets(0, 0, 5)], {0: 6})
    assert row.lag == 0


def test_parse_member_reads_the_decoded_assignment() -> None:
    raw = {
        "member_id": "visrec-1-abc",
        "client_id": "visrec-1",
        "client_host": "/10.0.0.7",
        "member_assignment": {
            "assigned_partitions": [{"topic": EVENTS, "partitions": [3, 1]}],
            "user_data": "",
        },
    }
    member = parse_member(raw)
    assert member == MemberStatus(
        "visrec-1-abc", "visrec-1", "10.0.0.7", ((EVENTS, 1), (EVENTS, 3))
    )
    # An assignment kafka-python could not decode stays bytes: the member still counts.
    assert parse_member({**raw, "member_assignment": b"\x00\x01"}).assigned == ()


def test_group_status_covers_committed_and_assigned_topics_only_of_ours() -> None:
    offsets = {
        EVENTS: (PartitionOffsets(0, 0, 10), PartitionOffsets(1, 0, 4)),
        "p.products.v1": (PartitionOffsets(0, 0, 3),),
    }
    committed = {
        TopicPartition(EVENTS, 0): OffsetAndMetadata(8, "", -1),
        TopicPartition("someone.else", 0): OffsetAndMetadata(1, "", -1),
        TopicPartition(EVENTS, 1): OffsetAndMetadata(-1, "", -1),  # -1: no offset stored
    }
    description = {
        "group_state": "Stable",
        "members": [
            {
                "member_id": "m",
                "client_id": "c",
                "client_host": "/h",
                "member_assignment": {
                    "assigned_partitions": [{"topic": "p.products.v1", "partitions": [0]}]
                },
            }
        ],
    }
    group = group_status("visrec-interests", description, committed, offsets)
    assert group.state == "Stable" and group.alive
    assert [(lag.topic, lag.partition, lag.lag) for lag in group.lags] == [
        (EVENTS, 0, 2),
        (EVENTS, 1, 4),
        ("p.products.v1", 0, 3),
    ]
    assert group.total_lag == 9
    empty = group_status("visrec-embed", {"group_state": "Dead", "members": []}, {}, offsets)
    assert not empty.alive and empty.lags == () and empty.total_lag == 0


def test_parse_redis_info_reads_memory_persistence_and_keyspace() -> None:
    info = {
        "redis_version": "7.0.15",
        "used_memory": 1048576,
        "used_memory_peak": 2097152,
        "maxmemory": 0,
        "maxmemory_policy": "noeviction",
        "aof_enabled": 1,
        "db0": {"keys": 12, "expires": 0, "avg_ttl": 0},
        "db3": {"keys": 5, "expires": 1, "avg_ttl": 10},
        "dbfilename": "dump.rdb",  # not a keyspace entry despite the prefix
    }
    status = parse_redis_info(info, db=3)
    assert status.keys_by_db == ((0, 12), (3, 5))
    assert status.keys == 5 and status.aof_enabled and status.used_memory == 1048576
    assert parse_keyspace({"db1": "junk"}) == ()
    assert parse_redis_info({}, db=0).keys == 0


def test_model_ids_come_from_the_key_builder_layout() -> None:
    keys = RedisKeys("shop")
    found = [
        keys.items_by_model("m-abc").encode(),
        keys.items_by_model("m:with:colons"),
        keys.active_model(),
        RedisKeys("other").items_by_model("m-x"),
    ]
    assert model_ids_from_keys(keys, found) == ["m-abc", "m:with:colons"]


def test_dead_letter_counts_sorted_largest_first() -> None:
    raw = {b"invalid_json": b"3", b"schema_violation": b"10", b"missing_key": b"3"}
    assert decode_counts(raw) == (("schema_violation", 10), ("invalid_json", 3), ("missing_key", 3))


def test_redact_url_hides_passwords_only() -> None:
    assert redact_url("redis://:s3cret@r:6379/0") == "redis://:***@r:6379/0"
    assert redact_url("rediss://app:s3cret@r:6380/1") == "rediss://app:***@r:6380/1"
    assert redact_url("redis://r:6379/0") == "redis://r:6379/0"


def test_human_bytes() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"


def _status() -> Status:
    member = MemberStatus("m1", "visrec-interests-1", "10.0.0.7", ((EVENTS, 0), (EVENTS, 1)))
    offsets = (PartitionOffsets(0, 0, 10), PartitionOffsets(1, 0, 4))
    return Status(
        collected_at_ms=1_767_225_600_000,
        bootstrap_servers="k:9092",
        redis_url="redis://r:6379/0",
        topics=(TopicStatus(EVENTS, True, offsets), TopicStatus("p.products.v1", False)),
        groups=(
            GroupStatus(
                "visrec-interests", "Stable", (member,), partition_lags(EVENTS, offsets, {0: 7})
            ),
            GroupStatus("visrec-embed", "Dead", (), ()),
        ),
        dead_letters=(("schema_violation", 10), ("invalid_json", 3)),
        models=(ModelItems("m-new", 40, False), ModelItems("m-old", 120, True)),
        active_model="m-old",
        redis=parse_redis_info({"redis_version": "7", "used_memory": 2048, "db0": {"keys": 9}}, 0),
        errors=("kafka: timeout",),
    )


def test_to_dict_is_json_with_derived_totals() -> None:
    data = json.loads(json.dumps(_status().to_dict()))
    interests, embed = data["groups"]
    assert interests["total_lag"] == 3 + 4 and interests["alive"] is True
    assert interests["members"][0]["assigned"] == [
        {"topic": EVENTS, "partition": 0},
        {"topic": EVENTS, "partition": 1},
    ]
    assert embed["alive"] is False
    assert data["topics"][0]["messages"] == 14 and data["topics"][1]["exists"] is False
    assert data["dead_letters"] == {"schema_violation": 10, "invalid_json": 3}
    assert data["redis"]["keys"] == 9 and data["redis"]["keys_by_db"] == {"0": 9}
    assert data["active_model"] == "m-old" and data["errors"] == ["kafka: timeout"]


def test_render_shows_every_section_with_its_numbers() -> None:
    console = Console(record=True, width=200)
    for table in render(_status()):
        console.print(table)
    text = console.export_text()
    for expected in (
        "Workers (consumer groups)",
        "Dead (no worker)",
        "visrec-interests-1@10.0.0.7",
        "missing: run `visrec topics create`",
        "0:10 1:4",
        "schema_violation",
        "m-old",
        "2.0 KiB",
    ):
        assert expected in text, expected
    lag_rows = [line for line in text.splitlines() if "visrec-interests" in line and EVENTS in line]
    assert len(lag_rows) == 2
    assert [line.split("│")[-2].strip() for line in lag_rows] == ["3", "4"]
    total = next(line for line in text.splitlines() if "total" in line)
    assert total.split("│")[-2].strip() == "13"

"""What ``visrec status`` reports: topics, consumer-group lag, dead letters, items, Redis, workers.

``collect_status`` asks the broker and Redis once and returns a frozen ``Status``; everything
after that (lag arithmetic, parsing INFO and group descriptions, the JSON form) is pure and
unit-tested. A source that cannot be reached is reported in ``Status.errors`` instead of
hiding the other sources' answers: an operator runs this most when something is down.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaConnectionError, KafkaError

from schemas import RedisKeys
from streams.kafka.config import kafka_python_config
from streams.kafka.topics import Topics
from streams.settings import Settings
from streams.state.item_store import ItemStore
from streams.state.redis import redis_client_kwargs

DEFAULT_TIMEOUT_S = 10.0
"""How long ``visrec status`` waits for each source: an operator needs an answer, not a hang."""

WORKER_ROLES = ("embed", "interests")
"""Roles of ``visrec worker``; each runs in consumer group ``<app_id>-<role>``."""


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """A partition's first and next offsets (end = offset the next message will get)."""

    partition: int
    begin: int
    end: int

    @property
    def messages(self) -> int:
        """Messages retained in the partition now."""
        return max(0, self.end - self.begin)


@dataclass(frozen=True, slots=True)
class TopicStatus:
    """A declared topic and its partitions; ``exists`` False when the broker lacks it."""

    name: str
    exists: bool
    partitions: tuple[PartitionOffsets, ...] = ()

    @property
    def messages(self) -> int:
        """Messages retained over all partitions."""
        return sum(p.messages for p in self.partitions)


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """A group's position on one partition; ``committed`` None means it never committed there."""

    topic: str
    partition: int
    end: int
    committed: int | None
    lag: int


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One live consumer of a group and the partitions assigned to it."""

    member_id: str
    client_id: str
    host: str
    assigned: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """A consumer group: broker-side state, members, and lag on visrec's topics."""

    group_id: str
    state: str
    members: tuple[MemberStatus, ...]
    lags: tuple[PartitionLag, ...]

    @property
    def total_lag(self) -> int:
        """Messages the group has yet to consume, over all its partitions."""
        return sum(p.lag for p in self.lags)

    @property
    def alive(self) -> bool:
        """True when at least one member is in the group (a worker is running)."""
        return bool(self.members)


@dataclass(frozen=True, slots=True)
class ModelItems:
    """Items embedded with one model id."""

    model_id: str
    items: int
    active: bool


@dataclass(frozen=True, slots=True)
class RedisStatus:
    """Memory and key counts from INFO, plus the database this deployment uses."""

    version: str
    used_memory: int
    used_memory_peak: int
    maxmemory: int
    maxmemory_policy: str
    aof_enabled: bool
    db: int
    keys_by_db: tuple[tuple[int, int], ...]

    @property
    def keys(self) -> int:
        """Keys in this deployment's database."""
        return dict(self.keys_by_db).get(self.db, 0)


@dataclass(frozen=True, slots=True)
class Status:
    """Everything ``visrec status`` shows, as collected at ``collected_at_ms``."""

    collected_at_ms: int
    bootstrap_servers: str
    redis_url: str
    topics: tuple[TopicStatus, ...] = ()
    groups: tuple[GroupStatus, ...] = ()
    dead_letters: tuple[tuple[str, int], ...] = ()
    models: tuple[ModelItems, ...] = ()
    active_model: str | None = None
    redis: RedisStatus | None = None
    errors: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """Return every field as JSON-ready data, with the derived totals added."""
        out = asdict(self)
        for topic, data in zip(self.topics, out["topics"], strict=True):
            data["messages"] = topic.messages
        for group, data in zip(self.groups, out["groups"], strict=True):
            data["total_lag"] = group.total_lag
            data["alive"] = group.alive
            for member in data["members"]:
                member["assigned"] = [{"topic": t, "partition": p} for t, p in member["assigned"]]
        out["dead_letters"] = dict(self.dead_letters)
        if self.redis is not None:
            out["redis"]["keys_by_db"] = {str(db): n for db, n in self.redis.keys_by_db}
            out["redis"]["keys"] = self.redis.keys
        out["errors"] = list(self.errors)
        return out


def partition_lags(
    topic: str,
    offsets: Iterable[PartitionOffsets],
    committed: Mapping[int, int],
) -> tuple[PartitionLag, ...]:
    """Lag per partition: end minus committed, or end minus begin where nothing was committed."""
    # A group with no commit on a partition starts at the earliest retained offset (our
    # consumers use auto_offset_reset=earliest), so everything retained is still to read.
    rows = []
    for p in sorted(offsets, key=lambda o: o.partition):
        done = committed.get(p.partition)
        start = p.begin if done is None else max(done, p.begin)
        rows.append(PartitionLag(topic, p.partition, p.end, done, max(0, p.end - start)))
    return tuple(rows)


def parse_member(raw: Mapping[str, Any]) -> MemberStatus:
    """Read a member from kafka-python's ``describe_groups`` dict (assignment if decoded)."""
    assigned: list[tuple[str, int]] = []
    assignment = raw.get("member_assignment")
    if isinstance(assignment, Mapping):
        for entry in assignment.get("assigned_partitions") or ():
            assigned.extend((str(entry["topic"]), int(p)) for p in entry["partitions"])
    return MemberStatus(
        member_id=str(raw.get("member_id", "")),
        client_id=str(raw.get("client_id", "")),
        host=str(raw.get("client_host", "")).lstrip("/"),
        assigned=tuple(sorted(assigned)),
    )


def parse_keyspace(info: Mapping[str, Any]) -> tuple[tuple[int, int], ...]:
    """(db, keys) pairs from INFO's ``dbN: {keys: ..}`` entries, by db number."""
    found = []
    for name, value in info.items():
        if name.startswith("db") and name[2:].isdigit() and isinstance(value, Mapping):
            found.append((int(name[2:]), int(value.get("keys", 0))))
    return tuple(sorted(found))


def parse_redis_info(info: Mapping[str, Any], db: int) -> RedisStatus:
    """Read ``RedisStatus`` from a parsed ``INFO`` (all sections)."""
    return RedisStatus(
        version=str(info.get("redis_version", "")),
        used_memory=int(info.get("used_memory", 0)),
        used_memory_peak=int(info.get("used_memory_peak", 0)),
        maxmemory=int(info.get("maxmemory", 0)),
        maxmemory_policy=str(info.get("maxmemory_policy", "")),
        aof_enabled=bool(int(info.get("aof_enabled", 0))),
        db=db,
        keys_by_db=parse_keyspace(info),
    )


def model_ids_from_keys(keys: RedisKeys, found: Iterable[bytes | str]) -> list[str]:
    """Model ids from keys matching ``keys.items_by_model('*')``, sorted."""
    # Split a builder-made key around a marker so the layout stays defined in one module.
    head, tail = keys.items_by_model("\x00").split("\x00")
    ids = set()
    for raw in found:
        key = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        if key.startswith(head) and key.endswith(tail) and len(key) > len(head) + len(tail):
            ids.add(key[len(head) : len(key) - len(tail)])
    return sorted(ids)


def decode_counts(raw: Mapping[bytes, bytes]) -> tuple[tuple[str, int], ...]:
    """Dead-letter counts by error code from the Redis hash, largest first."""
    counts = {k.decode("utf-8"): int(v) for k, v in raw.items()}
    return tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def collect_redis(
    client: redis.Redis[bytes], keys: RedisKeys, db: int
) -> tuple[RedisStatus, tuple[tuple[str, int], ...], tuple[ModelItems, ...], str | None]:
    """Redis INFO, dead-letter counts, items per model id and the active model."""
    info = parse_redis_info(client.info("all"), db)
    dead = decode_counts(client.hgetall(keys.deadletter_counts()))
    store = ItemStore(client, keys)
    active = store.active_model()
    pattern = keys.items_by_model("*")
    ids = model_ids_from_keys(keys, client.scan_iter(match=pattern, count=1000))
    models = tuple(ModelItems(m, store.count(m), m == active) for m in ids)
    return info, dead, models, active


def _group_ids(admin: KafkaAdminClient, app_id: str) -> list[str]:
    listed = {str(g["group_id"]) for g in admin.list_groups()}
    ours = {g for g in listed if g.startswith(f"{app_id}-")}
    # The role groups are always shown: a missing one is a worker role that is not running.
    ours.update(f"{app_id}-{role}" for role in WORKER_ROLES)
    return sorted(ours)


def _check_reachable(bootstrap_servers: str, timeout_s: float) -> None:
    # Fail fast and clearly when no broker listens (the usual case of "is it down?"): a
    # refused connection inside kafka-python 3.0 also leaks its socket until GC.
    refused: list[str] = []
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
            return
        except (OSError, ValueError) as exc:
            refused.append(f"{server.strip()}: {exc}")
    raise KafkaConnectionError("; ".join(refused))


def collect_kafka(
    settings: Settings, timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[tuple[TopicStatus, ...], tuple[GroupStatus, ...]]:
    """Read the declared topics' offsets and visrec's consumer groups with members and lag."""
    _check_reachable(settings.kafka.bootstrap_servers, timeout_s)
    cfg = kafka_python_config(settings.kafka, client_suffix="status")
    cfg["request_timeout_ms"] = cfg["bootstrap_timeout_ms"] = int(timeout_s * 1000)
    admin = KafkaAdminClient(**cfg)
    consumer = KafkaConsumer(**cfg, group_id=None, enable_auto_commit=False)
    try:
        existing = set(admin.list_topics())
        topics: list[TopicStatus] = []
        offsets: dict[str, tuple[PartitionOffsets, ...]] = {}
        for spec in Topics.from_settings(settings).all():
            parts = consumer.partitions_for_topic(spec.name) if spec.name in existing else None
            if not parts:
                topics.append(TopicStatus(spec.name, exists=False))
                continue
            tps = [TopicPartition(spec.name, p) for p in sorted(parts)]
            begins = consumer.beginning_offsets(tps)
            ends = consumer.end_offsets(tps)
            offsets[spec.name] = tuple(
                PartitionOffsets(tp.partition, int(begins[tp]), int(ends[tp])) for tp in tps
            )
            topics.append(TopicStatus(spec.name, True, offsets[spec.name]))
        group_ids = _group_ids(admin, settings.app_id)
        described = admin.describe_groups(group_ids)
        committed = admin.list_group_offsets(group_ids)
        groups = [
            group_status(gid, described.get(gid, {}), committed.get(gid, {}), offsets)
            for gid in group_ids
        ]
        return tuple(topics), tuple(groups)
    finally:
        consumer.close()
        admin.close()


def group_status(
    group_id: str,
    description: Mapping[str, Any],
    committed: Mapping[TopicPartition, Any],
    offsets: Mapping[str, Sequence[PartitionOffsets]],
) -> GroupStatus:
    """Build a group's state, members and lag on each visrec topic it committed to or owns."""
    members = tuple(parse_member(m) for m in description.get("members") or ())
    by_topic: dict[str, dict[int, int]] = {}
    for tp, meta in committed.items():
        if tp.topic in offsets and meta.offset >= 0:
            by_topic.setdefault(tp.topic, {})[tp.partition] = int(meta.offset)
    for member in members:
        for topic, _ in member.assigned:
            if topic in offsets:
                by_topic.setdefault(topic, {})
    lags = tuple(
        lag
        for topic in sorted(by_topic)
        for lag in partition_lags(topic, offsets[topic], by_topic[topic])
    )
    return GroupStatus(
        group_id=group_id,
        state=str(description.get("group_state") or "Unknown"),
        members=members,
        lags=lags,
    )


def collect_status(settings: Settings, timeout_s: float = DEFAULT_TIMEOUT_S) -> Status:
    """Ask Kafka and Redis once, each within ``timeout_s``; a failing source lands in ``errors``."""
    errors: list[str] = []
    topics: tuple[TopicStatus, ...] = ()
    groups: tuple[GroupStatus, ...] = ()
    try:
        topics, groups = collect_kafka(settings, timeout_s)
    except KafkaError as exc:
        errors.append(f"kafka ({settings.kafka.bootstrap_servers}): {exc!r}")
    keys = RedisKeys(settings.redis.namespace)
    client = redis.Redis.from_url(
        settings.redis.url,
        **{**redis_client_kwargs(settings.redis), "socket_connect_timeout": timeout_s},
    )
    redis_part: RedisStatus | None = None
    dead: tuple[tuple[str, int], ...] = ()
    models: tuple[ModelItems, ...] = ()
    active: str | None = None
    try:
        db = int(client.connection_pool.connection_kwargs.get("db") or 0)
        redis_part, dead, models, active = collect_redis(client, keys, db)
    except redis.RedisError as exc:
        errors.append(f"redis: {exc!r}")
    finally:
        client.close()
    return Status(
        collected_at_ms=time.time_ns() // 1_000_000,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        redis_url=redact_url(settings.redis.url),
        topics=topics,
        groups=groups,
        dead_letters=dead,
        models=models,
        active_model=active,
        redis=redis_part,
        errors=tuple(errors),
    )


def redact_url(url: str) -> str:
    """Replace any password in the URL's userinfo by ``***``."""
    # Status output gets pasted into tickets and chat.
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if ":" in userinfo else url

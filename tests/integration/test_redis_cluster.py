"""The Redis key layout in real Redis Cluster mode: three ``redis-server --cluster-enabled yes``.

One user's keys share the hash tag ``{u:<user_id>}``, so the per-event Lua script (three keys)
runs on one node; popularity and co-occurrence keys hash elsewhere and are written by their
own single-key scripts. The store's results through a ``RedisCluster`` client must equal the
single-node results for the same events.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from schemas import EventType, Recommendations, RecommendedItem, RedisKeys, UserEvent
from streams.exceptions import ServiceError
from streams.settings import InterestSettings
from streams.state.recs import RecsCache
from streams.state.user_state import UserStateStore
from streams.tools.services import free_port, wait_until

NODES = 3
KEYS = RedisKeys()
SETTINGS = InterestSettings()
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
USERS = [f"user-{n:02d}" for n in range(24)]
ITEMS = [f"item-{n:02d}" for n in range(15)]


def _start_node(root: Path, port: int, bus_port: int) -> subprocess.Popen[bytes]:
    home = root / str(port)
    home.mkdir()
    # ``cluster-port``: the default bus port (port + 10000) can overflow for ephemeral ports.
    # The child keeps its own copy of the log descriptor; ours closes with the block.
    with (home / "redis.log").open("wb") as log:
        return subprocess.Popen(
            [
                "redis-server",
                "--port", str(port),
                "--cluster-port", str(bus_port),
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(home / "nodes.conf"),
                "--cluster-node-timeout", "5000",
                "--bind", "127.0.0.1",
                "--dir", str(home),
                "--save", "",
                "--appendonly", "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def _ping(port: int) -> bool:
    with redis.Redis(port=port) as client:
        return bool(client.ping())


def _cluster_ok(port: int) -> bool:
    with redis.Redis(port=port, decode_responses=True) as client:
        info = client.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
    return bool(info.get("cluster_state") == "ok")


@pytest.fixture(scope="module")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        raise ServiceError("redis-server and redis-cli are needed (Debian: redis-server)")
    root = tmp_path_factory.mktemp("redis-cluster")
    ports = [free_port() for _ in range(NODES)]
    procs = [_start_node(root, port, free_port()) for port in ports]
    try:
        for port in ports:
            wait_until(lambda p=port: _ping(p), 10, f"redis node {port}")
        subprocess.run(
            [
                "redis-cli", "--cluster", "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        for port in ports:
            wait_until(lambda p=port: _cluster_ok(p), 30, f"cluster state on {port}")
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def cluster(cluster_ports: list[int]) -> Iterator[RedisCluster]:
    client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in cluster_ports])
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    try:
        yield client
    finally:
        client.flushall(target_nodes=RedisCluster.PRIMARIES)
        client.close()


def _slot(client: RedisCluster, key: str) -> int:
    # The server's own CLUSTER KEYSLOT, not the client's CRC16: the layout is what Redis says.
    return int(client.execute_command("CLUSTER KEYSLOT", key))


def _user_keys(user: str) -> list[str]:
    return [
        KEYS.user_state(user),
        KEYS.user_seen(user),
        KEYS.user_applied(user),
        KEYS.user_recs(user),
    ]


def test_one_users_keys_share_a_slot_and_users_spread_over_the_nodes(
    cluster: RedisCluster,
) -> None:
    user_slots = {}
    for user in USERS:
        slots = {_slot(cluster, key) for key in _user_keys(user)}
        assert len(slots) == 1, f"{user}'s keys span slots {slots}"
        user_slots[user] = slots.pop()
    nodes = {cluster.nodes_manager.get_node_from_slot(s).name for s in user_slots.values()}
    assert len(nodes) == NODES, "users should be spread over every primary"
    global_slots = {_slot(cluster, KEYS.popularity())} | {
        _slot(cluster, KEYS.cooccurrence(item)) for item in ITEMS
    }
    assert len(global_slots) == 1 + len(ITEMS), "signal keys should hash apart"


def _events(seed: int = 7) -> list[tuple[UserEvent, int, int]]:
    rng = random.Random(seed)
    events = [
        UserEvent(
            event_id=f"e-{n}",
            user_id=rng.choice(USERS),
            item_id=rng.choice(ITEMS),
            type=rng.choice(list(EventType)),
            ts_ms=NOW + n * 30_000 + rng.randrange(1000),
        )
        for n in range(300)
    ]
    # Redeliveries in the same stream, as after a consumer restart.
    events += rng.sample(events, 40)
    return [(ev, 0, offset) for offset, ev in enumerate(events)]


def _store(client: Any) -> UserStateStore:
    return UserStateStore.from_settings(client, KEYS, SETTINGS)


def _apply_in_batches(
    store: UserStateStore, events: list[tuple[UserEvent, int, int]]
) -> list[bool]:
    out: list[bool] = []
    for start in range(0, len(events), 50):
        out += store.apply(events[start : start + 50])
    return out


def test_user_state_store_in_cluster_equals_single_node(
    cluster: RedisCluster, redis_url: str
) -> None:
    events = _events()
    single_client = redis.Redis.from_url(redis_url)
    try:
        single, clustered = _store(single_client), _store(cluster)
        want = _apply_in_batches(single, events)
        got = _apply_in_batches(clustered, events)
        assert got == want
        assert sum(got) == len({ev.event_id for ev, _, _ in events})
        # A full redelivery changes nothing anywhere.
        assert not any(_apply_in_batches(clustered, events))
        for user in USERS:
            assert clustered.load(user) == single.load(user)
            assert clustered.seen(user) == single.seen(user)
        assert clustered.signals.popular(10, now_ms=NOW) == single.signals.popular(10, now_ms=NOW)
        assert clustered.signals.co_neighbours(
            ITEMS, 5, now_ms=NOW
        ) == single.signals.co_neighbours(ITEMS, 5, now_ms=NOW)
        lists = [
            Recommendations(
                user_id=user,
                items=[RecommendedItem(item_id=ITEMS[0], score=1.0, reason="popular")],
                model_id="m",
                generated_at_ms=NOW,
            )
            for user in USERS
        ]
        cache = RecsCache(cluster, KEYS)
        cache.write_many(lists)
        assert [cache.read(user) for user in USERS] == lists
        assert clustered.memory_usage(USERS[0]) > 0
    finally:
        single_client.close()
    _assert_keys_live_where_their_slot_says(cluster)


def _assert_keys_live_where_their_slot_says(cluster: RedisCluster) -> None:
    by_node: dict[str, set[str]] = {}
    for node in cluster.get_primaries():
        keys = node.redis_connection.keys(f"{KEYS.root}:*")
        by_node[node.name] = {k.decode() for k in keys}
    assert sum(len(k) for k in by_node.values()) > len(USERS)
    for user in USERS:
        holders = {name for name, keys in by_node.items() if KEYS.user_state(user) in keys}
        assert len(holders) == 1
        (holder,) = holders
        assert {KEYS.user_seen(user), KEYS.user_applied(user), KEYS.user_recs(user)} <= by_node[
            holder
        ]
    assert all(by_node.values()), "every primary should hold some of the state"

"""Interest-pipeline benchmark on the local Kafka + Redis (script, not a test).

    .venv/bin/python bench/pipeline.py [--items 100000] [--users 10000] [--events 60000]
                                       [--data random|clustered] [--ann-threshold N]

In one run, against the same broker and Redis:
  (a) sustained events/s through `visrec worker interests` (with refreshes) vs a pass-through
      faust agent (bench/passthrough.py) that only forwards events: ratio printed;
  (b) produce -> matching list consumed latency at a steady rate (default 500 events/s),
      p50/p95/p99, for both, and the difference (what the pipeline adds);
  (c) Redis bytes per active user (MEMORY USAGE of the user's keys, sampled);
  (d) worker RSS.
Where the time goes: CPU seconds of the worker, the Kafka broker, Redis and this script during
each phase (from /proc), and Redis command time per event (INFO commandstats).
Catalogue: unit vectors of the encoder's dim (1280), random (default; exact search, since HNSW
needs a huge beam there) or clustered like image embeddings (HNSW above the worker's
ann_threshold); users Zipf-distributed. The load generator and the measuring consumer use
librdkafka (confluent-kafka) so that they take little CPU from the 2-core box under test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import redis
from confluent_kafka import Consumer, Producer
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from schemas import EventType, ProductAttributes, RedisKeys, UserEvent  # noqa: E402
from streams.item_store import ItemStore, StoredItem  # noqa: E402
from streams.kafka_config import kafka_python_config  # noqa: E402
from streams.services import KafkaServer, RedisServer, free_port  # noqa: E402
from streams.services.base import read_pid  # noqa: E402
from streams.settings import (  # noqa: E402
    InterestSettings,
    KafkaSettings,
    RedisSettings,
    Settings,
    TopicSettings,
    settings_env,
)
from streams.topics import Topics, create_topics  # noqa: E402
from streams.user_state import UserStateStore  # noqa: E402

TYPES = [
    EventType.VIEW,
    EventType.VIEW,
    EventType.VIEW,
    EventType.CLICK,
    EventType.CLICK,
    EventType.ADD_TO_CART,
    EventType.PURCHASE,
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def catalogue_vectors(rng: np.random.Generator, m: int, dim: int, kind: str) -> np.ndarray:
    """``m`` unit vectors: isotropic random, or clustered like image embeddings.

    ``clustered``: a 64-d latent mixture of 1,000 clusters embedded in ``dim`` with noise, the
    same generator as ``bench/index.py`` (where HNSW reaches recall@100 0.98 with a beam of
    ~384, against 5,632 on random vectors).
    """
    if kind == "random":
        vecs = rng.normal(size=(m, dim)).astype(np.float32)
    else:
        # The generator's own seed, so that chunks share centres and basis.
        state = np.random.default_rng(12345)
        centres = state.standard_normal((1000, 64), dtype=np.float32)
        basis = np.linalg.qr(state.standard_normal((dim, 64)))[0].astype(np.float32)
        latent = centres[rng.integers(0, 1000, m)] + 0.3 * rng.standard_normal((m, 64))
        vecs = latent.astype(np.float32) @ basis.T
        vecs += 0.02 * rng.standard_normal((m, dim), dtype=np.float32)
    unit: np.ndarray = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    return unit


def build_catalogue(settings: Settings, n: int, dim: int, kind: str = "random") -> str:
    model_id = f"bench-{kind}-{dim}"
    store = ItemStore(
        redis.Redis.from_url(settings.redis.url), RedisKeys(), settings.embed.vector_dtype
    )
    rng = np.random.default_rng(0)
    for start in range(0, n, 2000):
        m = min(2000, n - start)
        vecs = catalogue_vectors(rng, m, dim, kind)
        store.write(
            [
                StoredItem(
                    f"item-{start + i}",
                    model_id,
                    vecs[i],
                    ProductAttributes(category=f"c{(start + i) % 50}"),
                    1,
                )
                for i in range(m)
            ]
        )
    return model_id


def make_events(
    n: int, users: int, items: int, seed: int, start_ts: int, prefix: str
) -> list[UserEvent]:
    rng = np.random.default_rng(seed)
    user_ids = np.minimum(rng.zipf(1.3, size=n), users) - 1
    item_ids = np.minimum(rng.zipf(1.1, size=n), items) - 1
    types = rng.integers(0, len(TYPES), size=n)
    return [
        UserEvent(
            event_id=f"{prefix}-{k}",
            user_id=f"user-{user_ids[k]}",
            item_id=f"item-{(item_ids[k] * 7919) % items}",
            type=TYPES[types[k]],
            ts_ms=start_ts + k,
        )
        for k in range(n)
    ]


class Worker:
    def __init__(self, argv: list[str], settings: Settings, log_path: Path) -> None:
        env = {
            **os.environ,
            **settings_env(settings),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
        }
        self.out = log_path.open("ab")
        self.proc = subprocess.Popen(
            argv, stdout=self.out, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
        self.port = settings.web_port

    def wait_ready(self, timeout: float = 600) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError("worker exited")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return time.monotonic() - start
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError("worker not ready")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


def group_lag(settings: Settings, group: str, topic: str) -> int:
    """One-off committed lag of ``group`` on ``topic`` (see ``LagProbe`` to poll it)."""
    probe = LagProbe(settings, group, topic)
    try:
        return probe.lag()
    finally:
        probe.close()


class LagProbe:
    """Committed lag of a consumer group on a topic (one admin + one consumer, reused)."""

    def __init__(self, settings: Settings, group: str, topic: str) -> None:
        self.group, self.topic = group, topic
        self.admin = KafkaAdminClient(
            **kafka_python_config(settings.kafka, client_suffix="bench-admin")
        )
        self.consumer = KafkaConsumer(
            **kafka_python_config(settings.kafka, client_suffix="bench-lag")
        )
        partitions = self.consumer.partitions_for_topic(topic) or ()
        self.parts = [TopicPartition(topic, p) for p in partitions]

    def lag(self) -> int:
        ends = self.consumer.end_offsets(self.parts)
        committed = self.admin.list_group_offsets([self.group]).get(self.group, {})
        done = {}
        for tp, meta in committed.items():
            off = getattr(meta, "offset", meta)
            done[(tp.topic, tp.partition)] = int(off) if int(off) >= 0 else 0
        return sum(ends[tp] - done.get((tp.topic, tp.partition), 0) for tp in self.parts)

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()


def _producer(settings: Settings) -> Producer:
    # librdkafka (C) for the load generator and the measuring consumer: on a 2-core box a
    # pure-Python client would take CPU from the system under test.
    return Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "acks": "1",
            "linger.ms": 0,
            "enable.idempotence": False,
        }
    )


def produce_all(settings: Settings, events: list[UserEvent]) -> float:
    producer = _producer(settings)
    producer.poll(0)
    topic = Topics.from_settings(settings).events.name
    payloads = [(e.user_id.encode(), e.to_json_bytes()) for e in events]
    start = time.monotonic()
    for key, value in payloads:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush()
    return time.monotonic() - start


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (and its waited-for children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by named groups of processes between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.begin: dict[str, float] = {}
        self.t0 = 0.0

    def _now(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.pids.items()}

    def start(self) -> None:
        self.begin = self._now()
        self.t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        used = {name: v - self.begin[name] for name, v in self._now().items()}
        return {"wall_s": wall, **{f"{name}_cpu_s": v for name, v in used.items()}}


def sustained(
    settings: Settings, workers: list[Worker], group: str, events: list[UserEvent]
) -> dict[str, Any]:
    topic = Topics.from_settings(settings).events.name
    probe = LagProbe(settings, group, topic)
    start = time.monotonic()
    threading.Thread(target=produce_all, args=(settings, events), daemon=True).start()
    time.sleep(1.0)
    try:
        while True:
            if probe.lag() == 0 and time.monotonic() - start > 2:
                break
            time.sleep(0.25)
    finally:
        probe.close()
    took = time.monotonic() - start
    return {
        "events": len(events),
        "seconds": took,
        "events_per_s": len(events) / took,
        "rss_mb": sum(w.rss_mb() for w in workers),
    }


def wait_quiet(pids: list[int], limit_s: float = 900.0, busy: float = 0.2) -> float:
    """Wait until the processes use under ``busy`` of a core over 2 s (background index
    builds done); return the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        before = sum(cpu_seconds(p) for p in pids)
        time.sleep(2.0)
        if sum(cpu_seconds(p) for p in pids) - before < busy * 2.0:
            break
    return time.monotonic() - start


def latency(
    settings: Settings, events: list[UserEvent], rate: float, passthrough: bool
) -> dict[str, Any]:
    topic = Topics.from_settings(settings)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"bench-lat-{time.time_ns()}",
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        }
    )
    assigned = threading.Event()
    consumer.subscribe([topic.recommendations.name], on_assign=lambda c, parts: assigned.set())
    while not assigned.is_set():
        consumer.poll(0.1)
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    stop = threading.Event()
    field = b'"event_id":"' if passthrough else b'"trigger_event_id":"'

    def read() -> None:
        while not stop.is_set():
            msg = consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            now = time.monotonic()
            value = msg.value() or b""
            start = value.find(field)
            if start < 0:
                continue
            start += len(field)
            key = value[start : value.index(b'"', start)].decode()
            if key in sent and key not in got:
                got[key] = now

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    producer = _producer(settings)
    payloads = [(e.event_id, e.user_id.encode(), e.to_json_bytes()) for e in events]
    t0 = time.monotonic()
    for k, (event_id, key, value) in enumerate(payloads):
        target = t0 + k / rate
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent[event_id] = time.monotonic()
        producer.produce(topic.events.name, value=value, key=key)
        producer.poll(0)
    producer.flush()
    time.sleep(3)
    stop.set()
    reader.join()
    consumer.close()
    # With coalescing, a list answers the last event of its user's burst; earlier events of the
    # burst are answered by it too, so measure every event against the first list that
    # carries it or a later event of the same user.
    by_user: dict[str, list[tuple[str, float]]] = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append((e.event_id, sent[e.event_id]))
    lat = []
    for user_events in by_user.values():
        answer: float | None = None
        for event_id, t_sent in reversed(user_events):
            if event_id in got:
                answer = got[event_id] if answer is None else min(answer, got[event_id])
            if answer is not None:
                lat.append((answer - t_sent) * 1000)
    arr = np.array(lat)
    return {
        "answered": len(lat) / len(events),
        "p50_ms": float(np.percentile(arr, 50)),
        "p95_ms": float(np.percentile(arr, 95)),
        "p99_ms": float(np.percentile(arr, 99)),
    }


def report(results: dict[str, Any], rate: float) -> None:
    p, i = results["passthrough"], results["interests"]
    ps, is_ = p["sustained"]["events_per_s"], i["sustained"]["events_per_s"]
    print()
    print(
        f"(a) sustained events/s: interests {is_:.0f}, passthrough {ps:.0f}, ratio {is_ / ps:.2f}"
    )
    for q in ("p50_ms", "p95_ms", "p99_ms"):
        il, pl = i["latency"][q], p["latency"][q]
        print(
            f"(b) {q} at {rate:.0f}/s: interests {il:.1f}, "
            f"passthrough {pl:.1f}, added {il - pl:.1f}"
        )
    print(f"(c) redis bytes per active user: {results['redis_bytes_per_active_user']}")
    for role in ("passthrough", "interests"):
        sus, lat = results[role]["sustained"], results[role]["latency"]
        per_event = {
            k.removesuffix("_cpu_s"): round(v / sus["events"] * 1000, 3)
            for k, v in sus["cpu"].items()
            if k.endswith("_cpu_s")
        }
        share = {
            k.removesuffix("_cpu_s"): round(v / lat["cpu"]["wall_s"], 2)
            for k, v in lat["cpu"].items()
            if k.endswith("_cpu_s")
        }
        print(f"    {role}: CPU ms per event in the sustained run {per_event}")
        print(f"    {role}: cores busy during the latency run {share}")
    print(
        "    Redis command time per event (sustained, interests): "
        f"{results['interests']['sustained']['redis_usec_per_event']:.0f} us"
    )
    irss, prss = i["sustained"]["rss_mb"], p["sustained"]["rss_mb"]
    print(
        f"(d) worker RSS MB after sustained run (all workers): interests {irss:.0f}, "
        f"passthrough {prss:.0f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    ap.add_argument("--data", choices=("random", "clustered"), default="random")
    ap.add_argument(
        "--ann-threshold",
        type=int,
        default=None,
        help="interest.ann_threshold for the worker; default: exact search for random data "
        "(HNSW needs a beam of ~5,600 there and is slower than a scan), the worker's default "
        "for clustered data",
    )
    ap.add_argument(
        "--workers", type=int, default=1, help="processes per role (one consumer group)"
    )
    ap.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="interest.max_batch (default: the setting's default); applied_max follows",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="visrec-bench-"))
    kafka = KafkaServer(tmp, port=free_port(), controller_port=free_port(), heap="1g")
    redis_server = RedisServer(tmp, port=free_port())
    redis_server.start()
    kafka.start()
    results: dict[str, Any] = {
        "machine": os.uname().nodename,
        "cpus": os.cpu_count(),
        **vars(args),
    }
    results["json"] = str(args.json)
    try:
        threshold = args.ann_threshold
        if threshold is None:
            default = InterestSettings().ann_threshold
            threshold = args.items + 1 if args.data == "random" else default
        results["ann_threshold"] = threshold
        batch: dict[str, int] = {}
        if args.max_batch:
            applied = max(InterestSettings().applied_max, args.max_batch)
            batch = {"max_batch": args.max_batch, "applied_max": applied}
        base = Settings(
            kafka=KafkaSettings(bootstrap_servers=kafka.bootstrap),
            redis=RedisSettings(url=redis_server.url),
            interest=InterestSettings(ann_threshold=threshold, **batch),
            state_dir=tmp,
        )
        log(f"catalogue: {args.items} x {args.dim} {args.data} unit vectors -> redis")
        t = time.monotonic()
        build_catalogue(base, args.items, args.dim, args.data)
        log(f"catalogue written in {time.monotonic() - t:.1f}s")
        n_lat = int(args.rate * args.latency_seconds)
        kafka_pid, redis_pid = read_pid(kafka.pidfile), read_pid(redis_server.pidfile)
        assert kafka_pid is not None and redis_pid is not None
        rclient = redis.Redis.from_url(base.redis.url)
        for role in ("passthrough", "interests"):
            settings = base.model_copy(
                update={
                    "topics": TopicSettings(prefix=f"bench-{role}"),
                    "app_id": f"bench-{role}",
                    "web_port": free_port(),
                }
            )
            create_topics(settings)
            argv = (
                [sys.executable, str(ROOT / "bench/passthrough.py")]
                if role == "passthrough"
                else [
                    sys.executable,
                    "-c",
                    "from streams.cli import main; main()",
                    "worker",
                    "interests",
                ]
            )
            workers = [
                Worker(
                    argv,
                    settings.model_copy(update={"web_port": free_port()}) if k else settings,
                    tmp / f"{role}-{k}.log",
                )
                for k in range(args.workers)
            ]
            try:
                ready = max(w.wait_ready() for w in workers)
                rss = sum(w.rss_mb() for w in workers)
                quiet = wait_quiet([w.proc.pid for w in workers])
                log(
                    f"{role}: {len(workers)} worker(s) ready in {ready:.1f}s, quiet after "
                    f"{quiet:.0f}s more (index build), rss {rss:.0f} MB"
                )
                # Warm-up (JIT-free, but connections, index pages, Lua cache).
                latency(
                    settings,
                    make_events(500, args.users, args.items, 99, 1_764_000_000_000, f"warm-{role}"),
                    args.rate,
                    role == "passthrough",
                )
                meter = CpuMeter(
                    {
                        "worker": [w.proc.pid for w in workers],
                        "kafka": [kafka_pid],
                        "redis": [redis_pid],
                        "bench": [os.getpid()],
                    }
                )
                meter.start()
                lat = latency(
                    settings,
                    make_events(n_lat, args.users, args.items, 1, 1_764_000_100_000, f"lat-{role}"),
                    args.rate,
                    role == "passthrough",
                )
                lat["cpu"] = meter.stop()
                log(f"{role}: latency at {args.rate:.0f}/s: {lat}")
                rclient.config_resetstat()
                meter.start()
                sus_events = make_events(
                    args.events, args.users, args.items, 2, 1_764_000_200_000, f"sus-{role}"
                )
                sus = sustained(settings, workers, f"bench-{role}-{role}", sus_events)
                sus["cpu"] = meter.stop()
                stats = rclient.info("commandstats")
                sus["redis_usec_per_event"] = sum(
                    v["usec"] for k, v in stats.items() if k != "cmdstat_config|resetstat"
                ) / len(sus_events)
                log(f"{role}: sustained: {sus}")
                results[role] = {
                    "ready_s": ready,
                    "quiet_s": quiet,
                    "latency": lat,
                    "sustained": sus,
                }
            finally:
                for w in workers:
                    w.stop()
        store = UserStateStore.from_settings(
            redis.Redis.from_url(base.redis.url), RedisKeys(), base.interest
        )
        users = [f"user-{u}" for u in range(0, args.users, max(1, args.users // 500))]
        usage = [store.memory_usage(u) for u in users]
        active = [u for u in usage if u > 0]
        results["redis_bytes_per_active_user"] = {
            "mean": float(np.mean(active)),
            "p50": float(np.median(active)),
            "max": float(np.max(active)),
            "sampled": len(active),
        }
        info = redis.Redis.from_url(base.redis.url).info("memory")
        results["redis_used_memory_mb"] = info["used_memory"] / 1e6
        report(results, args.rate)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        kafka.stop()
        redis_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

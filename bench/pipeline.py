"""Interest-pipeline benchmark on the local Kafka + Redis (script, not a test).

    .venv/bin/python bench/pipeline.py [--items 100000] [--users 10000] [--events 60000]
                                       [--data random|clustered] [--rates 500 50]
                                       [--workers N] [--vector-dtype float16] [--json OUT]

In one run, against the same broker and Redis, three workers in turn:
  - ``idle``: faust's own ceiling, an agent doing nothing with ``take_events(500, 0.05)``;
  - ``passthrough``: the fair baseline (bench/passthrough.py): the same app, natural batching
    and decoding into ``UserEvent`` as the interest worker, one message per distinct user of
    a batch through the same raw producer path, and nothing else;
  - ``interests``: `visrec worker interests` on the catalogue;
  - ``raw`` and ``interests-raw`` (on request): the pass-through and the interest worker's
    batch procedure without faust, fed by an aiokafka loop (bench/passthrough.py), to measure
    what faust's machinery costs.
Printed:
  (a) sustained events/s of each, and the interest worker's ratio to both baselines;
  (b) produce -> matching list consumed latency at steady rates (default 500 and 50 events/s),
      p50/p95/p99, for the interest worker and the pass-through, and the difference;
  (c) the interest worker's time to ready (index loaded from Redis, space fitted if due) and
      RSS, and RSS over the pass-through's per catalogue item (an upper bound on the index's
      bytes per item: it includes user-state and batch memory);
  (d) Redis bytes per active user (MEMORY USAGE of the user's keys, sampled).
Where the time goes: CPU seconds of the worker, the Kafka broker, Redis and this script during
each phase (from /proc), and Redis command time per event (INFO commandstats).
Catalogue: unit vectors of the encoder's dim (1280), random or clustered like image
embeddings; the worker fits its compact space and IVF as it would in production (see
``streams.state.spaces``); users Zipf-distributed. The load generator and the measuring consumer
use librdkafka (confluent-kafka) so that they take little CPU from the 2-core box under test.
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

from procstat import cpu_seconds  # noqa: E402
from vectors import catalogue_vectors  # noqa: E402

from schemas import EventType, ProductAttributes, RedisKeys, UserEvent  # noqa: E402
from streams.kafka.config import kafka_python_config  # noqa: E402
from streams.kafka.topics import Topics, create_topics  # noqa: E402
from streams.settings import (  # noqa: E402
    EmbedSettings,
    InterestSettings,
    KafkaSettings,
    RedisSettings,
    Settings,
    TopicSettings,
)
from streams.state.item_store import ItemStore, StoredItem  # noqa: E402
from streams.state.user_state import UserStateStore  # noqa: E402
from streams.tools.processes import WorkerProcess  # noqa: E402
from streams.tools.services import KafkaServer, RedisServer, free_port  # noqa: E402
from streams.tools.services.base import read_pid  # noqa: E402

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


def build_catalogue(settings: Settings, n: int, dim: int, kind: str = "random") -> str:
    model_id = f"bench-{kind}-{dim}"
    store = ItemStore(
        redis.Redis.from_url(settings.redis.url), RedisKeys(), settings.embed.vector_dtype
    )
    rng = np.random.default_rng(0)
    attributes = [ProductAttributes(category=f"c{c}") for c in range(50)]
    for start in range(0, n, 2000):
        m = min(2000, n - start)
        vecs = catalogue_vectors(rng, m, dim, kind)
        store.write(
            [
                StoredItem(f"item-{start + i}", model_id, vecs[i], attributes[(start + i) % 50], 1)
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


def bench_pythonpath() -> str:
    """The repository first (workers import this checkout), plus VISREC_BENCH_PYTHONPATH
    (e.g. a sitecustomize with diagnostics)."""
    extra = os.environ.get("VISREC_BENCH_PYTHONPATH")
    return os.pathsep.join([str(ROOT), *([extra] if extra else [])])


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


def scrape(port: int | None) -> dict[str, float]:
    """The interest worker's batch metrics (sums and counts), from its /metrics page."""
    out: dict[str, float] = {}
    if port is None:
        return out
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith(
            ("visrec_interest_batch_stage_seconds_", "visrec_interest_batch_events_")
        ):
            name, _, value = line.rpartition(" ")
            if name.endswith(("_sum", "_count")) or "_count{" in name or "_sum{" in name:
                out[name] = float(value)
    return out


def stage_means(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean ms per batch of each stage, and mean events per batch, between two scrapes."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    batches = delta.get("visrec_interest_batch_events_count", 0.0)
    if not batches:
        return {}
    means = {"events_per_batch": delta.get("visrec_interest_batch_events_sum", 0.0) / batches}
    for key, value in delta.items():
        if key.startswith("visrec_interest_batch_stage_seconds_sum"):
            stage = key.split('stage="')[1].split('"')[0]
            means[f"{stage}_ms"] = value / batches * 1000
    return means


class CpuMeter:
    """CPU seconds used by named groups of processes between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.begin: dict[str, float] = {}
        self.t0 = 0.0

    def _now(self) -> dict[str, float]:
        return {
            name: sum(cpu_seconds(p, children=True) for p in pids)
            for name, pids in self.pids.items()
        }

    def start(self) -> None:
        self.begin = self._now()
        self.t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        used = {name: v - self.begin[name] for name, v in self._now().items()}
        return {"wall_s": wall, **{f"{name}_cpu_s": v for name, v in used.items()}}


def sustained(
    settings: Settings, workers: list[WorkerProcess], group: str, events: list[UserEvent]
) -> dict[str, Any]:
    topic = Topics.from_settings(settings).events.name
    probe = LagProbe(settings, group, topic)
    start = time.monotonic()
    producing = threading.Thread(target=produce_all, args=(settings, events), daemon=True)
    producing.start()
    time.sleep(1.0)
    try:
        while True:
            # Done once every event was produced and the group committed past all of them (a
            # worker faster than the load generator reaches lag 0 before the last event).
            if not producing.is_alive() and probe.lag() == 0 and time.monotonic() - start > 2:
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
        before = sum(cpu_seconds(p, children=True) for p in pids)
        time.sleep(2.0)
        if sum(cpu_seconds(p, children=True) for p in pids) - before < busy * 2.0:
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


FORWARDERS = ("passthrough", "raw")
"""Roles whose answer to an event is the event itself (matched by ``event_id``)."""


def report(results: dict[str, Any]) -> None:
    roles = results["roles"]
    i = roles["interests"]["sustained"]["events_per_s"]
    print()
    line = f"(a) sustained events/s: interests {i:.0f}"
    for base in ("passthrough", "raw", "idle", "interests-raw"):
        if base in roles:
            b = roles[base]["sustained"]["events_per_s"]
            line += f"; {base} {b:.0f} (interests / {base} = {i / b:.2f})"
    print(line)
    for rate in results["rates"]:
        key = f"latency_{rate:g}"
        il = roles["interests"].get(key)
        pl = roles.get("passthrough", {}).get(key)
        rl = roles.get("raw", {}).get(key)
        xl = roles.get("interests-raw", {}).get(key)
        if il is None:
            continue
        for q in ("p50_ms", "p95_ms", "p99_ms"):
            extra = f", passthrough {pl[q]:.1f}, added {il[q] - pl[q]:.1f}" if pl else ""
            extra += f", raw (no faust) {rl[q]:.1f}" if rl else ""
            extra += f", interests-raw (no faust) {xl[q]:.1f}" if xl else ""
            print(f"(b) {q} at {rate:g}/s: interests {il[q]:.1f}{extra}")
    inter = roles["interests"]
    print(
        f"(c) interests ready in {inter['ready_s']:.1f}s ({inter['quiet_s']:.0f}s more until "
        f"idle); RSS {inter['sustained']['rss_mb']:.0f} MB"
    )
    if "passthrough" in roles:
        over = inter["sustained"]["rss_mb"] - roles["passthrough"]["sustained"]["rss_mb"]
        per_item = over * 1e6 / results["items"] / max(1, results["workers"])
        print(f"    RSS over the pass-through: {over:.0f} MB = {per_item:.0f} B per item")
    print(f"(d) redis bytes per active user: {results['redis_bytes_per_active_user']}")
    for role, data in roles.items():
        sus = data["sustained"]
        per_event = {
            k.removesuffix("_cpu_s"): round(v / sus["events"] * 1000, 3)
            for k, v in sus["cpu"].items()
            if k.endswith("_cpu_s")
        }
        print(f"    {role}: CPU ms per event in the sustained run {per_event}")
        lat = data.get(f"latency_{results['rates'][0]:g}")
        if lat:
            share = {
                k.removesuffix("_cpu_s"): round(v / lat["cpu"]["wall_s"], 2)
                for k, v in lat["cpu"].items()
                if k.endswith("_cpu_s")
            }
            print(f"    {role}: cores busy during the first latency run {share}")
        print(f"    {role}: Redis command time per event {sus['redis_usec_per_event']:.0f} us")


def start_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """Record ``pid`` with py-spy from outside (raw collapsed stacks, GIL holders only)."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--output",
            str(out),
            "--rate",
            "200",
            "--nonblocking",
            "--gil",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_spy(spy: subprocess.Popen[bytes] | None) -> None:
    """Stop a ``start_spy`` recording and let it write its output."""
    if spy is not None:
        spy.send_signal(2)
        spy.wait(30)


def run_role(
    role: str,
    base: Settings,
    args: argparse.Namespace,
    tmp: Path,
    pids: dict[str, int],
) -> dict[str, Any]:
    """Start ``args.workers`` processes of ``role``, measure them, stop them."""
    settings = base.model_copy(
        update={
            "topics": TopicSettings(prefix=f"bench-{role}"),
            "app_id": f"bench-{role}",
            "web_port": free_port(),
        }
    )
    create_topics(settings)
    argv = None if role == "interests" else [sys.executable, str(ROOT / "bench/passthrough.py")]
    env = {"VISREC_BENCH_ROLE": role, "PYTHONPATH": bench_pythonpath()}
    workers = [
        WorkerProcess(
            settings.model_copy(update={"web_port": free_port()}) if k else settings,
            role,
            tmp / f"{role}-{k}.log",
            env,
            argv=argv,
        ).start()
        for k in range(args.workers)
    ]
    rclient = redis.Redis.from_url(base.redis.url)
    out: dict[str, Any] = {}
    try:
        out["ready_s"] = max(w.wait_ready() for w in workers)
        out["rss_ready_mb"] = sum(w.rss_mb() for w in workers)
        out["quiet_s"] = wait_quiet([w.pid for w in workers])
        log(
            f"{role}: {len(workers)} worker(s) ready in {out['ready_s']:.1f}s, quiet after "
            f"{out['quiet_s']:.0f}s more, rss {out['rss_ready_mb']:.0f} MB"
        )
        meter = CpuMeter(
            {
                "worker": [w.pid for w in workers],
                "kafka": [pids["kafka"]],
                "redis": [pids["redis"]],
                "bench": [os.getpid()],
            }
        )
        # What the workers burn with nothing to do (pollers, timers, the web server).
        meter.start()
        time.sleep(5.0)
        out["no_events"] = meter.stop()
        log(f"{role}: CPU with no events: {out['no_events']}")
        if role != "idle":  # the idle agent answers nothing: no latency to measure
            latency(
                settings,
                make_events(500, args.users, args.items, 99, 1_764_000_000_000, f"warm-{role}"),
                max(args.rates),
                role in FORWARDERS,
            )
            for n, rate in enumerate(args.rates):
                spy = None
                if args.py_spy and role == args.py_spy_role and args.py_spy_at == "latency":
                    spy = start_spy(workers[0].pid, args.py_spy.with_suffix(f".{rate:g}.txt"))
                meter.start()
                scraped = scrape(workers[0].settings.web_port)
                count = int(rate * args.latency_seconds)
                lat = latency(
                    settings,
                    make_events(
                        count,
                        args.users,
                        args.items,
                        1 + n,
                        1_764_000_100_000 + n * 10**7,
                        f"lat{n}-{role}",
                    ),
                    rate,
                    role in FORWARDERS,
                )
                lat["cpu"] = meter.stop()
                stop_spy(spy)
                lat["batches"] = stage_means(scraped, scrape(workers[0].settings.web_port))
                out[f"latency_{rate:g}"] = lat
                log(f"{role}: latency at {rate:g}/s: {lat}")
        rclient.config_resetstat()
        meter.start()
        scraped = scrape(workers[0].settings.web_port)
        sus_events = make_events(
            args.events, args.users, args.items, 2, 1_764_000_200_000, f"sus-{role}"
        )
        spy = None
        if args.py_spy and role == args.py_spy_role and args.py_spy_at == "sustained":
            spy = start_spy(workers[0].pid, args.py_spy)
        sus = sustained(settings, workers, f"bench-{role}-{role}", sus_events)
        stop_spy(spy)
        sus["cpu"] = meter.stop()
        sus["batches"] = stage_means(scraped, scrape(workers[0].settings.web_port))
        stats = rclient.info("commandstats")
        sus["redis_usec_per_event"] = sum(
            v["usec"] for k, v in stats.items() if k != "cmdstat_config|resetstat"
        ) / len(sus_events)
        log(f"{role}: sustained: {sus}")
        out["sustained"] = sus
    finally:
        for w in workers:
            w.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--rates", type=float, nargs="+", default=[500.0, 50.0])
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    ap.add_argument("--data", choices=("random", "clustered"), default="random")
    ap.add_argument("--vector-dtype", choices=("float32", "float16"), default="float32")
    ap.add_argument(
        "--roles",
        nargs="+",
        default=["idle", "passthrough", "interests"],
        choices=("idle", "passthrough", "raw", "interests", "interests-raw"),
        help="which workers to run (the interest worker is always reported against the others)",
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
    ap.add_argument(
        "--space-min-recall",
        type=float,
        default=None,
        help="interest.space_min_recall (0 serves a fitted space whatever recall it keeps)",
    )
    ap.add_argument(
        "--stale-after-s",
        type=float,
        default=None,
        help="interest.stale_after_s (idle users' lists ranked again; default: off)",
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        help="record the interest worker with py-spy (collapsed stacks) during --py-spy-at",
    )
    ap.add_argument(
        "--py-spy-at",
        choices=["sustained", "latency"],
        default="sustained",
        help="the phase py-spy records (latency: one file per rate, OUT.<rate>.txt)",
    )
    ap.add_argument(
        "--py-spy-role",
        choices=["idle", "passthrough", "raw", "interests", "interests-raw"],
        default="interests",
        help="the worker py-spy records",
    )
    args = ap.parse_args()
    if "interests" not in args.roles:
        ap.error("--roles must include interests")

    tmp = Path(tempfile.mkdtemp(prefix="visrec-bench-"))
    kafka = KafkaServer(tmp, port=free_port(), controller_port=free_port(), heap="1g")
    redis_server = RedisServer(tmp, port=free_port())
    redis_server.start()
    kafka.start()
    results: dict[str, Any] = {
        "machine": os.uname().nodename,
        "cpus": os.cpu_count(),
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "roles": {},
    }
    try:
        batch: dict[str, Any] = {}
        if args.max_batch:
            applied = max(InterestSettings().applied_max, args.max_batch)
            batch = {"max_batch": args.max_batch, "applied_max": applied}
        if args.space_min_recall is not None:
            batch["space_min_recall"] = args.space_min_recall
        if args.stale_after_s is not None:
            batch["stale_after_s"] = args.stale_after_s
        base = Settings(
            kafka=KafkaSettings(bootstrap_servers=kafka.bootstrap),
            redis=RedisSettings(url=redis_server.url),
            interest=InterestSettings(**batch),
            embed=EmbedSettings(vector_dtype=args.vector_dtype),
            state_dir=tmp,
        )
        results["interest_settings"] = base.interest.model_dump(mode="json")
        log(f"catalogue: {args.items} x {args.dim} {args.data} unit vectors -> redis")
        t = time.monotonic()
        build_catalogue(base, args.items, args.dim, args.data)
        results["catalogue_write_s"] = time.monotonic() - t
        log(f"catalogue written in {results['catalogue_write_s']:.1f}s")
        kafka_pid, redis_pid = read_pid(kafka.pidfile), read_pid(redis_server.pidfile)
        assert kafka_pid is not None and redis_pid is not None
        pids = {"kafka": kafka_pid, "redis": redis_pid}
        for role in args.roles:
            results["roles"][role] = run_role(role, base, args, tmp, pids)
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
        report(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        kafka.stop()
        redis_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

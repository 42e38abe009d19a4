"""Soak and backpressure for the interest worker on local Kafka + Redis (script, not a test).

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 500] [--users 200] [--items 20000]
        [--burst-every-min 5] [--plot soak.png] [--json soak.json] [--max-rss-slope 1]

Starts its own broker and Redis, a random catalogue and one `visrec worker interests`, then:
  (a) replays events at a steady ``--rate`` for ``--minutes`` (with a burst of
      ``--burst-factor`` x the rate for ``--burst-seconds`` every ``--burst-every-min``
      minutes, 0 = none), sampling every ``--sample-s``
      the worker's RSS, Redis ``used_memory`` and the group's consumer lag; fits a line to
      each (MB/min) over the samples after the warm-up (the first minute, or a fifth of the
      run if shorter) and prints the slopes: flat means bounded state (seen/applied sets,
      caches), positive means growth, which the state counts printed beside tell apart from
      a leak (per-user applied sets still filling towards ``applied_max`` is growth);
  (b) sends ``--burst-factor`` x the rate for ``--burst-seconds``, back at the steady rate
      after, and reports the peak lag, the seconds from the burst's end until lag is back
      at its steady level (p95 of (a)), and, producer stopped, until it is exactly 0.
Users are uniform over ``--users`` (so each one's bounded state fills up within the run),
items Zipf-distributed; event times are wall-clock, as in production. At the end every user's
signal outbox must be empty (nothing left undrained).

Exit status 1 if the worker died, the lag never drained, an outbox was left, or the worker's
RSS slope exceeded ``--max-rss-slope`` MB/min (when given): CI runs a 2-minute version.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis
from kafka import KafkaProducer
from pipeline import TYPES, bench_pythonpath, build_catalogue, group_lag, log

from schemas import RedisKeys, UserEvent
from streams.kafka.config import kafka_python_config
from streams.kafka.topics import Topics, create_topics
from streams.settings import (
    InterestSettings,
    KafkaSettings,
    RedisSettings,
    Settings,
    TopicSettings,
)
from streams.tools.processes import WorkerProcess
from streams.tools.services import KafkaServer, RedisServer, free_port


class Pacer(threading.Thread):
    """Produces events at ``rate`` per second (changeable while running) until stopped."""

    def __init__(self, settings: Settings, users: int, items: int, rate: float) -> None:
        super().__init__(name="pacer", daemon=True)
        self.topic = Topics.from_settings(settings).events.name
        self.producer = KafkaProducer(
            **kafka_python_config(settings.kafka, client_suffix="soak"), acks=1, linger_ms=5
        )
        self.users, self.items, self.rate = users, items, rate
        self.sent = 0
        self.halt = threading.Event()
        self.rng = np.random.default_rng(1)

    def run(self) -> None:
        owed, last = 0.0, time.monotonic()
        while not self.halt.is_set():
            time.sleep(0.01)
            now = time.monotonic()
            owed += self.rate * (now - last)
            last = now
            n = int(owed)
            owed -= n
            if n:
                self._send(n)
        self.producer.flush()
        self.producer.close()

    def _send(self, n: int) -> None:
        users = self.rng.integers(0, self.users, size=n)
        items = np.minimum(self.rng.zipf(1.1, size=n), self.items) - 1
        kinds = self.rng.integers(0, len(TYPES), size=n)
        ts = time.time_ns() // 1_000_000
        for k in range(n):
            event = UserEvent(
                event_id=f"soak-{self.sent}",
                user_id=f"user-{users[k]}",
                item_id=f"item-{(items[k] * 7919) % self.items}",
                type=TYPES[kinds[k]],
                ts_ms=ts,
            )
            self.producer.send(self.topic, key=event.user_id.encode(), value=event.to_json_bytes())
            self.sent += 1


def slope_mb_per_min(samples: list[dict[str, float]], key: str, after_s: float) -> float:
    """Least-squares slope of ``key`` (MB) against time (minutes) for samples after ``after_s``."""
    pts = [(s["t"] / 60, s[key]) for s in samples if s["t"] >= after_s]
    if len(pts) < 3:
        return float("nan")
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def applied_at_bound(settings: Settings, users: int) -> tuple[int, int]:
    """How many users' applied-id sets have reached ``applied_max`` (of those with state)."""
    client = redis.Redis.from_url(settings.redis.url)
    keys = RedisKeys()
    pipe = client.pipeline(transaction=False)
    for u in range(users):
        pipe.zcard(keys.user_applied(f"user-{u}"))
    sizes = [int(x) for x in pipe.execute()]
    client.close()
    cap = settings.interest.applied_max
    return sum(1 for s in sizes if s >= cap), sum(1 for s in sizes if s > 0)


def signal_sizes(settings: Settings) -> dict[str, int]:
    """How many items have a co-occurrence list, their total neighbours, popularity's size."""
    client = redis.Redis.from_url(settings.redis.url)
    keys = RedisKeys()
    lists = [k for k in client.scan_iter(match=keys.cooccurrence("*"), count=5000)]
    pipe = client.pipeline(transaction=False)
    for k in lists:
        pipe.zcard(k)
    neighbours = sum(int(x) for x in pipe.execute())
    popular = int(client.zcard(keys.popularity()))
    client.close()
    return {"co_lists": len(lists), "co_neighbours": neighbours, "popular": popular}


def outboxes_left(settings: Settings, users: int) -> int:
    """Signal increments still waiting in users' outboxes (0 once every batch drained)."""
    client = redis.Redis.from_url(settings.redis.url)
    keys = RedisKeys()
    pipe = client.pipeline(transaction=False)
    for u in range(users):
        pipe.llen(keys.user_outbox(f"user-{u}"))
    left = sum(int(x) for x in pipe.execute())
    client.close()
    return left


def plot(samples: list[dict[str, float]], out: Path, warm_s: float, step_s: float) -> None:
    """Worker RSS, Redis memory and consumer lag against time; bursts shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    for ax, key, label in zip(
        axes,
        ("rss_mb", "redis_mb", "lag"),
        ("worker RSS (MB)", "Redis used_memory (MB)", "consumer lag (events)"),
        strict=True,
    ):
        ax.plot(t, [s[key] for s in samples], lw=1)
        ax.set_ylabel(label)
        ax.axvline(warm_s / 60, color="grey", ls=":", lw=1)
        for s in samples:
            if s.get("burst"):
                ax.axvspan(s["t"] / 60, (s["t"] + step_s) / 60, color="orange", alpha=0.15, lw=0)
    axes[-1].set_xlabel("minutes (dotted: end of warm-up; shaded: bursts)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=500.0, help="steady events/s")
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--applied-max", type=int, default=None, help="default: the setting's")
    ap.add_argument("--burst-factor", type=float, default=5.0)
    ap.add_argument("--burst-seconds", type=float, default=30.0)
    ap.add_argument("--sample-s", type=float, default=5.0)
    ap.add_argument("--burst-every-min", type=float, default=0.0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None, help="PNG of RSS, Redis memory, lag")
    ap.add_argument("--max-rss-slope", type=float, default=None, help="MB/min; fail above")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="visrec-soak-"))
    kafka = KafkaServer(tmp, port=free_port(), controller_port=free_port(), heap="1g")
    redis_server = RedisServer(tmp, port=free_port())
    redis_server.start()
    kafka.start()
    interest = InterestSettings()
    if args.applied_max is not None:
        interest = InterestSettings(applied_max=args.applied_max)
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=kafka.bootstrap),
        redis=RedisSettings(url=redis_server.url),
        topics=TopicSettings(prefix="soak"),
        interest=interest,
        state_dir=tmp,
        app_id="soak",
        web_port=free_port(),
    )
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    worker: WorkerProcess | None = None
    pacer: Pacer | None = None
    try:
        create_topics(settings)
        log(f"catalogue: {args.items} x {args.dim}")
        build_catalogue(settings, args.items, args.dim)
        worker = WorkerProcess(
            settings, "interests", tmp / "interests.log", {"PYTHONPATH": bench_pythonpath()}
        ).start()
        log(f"worker ready in {worker.wait_ready():.1f}s, rss {worker.rss_mb():.0f} MB")
        topic = Topics.from_settings(settings).events.name
        group = "soak-interests"
        r = redis.Redis.from_url(settings.redis.url)

        def sample(t0: float) -> dict[str, float]:
            return {
                "t": time.monotonic() - t0,
                "rss_mb": worker.rss_mb() if worker else float("nan"),
                "redis_mb": r.info("memory")["used_memory"] / 1e6,
                "lag": float(group_lag(settings, group, topic)),
            }

        pacer = Pacer(settings, args.users, args.items, args.rate)
        pacer.start()
        t0 = time.monotonic()
        steady: list[dict[str, float]] = []
        duration = args.minutes * 60
        every = args.burst_every_min * 60
        while time.monotonic() - t0 < duration:
            time.sleep(max(0.0, t0 + len(steady) * args.sample_s - time.monotonic()))
            elapsed = time.monotonic() - t0
            bursting = every > 0 and elapsed >= every and elapsed % every < args.burst_seconds
            pacer.rate = args.rate * (args.burst_factor if bursting else 1.0)
            steady.append(sample(t0) | {"burst": float(bursting)})
            s = steady[-1]
            log(
                f"t={s['t']:.0f}s rss={s['rss_mb']:.1f}MB redis={s['redis_mb']:.1f}MB "
                f"lag={s['lag']:.0f} sent={pacer.sent}{' (burst)' if bursting else ''}"
            )
        pacer.rate = args.rate
        warm = min(60.0, duration / 5)
        rss_slope = slope_mb_per_min(steady, "rss_mb", warm)
        redis_slope = slope_mb_per_min(steady, "redis_mb", warm)
        lags = [s["lag"] for s in steady if s["t"] >= warm and not s["burst"]]
        steady_lag = float(np.percentile(lags, 95)) if lags else 0.0
        at_cap, with_state = applied_at_bound(settings, args.users)
        sizes = signal_sizes(settings)

        pacer.rate = args.rate * args.burst_factor
        t_burst = time.monotonic()
        burst: list[dict[str, float]] = []
        while time.monotonic() - t_burst < args.burst_seconds:
            burst.append(sample(t_burst))
            log(f"burst t={burst[-1]['t']:.0f}s lag={burst[-1]['lag']:.0f}")
            time.sleep(1.0)
        pacer.rate = args.rate
        t_end = time.monotonic()
        back_to_steady = float("nan")
        while time.monotonic() - t_end < 600:
            burst.append(sample(t_burst))
            if len(burst) % 5 == 0:
                log(f"after burst t={burst[-1]['t']:.0f}s lag={burst[-1]['lag']:.0f}")
            if burst[-1]["lag"] <= steady_lag:
                back_to_steady = time.monotonic() - t_end
                break
            time.sleep(1.0)
        pacer.rate = 0.0
        t_stop = time.monotonic()
        to_zero = float("nan")
        while time.monotonic() - t_stop < 600:
            if group_lag(settings, group, topic) == 0:
                to_zero = time.monotonic() - t_stop
                break
            time.sleep(0.5)
        alive = worker.alive()
        left = outboxes_left(settings, args.users)
        results.update(
            worker_alive=alive,
            outbox_entries_left=left,
            steady=steady,
            burst=burst,
            rss_slope_mb_per_min=rss_slope,
            redis_slope_mb_per_min=redis_slope,
            steady_lag_p95=steady_lag,
            peak_burst_lag=max(s["lag"] for s in burst),
            back_to_steady_after_burst_s=back_to_steady,
            lag_zero_after_producer_stop_s=to_zero,
            applied_sets_at_cap=[at_cap, with_state],
            signal_sizes=sizes,
            events_sent=pacer.sent,
        )
        print()
        print(
            f"(a) {args.minutes:g} min at {args.rate:g} events/s ({args.users} users, "
            f"{args.items} items x {args.dim}), slopes after the first {warm:.0f}s:"
        )
        print(
            f"    worker RSS   {rss_slope:+.3f} MB/min  ({steady[0]['rss_mb']:.1f} -> "
            f"{steady[-1]['rss_mb']:.1f} MB)"
        )
        print(
            f"    redis memory {redis_slope:+.3f} MB/min  ({steady[0]['redis_mb']:.1f} -> "
            f"{steady[-1]['redis_mb']:.1f} MB); applied sets at applied_max="
            f"{settings.interest.applied_max}: {at_cap}/{with_state} users"
        )
        print(
            f"    signals: {sizes['co_lists']} co-occurrence lists holding "
            f"{sizes['co_neighbours']} neighbours, {sizes['popular']} popular items"
        )
        print(f"    consumer lag p95 {steady_lag:.0f} events")
        print(
            f"(b) burst {args.burst_factor:g}x for {args.burst_seconds:g}s: peak lag "
            f"{results['peak_burst_lag']:.0f}; back to steady lag {back_to_steady:.1f}s after "
            f"the burst; lag 0 {to_zero:.1f}s after the producer stopped"
        )
        print(f"    worker alive {alive}; signal outbox entries left {left}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        if args.plot:
            plot(steady, args.plot, warm, args.sample_s)
        failed = [
            why
            for why, bad in (
                ("the worker died", not alive),
                ("the lag never drained", to_zero != to_zero),  # NaN
                ("signal outboxes were left undrained", left > 0),
                (
                    f"worker RSS grew {rss_slope:+.2f} MB/min (max {args.max_rss_slope})",
                    args.max_rss_slope is not None and not rss_slope <= args.max_rss_slope,
                ),
            )
            if bad
        ]
        for why in failed:
            print(f"FAILED: {why}")
        if failed:
            return 1
    finally:
        if pacer is not None:
            pacer.halt.set()
            pacer.join(30)
        if worker is not None:
            worker.stop()
        kafka.stop()
        redis_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Orchestrates the demo: services, encoder, topics, workers, catalogue, shoppers, report."""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer
from rich.console import Console
from rich.table import Table

from models.vision.modelcard import ModelCard
from schemas import (
    EventType,
    ProductAttributes,
    ProductImage,
    Recommendations,
    RedisKeys,
    UserEvent,
)
from streams.kafka.config import kafka_python_config
from streams.kafka.producer import make_producer, send_record
from streams.kafka.topics import Topics, create_topics
from streams.model_cache import resolve_model_dir
from streams.settings import Settings
from streams.state.item_store import ItemStore
from streams.state.redis import connect_redis
from streams.tools.demo.catalogue import DemoProduct, demo_catalogue
from streams.tools.demo.report import ShopperRun, Step, contact_sheet, html_report
from streams.tools.processes import local_services, running_worker

TOP = 5


@dataclass(frozen=True)
class Shopper:
    """A scripted shopper: who, what they are after, which items they click in order."""

    name: str
    story: str
    clicks: tuple[str, ...]


SHOPPERS = (
    Shopper("mia", "likes cats, then looks at coffee", ("chelsea", "chelsea-crop", "coffee")),
    Shopper(
        "leo", "into motorbikes and rockets", ("motorcycle_left", "rocket", "motorcycle_right-crop")
    ),
    Shopper("ada", "browsing portraits", ("grace_hopper", "astronaut", "astronaut-crop")),
)


def _ingest(settings: Settings, products: list[DemoProduct], run_id: str) -> None:
    topic = Topics.from_settings(settings).products.name
    producer = make_producer(settings)
    now = int(time.time() * 1000)
    for p in products:
        record = ProductImage(
            item_id=p.item_id,
            image_b64=base64.b64encode(p.image).decode("ascii"),
            attributes=ProductAttributes(
                title=p.item_id, category=p.category, available=p.available
            ),
            ts_ms=now,
        )
        send_record(producer, topic, p.item_id, record)
    # One broken upload, to show the dead-letter path: a JPEG cut in half.
    broken = products[0].image[: len(products[0].image) // 2]
    bad = ProductImage(
        item_id=f"broken-{run_id}",
        image_b64=base64.b64encode(broken).decode("ascii"),
        ts_ms=now,
    )
    send_record(producer, topic, bad.item_id, bad)
    producer.flush()
    producer.close()


def _wait_for_items(store: ItemStore, model_id: str, ids: set[str], timeout_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if store.count(model_id) >= len(ids):
            return time.monotonic() - start
        time.sleep(0.2)
    raise RuntimeError(f"only {store.count(model_id)}/{len(ids)} items embedded in {timeout_s}s")


def _recs_consumer(settings: Settings) -> KafkaConsumer:
    consumer = KafkaConsumer(
        Topics.from_settings(settings).recommendations.name,
        **kafka_python_config(settings.kafka, client_suffix="demo"),
        group_id=f"visrec-demo-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    deadline = time.monotonic() + 30
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(timeout_ms=100)
    for tp in consumer.assignment():
        consumer.position(tp)
    return consumer


def _await_list(consumer: KafkaConsumer, event_id: str, timeout_s: float) -> Recommendations:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=50).values():
            for record in records:
                recs = Recommendations.from_json_bytes(record.value)
                if recs.trigger_event_id == event_id:
                    return recs
    raise RuntimeError(f"no recommendations for {event_id} within {timeout_s}s")


def _table(shopper: str, clicked: str, recs: Recommendations, latency_ms: float) -> Table:
    table = Table(
        title=f"{shopper} clicked [bold]{clicked}[/bold] -> new list in {latency_ms:.0f} ms"
    )
    for col in ("#", "item", "score", "reason"):
        table.add_column(col)
    for rank, item in enumerate(recs.items[:TOP], start=1):
        table.add_row(str(rank), item.item_id, f"{item.score:.3f}", item.reason)
    return table


def _shop(
    settings: Settings, console: Console, shopper: Shopper, run_id: str, short: bool
) -> ShopperRun:
    """One scripted shopper: each click sent, its list awaited and shown."""
    consumer = _recs_consumer(settings)
    producer = make_producer(settings)
    events_topic = Topics.from_settings(settings).events.name
    user_id = f"{shopper.name}-{run_id}"
    steps = []
    try:
        for n, item_id in enumerate(shopper.clicks[:2] if short else shopper.clicks):
            event = UserEvent(
                event_id=f"{user_id}-{n}",
                user_id=user_id,
                item_id=item_id,
                type=EventType.CLICK,
                ts_ms=int(time.time() * 1000),
                context={"session_id": f"s-{user_id}"},
            )
            sent = time.perf_counter()
            send_record(producer, events_topic, user_id, event)
            producer.flush()
            recs = _await_list(consumer, event.event_id, 60)
            latency_ms = (time.perf_counter() - sent) * 1000
            console.print(_table(shopper.name, item_id, recs, latency_ms))
            items = [(i.item_id, i.score, i.reason) for i in recs.items]
            steps.append(Step(item_id, items, latency_ms))
    finally:
        producer.close()
        consumer.close()
    return ShopperRun(shopper.name, shopper.story, steps)


def run_demo(settings: Settings, out_dir: Path, *, short: bool, keep: bool) -> list[ShopperRun]:
    """The whole demo; returns what every shopper saw."""
    console = Console()
    t0 = time.monotonic()
    run_id = uuid.uuid4().hex[:6]
    with local_services(settings, keep, lambda m: console.print(f"[dim]{m}[/dim]")):
        model_dir = resolve_model_dir(settings)
        card = ModelCard.load(model_dir)
        console.print(f"encoder: {card.name} ({card.dim}-d), model_id {card.model_id}")
        for name, outcome in create_topics(settings).items():
            console.print(f"[dim]topic {name}: {outcome}[/dim]")
        products = demo_catalogue(short=short)
        images = {p.item_id: p.image for p in products}
        redis_client = connect_redis(settings.redis)
        store = ItemStore(redis_client, RedisKeys(settings.redis.namespace))
        with running_worker(settings, "all", out_dir / "worker.log") as worker:
            _ingest(settings, products, run_id)
            waited = _wait_for_items(store, card.model_id, set(images), 180)
            console.print(
                f"catalogue: {len(products)} products embedded and indexed in {waited:.1f}s "
                f"(+1 broken upload sent to the dead-letter topic)"
            )
            shoppers = SHOPPERS[:2] if short else SHOPPERS
            runs = [_shop(settings, console, s, run_id, short) for s in shoppers]
            if not worker.alive():
                raise RuntimeError(f"worker exited early; see {out_dir / 'worker.log'}")
        dead = {
            k.decode(): int(v)
            for k, v in redis_client.hgetall(
                RedisKeys(settings.redis.namespace).deadletter_counts()
            ).items()
        }
        console.print(f"dead letters by reason (all runs): {dead}")
    for run in runs:
        path = contact_sheet(run, images, TOP, out_dir / f"{run.name}.png")
        console.print(f"contact sheet: {path}")
    console.print(f"report: {html_report(runs, images, TOP, out_dir / 'report.html')}")
    console.print(f"demo finished in {time.monotonic() - t0:.0f}s")
    return runs

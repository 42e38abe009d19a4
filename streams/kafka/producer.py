"""Producing visrec payloads with kafka-python: events from JSON lines, products from images."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaProducer
from pydantic import ValidationError

from schemas import ProductAttributes, ProductImage, Record, UserEvent
from streams.kafka.config import kafka_python_config
from streams.kafka.topics import Topics
from streams.settings import Settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}


@dataclass
class SendReport:
    """What a bulk send did."""

    sent: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def make_producer(settings: Settings, max_request_bytes: int | None = None) -> KafkaProducer:
    """A kafka-python producer: acks=all, idempotent, small linger for batching."""
    return KafkaProducer(
        **kafka_python_config(settings.kafka, client_suffix="producer"),
        acks="all",
        linger_ms=5,
        max_request_size=max_request_bytes or settings.limits.max_product_bytes + 1_048_576,
        enable_idempotence=True,
    )


def send_record(producer: KafkaProducer, topic: str, key: str, record: Record) -> None:
    """Send one record keyed by ``key`` (UTF-8)."""
    producer.send(topic, key=key.encode("utf-8"), value=record.to_json_bytes())


def send_events(settings: Settings, lines: Iterable[str], *, validate: bool = True) -> SendReport:
    """Send JSON-lines ``UserEvent``s keyed by ``user_id``; invalid lines are reported, not sent."""
    topic = Topics.from_settings(settings).events.name
    limits = settings.limits.to_limits()
    report = SendReport()
    producer = make_producer(settings)
    try:
        for lineno, line in enumerate(lines, start=1):
            text = line.strip()
            if not text:
                continue
            if validate:
                try:
                    event = UserEvent.from_json_bytes(text.encode("utf-8"), limits)
                except ValidationError as exc:
                    report.rejected.append((lineno, str(exc.errors()[0]["msg"])))
                    continue
                send_record(producer, topic, event.user_id, event)
            else:
                key = _key_of(text, "user_id")
                producer.send(topic, key=key, value=text.encode("utf-8"))
            report.sent += 1
        producer.flush()
    finally:
        producer.close()
    return report


def _key_of(text: str, field_name: str) -> bytes | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    value = obj.get(field_name) if isinstance(obj, dict) else None
    return str(value).encode("utf-8") if value is not None else None


def product_from_file(
    path: Path, *, category: str | None = None, inline: bool = True, available: bool = True
) -> ProductImage:
    """A ``ProductImage`` for an image file: id = file stem, category = parent folder name."""
    attrs = ProductAttributes(
        title=path.stem.replace("_", " "),
        category=category if category is not None else path.parent.name,
        available=available,
    )
    now = int(time.time() * 1000)
    if inline:
        return ProductImage(
            item_id=path.stem,
            image_b64=base64.b64encode(path.read_bytes()).decode("ascii"),
            attributes=attrs,
            ts_ms=now,
        )
    return ProductImage(
        item_id=path.stem, image_uri=path.resolve().as_uri(), attributes=attrs, ts_ms=now
    )


def image_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Image files under the given files/folders, sorted, recursing into folders."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            yield path


def send_products(settings: Settings, products: Iterable[ProductImage]) -> SendReport:
    """Send ``ProductImage``s keyed by ``item_id``."""
    topic = Topics.from_settings(settings).products.name
    report = SendReport()
    producer = make_producer(settings)
    try:
        for product in products:
            send_record(producer, topic, product.item_id, product)
            report.sent += 1
        producer.flush()
    finally:
        producer.close()
    return report

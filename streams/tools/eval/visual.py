"""``visrec eval visual``: the visual half measured through the real pipeline.

Fashion-MNIST product photos (Debian's ``dataset-fashion-mnist``), upscaled to the encoder's
input, arrive as a stream over simulated days (``streams.tools.eval.visual_sim``). With an
encoder the embed worker serves, each drop is produced to the products topic and the embed
worker embeds it; the raw-pixel baseline encoder's vectors are published the way CF vectors
are (``publish_item_vectors``). Either way the interest worker's index takes them from the
item-vectors topic. Clicks go to the events topic in log order, each only once every product
that arrived before it is in the interest worker's index (its ``visrec_index_items`` gauge)
and the list answering the shopper's previous click has arrived: that list, computed from
the log strictly before the click, is what the click is scored against. The baselines
(``visual_baselines``) are asked at the same moments with the same information.
"""

from __future__ import annotations

import base64
import io
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt
from kafka import KafkaProducer
from PIL import Image

from models.offline.metrics import rank_of
from schemas import EventType, ProductAttributes, ProductImage, Recommendations, UserEvent
from streams.exceptions import ReplayError
from streams.kafka.producer import make_producer, send_record
from streams.kafka.topics import Topics, create_topics
from streams.ops.item_vectors import publish_item_vectors
from streams.settings import Settings
from streams.tools.eval.embeddings import FASHION_CLASSES, FASHION_DIR, raw_pixels, read_idx
from streams.tools.eval.pipeline import cleanup, list_consumer, wait_for_group
from streams.tools.eval.replay import run_settings
from streams.tools.eval.visual_sim import Click, Drop, Scored, World, previous_click
from streams.tools.processes import running_worker
from streams.tools.services import free_port

RAW_PIXELS = "raw-pixels"
"""The encoder name of the baseline embedding: 32 x 32 greyscale thumbnails, mean-centred."""
SIDE = 224
"""Photos are upscaled to the encoders' input side before they are produced."""


@dataclass(frozen=True)
class Photos:
    """Fashion-MNIST test photos (28 x 28 greyscale) and their classes."""

    pixels: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.uint8]

    @classmethod
    def load(cls, directory: Path = FASHION_DIR) -> Photos:
        """The 10,000 test photos, read from the Debian package's files."""
        images = directory / "t10k-images-idx3-ubyte.gz"
        if not images.is_file():
            raise FileNotFoundError(f"{images}: apt-get install dataset-fashion-mnist")
        return cls(read_idx(images), read_idx(directory / "t10k-labels-idx1-ubyte.gz"))

    def png(self, n: int) -> bytes:
        """Photo ``n`` upscaled to ``SIDE`` x ``SIDE`` RGB, as PNG bytes."""
        im = Image.fromarray(self.pixels[n], mode="L").resize(
            (SIDE, SIDE), Image.Resampling.BICUBIC
        )
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "PNG")
        return buf.getvalue()


@dataclass
class PipelineRun:
    """What one encoder's run through the pipeline gave."""

    encoder: str
    scored: Scored
    lists: dict[str, list[str]]
    """Items of every list received, by the event id of the click it answers."""
    indexed_s: list[float] = field(default_factory=list)
    """Per drop (or drops sent together): handed to the pipeline -> all in the worker's index."""
    seconds: float = 0.0


def index_items(port: int) -> int:
    """The interest worker's ``visrec_index_items`` gauge (-1 if it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return -1
    for line in text.splitlines():
        if line.startswith("visrec_index_items "):
            return int(float(line.split()[1]))
    return -1


class _Driver:
    """Sends drops and clicks in log order, collecting lists as they come."""

    def __init__(
        self, settings: Settings, world: World, ingest: Callable[[Drop, int], None], port: int
    ) -> None:
        self.settings, self.world, self.ingest, self.port = settings, world, ingest, port
        self.topic = Topics.from_settings(settings).events.name
        self.prev = previous_click(world)
        self.lists: dict[str, list[str]] = {}
        self.indexed_s: list[float] = []
        """Per wait for the index: seconds from the first drop handed over to all indexed."""
        self.shift_ms = int(time.time() * 1000) - world.log[0].ts_ms
        self.consumer = list_consumer(settings)
        self.producer: KafkaProducer = make_producer(settings)

    def run(self, timeout_s: float) -> None:
        expected = 0
        due: float | None = None
        for entry in self.world.log:
            if isinstance(entry, Drop):
                now = time.monotonic()
                self.ingest(entry, self.shift_ms)
                expected += len(entry.items)
                due = now if due is None else due
                continue
            if due is not None:
                self._until(partial(self._indexed, expected), timeout_s, "index")
                self.indexed_s.append(time.monotonic() - due)
                due = None
            before = self.prev.get(entry.seq)
            if before is not None:
                self._until(partial(self._answered, before.event_id), timeout_s, "list")
            self._send(entry)
        last = {c.user_id: c.event_id for c in self.world.clicks()}
        self._until(lambda: all(e in self.lists for e in last.values()), timeout_s, "last lists")

    def _indexed(self, n: int) -> bool:
        return index_items(self.port) >= n

    def _answered(self, event_id: str) -> bool:
        return event_id in self.lists

    def _send(self, c: Click) -> None:
        wire = UserEvent(
            event_id=c.event_id,
            user_id=c.user_id,
            item_id=c.item_id,
            type=EventType.CLICK,
            ts_ms=c.ts_ms + self.shift_ms,
        )
        self.producer.send(self.topic, key=c.user_id.encode(), value=wire.to_json_bytes())
        self.producer.flush()

    def _until(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise ReplayError(f"visual run: {what} not there within {timeout_s:.0f}s")
            self._receive()

    def _receive(self) -> None:
        for records in self.consumer.poll(timeout_ms=10).values():
            for record in records:
                recs = Recommendations.from_json_bytes(record.value)
                if recs.trigger_event_id and recs.trigger_event_id not in self.lists:
                    self.lists[recs.trigger_event_id] = [i.item_id for i in recs.items]

    def close(self) -> None:
        self.producer.close()
        self.consumer.close()


def product_ingest(settings: Settings, photos: Photos) -> Callable[[Drop, int], None]:
    """A drop produced to the products topic (the embed worker embeds it)."""
    topic = Topics.from_settings(settings).products.name
    producer = make_producer(settings)

    def ingest(drop: Drop, shift_ms: int) -> None:
        for item_id, photo, label in drop.items:
            record = ProductImage(
                item_id=item_id,
                image_b64=base64.b64encode(photos.png(photo)).decode("ascii"),
                attributes=ProductAttributes(title=item_id, category=FASHION_CLASSES[label]),
                ts_ms=drop.ts_ms + shift_ms,
            )
            send_record(producer, topic, item_id, record)
        producer.flush()

    return ingest


def raw_pixel_ingest(settings: Settings, photos: Photos) -> Callable[[Drop, int], None]:
    """A drop's raw-pixel vectors published as a model of their own (no embed worker)."""

    def ingest(drop: Drop, shift_ms: int) -> None:
        vectors = raw_pixels([photos.png(photo) for _, photo, _ in drop.items])
        published = {item_id: vectors[n] for n, (item_id, _, _) in enumerate(drop.items)}
        attrs = {
            item_id: ProductAttributes(title=item_id, category=FASHION_CLASSES[label])
            for item_id, _, label in drop.items
        }
        arrived = {item_id: drop.ts_ms + shift_ms for item_id, _, _ in drop.items}
        publish_item_vectors(settings, f"{RAW_PIXELS}-32", published, attrs, arrived_ms=arrived)

    return ingest


def run_encoder(
    settings: Settings,
    world: World,
    photos: Photos,
    encoder: str,
    workdir: Path,
    k: int,
    timeout_s: float = 300.0,
) -> PipelineRun:
    """One encoder's pass of the whole log through Kafka and the workers."""
    run_id = uuid.uuid4().hex[:8]
    rs = run_settings(settings, [k], run_id)
    rs = rs.model_copy(
        update={"embed": rs.embed.model_copy(update={"model": encoder}), "web_port": free_port()}
    )
    create_topics(rs)
    t0 = time.monotonic()
    try:
        with running_worker(rs, "interests", workdir / f"interests-{encoder}.log") as worker:
            wait_for_group(rs, f"{rs.app_id}-interests", worker, timeout_s=90.0)
            if encoder == RAW_PIXELS:
                driver = _drive(rs, world, raw_pixel_ingest(rs, photos), timeout_s)
            else:
                embed_settings = rs.model_copy(update={"web_port": None})
                log = workdir / f"embed-{encoder}.log"
                with running_worker(embed_settings, "embed", log) as embed:
                    wait_for_group(rs, f"{rs.app_id}-embed", embed, timeout_s=180.0)
                    driver = _drive(rs, world, product_ingest(rs, photos), timeout_s)
    finally:
        cleanup(rs)
    prev = previous_click(world)
    ranks = {
        c.seq: rank_of(driver.lists.get(prev[c.seq].event_id, []), c.item_id)
        for c in world.clicks()
        if c.seq in prev
    }
    return PipelineRun(
        encoder,
        Scored(f"visrec ({encoder})", ranks),
        driver.lists,
        driver.indexed_s,
        time.monotonic() - t0,
    )


def _drive(
    settings: Settings, world: World, ingest: Callable[[Drop, int], None], timeout_s: float
) -> _Driver:
    driver = _Driver(settings, world, ingest, settings.web_port or 0)
    try:
        driver.run(timeout_s)
    finally:
        driver.close()
    return driver


def first_appearance(
    world: World, lists: dict[str, list[str]], k: int
) -> dict[str, tuple[float, str]]:
    """Per product: simulated hours to its first list (top ``k``) of a matching shopper.

    A matching shopper liked the product's class at the time; also the event id of the click
    that list answered.
    """
    out: dict[str, tuple[float, str]] = {}
    for c in world.clicks():
        for item in lists.get(c.event_id, [])[:k]:
            if item not in out and world.label[item] in c.liked:
                out[item] = ((c.ts_ms - world.arrived_ms[item]) / 3_600_000, c.event_id)
    return out


def appearance_stats(
    world: World, lists: dict[str, list[str]], k: int, items: Sequence[str]
) -> dict[str, float]:
    """p50/p99 of simulated hours to first appearance over ``items``, and how many appeared."""
    first = first_appearance(world, lists, k)
    hours = [first[i][0] for i in items if i in first]
    out: dict[str, float] = {"products": float(len(items)), "appeared": float(len(hours))}
    if hours:
        out["hours_p50"] = float(np.percentile(hours, 50))
        out["hours_p99"] = float(np.percentile(hours, 99))
    return out

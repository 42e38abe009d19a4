"""Topic declarations (the one place names and partition counts come from) and their creation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from schemas import DeadLetter, ItemVector, ProductImage, Recommendations, Record, UserEvent
from streams.kafka.config import kafka_python_config
from streams.settings import Settings

OVERSIZE_HEADROOM = 10 * 1024 * 1024


def product_topic_max_bytes(settings: Settings) -> int:
    """Broker limit for product messages: above ours, so oversize ones get dead-lettered."""
    return max(2 * settings.limits.max_product_bytes, OVERSIZE_HEADROOM) + 1_048_576


R = TypeVar("R", bound=Record)


@dataclass(frozen=True, slots=True)
class TopicSpec(Generic[R]):
    """A topic: its name, partitions and broker-side config, and what its messages are.

    ``record`` is the contract every value must validate as, ``key_field`` the field the
    Kafka key must equal, ``max_bytes`` the largest value accepted: what the edge checks
    (``streams.edge.codec.decode_message``), for a worker and for a dead-letter replay alike.
    """

    name: str
    partitions: int
    config: tuple[tuple[str, str], ...] = ()
    record: type[R] | None = None
    key_field: str | None = None
    max_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Topics:
    """The five topics of DESIGN.md, named ``<prefix>.<name>.v1``."""

    events: TopicSpec[UserEvent]
    products: TopicSpec[ProductImage]
    item_vectors: TopicSpec[ItemVector]
    recommendations: TopicSpec[Recommendations]
    dead_letter: TopicSpec[DeadLetter]

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        """Names and partition counts from the settings."""
        t = settings.topics
        p = t.prefix
        return cls(
            # Oversized events must reach the edge to be dead-lettered, not vanish in a
            # producer-side MessageSizeTooLarge, hence a broker limit above ours.
            events=TopicSpec(
                f"{p}.events.v1",
                t.events_partitions,
                (("max.message.bytes", str(OVERSIZE_HEADROOM)),),
                UserEvent,
                "user_id",
                settings.limits.max_event_bytes,
            ),
            products=TopicSpec(
                f"{p}.products.v1",
                t.products_partitions,
                # Compacted too: the latest image of every item is the catalogue a re-embed reads.
                (
                    ("max.message.bytes", str(product_topic_max_bytes(settings))),
                    ("cleanup.policy", "compact"),
                ),
                ProductImage,
                "item_id",
                settings.limits.max_product_bytes,
            ),
            item_vectors=TopicSpec(
                f"{p}.item-vectors.v1",
                t.item_vectors_partitions,
                # Compacted: the latest vector per item is the catalogue; a new worker reads it all.
                (("cleanup.policy", "compact"), ("min.cleanable.dirty.ratio", "0.1")),
                ItemVector,
                "item_id",
            ),
            recommendations=TopicSpec(
                f"{p}.recommendations.v1",
                t.recommendations_partitions,
                record=Recommendations,
                key_field="user_id",
            ),
            dead_letter=TopicSpec(
                f"{p}.dead-letter.v1",
                t.dead_letter_partitions,
                (("max.message.bytes", str(product_topic_max_bytes(settings) + 1_048_576)),),
                DeadLetter,
            ),
        )

    def inputs(self) -> tuple[TopicSpec[Any], ...]:
        """The topics outsiders write and workers validate: events and products."""
        return (self.events, self.products)

    def all(self) -> tuple[TopicSpec[Any], ...]:
        """Every topic, in DESIGN.md order."""
        return (
            self.events,
            self.products,
            self.item_vectors,
            self.recommendations,
            self.dead_letter,
        )


def create_topics(settings: Settings) -> dict[str, str]:
    """Create any missing topic; returns name -> 'created' | 'exists'. Safe to run repeatedly."""
    topics = Topics.from_settings(settings)
    admin = KafkaAdminClient(**kafka_python_config(settings.kafka, client_suffix="admin"))
    try:
        existing = set(admin.list_topics())
        result: dict[str, str] = {}
        for spec in topics.all():
            if spec.name in existing:
                result[spec.name] = "exists"
                continue
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            spec.name,
                            num_partitions=spec.partitions,
                            replication_factor=settings.topics.replication_factor,
                            topic_configs=dict(spec.config),
                        )
                    ]
                )
                result[spec.name] = "created"
            except TopicAlreadyExistsError:
                result[spec.name] = "exists"
        return result
    finally:
        admin.close()


def delete_topics(settings: Settings) -> None:
    """Delete visrec's topics (tests and `visrec topics delete`)."""
    topics = Topics.from_settings(settings)
    admin = KafkaAdminClient(**kafka_python_config(settings.kafka, client_suffix="admin"))
    try:
        existing = set(admin.list_topics())
        names = [t.name for t in topics.all() if t.name in existing]
        if names:
            admin.delete_topics(names)
    finally:
        admin.close()

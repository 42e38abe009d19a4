"""Topic declarations (the one place names and partition counts come from) and their creation."""

from __future__ import annotations

from dataclasses import dataclass

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from streams.kafka_config import kafka_python_config
from streams.settings import Settings

OVERSIZE_HEADROOM = 10 * 1024 * 1024


def product_topic_max_bytes(settings: Settings) -> int:
    """Broker limit for product messages: above ours, so oversize ones get dead-lettered."""
    return max(2 * settings.limits.max_product_bytes, OVERSIZE_HEADROOM) + 1_048_576


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic's name, partitions and broker-side config."""

    name: str
    partitions: int
    config: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Topics:
    """The five topics of DESIGN.md, named ``<prefix>.<name>.v1``."""

    events: TopicSpec
    products: TopicSpec
    item_vectors: TopicSpec
    recommendations: TopicSpec
    dead_letter: TopicSpec

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
            ),
            products=TopicSpec(
                f"{p}.products.v1",
                t.products_partitions,
                # Compacted too: the latest image of every item is the catalogue a re-embed reads.
                (
                    ("max.message.bytes", str(product_topic_max_bytes(settings))),
                    ("cleanup.policy", "compact"),
                ),
            ),
            item_vectors=TopicSpec(
                f"{p}.item-vectors.v1",
                t.item_vectors_partitions,
                # Compacted: the latest vector per item is the catalogue; a new worker reads it all.
                (("cleanup.policy", "compact"), ("min.cleanable.dirty.ratio", "0.1")),
            ),
            recommendations=TopicSpec(f"{p}.recommendations.v1", t.recommendations_partitions),
            dead_letter=TopicSpec(
                f"{p}.dead-letter.v1",
                t.dead_letter_partitions,
                (("max.message.bytes", str(product_topic_max_bytes(settings) + 1_048_576)),),
            ),
        )

    def all(self) -> tuple[TopicSpec, ...]:
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

"""Kafka helpers for integration tests: plain clients, topic readers, the replay driver."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from schemas import Recommendations, UserEvent
from streams.kafka.config import kafka_python_config
from streams.kafka.topics import Topics
from streams.settings import Settings


def raw_producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(
        **kafka_python_config(settings.kafka, client_suffix="test"),
        acks="all",
        max_request_size=48 * 1024 * 1024,
    )


def collect(
    settings: Settings,
    topic: str,
    until: Callable[[list[Any]], bool],
    timeout_s: float = 60.0,
) -> list[Any]:
    """Read ``topic`` from the beginning (all partitions) until ``until(messages)`` or timeout."""
    consumer = KafkaConsumer(
        **kafka_python_config(settings.kafka, client_suffix="collect"),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=32 * 1024 * 1024,
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        messages: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                messages.extend(records)
            if until(messages):
                return messages
        return messages
    finally:
        consumer.close()


def list_answering(settings: Settings, event_id: str, timeout_s: float = 60.0) -> Recommendations:
    """The list on the recommendations topic whose trigger is ``event_id`` (waits for it)."""
    topic = Topics.from_settings(settings).recommendations.name

    def answers(message: Any) -> bool:
        return Recommendations.from_json_bytes(message.value).trigger_event_id == event_id

    found = collect(settings, topic, lambda m: any(answers(x) for x in m), timeout_s)
    answer = next((x for x in found if answers(x)), None)
    if answer is None:
        raise AssertionError(f"no list answered {event_id} within {timeout_s}s")
    return Recommendations.from_json_bytes(answer.value)


def send_event(settings: Settings, event: UserEvent) -> Recommendations:
    """Produce ``event`` (keyed by its user) and return the list that answers it."""
    topic = Topics.from_settings(settings).events.name
    producer = raw_producer(settings)
    try:
        producer.send(topic, key=event.user_id.encode("utf-8"), value=event.to_json_bytes())
        producer.flush()
    finally:
        producer.close()
    return list_answering(settings, event.event_id)


class TopicReader:
    """Reads a topic from the beginning, incrementally: one consumer, messages kept in order."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = KafkaConsumer(
            **kafka_python_config(settings.kafka, client_suffix="reader"),
            group_id=None,
            enable_auto_commit=False,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=32 * 1024 * 1024,
        )
        partitions = self.consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.messages: list[Any] = []

    def poll(self, timeout_ms: int = 200) -> list[Any]:
        """New messages since the last call (also appended to ``messages``)."""
        new: list[Any] = []
        for records in self.consumer.poll(timeout_ms=timeout_ms).values():
            new.extend(records)
        self.messages.extend(new)
        return new

    def until(
        self,
        check: Callable[[list[Any]], bool],
        timeout_s: float,
        on_new: Callable[[list[Any]], None] | None = None,
    ) -> bool:
        """Poll until ``check(new messages)`` is true (``on_new`` sees each chunk first)."""
        deadline = time.monotonic() + timeout_s
        while True:
            new = self.poll()
            if on_new is not None and new:
                on_new(new)
            if check(new):
                return True
            if time.monotonic() > deadline:
                return False

    def close(self) -> None:
        self.consumer.close()


def group_members(settings: Settings, group: str) -> int:
    """How many members the consumer group has now (0 if it is empty or unknown)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(**kafka_python_config(settings.kafka, client_suffix="admin"))
    try:
        described = admin.describe_groups([group]).get(group, {})
        return len(described.get("members") or [])
    finally:
        admin.close()


class Replay:
    """Sends ``(key, value)`` messages to ``topic`` at ``rate`` per second from a thread.

    ``sent`` counts messages handed to the producer; ``join`` flushes and raises if the broker
    refused any (the idempotent producer retries through broker restarts meanwhile).
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        messages: list[tuple[bytes | None, bytes]],
        rate: float,
    ) -> None:
        import threading

        self.settings = settings
        self.topic = topic
        self.messages = messages
        self.rate = rate
        self.sent = 0
        self.errors: list[BaseException] = []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replay", daemon=True)

    def start(self) -> Replay:
        self._thread.start()
        return self

    def _run(self) -> None:
        producer = raw_producer(self.settings)
        futures = []
        try:
            start = time.monotonic()
            for i, (key, value) in enumerate(self.messages):
                if self._halt.is_set():
                    return
                delay = start + i / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                futures.append(producer.send(self.topic, key=key, value=value))
                self.sent = i + 1
            producer.flush(timeout=300)
            self.errors.extend(f.exception for f in futures if f.failed())
        except BaseException as exc:  # surfaced by join(): a dead thread must fail the test
            self.errors.append(exc)
        finally:
            producer.close()

    def stop(self) -> None:
        """Stop sending (a failed test's cleanup); the producer is closed on the way out."""
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join(60)

    def wait_sent(self, n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.sent < n and self._thread.is_alive():
            if time.monotonic() > deadline:
                raise TimeoutError(f"replay sent {self.sent} of {n} within {timeout_s}s")
            time.sleep(0.05)

    def join(self, timeout_s: float = 300.0) -> None:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"replay still running after {timeout_s}s ({self.sent} sent)")
        import gc
        import warnings

        # kafka-python drops the sockets of connection attempts that failed (while a broker
        # restarts) without closing them; collect them here, rather than as "unraisable"
        # warnings in whichever later test the garbage collector happens to run.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        if self.errors:
            raise RuntimeError(f"{len(self.errors)} messages not delivered: {self.errors[0]!r}")


def committed_offsets(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset of each partition of ``topic`` (0 where none yet)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(**kafka_python_config(settings.kafka, client_suffix="admin"))
    try:
        found = admin.list_group_offsets([group]).get(group, {})
        return {
            tp.partition: max(0, int(getattr(meta, "offset", meta)))
            for tp, meta in found.items()
            if tp.topic == topic
        }
    finally:
        admin.close()

"""Helpers for integration tests: worker subprocesses and plain Kafka clients."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.kafka_config import kafka_python_config
from streams.settings import Settings, settings_env


class WorkerProcess:
    """A ``visrec worker ROLE`` child process with the test's settings."""

    def __init__(
        self, settings: Settings, role: str, log: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.role = role
        self.log = log
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, **settings_env(self.settings), **self.extra_env}
        env["PYTHONUNBUFFERED"] = "1"
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from streams.cli import main; main()", "worker", self.role],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        out.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def running_worker(settings: Settings, role: str, log: Path, **kw: Any) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(settings, role, log, **kw).start()
    try:
        yield worker
    finally:
        worker.stop()


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

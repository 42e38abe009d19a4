"""The Kafka side of a replay: the worker process, sending events, collecting lists, cleanup.

See ``streams.tools.eval.replay`` for what is replayed and how it is scored; this module only moves
events and lists, paced as ``Pacing`` says.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError
from tqdm import tqdm

from schemas import EventType, Recommendations, RedisKeys, UserEvent
from streams.exceptions import ReplayError
from streams.kafka.config import kafka_python_config
from streams.kafka.producer import make_producer
from streams.kafka.topics import Topics, delete_topics
from streams.settings import Settings
from streams.state.recs import RecsCache
from streams.state.redis import connect_redis
from streams.tools.eval.prequential import COLD_TRIGGER, LogEvent, ReceivedList
from streams.tools.processes import WorkerProcess


@dataclass(frozen=True)
class Pacing:
    """How fast events go out (see ``streams.tools.eval.replay``)."""

    speedup: float = 0.0
    closed_loop: bool = True
    lookahead: int = 0
    """0 (the default): no look-ahead. No event goes out while an earlier test event is
    unsent, so the list a test event is scored against was computed from the log strictly
    before it. N > 0: other users' events may run up to N log positions ahead of the oldest
    unsent event (faster; popularity and co-occurrence then see up to N events of the future)."""
    list_timeout_s: float = 120.0
    progress: bool = True


def wait_for_group(settings: Settings, group: str, worker: WorkerProcess, timeout_s: float) -> None:
    """Block until the worker's consumer group is stable (it consumes from then on)."""
    admin = KafkaAdminClient(**kafka_python_config(settings.kafka, client_suffix="eval-admin"))
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not worker.alive():
                raise ReplayError(f"worker exited with {worker.stop()} before consuming")
            try:
                found = admin.describe_groups([group]).get(group) or {}
            except KafkaError:
                found = {}  # the group coordinator is not up yet on a fresh broker
            if found.get("group_state") == "Stable" and found.get("members"):
                return
            time.sleep(0.5)
        raise ReplayError(f"consumer group {group} not stable within {timeout_s:.0f}s")
    finally:
        admin.close()


def list_consumer(settings: Settings) -> KafkaConsumer:
    """A consumer of the run's recommendations topic, from its beginning, no group."""
    topic = Topics.from_settings(settings).recommendations.name
    consumer = KafkaConsumer(
        **kafka_python_config(settings.kafka, client_suffix="eval"),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )
    partitions = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, n) for n in sorted(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    return consumer


class _Replayer:
    """Sends events as the pacing allows and collects lists, one loop on one thread."""

    def __init__(
        self,
        settings: Settings,
        events: Sequence[LogEvent],
        pacing: Pacing,
        worker: WorkerProcess,
        recs: RecsCache,
    ) -> None:
        self.events = events
        self.recs = recs
        self.pacing = pacing
        self.worker = worker
        self.topic = Topics.from_settings(settings).events.name
        self.seq_of = {e.event_id: e.seq for e in events}
        self.last_of: dict[str, int] = {}
        self.prev_of: list[int | None] = []
        last_train: dict[str, int] = {}
        for e in events:
            self.prev_of.append(self.last_of.get(e.user_id))
            self.last_of[e.user_id] = e.seq
            if not e.test:
                last_train[e.user_id] = e.seq
        # Users whose training events the worker has not caught up with yet.
        self.catching_up = last_train
        self.shift_ms = int(time.time() * 1000) - events[0].ts_ms
        self.sent: dict[int, float] = {}
        self.lists: dict[str, list[ReceivedList]] = defaultdict(list)
        self.queues: dict[str, deque[int]] = {}
        self.waiting: dict[str, tuple[int, float]] = {}  # user -> (test seq, sent at)
        self.answered: dict[str, int] = {}  # user -> highest trigger seq received
        self.admitted = 0
        self.start = time.monotonic()
        # Strict pacing: the test events in log order, and the first one not yet sent.
        self.tests = [e.seq for e in events if e.test]
        self.next_test = 0

    def admit(self, now: float) -> None:
        """Queue events (per user, in log order) that are due and inside the lookahead."""
        events, pacing = self.events, self.pacing
        oldest = min((q[0] for q in self.queues.values()), default=self.admitted)
        strict = pacing.lookahead == 0
        while self.admitted < len(events) and (strict or self.admitted < oldest + pacing.lookahead):
            while self.next_test < len(self.tests) and self.tests[self.next_test] in self.sent:
                self.next_test += 1
            pending = self.tests[self.next_test] if self.next_test < len(self.tests) else None
            if strict and pending is not None and pending < self.admitted:
                return  # an earlier test event's list is not fixed yet
            ev = events[self.admitted]
            if pacing.speedup > 0:
                due = (ev.ts_ms - events[0].ts_ms) / 1000.0 / pacing.speedup
                if self.start + due > now:
                    return
            self.queues.setdefault(ev.user_id, deque()).append(self.admitted)
            self.admitted += 1

    def send_ready(self, producer: KafkaProducer) -> int:
        """Send what may go now, oldest first; returns how many events were sent."""
        before = len(self.sent)
        for _, user in sorted((q[0], u) for u, q in self.queues.items()):
            queue = self.queues[user]
            while queue and not self._must_wait(self.events[queue[0]]):
                ev = self.events[queue.popleft()]
                if ev.test and not self.lists.get(user):
                    self._show_cold_list(user)
                wire = UserEvent(
                    event_id=ev.event_id,
                    user_id=ev.user_id,
                    item_id=ev.item_id,
                    type=EventType(ev.event_type),
                    ts_ms=ev.ts_ms + self.shift_ms,
                )
                producer.send(self.topic, key=user.encode(), value=wire.to_json_bytes())
                self.sent[ev.seq] = time.monotonic()
                if self.pacing.closed_loop and ev.test:
                    self.waiting[user] = (ev.seq, self.sent[ev.seq])
            if not queue:
                del self.queues[user]
        return len(self.sent) - before

    def _show_cold_list(self, user: str) -> None:
        """What the read API would serve the user now: the cold list, if a worker wrote one."""
        cold = self.recs.read_cold()
        if cold is not None:
            items = tuple(i.item_id for i in cold.items)
            self.lists[user].append(ReceivedList(COLD_TRIGGER, time.monotonic(), items))

    def _must_wait(self, ev: LogEvent) -> bool:
        """Closed loop: hold a test event until the worker has caught up with training.

        Then each test event waits for the list answering the user's previous event.
        """
        if not (self.pacing.closed_loop and ev.test):
            return False
        if self.catching_up:
            return True
        prev = self.prev_of[ev.seq]
        return prev is not None and self.answered.get(ev.user_id, -1) < prev

    def receive(self, consumer: KafkaConsumer, timeout_ms: int) -> None:
        """Record every list that arrived."""
        for records in consumer.poll(timeout_ms=timeout_ms).values():
            received = time.monotonic()
            for record in records:
                self.record(Recommendations.from_json_bytes(record.value), received)

    def record(self, recs: Recommendations, received: float) -> None:
        """Keep one list; release its user if it answers what the user waits for."""
        trigger = self.seq_of.get(recs.trigger_event_id or "")
        if trigger is None:
            return  # not one of ours
        user = recs.user_id
        items = tuple(i.item_id for i in recs.items)
        self.lists[user].append(ReceivedList(trigger, received, items))
        self.answered[user] = max(self.answered.get(user, -1), trigger)
        if self.catching_up.get(user, len(self.events)) <= trigger:
            del self.catching_up[user]
        if user in self.waiting and trigger >= self.waiting[user][0]:
            del self.waiting[user]

    def finished(self) -> bool:
        """Every event sent and every user's last event answered."""
        if self.admitted < len(self.events) or self.queues or self.waiting:
            return False
        return all(self.answered.get(u, -1) >= s for u, s in self.last_of.items())

    def check(self) -> None:
        """Raise if the worker died or an answer is overdue."""
        if not self.worker.alive():
            raise ReplayError(f"worker exited with {self.worker.stop()} during the replay")
        now, limit = time.monotonic(), self.pacing.list_timeout_s
        overdue = [u for u, (_, at) in self.waiting.items() if now - at > limit]
        all_sent = self.admitted == len(self.events) and not self.queues
        if all_sent and self.sent and now - max(self.sent.values()) > limit:
            overdue += [u for u, s in self.last_of.items() if self.answered.get(u, -1) < s]
        if overdue:
            raise ReplayError(f"no list within {limit:.0f}s for {len(overdue)} user(s)")


def replay_events(
    settings: Settings,
    events: Sequence[LogEvent],
    pacing: Pacing,
    worker: WorkerProcess,
) -> tuple[dict[int, float], dict[str, list[ReceivedList]]]:
    """Send every event as the pacing allows; collect every list. Returns send times, lists."""
    client = connect_redis(settings.redis)
    recs = RecsCache(client, RedisKeys(settings.redis.namespace))
    replayer = _Replayer(settings, events, pacing, worker, recs)
    producer = make_producer(settings)
    consumer = list_consumer(settings)
    bar = tqdm(total=len(events), unit="ev", disable=not pacing.progress, desc="replay")
    try:
        while not replayer.finished():
            replayer.admit(time.monotonic())
            sent = replayer.send_ready(producer)
            bar.update(sent)
            replayer.receive(consumer, timeout_ms=2 if sent else 20)
            replayer.check()
    finally:
        bar.close()
        producer.close()
        consumer.close()
        client.close()
    return replayer.sent, dict(replayer.lists)


def cleanup(settings: Settings) -> None:
    """Delete the run's topics and every Redis key of its private namespace."""
    try:
        delete_topics(settings)
    finally:
        client = connect_redis(settings.redis)
        pattern = f"{settings.redis.namespace}:*"
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
        client.close()

"""A running worker's /metrics, /healthz, /readyz and read API, and graceful shutdown on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

from schemas import EventType, Recommendations, RedisKeys, UserEvent
from streams.kafka.topics import Topics, create_topics
from streams.settings import Settings
from streams.state.recs import RecsCache
from streams.state.redis import connect_redis
from streams.tools.processes import WorkerProcess
from streams.tools.services import free_port
from tests.support import metric_value, raw_producer


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _events(n: int, start: int) -> list[UserEvent]:
    return [
        UserEvent(
            event_id=f"e{start + i}",
            user_id=f"u{i % 7}",
            item_id=f"i{i % 5}",
            type=EventType.VIEW,
            ts_ms=1_764_000_000_000 + i,
        )
        for i in range(n)
    ]


def test_metrics_change_under_load_and_sigterm_exits_cleanly(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    settings = settings.model_copy(update={"web_port": port, "shutdown_timeout_s": 10.0})
    create_topics(settings)
    topics = Topics.from_settings(settings)
    base = f"http://127.0.0.1:{port}"
    worker = WorkerProcess(settings, "interests", tmp_path / "w.log").start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if _get(f"{base}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        status, body = _get(f"{base}/healthz")
        assert (status, json.loads(body)) == (200, {"ok": True}), worker.output()[-2000:]
        assert _get(f"{base}/readyz")[0] == 200, worker.output()[-2000:]
        before = _get(f"{base}/metrics")[1].decode()

        producer = raw_producer(settings)
        for event in _events(300, 0):
            producer.send(
                topics.events.name, key=event.user_id.encode(), value=event.to_json_bytes()
            )
        producer.send(topics.events.name, key=b"u1", value=b"{not json")
        producer.flush()
        deadline = time.monotonic() + 60
        after = before
        while time.monotonic() < deadline:
            after = _get(f"{base}/metrics")[1].decode()
            if metric_value(after, "visrec_events_consumed_total") >= 301:
                break
            time.sleep(0.5)
        assert metric_value(before, "visrec_events_consumed_total") == 0
        assert metric_value(after, "visrec_events_consumed_total") == 301
        assert metric_value(after, "visrec_events_applied_total") == 300
        assert metric_value(after, 'visrec_dead_letters_total{error_code="invalid_json"') == 1
        assert metric_value(after, "visrec_refresh_latency_seconds_count") >= 300
        assert "visrec_index_items" in after

        # The worker serves the lists it wrote (the read API, streams/api.py).
        cached = RecsCache(connect_redis(settings.redis), RedisKeys(settings.redis.namespace)).read(
            "u1"
        )
        assert cached is not None
        status, body = _get(f"{base}/v1/users/u1/recommendations")
        assert status == 200 and Recommendations.from_json_bytes(body) == cached
        # A user with no events gets the cold list the worker ranked for a user without history
        # (empty here: this worker has no catalogue; tests/unit/test_update_interests.py checks
        # its items).
        cold = RecsCache(connect_redis(settings.redis), RedisKeys(settings.redis.namespace))
        cold_list = cold.read_cold()
        assert cold_list is not None and cold_list.trigger_event_id is None
        status, body = _get(f"{base}/v1/users/nobody/recommendations")
        assert status == 200
        assert Recommendations.from_json_bytes(body) == cold_list.model_copy(
            update={"user_id": "nobody"}
        )
        assert (
            "/v1/users/{user_id}/recommendations"
            in json.loads(_get(f"{base}/openapi.json")[1])["paths"]
        )

        # SIGTERM while a new burst is in flight: the worker drains, commits and exits in time.
        for event in _events(500, 1000):
            producer.send(
                topics.events.name, key=event.user_id.encode(), value=event.to_json_bytes()
            )
        producer.flush()
        producer.close()
        time.sleep(0.5)
        assert worker.proc is not None
        os.killpg(worker.proc.pid, signal.SIGTERM)
        start = time.monotonic()
        code = worker.proc.wait(30)
        took = time.monotonic() - start
        assert took < settings.shutdown_timeout_s + 5, took
        assert code == 0, worker.output()[-3000:]
    finally:
        worker.kill()

    # What the first worker committed is not processed again by the next one: offsets were
    # committed on shutdown, so a restarted worker only sees the rest (if any) of the burst.
    worker = WorkerProcess(settings, "interests", tmp_path / "w2.log").start()
    try:
        deadline = time.monotonic() + 90
        text = ""
        while time.monotonic() < deadline:
            try:
                status, body = _get(f"{base}/metrics")
                text = body.decode()
                if status == 200 and _get(f"{base}/readyz")[0] == 200:
                    time.sleep(3)
                    text = _get(f"{base}/metrics")[1].decode()
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert metric_value(text, "visrec_events_consumed_total") < 500, worker.output()[-2000:]
    finally:
        worker.stop()

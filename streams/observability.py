"""Metrics, health and logs for worker processes.

With ``VISREC_WEB_PORT`` set, a worker serves ``/metrics`` (Prometheus text format),
``/healthz`` (the process runs) and ``/readyz`` (its index is loaded and partitions are
assigned) through faust's web server. Consumer lag per partition is refreshed every few
seconds into ``visrec_consumer_lag``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

CONSUMER_LAG = Gauge(
    "visrec_consumer_lag",
    "Messages behind the partition's end, per assigned partition",
    ["topic", "partition"],
)
LAG_INTERVAL_S = 5.0


class JsonFormatter(logging.Formatter):
    """One JSON object per log line (for log shippers)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as JSON with time, level, logger and message."""
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(level: str, as_json: bool) -> None:
    """Root logging: plain text or JSON lines on stderr."""
    handler = logging.StreamHandler()
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper().replace("WARN", "WARNING").replace("WARNINGING", "WARNING"))


def install(app: faust.App, ready: Callable[[], bool]) -> None:
    """Add /metrics, /healthz, /readyz pages and the consumer-lag timer to ``app``."""

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # aiohttp wants the charset apart from the content type.
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"ok": True})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ok = ready() and bool(app.consumer.assignment())
        return web.json({"ready": ok}, status=200 if ok else 503)

    @app.timer(interval=LAG_INTERVAL_S)  # type: ignore[untyped-decorator]  # faust is untyped
    async def consumer_lag() -> None:
        consumer = app.consumer
        # faust keeps committed offsets privately; it is the only in-process source of them.
        committed = getattr(consumer, "_committed_offset", {})
        for tp in consumer.assignment():
            try:
                end = consumer.highwater(tp)
            except Exception:
                continue
            if end is None:
                continue  # not fetched since the (re)assignment: unknown, not zero
            done = committed.get(tp) or 0
            CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - done))

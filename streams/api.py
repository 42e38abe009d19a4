"""The HTTP read API: each user's cached list, as JSON, for web pages and services.

``GET /v1/users/{user_id}/recommendations`` answers with the ``Recommendations`` document the
interest worker last wrote for the user: byte for byte the JSON it sent on the
recommendations topic (the cache holds it zlib-compressed; ``streams.state.recs``). A user
with no list of their own (no event yet) gets the **cold list**: what the worker ranks for a
user without history (popular and, with ``interest.fresh_weight``, newly arrived items),
refreshed at most every ``interest.co_cache_ms``, with the user's id and
``trigger_event_id`` null. An optional ``?limit=N`` keeps the first N items. Errors are
JSON too: ``{"error": <code>, "detail": <text>}`` with 400 (``invalid_user_id``,
``invalid_limit``), 404 (``not_found``: nothing cached for the user, and no cold list yet),
503 (``unavailable``: Redis did not answer) or 500 (``corrupt_cache``).

The routes live in two servers, the same handlers in both:

- inside a worker, on faust's own web server (aiohttp), when ``VISREC_WEB_PORT`` is set
  (``install``), beside ``/metrics``, ``/healthz`` and ``/readyz``;
- ``visrec serve``, a read-only process on aiohttp alone (``serve_app``), which needs Redis
  and nothing else: no Kafka consumer, no item index, so it scales apart from the workers.

Reads go through one pipelined asyncio connection (``streams.state.pipelined``), so a slow
Redis never blocks the event loop the worker's agents run on, at ~40 % of the CPU of
``redis.asyncio`` per GET. ``/openapi.json`` describes every route (``openapi_document``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import faust
from aiohttp import web
from prometheus_client import Counter, Histogram
from pydantic import TypeAdapter, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas import Limits, Recommendations, RedisKeys
from schemas.base import Identifier
from streams.settings import RedisSettings
from streams.state.pipelined import PipelinedRedis
from streams.state.recs import inflate_recs

RECS_ROUTE = "/v1/users/{user_id}/recommendations"
OPENAPI_ROUTE = "/openapi.json"
JSON = "application/json"

HTTP_REQUESTS = Counter(
    "visrec_http_requests_total",
    "Read-API requests answered, by route and status code",
    ["route", "status"],
)
HTTP_SECONDS = Histogram(
    "visrec_http_request_seconds",
    "Time to answer a read-API request, from routing to the body ready",
    ["route"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)

_USER_ID: TypeAdapter[str] = TypeAdapter(Identifier)


def error_body(code: str, detail: str) -> bytes:
    """The JSON body of every error answer."""
    return json.dumps({"error": code, "detail": detail}, ensure_ascii=False).encode("utf-8")


class Reader(Protocol):
    """What the API needs of a Redis client (``PipelinedRedis``; ``redis.asyncio.Redis``)."""

    async def get(self, key: str) -> bytes | None: ...

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...


class ReadApi:
    """Answers read requests from the recommendations cache; no web framework inside."""

    def __init__(self, client: Reader, keys: RedisKeys, limits: Limits) -> None:
        """Reads ``keys.user_recs`` through ``client``; ids are checked against ``limits``."""
        self._r = client
        self._keys = keys
        self._limits = limits

    @classmethod
    def from_settings(cls, redis: RedisSettings, limits: Limits) -> ReadApi:
        """An API over one pipelined connection to ``redis`` (connects on first use)."""
        return cls(PipelinedRedis(redis), RedisKeys(redis.namespace), limits)

    async def close(self) -> None:
        """Close the Redis connections."""
        await self._r.aclose()

    async def recommendations(self, user_id: str, limit: str | None) -> tuple[int, bytes]:
        """(status, JSON body) for ``GET /v1/users/{user_id}/recommendations[?limit=N]``."""
        try:
            _USER_ID.validate_python(user_id, context={"limits": self._limits})
        except ValidationError as exc:
            return 400, error_body("invalid_user_id", exc.errors()[0]["msg"])
        keep: int | None = None
        if limit is not None:
            keep = _parse_limit(limit, self._limits.max_items_per_list)
            if keep is None:
                top = self._limits.max_items_per_list
                return 400, error_body("invalid_limit", f"limit must be an integer in 1..{top}")
        try:
            raw = await self._r.get(self._keys.user_recs(user_id))
            cold = raw is None
            if cold:
                raw = await self._r.get(self._keys.cold_recs())
        except (RedisConnectionError, RedisTimeoutError) as exc:
            return 503, error_body("unavailable", f"Redis did not answer: {exc}")
        except ResponseError as exc:  # e.g. WRONGTYPE: the key holds something else
            return 500, error_body("corrupt_cache", str(exc))
        if raw is None:
            return 404, error_body("not_found", f"no recommendations cached for user {user_id!r}")
        try:
            body = inflate_recs(raw)
        except ValueError as exc:
            return 500, error_body("corrupt_cache", str(exc))
        if keep is not None or cold:
            doc = json.loads(body)
            doc["items"] = doc["items"][:keep]
            if cold:
                doc["user_id"] = user_id
            body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return 200, body

    async def ping(self) -> bool:
        """Whether Redis answers (the read API's readiness)."""
        try:
            return bool(await self._r.ping())
        except (RedisConnectionError, RedisTimeoutError):
            return False


def _parse_limit(text: str, top: int) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 1 <= value <= top else None


_SECONDS_BY_ROUTE: dict[str, Any] = {}
_REQUESTS_BY_ANSWER: dict[tuple[str, int], Any] = {}


async def _timed(route: str, answer: Awaitable[tuple[int, bytes]]) -> tuple[int, bytes]:
    start = time.perf_counter()
    status, body = await answer
    # Metric children looked up once per label set (``labels()`` takes a lock every call).
    seconds = _SECONDS_BY_ROUTE.get(route)
    if seconds is None:
        seconds = _SECONDS_BY_ROUTE[route] = HTTP_SECONDS.labels(route)
    seconds.observe(time.perf_counter() - start)
    requests = _REQUESTS_BY_ANSWER.get((route, status))
    if requests is None:
        requests = _REQUESTS_BY_ANSWER[route, status] = HTTP_REQUESTS.labels(route, str(status))
    requests.inc()
    return status, body


def install(app: faust.App, api: ReadApi) -> None:
    """Serve the read routes on ``app``'s web server (a worker with ``VISREC_WEB_PORT``)."""

    @app.page(RECS_ROUTE)
    async def user_recommendations(view: Any, request: Any, user_id: str) -> Any:
        status, body = await _timed(
            RECS_ROUTE, api.recommendations(user_id, request.query.get("limit"))
        )
        return view.bytes(body, status=status, content_type=JSON)

    document = json.dumps(openapi_document(worker=True)).encode("utf-8")

    @app.page(OPENAPI_ROUTE)
    async def openapi(view: Any, request: Any) -> Any:
        return view.bytes(document, content_type=JSON)


def serve_app(api: ReadApi) -> web.Application:
    """The ``visrec serve`` application: the read routes, /healthz, /readyz, /metrics."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    document = json.dumps(openapi_document(worker=False)).encode("utf-8")

    async def recs(request: web.Request) -> web.Response:
        answer = api.recommendations(request.match_info["user_id"], request.query.get("limit"))
        status, body = await _timed(RECS_ROUTE, answer)
        return web.Response(body=body, status=status, content_type=JSON)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(request: web.Request) -> web.Response:
        ok = await api.ping()
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type=JSON)

    async def close(app: web.Application) -> None:
        await api.close()

    app = web.Application()
    routes: dict[str, Callable[[web.Request], Awaitable[web.Response]]] = {
        RECS_ROUTE: recs,
        "/healthz": healthz,
        "/readyz": readyz,
        "/metrics": metrics,
        OPENAPI_ROUTE: openapi,
    }
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    app.on_cleanup.append(close)
    return app


_RECS_SUMMARY = (
    "The user's latest list, as sent on the recommendations topic; the cold list "
    "(trigger_event_id null) for a user with none yet"
)


def openapi_document(*, worker: bool) -> dict[str, Any]:
    """OpenAPI 3.1 for the routes one server answers (``worker``: readiness means the index)."""
    from importlib.metadata import version

    error = {"$ref": "#/components/schemas/Error"}
    recs_schema = Recommendations.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = recs_schema.pop("$defs", {})

    def answer(text: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": text, "content": {JSON: {"schema": schema}}}

    ready = "index loaded and partitions assigned" if worker else "Redis answers"
    return {
        "openapi": "3.1.0",
        "info": {"title": "visrec read API", "version": version("visrec")},
        "paths": {
            "/v1/users/{user_id}/recommendations": {
                "get": {
                    "operationId": "getRecommendations",
                    "summary": _RECS_SUMMARY,
                    "parameters": [
                        {
                            "name": "user_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                    ],
                    "responses": {
                        "200": answer("the list", {"$ref": "#/components/schemas/Recommendations"}),
                        "400": answer("invalid user id or limit", error),
                        "404": answer("no list for the user and no cold list yet", error),
                        "500": answer("the cached list is unreadable", error),
                        "503": answer("Redis did not answer", error),
                    },
                }
            },
            "/healthz": {"get": _plain("the process runs")},
            "/readyz": {"get": _plain(f"ready: {ready}; 503 otherwise")},
            "/metrics": {"get": _plain("Prometheus text format", "text/plain")},
        },
        "components": {
            "schemas": {
                **defs,
                "Recommendations": recs_schema,
                "Error": {
                    "type": "object",
                    "required": ["error", "detail"],
                    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
                },
            }
        },
    }


def _plain(text: str, media: str = JSON) -> dict[str, Any]:
    return {"responses": {"200": {"description": text, "content": {media: {}}}}}

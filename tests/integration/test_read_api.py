"""The HTTP read API (streams/api.py) on real Redis: `visrec serve`'s app and its answers.

The same handlers run inside the interest worker; tests/integration/test_worker_ops.py reads
a list through a running worker's web port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from openapi_spec_validator import validate
from pydantic import SecretStr
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas import Limits, Recommendations, RecommendedItem, RedisKeys
from streams.api import ReadApi, openapi_document, serve_app
from streams.settings import RedisSettings
from streams.state.pipelined import PipelinedRedis
from streams.state.recs import RecsCache
from streams.tools.services import free_port

Answer = tuple[int, dict[str, Any], bytes]


def _recs(user_id: str, n: int = 5) -> Recommendations:
    return Recommendations(
        user_id=user_id,
        items=[
            RecommendedItem(item_id=f"item-{i}", score=1.0 - i / 10, reason="visual")
            for i in range(n)
        ],
        model_id="m-test",
        trigger_event_id="e-1",
        generated_at_ms=1_764_000_000_000,
    )


def _with_server(
    redis_url: str, body: Callable[[Callable[[str], Awaitable[Answer]]], Awaitable[None]]
) -> None:
    """Run ``body(get)`` against ``visrec serve``'s app on a real port over ``redis_url``."""

    async def main() -> None:
        api = ReadApi.from_settings(RedisSettings(url=redis_url), Limits())
        server = TestServer(serve_app(api), host="127.0.0.1", port=free_port())
        await server.start_server()
        try:
            async with ClientSession() as session:

                async def get(path: str) -> Answer:
                    async with session.get(f"http://127.0.0.1:{server.port}{path}") as resp:
                        return resp.status, dict(resp.headers), await resp.read()

                await body(get)
        finally:
            await server.close()

    asyncio.run(main())


def test_a_cached_list_is_served_byte_for_byte_and_errors_are_json(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    cache = RecsCache(client, RedisKeys())
    recs = _recs("shopper-1")
    cache.write(recs)
    cache.write(_recs("a/b é", 3))
    client.set(RedisKeys().user_recs("broken"), b"\x78\x9cnot zlib at all")

    async def body(get: Callable[[str], Awaitable[Answer]]) -> None:
        status, headers, raw = await get("/v1/users/shopper-1/recommendations")
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        assert raw == recs.to_json_bytes()  # the same JSON as on the recommendations topic

        status, _, raw = await get("/v1/users/shopper-1/recommendations?limit=2")
        assert status == 200
        assert [i["item_id"] for i in json.loads(raw)["items"]] == ["item-0", "item-1"]
        assert Recommendations.from_json_bytes(raw).model_id == "m-test"

        # An id with a slash and non-ASCII, percent-encoded in the path.
        status, _, raw = await get("/v1/users/a%2Fb%20%C3%A9/recommendations")
        assert status == 200 and json.loads(raw)["user_id"] == "a/b é"

        cases = {
            "/v1/users/nobody/recommendations": (404, "not_found"),
            "/v1/users/bad%01id/recommendations": (400, "invalid_user_id"),
            f"/v1/users/{'x' * 257}/recommendations": (400, "invalid_user_id"),
            "/v1/users/shopper-1/recommendations?limit=0": (400, "invalid_limit"),
            "/v1/users/shopper-1/recommendations?limit=two": (400, "invalid_limit"),
            "/v1/users/shopper-1/recommendations?limit=1001": (400, "invalid_limit"),
            "/v1/users/broken/recommendations": (500, "corrupt_cache"),
        }
        for path, (want_status, want_code) in cases.items():
            status, headers, raw = await get(path)
            assert (status, json.loads(raw)["error"]) == (want_status, want_code), path
            assert headers["Content-Type"].startswith("application/json"), path

        assert (await get("/healthz"))[0] == 200
        assert (await get("/readyz"))[0] == 200
        metrics = (await get("/metrics"))[2].decode()
        route = 'route="/v1/users/{user_id}/recommendations"'
        assert f'visrec_http_requests_total{{{route},status="200"}}' in metrics
        assert f'visrec_http_requests_total{{{route},status="404"}}' in metrics

    _with_server(redis_url, body)


def test_a_user_without_a_list_gets_the_cold_list_under_their_own_id(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    cold = _recs("*", 4).model_copy(update={"trigger_event_id": None})
    RecsCache(client, RedisKeys()).write_payloads([], cold=cold.to_json_bytes())

    async def body(get: Callable[[str], Awaitable[Answer]]) -> None:
        status, _, raw = await get("/v1/users/newcomer/recommendations")
        assert status == 200
        got = Recommendations.from_json_bytes(raw)
        assert got == cold.model_copy(update={"user_id": "newcomer"})
        status, _, raw = await get("/v1/users/newcomer/recommendations?limit=2")
        assert status == 200
        assert [i.item_id for i in Recommendations.from_json_bytes(raw).items] == [
            "item-0",
            "item-1",
        ]
        # A user's own list still wins over the cold list.
        RecsCache(client, RedisKeys()).write(_recs("regular", 2))
        status, _, raw = await get("/v1/users/regular/recommendations")
        assert status == 200 and raw == _recs("regular", 2).to_json_bytes()

    try:
        _with_server(redis_url, body)
    finally:
        client.delete(RedisKeys().cold_recs())


def test_visrec_recs_prints_a_users_list_or_the_cold_list(redis_url: str) -> None:
    from click.testing import CliRunner

    from streams.cli.recs import command

    keys = RedisKeys("cli-recs")
    cache = RecsCache(redis.Redis.from_url(redis_url), keys)
    env = {"VISREC_REDIS__URL": redis_url, "VISREC_REDIS__NAMESPACE": keys.namespace}
    missing = CliRunner().invoke(command, ["newcomer", "--json"], env=env)
    assert missing.exit_code == 1 and "nor a cold list" in missing.output
    cold = _recs("*", 3).model_copy(update={"trigger_event_id": None})
    cache.write_payloads([], cold=cold.to_json_bytes())
    cache.write(_recs("regular", 2))
    for user, want in (
        ("newcomer", cold.model_copy(update={"user_id": "newcomer"})),
        ("regular", _recs("regular", 2)),
    ):
        shown = CliRunner().invoke(command, [user, "--json"], env=env)
        assert shown.exit_code == 0, shown.output
        assert Recommendations.model_validate_json(shown.output) == want
    table = CliRunner().invoke(command, ["newcomer"], env=env)
    assert table.exit_code == 0 and "no events yet" in table.output


def test_redis_down_answers_503_not_a_crash() -> None:
    async def body(get: Callable[[str], Awaitable[Answer]]) -> None:
        status, _, raw = await get("/v1/users/shopper-1/recommendations")
        assert (status, json.loads(raw)["error"]) == (503, "unavailable")
        assert (await get("/readyz"))[0] == 503
        assert (await get("/healthz"))[0] == 200

    _with_server(f"redis://127.0.0.1:{free_port()}/0", body)


def test_the_openapi_document_is_valid_and_describes_what_is_served(redis_url: str) -> None:
    recs = _recs("shopper-2")
    RecsCache(redis.Redis.from_url(redis_url), RedisKeys()).write(recs)
    for worker in (True, False):
        validate(openapi_document(worker=worker))  # OpenAPI 3.1 schema

    async def body(get: Callable[[str], Awaitable[Answer]]) -> None:
        status, _, raw = await get("/openapi.json")
        assert status == 200
        doc = json.loads(raw)
        assert doc == json.loads(json.dumps(openapi_document(worker=False)))
        operation = doc["paths"]["/v1/users/{user_id}/recommendations"]["get"]
        assert set(operation["responses"]) == {"200", "400", "404", "500", "503"}
        # Answers validate against the schemas the document gives for them.
        for path, code in (("shopper-2", "200"), ("nobody", "404")):
            status, _, raw = await get(f"/v1/users/{path}/recommendations")
            assert str(status) == code
            ref = operation["responses"][code]["content"]["application/json"]["schema"]
            schema = {**ref, "components": doc["components"]}
            jsonschema.validate(json.loads(raw), schema)

    _with_server(redis_url, body)


def test_visrec_serve_runs_as_a_process(redis_url: str) -> None:
    RecsCache(redis.Redis.from_url(redis_url), RedisKeys()).write(_recs("shopper-3"))
    port = free_port()
    env = {"VISREC_REDIS__URL": redis_url, "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "visrec"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/v1/users/shopper-3/recommendations", timeout=2
                ) as resp:
                    assert resp.status == 200
                    assert json.loads(resp.read())["user_id"] == "shopper-3"
                    break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "visrec serve did not answer in 30 s"
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # waits and closes the pipe


# --- the pipelined connection under the API (streams/state/pipelined.py) ------------------


def test_pipelined_gets_each_get_their_own_reply_in_the_tests_database(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.mset({f"k{i}": f"v{i}" for i in range(0, 300, 2)})  # odd keys stay absent

    async def main() -> list[bytes | None]:
        reader = PipelinedRedis(RedisSettings(url=redis_url))
        try:
            return list(await asyncio.gather(*(reader.get(f"k{i}") for i in range(300))))
        finally:
            await reader.aclose()

    got = asyncio.run(main())
    assert got == [f"v{i}".encode() if i % 2 == 0 else None for i in range(300)]


def test_pipelined_acl_user_and_refused_password(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("greeting", "hello")
    client.execute_command(
        "ACL", "SETUSER", "visrec-reader", "on", ">s3cret", "~*", "+@read", "+ping", "+select"
    )
    try:

        async def main(password: str) -> bytes | None:
            settings = RedisSettings(
                url=redis_url, username="visrec-reader", password=SecretStr(password)
            )
            reader = PipelinedRedis(settings)
            try:
                return await reader.get("greeting")
            finally:
                await reader.aclose()

        assert asyncio.run(main("s3cret")) == b"hello"
        with pytest.raises(RedisConnectionError, match="cannot connect"):
            asyncio.run(main("wrong"))
    finally:
        client.execute_command("ACL", "DELUSER", "visrec-reader")


def test_pipelined_survives_a_lost_connection_and_a_late_reply(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("a", "1")
    client.set("b", "2")

    async def main() -> None:
        reader = PipelinedRedis(RedisSettings(url=redis_url, socket_timeout_s=0.3))
        try:
            assert await reader.get("a") == b"1"
            # Redis drops our connection: the next request connects again.
            client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            with contextlib.suppress(RedisConnectionError):
                await reader.get("a")  # may see the close first
            assert await reader.get("b") == b"2"
            # A reply that comes after its caller gave up is consumed in order, not handed to
            # the next caller.
            client.execute_command("CLIENT", "PAUSE", "600", "ALL")
            with pytest.raises(RedisTimeoutError):
                await reader.get("a")
            await asyncio.sleep(0.5)
            assert [await reader.get("b"), await reader.get("a")] == [b"2", b"1"]
        finally:
            await reader.aclose()

    asyncio.run(main())

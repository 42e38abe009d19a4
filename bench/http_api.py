"""The read API under a steady load, beside a bare Redis GET of the same keys, in one run.

Starts a Redis (or uses ``--redis-url``), caches lists for ``--users`` users (20 items each,
written the way the interest worker writes them), starts ``visrec serve`` as its own process,
and sends ``GET /v1/users/{user_id}/recommendations`` at a fixed rate (open loop: a request
is due every 1/rate s whether or not earlier ones answered, and its latency counts from when
it was due, so a stall is not hidden). Users are drawn with Zipf-like weights. The baseline,
in alternating rounds of the same length, is ``GET`` of the same Redis keys at the same rate
from the same client process: what the API adds is HTTP, routing, the id check, a second hop
(to Redis), decompression and the answer. Both sides use the same minimal raw-protocol
client (keep-alive connections, one request at a time each, opened as needed), so that the
load generator takes as little as possible of the cores the server and Redis share with it
(aiohttp's client and redis.asyncio took 200-300 us of CPU per request here); its CPU per
request is printed. Each round is preceded by one unmeasured second of the same load, and
the client's garbage collector is off during the rounds (it is measuring equipment).

Prints p50/p90/p99/p99.9/max per round and the median over rounds, the ratio of the API's
p99 to the bare GET's, the server's CPU per request (``/proc``) and its own handler-time
histogram (``/metrics``), and writes the figures as JSON. ``--server-cpu N`` pins the server
to core N and everything else off it.

    python bench/http_api.py                       # 1,000 requests/s, 3 rounds of 15 s each
    python bench/http_api.py --rate 2000 --seconds 30 --json bench/results/http_api.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from procstat import cpu_seconds  # noqa: E402

from schemas import Recommendations, RecommendedItem, RedisKeys  # noqa: E402
from streams.state.recs import RecsCache  # noqa: E402
from streams.tools.services import RedisServer, free_port  # noqa: E402
from streams.tools.services.base import read_pid  # noqa: E402

Request = Callable[[str], Awaitable[bool]]


def _cache_lists(url: str, n_users: int) -> list[str]:
    client = redis.Redis.from_url(url)
    cache = RecsCache(client, RedisKeys())
    users = [f"user-{i:06d}" for i in range(n_users)]
    for start in range(0, n_users, 1000):
        batch = [
            Recommendations(
                user_id=user,
                items=[
                    RecommendedItem(
                        item_id=f"item-{(hash(user) + k) % 100_000:06d}",
                        score=1.0 - k / 40,
                        reason=f"similar_to:item-{k:06d}",
                    )
                    for k in range(20)
                ],
                model_id="efficientnet-lite0-bench",
                trigger_event_id=f"evt-{user}",
                generated_at_ms=1_767_225_600_000,
            )
            for user in users[start : start + 1000]
        ]
        cache.write_many(batch)
    client.close()
    return users


async def _open_loop(
    request: Request, users: list[str], rate: float, seconds: float, seed: int
) -> dict[str, Any]:
    """Fire ``request(user)`` at ``rate``/s for ``seconds``; latency from each due time."""
    rng = random.Random(seed)
    weights = [1.0 / (k + 1) ** 0.8 for k in range(len(users))]
    n = int(rate * seconds)
    chosen = rng.choices(users, weights=weights, k=n)
    latencies: list[float] = []
    failures = 0
    clock = time.perf_counter  # uvloop's loop.time() counts whole milliseconds
    start = clock() + 0.05

    pending: set[asyncio.Task[None]] = set()

    async def one(due: float, user: str) -> None:
        nonlocal failures
        ok = await request(user)
        latencies.append(clock() - due)
        failures += not ok

    for k, user in enumerate(chosen):
        due = start + k / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(due, user))
        pending.add(task)  # only the ones in flight: the client's heap stays small
        task.add_done_callback(pending.discard)
    while pending:
        await asyncio.gather(*list(pending))
    wall = clock() - start
    return {
        "requests": n,
        "failures": failures,
        "achieved_rate": n / wall,
        **_percentiles(latencies),
    }


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies)

    def at(q: float) -> float:
        return ms[min(len(ms) - 1, int(q * len(ms)))]

    return {
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "max_ms": ms[-1],
        "mean_ms": statistics.fmean(ms),
    }


def _start_serve(redis_url: str, port: int, log: Path, cpu: int | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VISREC_REDIS__URL": redis_url, "VISREC_LOG_LEVEL": "warn"}
    visrec = Path(sys.executable).parent / "visrec"
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*pin, str(visrec), "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return proc
        except OSError:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
    raise SystemExit(f"visrec serve did not start: {log.read_text()}")


class _Conn(asyncio.Protocol):
    """One keep-alive connection answering one request at a time; ``done(buffer)`` tells
    where a complete answer ends (None while incomplete)."""

    def __init__(self, done: Callable[[bytes], int | None]) -> None:
        self._done = done
        self._buf = b""
        self._waiter: asyncio.Future[bytes] | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buf += data
        end = self._done(self._buf)
        if end is not None and self._waiter is not None:
            answer, self._buf = self._buf[:end], self._buf[end:]
            self._waiter.set_result(answer)
            self._waiter = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("closed"))

    def ask(self, request: bytes) -> asyncio.Future[bytes]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._waiter


class _Pool:
    """Raw clients, the same for HTTP and Redis so that neither side pays for a heavier one:
    a request borrows an idle connection, or opens one (kept for the next request)."""

    def __init__(self, port: int, done: Callable[[bytes], int | None]) -> None:
        self._port = port
        self._done = done
        self._idle: list[_Conn] = []
        self.lost = 0

    async def ask(self, request: bytes) -> bytes:
        """The answer, or b"" when none came within 5 s or the connection was lost."""
        while self._idle and self._idle[-1].closed:
            self._idle.pop()
        if self._idle:
            conn = self._idle.pop()
        else:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(
                lambda: _Conn(self._done), "127.0.0.1", self._port
            )
        try:
            async with asyncio.timeout(5.0):
                answer = await conn.ask(request)
        except (TimeoutError, ConnectionError):
            self.lost += 1
            if conn.transport is not None:
                conn.transport.close()
            return b""
        self._idle.append(conn)
        return answer

    def close(self) -> None:
        for conn in self._idle:
            if conn.transport is not None:
                conn.transport.close()


def _http_end(buf: bytes) -> int | None:
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = buf[:head_end].lower()
    at = head.find(b"content-length:")
    length = int(head[at + 15 : head.find(b"\r\n", at) if b"\r\n" in head[at:] else None])
    end = head_end + 4 + length
    return end if len(buf) >= end else None


def _resp_end(buf: bytes) -> int | None:
    line_end = buf.find(b"\r\n")
    if line_end < 0:
        return None
    if buf[:1] != b"$":
        return line_end + 2  # an error or a simple answer
    length = int(buf[1:line_end])
    end = line_end + 2 if length < 0 else line_end + 2 + length + 2
    return end if len(buf) >= end else None


async def _run(
    args: argparse.Namespace,
    redis_port: int,
    users: list[str],
    serve: subprocess.Popen[bytes],
    port: int,
) -> dict[str, Any]:
    keys = RedisKeys()
    http_pool = _Pool(port, _http_end)
    redis_pool = _Pool(redis_port, _resp_end)
    statuses: collections.Counter[str] = collections.Counter()
    http_requests = {
        u: f"GET /v1/users/{u}/recommendations HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
        for u in users
    }
    redis_requests = {}
    for u in users:
        key = keys.user_recs(u).encode()
        redis_requests[u] = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
    if True:

        async def api(user: str) -> bool:
            answer = await http_pool.ask(http_requests[user])
            status = answer[9:12].decode()
            statuses[status] += 1
            return status == "200" and answer.endswith(b"}")

        async def bare(user: str) -> bool:
            answer = await redis_pool.ask(redis_requests[user])
            return answer.startswith(b"$") and not answer.startswith(b"$-1")

        for request in (api, bare):  # warm code paths
            await _open_loop(request, users, args.rate, 2.0, seed=99)
        # The client is measuring equipment: no collector pauses in it during the rounds.
        gc.collect()
        gc.freeze()
        gc.disable()
        rounds: dict[str, list[dict[str, Any]]] = {"api": [], "redis_get": []}
        cpu_per_request: list[float] = []
        for r in range(args.rounds):
            for name, request in (("redis_get", bare), ("api", api)):
                # A second of the same load first, not measured: connections the other
                # round left idle have been closed, and opening them is not steady state.
                await _open_loop(request, users, args.rate, 1.0, seed=1000 + r)
                before = cpu_seconds(serve.pid)
                client_before = time.process_time()
                result = await _open_loop(request, users, args.rate, args.seconds, seed=r)
                result["client_cpu_us_per_request"] = (
                    (time.process_time() - client_before) / result["requests"] * 1e6
                )
                if name == "api":
                    cpu_per_request.append((cpu_seconds(serve.pid) - before) / result["requests"])
                rounds[name].append(result)
                print(
                    f"round {r + 1} {name:9s} "
                    + " ".join(
                        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in result.items()
                    ),
                    flush=True,
                )
        http_pool.close()
        redis_pool.close()
        # The server's own view: time from routing to the body ready, Redis GET included.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            buckets = {
                line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                for line in resp.read().decode().splitlines()
                if line.startswith("visrec_http_request_seconds_bucket")
            }
        print("server-side handler time, cumulative count per bucket (s):", buckets)
        print("API answers:", dict(statuses), flush=True)
        print(f"lost or unanswered within 5 s: API {http_pool.lost}, Redis {redis_pool.lost}")
    summary = {
        name: {k: statistics.median(x[k] for x in results) for k in results[0]}
        for name, results in rounds.items()
    }
    summary["api"]["server_cpu_us_per_request"] = statistics.median(cpu_per_request) * 1e6
    summary["p99_ratio_api_to_redis_get"] = (
        summary["api"]["p99_ms"] / summary["redis_get"]["p99_ms"]
    )
    return {"rounds": rounds, "median_of_rounds": summary, "server_handler_buckets": buckets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=15.0, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--redis-url", default=None, help="use this Redis (db is flushed)")
    parser.add_argument(
        "--server-cpu",
        type=int,
        default=None,
        help="pin visrec serve to this CPU and everything else off it (default: shared)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="visrec-http-") as tmp:
        server = None
        url = args.redis_url
        if url is None:
            server = RedisServer(Path(tmp), port=free_port())
            server.start()
            url = server.url
        redis.Redis.from_url(url).flushdb()
        users = _cache_lists(url, args.users)
        port = free_port()
        if args.server_cpu is not None:
            # The server on a core of its own, the load generator and Redis on the others.
            others = set(os.sched_getaffinity(0)) - {args.server_cpu}
            os.sched_setaffinity(0, others)
            if server is not None:
                redis_pid = read_pid(server.pidfile)
                if redis_pid is not None:
                    os.sched_setaffinity(redis_pid, others)
        serve = _start_serve(url, port, Path(tmp) / "serve.log", args.server_cpu)
        try:
            redis_port = int(url.rsplit(":", 1)[1].split("/")[0])
            result = uvloop.run(_run(args, redis_port, users, serve, port))
        finally:
            serve.terminate()
            serve.wait(10)
            if server is not None:
                server.stop()
    med = result["median_of_rounds"]
    result["config"] = {
        "rate": args.rate,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "users": args.users,
        "items_per_list": 20,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(med, indent=2))
    print(
        f"read API p99 {med['api']['p99_ms']:.2f} ms vs bare Redis GET p99 "
        f"{med['redis_get']['p99_ms']:.2f} ms: {med['p99_ratio_api_to_redis_get']:.2f}x; "
        f"server CPU {med['api']['server_cpu_us_per_request']:.0f} us/request"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

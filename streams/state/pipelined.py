"""One pipelined asyncio connection for the read API's GETs (hiredis parses the replies).

Redis answers the commands of a connection in the order it received them, so every request
can write its GET at once and wait for its own reply, first in first out: no pool to take a
connection from, no per-command retry wrapper. Measured on the 2-core box, one GET costs the
client ~41 us of CPU this way against ~100 us through ``redis.asyncio`` (bench/http_api.py shows
what that does to the read API's latency).

A lost connection fails the requests in flight with ``ConnectionError`` (the API answers 503)
and the next request connects again. ``redis://``, ``rediss://`` (TLS, with the settings' CA
file) and ``unix://`` URLs, ACL user, password and database are honoured like the workers'
client does (``streams.state.redis``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.settings import RedisSettings
from streams.state.redis import redis_client_kwargs


def _command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.WriteTransport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            waiter = self._waiting.popleft()
            if waiter.done():
                continue  # its caller gave up (timeout); the reply is still consumed in order
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(ResponseError(str(reply)))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(RedisConnectionError(f"connection to Redis lost: {exc}"))

    def send(self, command: bytes) -> asyncio.Future[Any]:
        assert self.transport is not None
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self.transport.write(command)
        return waiter


class PipelinedRedis:
    """GET, PING and the connection's set-up commands over one pipelined connection."""

    def __init__(self, settings: RedisSettings) -> None:
        """Connects on first use, to ``settings.url``."""
        self._settings = settings
        self._timeout = settings.socket_timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def get(self, key: str) -> bytes | None:
        """The value of ``key`` (None if absent)."""
        reply = await self._call(_command(b"GET", key.encode("utf-8")))
        assert reply is None or isinstance(reply, bytes)
        return reply

    async def ping(self) -> bool:
        """Whether Redis answers PING."""
        return bool(await self._call(_command(b"PING")) == b"PONG")

    async def aclose(self) -> None:
        """Close the connection."""
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None

    async def _call(self, command: bytes) -> Any:
        protocol = await self._connected()
        try:
            async with asyncio.timeout(self._timeout):
                return await protocol.send(command)
        except TimeoutError as exc:
            raise RedisTimeoutError(f"Redis did not answer in {self._timeout} s") from exc

    async def _connected(self) -> _Protocol:
        if self._protocol is not None and not self._protocol.lost:
            return self._protocol
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is None or self._protocol.lost:
                try:
                    async with asyncio.timeout(self._timeout):
                        self._protocol = await self._open()
                except (OSError, TimeoutError, ResponseError) as exc:
                    raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
            return self._protocol

    async def _open(self) -> _Protocol:
        params = parse_url(self._settings.url)
        # The settings' ACL user, password and CA file, as the workers' client gets them
        # (secrets are read in streams.state.redis only); the URL's own as a fallback.
        credentials = redis_client_kwargs(self._settings)
        loop = asyncio.get_running_loop()
        kind = params.get("connection_class")
        if kind is UnixDomainSocketConnection:
            _, protocol = await loop.create_unix_connection(_Protocol, params["path"])
        else:
            context = None
            if kind is SSLConnection:
                context = ssl.create_default_context(cafile=credentials.get("ssl_ca_certs"))
            _, protocol = await loop.create_connection(
                _Protocol, params.get("host", "localhost"), params.get("port", 6379), ssl=context
            )
        username = credentials.get("username") or params.get("username")
        password = credentials.get("password", params.get("password"))
        setup: list[bytes] = []
        if password:
            auth = [b"AUTH", *([username.encode()] if username else []), password.encode()]
            setup.append(_command(*auth))
        if params.get("db"):
            setup.append(_command(b"SELECT", str(params["db"]).encode()))
        try:
            for reply in [protocol.send(c) for c in setup]:
                await reply  # a refused AUTH or SELECT raises ResponseError here
        except BaseException:
            if protocol.transport is not None:
                protocol.transport.close()
            raise
        return protocol

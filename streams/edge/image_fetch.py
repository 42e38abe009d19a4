"""Fetch product images named by URI (``file://``, ``http(s)://``), safely.

A URI in a Kafka message is attacker-controlled, so fetching is deny-by-default:

- ``file://`` reads only below the configured roots; the path is resolved (symlinks and
  ``..`` included) before the check.
- ``http(s)://`` resolves the host once, refuses loopback, private, link-local, multicast
  and other non-global addresses (unless ``allow_private_networks``), then connects to the
  address it checked (so DNS rebinding cannot swap in an internal one) with the original
  host name for ``Host`` and TLS. Redirects are followed by hand, each one re-checked.
- Every read is capped at ``max_bytes`` while streaming and bounded by ``timeout_s``.
- ``s3://`` and other schemes are refused.

Failures raise ``FetchError`` whose ``code`` is the dead-letter ``ErrorCode``:
``image_uri_forbidden`` for what policy refuses, ``image_fetch_failed`` for what broke.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from schemas import ErrorCode
from streams.exceptions import FetchError
from streams.settings import EmbedSettings

_CHUNK = 64 * 1024
_MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def _forbidden(message: str) -> FetchError:
    return FetchError(ErrorCode.IMAGE_URI_FORBIDDEN, message)


def _failed(message: str) -> FetchError:
    return FetchError(ErrorCode.IMAGE_FETCH_FAILED, message)


def is_public_address(address: str) -> bool:
    """Tell whether an address is global unicast (IPv4-mapped IPv6 judged as IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to a pre-checked address while speaking HTTP to the original host."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to a pre-checked address, verifying the certificate for the original host."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        context = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


class ImageFetcher:
    """Fetches image bytes for ``file://`` and ``http(s)://`` URIs under a policy."""

    def __init__(
        self,
        file_roots: list[Path],
        allow_private_networks: bool,
        timeout_s: float,
        max_bytes: int,
    ) -> None:
        self._roots = [Path(r).resolve() for r in file_roots]
        self._allow_private = allow_private_networks
        self._timeout = timeout_s
        self._max_bytes = max_bytes

    @classmethod
    def from_settings(cls, settings: EmbedSettings) -> ImageFetcher:
        """The policy of the embed settings (the embed worker and re-embedding alike)."""
        return cls(
            file_roots=list(settings.file_roots),
            allow_private_networks=settings.allow_private_networks,
            timeout_s=settings.fetch_timeout_s,
            max_bytes=settings.max_image_bytes,
        )

    def fetch(self, uri: str) -> bytes:
        """Fetch the bytes ``uri`` names; raises ``FetchError`` with a dead-letter code."""
        try:
            parts = urlsplit(uri)
        except ValueError as exc:
            raise _forbidden(f"unparseable URI: {exc}") from exc
        scheme = parts.scheme.lower()
        if scheme == "file":
            return self._fetch_file(parts.netloc, parts.path)
        if scheme in ("http", "https"):
            return self._fetch_http(uri)
        if scheme == "s3":
            raise _forbidden("s3:// URIs are not enabled on this worker")
        raise _forbidden(f"URI scheme {scheme or '(none)'!r} is not allowed")

    def _fetch_file(self, netloc: str, raw_path: str) -> bytes:
        if netloc not in ("", "localhost"):
            raise _forbidden(f"file:// URIs must be local, not on host {netloc!r}")
        if not self._roots:
            raise _forbidden("file:// URIs are disabled (no file roots configured)")
        path_text = unquote(raw_path)
        if "\x00" in path_text or not path_text.startswith("/"):
            raise _forbidden("file:// path must be absolute")
        try:
            path = Path(path_text).resolve()
        except (OSError, RuntimeError) as exc:
            raise _forbidden(f"cannot resolve {path_text}: {exc}") from exc
        if not any(path.is_relative_to(root) for root in self._roots):
            raise _forbidden(f"{path_text} is outside the allowed file roots")
        try:
            if not path.is_file():
                raise _failed(f"{path_text} is not a regular file")
            with path.open("rb") as fh:
                data = fh.read(self._max_bytes + 1)
        except OSError as exc:
            raise _failed(f"cannot read {path_text}: {exc}") from exc
        if len(data) > self._max_bytes:
            raise _failed(f"{path_text} is larger than {self._max_bytes} bytes")
        return data

    def _fetch_http(self, uri: str) -> bytes:
        deadline = time.monotonic() + self._timeout
        for _ in range(_MAX_REDIRECTS + 1):
            status, location, body = self._request(uri, deadline)
            if status in _REDIRECTS:
                if not location:
                    raise _failed(f"HTTP {status} without a Location header")
                uri = urljoin(uri, location)
                if urlsplit(uri).scheme.lower() not in ("http", "https"):
                    raise _forbidden("redirect to a non-HTTP URI")
                continue
            if status != 200:
                raise _failed(f"HTTP {status} for {uri}")
            return body
        raise _failed(f"more than {_MAX_REDIRECTS} redirects")

    def _resolve(self, host: str, port: int) -> str:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise _failed(f"cannot resolve {host}: {exc}") from exc
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise _failed(f"{host} has no addresses")
        if not self._allow_private:
            blocked = [a for a in addresses if not is_public_address(a)]
            if blocked:
                raise _forbidden(f"{host} resolves to non-public address {blocked[0]}")
        return addresses[0]

    def _request(self, uri: str, deadline: float) -> tuple[int, str | None, bytes]:
        parts = urlsplit(uri)
        host = parts.hostname
        if not host:
            raise _forbidden("http(s) URI without a host")
        if parts.username or parts.password:
            raise _forbidden("credentials in URIs are not allowed")
        https = parts.scheme.lower() == "https"
        try:
            port = parts.port or (443 if https else 80)
        except ValueError as exc:
            raise _forbidden(f"bad port: {exc}") from exc
        address = self._resolve(host, port)
        remaining = max(0.001, deadline - time.monotonic())
        conn: http.client.HTTPConnection
        if https:
            conn = _PinnedHTTPSConnection(host, port, address, remaining)
        else:
            conn = _PinnedHTTPConnection(host, port, address, remaining)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        response: http.client.HTTPResponse | None = None
        try:
            conn.request("GET", target, headers={"User-Agent": "visrec-embed", "Accept": "image/*"})
            response = conn.getresponse()
            if response.status != 200:
                return response.status, response.getheader("Location"), b""
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > self._max_bytes:
                raise _failed(f"Content-Length {declared} exceeds {self._max_bytes} bytes")
            return 200, None, self._read_capped(conn, response, deadline)
        except FetchError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise _failed(f"fetching {uri} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            # The response holds its own reference to the socket: close both.
            if response is not None:
                response.close()
            conn.close()

    def _read_capped(
        self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, deadline: float
    ) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _failed(f"download took longer than {self._timeout} s")
            # A server dripping bytes must not stretch one read past the overall deadline.
            if conn.sock is not None:
                conn.sock.settimeout(remaining)
            chunk = response.read1(_CHUNK)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > self._max_bytes:
                raise _failed(f"response exceeds {self._max_bytes} bytes")
            chunks.append(chunk)

"""ImageFetcher against real files and a real HTTP server on loopback."""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas import ErrorCode
from streams.edge.image_fetch import ImageFetcher, is_public_address
from streams.exceptions import FetchError

PAYLOAD = b"\xff\xd8\xff\xe0" + os.urandom(5000)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/photo.jpg":
            self._send(200, PAYLOAD)
        elif self.path == "/big.jpg":
            self._send(200, b"x" * 100_000)
        elif self.path == "/big-undeclared.jpg":
            # No Content-Length: the cap must hold while streaming.
            self.send_response(200)
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"y" * 1000)
        elif self.path == "/slow.jpg":
            self.send_response(200)
            self.send_header("Content-Length", "5000")
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"z" * 10)
                self.wfile.flush()
                time.sleep(0.05)
        elif self.path == "/redirect":
            self._redirect("/photo.jpg")
        elif self.path == "/loop":
            self._redirect("/loop")
        elif self.path == "/to-file":
            self._redirect("file:///etc/passwd")
        else:
            self._send(404, b"not found")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def fetcher(**overrides: object) -> ImageFetcher:
    params: dict[str, object] = {
        "file_roots": [],
        "allow_private_networks": True,
        "timeout_s": 2.0,
        "max_bytes": 50_000,
    }
    params.update(overrides)
    return ImageFetcher(**params)  # type: ignore[arg-type]  # test helper


def failure(f: ImageFetcher, uri: str) -> FetchError:
    with pytest.raises(FetchError) as info:
        f.fetch(uri)
    return info.value


# --- http ----------------------------------------------------------------------------------


def test_http_fetch_when_private_networks_are_allowed(server: str) -> None:
    assert fetcher().fetch(f"{server}/photo.jpg") == PAYLOAD


def test_loopback_is_refused_by_default(server: str) -> None:
    f = fetcher(allow_private_networks=False)
    assert failure(f, f"{server}/photo.jpg").code == ErrorCode.IMAGE_URI_FORBIDDEN
    port = server.rsplit(":", 1)[1]
    assert failure(f, f"http://localhost:{port}/photo.jpg").code == "image_uri_forbidden"
    assert failure(f, f"http://[::ffff:127.0.0.1]:{port}/x").code == "image_uri_forbidden"


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata endpoint
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:10.0.0.1", False),
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
    ],
)
def test_public_address_classification(address: str, public: bool) -> None:
    assert is_public_address(address) is public


def test_http_404_fails(server: str) -> None:
    error = failure(fetcher(), f"{server}/missing.jpg")
    assert error.code == ErrorCode.IMAGE_FETCH_FAILED
    assert "404" in error.message


def test_size_cap_from_content_length(server: str) -> None:
    assert failure(fetcher(), f"{server}/big.jpg").code == "image_fetch_failed"


def test_size_cap_while_streaming(server: str) -> None:
    error = failure(fetcher(), f"{server}/big-undeclared.jpg")
    assert error.code == "image_fetch_failed"
    assert "exceeds" in error.message
    assert len(fetcher(max_bytes=200_000).fetch(f"{server}/big-undeclared.jpg")) == 100_000


def test_slow_download_times_out(server: str) -> None:
    started = time.monotonic()
    error = failure(fetcher(timeout_s=0.5), f"{server}/slow.jpg")
    assert error.code == "image_fetch_failed"
    assert time.monotonic() - started < 2.0


def test_unreachable_port_fails() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens there any more.
    assert failure(fetcher(), f"http://127.0.0.1:{port}/x.jpg").code == "image_fetch_failed"


def test_redirects_are_followed_and_rechecked(server: str) -> None:
    assert fetcher().fetch(f"{server}/redirect") == PAYLOAD
    assert "redirects" in failure(fetcher(), f"{server}/loop").message
    assert failure(fetcher(), f"{server}/to-file").code == "image_uri_forbidden"


@pytest.mark.parametrize(
    "uri",
    [
        "ftp://example.com/a.jpg",
        "gopher://example.com/",
        "data:image/png;base64,AAAA",
        "s3://bucket/key.jpg",
        "/etc/passwd",
        "http://user:secret@example.com/a.jpg",
        "http:///no-host.jpg",
    ],
)
def test_schemes_and_forms_refused(uri: str) -> None:
    assert failure(fetcher(), uri).code == "image_uri_forbidden"


# --- file ----------------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    allowed = tmp_path / "catalogue"
    (allowed / "shoes").mkdir(parents=True)
    (allowed / "shoes" / "red.jpg").write_bytes(PAYLOAD)
    (allowed / "huge.jpg").write_bytes(b"h" * 60_000)
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"password")
    (allowed / "link.jpg").symlink_to(outside)
    return allowed, outside


def test_file_inside_root(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    f = fetcher(file_roots=[allowed])
    assert f.fetch(f"file://{allowed}/shoes/red.jpg") == PAYLOAD
    assert f.fetch(f"file://localhost{allowed}/shoes/red.jpg") == PAYLOAD
    assert f.fetch(f"file://{allowed}/shoes/red%2Ejpg") == PAYLOAD


def test_file_outside_root_and_traversal_refused(roots: tuple[Path, Path]) -> None:
    allowed, outside = roots
    f = fetcher(file_roots=[allowed])
    for uri in (
        f"file://{outside}",
        f"file://{allowed}/../secret.txt",
        f"file://{allowed}/shoes/%2e%2e/%2e%2e/secret.txt",
        f"file://{allowed}/link.jpg",  # a symlink pointing out of the root
        f"file://{allowed}-evil/x.jpg",  # a sibling sharing the prefix
        "file://otherhost/etc/passwd",
    ):
        assert failure(f, uri).code == "image_uri_forbidden", uri


def test_file_uris_disabled_without_roots(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    error = failure(fetcher(file_roots=[]), f"file://{allowed}/shoes/red.jpg")
    assert error.code == "image_uri_forbidden"


def test_file_missing_or_too_big_fails(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    f = fetcher(file_roots=[allowed])
    assert failure(f, f"file://{allowed}/nope.jpg").code == "image_fetch_failed"
    assert failure(f, f"file://{allowed}/shoes").code == "image_fetch_failed"
    assert failure(f, f"file://{allowed}/huge.jpg").code == "image_fetch_failed"

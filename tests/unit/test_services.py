"""The local service launchers' helpers (streams/tools/services/base.py)."""

from __future__ import annotations

import socket

from streams.tools.services import free_port


def test_free_port_never_names_a_port_twice_and_each_can_be_bound() -> None:
    # A broker's listener and controller port once came out equal from two calls in a row:
    # the kernel handed the just-released port out again.
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports[-1]))

"""A local Redis 7 server (Debian's ``redis-server``) on loopback, with AOF persistence."""

from __future__ import annotations

import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

import redis

from streams.exceptions import ServiceError
from streams.tools.services.base import read_pid, spawn, terminate, wait_until


@dataclass
class RedisServer:
    """Start/stop a ``redis-server`` whose data, log and pid live under ``state_dir/redis``."""

    state_dir: Path
    port: int = 6379
    appendfsync: str = "everysec"
    extra_config: list[str] = field(default_factory=list)
    binary: str = "redis-server"

    @property
    def home(self) -> Path:
        """Data, log, config and pid folder."""
        return self.state_dir / "redis"

    @property
    def pidfile(self) -> Path:
        """The running server's pid."""
        return self.home / "redis.pid"

    @property
    def url(self) -> str:
        """``redis://`` URL of db 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def config_text(self) -> str:
        """The server's configuration: loopback only, AOF with the chosen fsync policy."""
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            f"dir {self.home.resolve()}",
            "appendonly yes",
            f"appendfsync {self.appendfsync}",
            "save ''",
            "databases 64",
            # Keeps per-user applied-id sets (<= applied_max) in the compact listpack encoding.
            "zset-max-listpack-entries 1024",
            "protected-mode yes",
            "daemonize no",
            *self.extra_config,
        ]
        return "\n".join(lines) + "\n"

    def running(self) -> bool:
        """Whether our server answers PING."""
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def start(self, timeout_s: float = 20.0) -> float:
        """Start (or reuse) the server; returns seconds until it answered."""
        if read_pid(self.pidfile) is not None and self.running():
            return 0.0
        binary = shutil.which(self.binary)
        if binary is None:
            raise ServiceError("redis-server not found: apt-get install redis-server")
        self.home.mkdir(parents=True, exist_ok=True)
        conf = self.home / "redis.conf"
        conf.write_text(self.config_text())
        spawn([binary, str(conf)], self.home / "redis.log", self.pidfile)
        return wait_until(self.running, timeout_s, f"redis on port {self.port}")

    def stop(self, timeout_s: float = 20.0) -> bool:
        """Stop the server (SIGTERM lets it finish the AOF)."""
        return terminate(self.pidfile, timeout_s, signal.SIGTERM)

    def kill(self) -> bool:
        """SIGKILL the server (fault tests)."""
        return terminate(self.pidfile, 5.0, signal.SIGKILL)

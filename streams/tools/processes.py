"""Worker processes and local services, for the demo, the evaluations, tests and benchmarks.

``WorkerProcess`` runs ``visrec worker ROLE`` (or any command line) as a child in its own
process group, with ``Settings`` passed as ``VISREC_*`` variables and its output in a log
file; ``local_services`` reuses the configured Kafka and Redis when they answer and starts
local ones otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from streams.settings import Settings
from streams.tools.services import KafkaServer, RedisServer, TansuServer, local_servers


def worker_argv(role: str) -> list[str]:
    """The command line of ``visrec worker ROLE`` with this interpreter."""
    return [sys.executable, "-c", "from streams.cli import main; main()", "worker", role]


class WorkerProcess:
    """A worker child process with given settings; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        role: str,
        log: Path,
        extra_env: dict[str, str] | None = None,
        *,
        argv: Sequence[str] | None = None,
    ) -> None:
        """``argv`` replaces ``visrec worker ROLE`` (e.g. a benchmark's baseline worker)."""
        self.settings = settings
        self.role = role
        self.log = log
        self.extra_env = extra_env or {}
        self.argv = list(argv) if argv is not None else worker_argv(role)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start the process (its own session, so ``stop`` reaches its children too)."""
        env = {**os.environ, **settings_env(self.settings), **self.extra_env}
        env["PYTHONUNBUFFERED"] = "1"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        return self

    @property
    def pid(self) -> int:
        """The process id (after ``start``)."""
        if self.proc is None:
            raise RuntimeError("not started")
        return self.proc.pid

    def alive(self) -> bool:
        """Whether it runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s`` (default: its shutdown timeout + 10 s)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            wait = self.settings.shutdown_timeout_s + 10 if timeout_s is None else timeout_s
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, no shutdown (what a crash looks like)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def output(self) -> str:
        """Everything it logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, timeout_s: float = 600.0) -> float:
        """Seconds until its ``/readyz`` answers 200 (needs ``settings.web_port``)."""
        port = self.settings.web_port
        if port is None:
            raise RuntimeError("the worker serves no /readyz: set web_port")
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if not self.alive():
                raise RuntimeError(f"{self.role} worker exited:\n{self.output()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return time.monotonic() - start
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.role} worker not ready after {timeout_s:.0f}s")

    def rss_mb(self) -> float:
        """Its resident set size (from /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


@contextmanager
def running_worker(settings: Settings, role: str, log: Path, **kw: Any) -> Iterator[WorkerProcess]:
    """A started ``WorkerProcess``, stopped on exit."""
    worker = WorkerProcess(settings, role, log, **kw).start()
    try:
        yield worker
    finally:
        worker.stop()


@contextmanager
def local_services(
    settings: Settings,
    keep: bool = False,
    say: Callable[[str], None] = lambda _: None,
    broker: str = "kafka",
) -> Iterator[tuple[KafkaServer | TansuServer, RedisServer]]:
    """Reuse the configured Kafka and Redis if they answer, else start them locally.

    What was started here is stopped on exit unless ``keep``.
    """
    kafka, redis_server = local_servers(settings, broker)
    started: list[KafkaServer | TansuServer | RedisServer] = []
    for name, server in (("redis", redis_server), ("kafka", kafka)):
        if server.running():
            say(f"{name}: reusing the running server")
            continue
        waited = server.start()
        started.append(server)
        say(f"{name}: started in {waited:.1f}s")
    try:
        yield kafka, redis_server
    finally:
        if not keep:
            for server in reversed(started):
                server.stop()


def settings_env(settings: Settings) -> dict[str, str]:
    """``VISREC_*`` variables that reproduce ``settings`` in a child process (secrets included)."""
    env: dict[str, str] = {}

    def put(prefix: str, value: object) -> None:
        if value is None:
            return
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                put(f"{prefix}__{name.upper()}", getattr(value, name))
            return
        if isinstance(value, SecretStr):
            env[prefix] = value.get_secret_value()
        elif isinstance(value, dict | list):
            env[prefix] = json.dumps(value, default=str)
        elif isinstance(value, bool):
            env[prefix] = "true" if value else "false"
        else:
            env[prefix] = str(value)

    for name in Settings.model_fields:
        put(f"VISREC_{name.upper()}", getattr(settings, name))
    return env

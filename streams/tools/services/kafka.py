"""A single-node Apache Kafka 4.x broker in KRaft mode, run from Maven Central jars on Java 17.

The jars are resolved once with the machine's Maven (``kafka-pom.xml``) into a cache folder
shared by every checkout; data, logs and the pid live under ``state_dir/kafka``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from streams.exceptions import ServiceError
from streams.tools.services.base import (
    port_open,
    read_pid,
    spawn,
    terminate,
    wait_until,
)

POM = Path(__file__).with_name("kafka-pom.xml")
KAFKA_VERSION = "4.1.1"

_LOG4J2 = """status = error
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
"""


def default_jar_cache() -> Path:
    """``$VISREC_KAFKA_JARS`` or ``~/.cache/visrec/kafka-<version>``."""
    env = os.environ.get("VISREC_KAFKA_JARS")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "visrec" / f"kafka-{KAFKA_VERSION}"


def resolve_jars(cache: Path | None = None) -> Path:
    """Download the broker's jars with Maven once; returns the folder holding them."""
    cache = cache or default_jar_cache()
    # One marker per pom: a changed pom resolves again into the same folder.
    marker = cache / f".complete-{hashlib.sha256(POM.read_bytes()).hexdigest()[:12]}"
    if marker.exists():
        return cache
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError("Maven (mvn) not found: apt-get install maven")
    cache.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={cache}",
            f"-Dkafka.version={KAFKA_VERSION}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ServiceError(f"mvn could not resolve Kafka jars:\n{result.stdout}\n{result.stderr}")
    marker.touch()
    return cache


@dataclass
class KafkaServer:
    """Start/stop one KRaft broker+controller on loopback."""

    state_dir: Path
    port: int = 9092
    controller_port: int | None = None
    heap: str = "512m"
    jar_cache: Path | None = None
    extra_properties: dict[str, str] = field(default_factory=dict)
    listeners: str | None = None
    advertised_listeners: str | None = None
    protocol_map: str | None = None
    jvm_options: list[str] = field(default_factory=list)
    inter_broker_listener: str = "PLAINTEXT"
    # Extra `kafka-storage format` arguments, e.g. `--add-scram` credentials for SASL/SCRAM.
    format_args: list[str] = field(default_factory=list)

    @property
    def home(self) -> Path:
        """Data, log, config and pid folder."""
        return self.state_dir / "kafka"

    @property
    def pidfile(self) -> Path:
        """The running broker's pid."""
        return self.home / "kafka.pid"

    @property
    def bootstrap(self) -> str:
        """``host:port`` clients connect to."""
        return f"127.0.0.1:{self.port}"

    def _controller_port(self) -> int:
        return self.controller_port or self.port + 1

    def properties(self) -> dict[str, str]:
        """The broker's ``server.properties``."""
        cport = self._controller_port()
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{cport}",
            "listeners": self.listeners
            or f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": self.advertised_listeners
            or f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": self.protocol_map
            or "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": self.inter_broker_listener,
            "log.dirs": str((self.home / "data").resolve()),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.cleaner.backoff.ms": "1000",
            "delete.topic.enable": "true",
        }
        props.update(self.extra_properties)
        return props

    def running(self) -> bool:
        """Whether our broker process is alive and its port accepts connections."""
        return read_pid(self.pidfile) is not None and port_open(self.port)

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise ServiceError("java not found: apt-get install openjdk-17-jre-headless")
        return java

    def _format(self, classpath: str) -> None:
        data = self.home / "data"
        if (data / "meta.properties").exists():
            return
        java = self._java()
        cluster_id = subprocess.run(
            [java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        result = subprocess.run(
            [
                java,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.home / "server.properties"),
                "--ignore-formatted",
                *self.format_args,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"kafka storage format failed: {result.stdout}{result.stderr}")

    def start(self, timeout_s: float = 90.0) -> float:
        """Start (or reuse) the broker; returns seconds until it accepted connections."""
        if self.running():
            return 0.0
        jars = resolve_jars(self.jar_cache)
        classpath = f"{jars}/*"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "server.properties").write_text(
            "".join(f"{k}={v}\n" for k, v in self.properties().items())
        )
        log4j = self.home / "log4j2.properties"
        log4j.write_text(_LOG4J2)
        self._format(classpath)
        argv = [
            self._java(),
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j.resolve()}",
            *self.jvm_options,
            "-cp",
            classpath,
            "kafka.Kafka",
            str((self.home / "server.properties").resolve()),
        ]
        spawn(argv, self.home / "kafka.log", self.pidfile)

        def ready() -> bool:
            if read_pid(self.pidfile) is None:
                raise ServiceError(f"kafka exited; see {self.home / 'kafka.log'}")
            return port_open(self.port) and _broker_started(self.home / "kafka.log")

        try:
            return wait_until(ready, timeout_s, f"kafka on port {self.port}", 0.2)
        except ServiceError:
            self.stop()
            raise

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Controlled shutdown (SIGTERM), SIGKILL after ``timeout_s``."""
        return terminate(self.pidfile, timeout_s, signal.SIGTERM)

    def kill(self) -> bool:
        """SIGKILL the broker (fault tests)."""
        return terminate(self.pidfile, 5.0, signal.SIGKILL)


def _broker_started(log: Path) -> bool:
    try:
        with log.open("rb") as fh:
            fh.seek(max(0, log.stat().st_size - 65536))
            tail = fh.read()
    except OSError:
        return False
    return tail.rfind(b"Kafka Server started") > tail.rfind(b"shutting down")

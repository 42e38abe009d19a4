"""Authenticated, encrypted Kafka (SASL_SSL with SCRAM-SHA-512 and PLAIN) and Redis (ACL user
over TLS), with certificates made by the test: the workers run with the right credentials,
clients with a wrong password, without TLS or without credentials are refused."""

from __future__ import annotations

import gc
import json
import socket
import ssl
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kafka import KafkaProducer
from kafka.errors import KafkaError
from pydantic import SecretStr

from schemas import DeadLetter, ErrorCode, Recommendations
from streams.kafka.config import kafka_python_config
from streams.kafka.topics import Topics, create_topics
from streams.settings import KafkaSettings, RedisSettings, Settings, TopicSettings
from streams.tools.processes import running_worker
from streams.tools.services import KafkaServer, RedisServer, free_port
from tests.support import collect

SCRAM_USER, SCRAM_PASSWORD = "visrec-worker", "scram-secret-9f3a"
PLAIN_USER, PLAIN_PASSWORD = "visrec-plain", "plain-secret-41c2"
REDIS_USER, REDIS_PASSWORD = "visrec", "redis-secret-77e1"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for 127.0.0.1/localhost, PEM, key unencrypted (PKCS#8)."""
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=visrec-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=d,
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
        cwd=d,
    )
    _openssl("pkcs8", "-topk8", "-nocrypt", "-in", "server.key", "-out", "server.pk8.key", cwd=d)
    (d / "server-keystore.pem").write_text(
        (d / "server.pk8.key").read_text() + (d / "server.pem").read_text()
    )
    return d


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Iterator[str]:
    port, internal, controller = free_port(), free_port(), free_port()
    plain_jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{PLAIN_USER}="{PLAIN_PASSWORD}";'
    )
    server = KafkaServer(
        tmp_path_factory.mktemp("secure-kafka"),
        port=port,
        controller_port=controller,
        listeners=f"SASL_SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal},CONTROLLER://127.0.0.1:{controller}",
        advertised_listeners=f"SASL_SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal}",
        protocol_map="SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
        inter_broker_listener="INTERNAL",
        extra_properties={
            "sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "listener.name.sasl_ssl.plain.sasl.jaas.config": plain_jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(pki / "server-keystore.pem"),
            "ssl.client.auth": "none",
        },
        format_args=["--add-scram", f"SCRAM-SHA-512=[name={SCRAM_USER},password={SCRAM_PASSWORD}]"],
    )
    server.start()
    try:
        yield server.bootstrap
    finally:
        server.stop()


@pytest.fixture(scope="module")
def secure_redis(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Iterator[str]:
    port = free_port()
    server = RedisServer(
        tmp_path_factory.mktemp("secure-redis"),
        port=0,
        extra_config=[
            f"tls-port {port}",
            f"tls-cert-file {pki / 'server.pem'}",
            f"tls-key-file {pki / 'server.key'}",
            f"tls-ca-cert-file {pki / 'ca.pem'}",
            "tls-auth-clients no",
            "user default off",
            f"user {REDIS_USER} on >{REDIS_PASSWORD} ~* &* +@all",
        ],
    )
    url = f"rediss://127.0.0.1:{port}/0"

    def ready() -> bool:
        client = redis.Redis.from_url(
            url, username=REDIS_USER, password=REDIS_PASSWORD, ssl_ca_certs=str(pki / "ca.pem")
        )
        try:
            return bool(client.ping())
        finally:
            client.close()

    server.running = ready  # type: ignore[method-assign]  # TLS + ACL: the plain probe cannot log in
    server.start()
    try:
        yield url
    finally:
        server.stop()


def _kafka(bootstrap: str, pki: Path, mechanism: str, user: str, password: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        security_protocol="SASL_SSL",
        sasl_mechanism=mechanism,  # type: ignore[arg-type]
        sasl_username=user,
        sasl_password=SecretStr(password),
        ssl_cafile=pki / "ca.pem",
    )


def _producer_works(kafka: KafkaSettings, topic: str) -> bool:
    try:
        try:
            producer = KafkaProducer(**kafka_python_config(kafka), max_block_ms=8000)
        except (KafkaError, OSError):
            return False
        try:
            producer.send(topic, key=b"k", value=b"v").get(timeout=8)
            return True
        except KafkaError:
            return False
        finally:
            producer.close(timeout=2)
    finally:
        # kafka-python 3.0 leaves the socket of a refused connection to the garbage collector;
        # collect it here, where that known ResourceWarning is expected, not in a later test.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


def test_workers_run_authenticated_and_strangers_are_refused(
    secure_kafka: str, secure_redis: str, pki: Path, tmp_path: Path
) -> None:
    settings = Settings(
        kafka=_kafka(secure_kafka, pki, "SCRAM-SHA-512", SCRAM_USER, SCRAM_PASSWORD),
        redis=RedisSettings(
            url=secure_redis,
            username=REDIS_USER,
            password=SecretStr(REDIS_PASSWORD),
            ssl_ca_certs=pki / "ca.pem",
        ),
        topics=TopicSettings(
            prefix="secure",
            events_partitions=2,
            recommendations_partitions=2,
            dead_letter_partitions=1,
            products_partitions=1,
            item_vectors_partitions=1,
        ),
        app_id="visrec-secure",
        state_dir=tmp_path,
    )
    create_topics(settings)
    topics = Topics.from_settings(settings)

    # Right credentials, both mechanisms.
    probe = topics.products.name  # no embed worker here: probe messages are never consumed
    assert _producer_works(settings.kafka, probe)
    assert _producer_works(_kafka(secure_kafka, pki, "PLAIN", PLAIN_USER, PLAIN_PASSWORD), probe)
    # Wrong password, unknown user, and no TLS at all are refused.
    assert not _producer_works(
        _kafka(secure_kafka, pki, "SCRAM-SHA-512", SCRAM_USER, "wrong"), probe
    )
    assert not _producer_works(_kafka(secure_kafka, pki, "PLAIN", "mallory", PLAIN_PASSWORD), probe)
    assert not _producer_works(KafkaSettings(bootstrap_servers=secure_kafka), probe)

    # The listener speaks TLS only: a plaintext Kafka request gets no Kafka answer, and a TLS
    # handshake shows our certificate (nothing readable travels in clear).
    host, port = secure_kafka.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        # An ApiVersions v0 request in clear.
        raw.sendall(b"\x00\x00\x00\x0e\x00\x12\x00\x00\x00\x00\x00\x01\x00\x04test")
        raw.settimeout(5)
        try:
            answer = raw.recv(64)
        except (TimeoutError, ConnectionResetError):
            answer = b""
        assert not answer.startswith(b"\x00\x00\x00"), answer
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")

    # Redis: the ACL user over TLS works; the default user, a wrong password and plain TCP do not.
    good = redis.Redis.from_url(
        secure_redis, username=REDIS_USER, password=REDIS_PASSWORD, ssl_ca_certs=str(pki / "ca.pem")
    )
    assert good.ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(
            secure_redis, username=REDIS_USER, password="wrong", ssl_ca_certs=str(pki / "ca.pem")
        ).ping()
    with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
        redis.Redis.from_url(secure_redis, ssl_ca_certs=str(pki / "ca.pem")).ping()
    plain_url = secure_redis.replace("rediss://", "redis://")
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(
            plain_url, username=REDIS_USER, password=REDIS_PASSWORD, socket_timeout=3
        ).ping()

    # The interest worker runs end to end with credentials: garbage is dead-lettered, a valid
    # event answered, over SASL_SSL and Redis TLS + ACL.
    producer = KafkaProducer(**kafka_python_config(settings.kafka))
    producer.send(topics.events.name, key=b"u1", value=b"{garbage", partition=0)
    event = {
        "event_id": "sec-1",
        "user_id": "u1",
        "item_id": "i1",
        "type": "click",
        "ts_ms": 1_764_000_000_000,
    }
    producer.send(topics.events.name, key=b"u1", value=json.dumps(event).encode(), partition=0)
    producer.flush()
    producer.close()
    with running_worker(settings, "interests", tmp_path / "secure-worker.log") as worker:
        letters = collect(settings, topics.dead_letter.name, lambda m: len(m) >= 1, 90)
        lists = collect(settings, topics.recommendations.name, lambda m: len(m) >= 1, 60)
        assert worker.alive(), worker.output()[-3000:]
        log_text = worker.output()
    assert [DeadLetter.from_json_bytes(m.value).error_code for m in letters] == [
        ErrorCode.INVALID_JSON
    ], log_text[-3000:]
    assert Recommendations.from_json_bytes(lists[0].value).trigger_event_id == "sec-1"
    assert good.get("visrec:v1:{u:u1}:recs") is not None
    # Secrets are never logged.
    assert SCRAM_PASSWORD not in log_text and REDIS_PASSWORD not in log_text

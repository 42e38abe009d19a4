"""Bad input through the real broker: every malformed message lands in the dead-letter topic
with the right reason code, and a valid event sent after them is still processed."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

from schemas import DeadLetter, ErrorCode, Recommendations
from streams.kafka.topics import Topics, create_topics
from streams.settings import Settings
from streams.tools.processes import running_worker
from tests.support import collect, raw_producer

GOOD = {
    "event_id": "ok-1",
    "user_id": "u1",
    "item_id": "i1",
    "type": "click",
    "ts_ms": 1_700_000_000_000,
}


def _event(**patch: object) -> bytes:
    return json.dumps({**GOOD, **patch}).encode()


BAD: list[tuple[str, bytes | None, bytes | None, ErrorCode]] = [
    ("truncated", b"u1", b'{"event_id": "x", "user_', ErrorCode.INVALID_JSON),
    ("non-utf8", b"u1", b"\xc3\x28\xa0\xa1 not utf-8", ErrorCode.INVALID_ENCODING),
    ("array", b"u1", b'[{"event_id": "x"}]', ErrorCode.NOT_AN_OBJECT),
    (
        "missing-id",
        b"u1",
        json.dumps({k: v for k, v in GOOD.items() if k != "event_id"}).encode(),
        ErrorCode.SCHEMA_VIOLATION,
    ),
    ("wrong-type", b"u1", _event(event_id="wt", ts_ms="yesterday"), ErrorCode.SCHEMA_VIOLATION),
    ("unknown-type", b"u1", _event(event_id="ut", type="teleport"), ErrorCode.SCHEMA_VIOLATION),
    ("negative-ts", b"u1", _event(event_id="nt", ts_ms=-1), ErrorCode.SCHEMA_VIOLATION),
    ("overflow-ts", b"u1", _event(event_id="ot", ts_ms=2**64), ErrorCode.SCHEMA_VIOLATION),
    (
        "5mb",
        b"u1",
        b'{"event_id": "' + b"x" * (5 * 1024 * 1024) + b'"}',
        ErrorCode.PAYLOAD_TOO_LARGE,
    ),
    (
        "future-version",
        b"u1",
        _event(event_id="fv", schema_version=99),
        ErrorCode.UNSUPPORTED_VERSION,
    ),
    ("empty", b"u1", b"", ErrorCode.EMPTY_PAYLOAD),
    ("null-key", None, _event(event_id="nk"), ErrorCode.MISSING_KEY),
]


def test_bad_events_are_dead_lettered_and_good_ones_processed(
    settings: Settings, tmp_path: Path
) -> None:
    create_topics(settings)
    topics = Topics.from_settings(settings)
    producer = raw_producer(settings)
    for _, key, value, _ in BAD:
        producer.send(topics.events.name, key=key, value=value, partition=0)
    producer.send(topics.events.name, key=b"u1", value=_event(), partition=0)
    producer.flush()
    producer.close()

    # An outside client too: kcat sends raw garbage bytes.
    kcat = shutil.which("kcat")
    assert kcat is not None, "kcat is part of the CI install"
    subprocess.run(
        [
            kcat,
            "-b",
            settings.kafka.bootstrap_servers,
            "-P",
            "-t",
            topics.events.name,
            "-k",
            "u1",
            "-p",
            "0",
        ],
        input=b"\x00\x01\x02 garbage from kcat\n",
        check=True,
    )

    with running_worker(settings, "interests", tmp_path / "worker.log") as worker:
        letters = collect(settings, topics.dead_letter.name, lambda m: len(m) >= len(BAD) + 1, 120)
        recs = collect(settings, topics.recommendations.name, lambda m: len(m) >= 1, 60)
        assert worker.alive(), worker.output()[-3000:]

    decoded = [DeadLetter.from_json_bytes(m.value) for m in letters]
    assert len(decoded) == len(BAD) + 1, worker.output()[-3000:]
    by_offset = {d.offset: d for d in decoded}
    for offset, (name, _key, value, code) in enumerate(BAD):
        letter = by_offset[offset]
        assert letter.error_code == code, (name, letter.error)
        assert letter.source_topic == topics.events.name
        if value and len(value) < settings.limits.max_dead_letter_payload_bytes:
            assert base64.b64decode(letter.payload_b64) == value, name
    kcat_letter = by_offset[len(BAD) + 1]
    assert kcat_letter.error_code == ErrorCode.INVALID_JSON
    assert base64.b64decode(kcat_letter.payload_b64) == b"\x00\x01\x02 garbage from kcat"

    lists = [Recommendations.from_json_bytes(m.value) for m in recs]
    assert [r.trigger_event_id for r in lists] == ["ok-1"]
    assert lists[0].user_id == "u1"

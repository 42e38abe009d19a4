from __future__ import annotations

import base64
import json

import pytest

from schemas import SCHEMA_VERSION, ErrorCode, Limits, UserEvent
from streams.edge.codec import Rejected, Source, decode, to_dead_letter

LIMITS = Limits()
GOOD = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "click", "ts_ms": 1000}


def _decode(value: bytes | None, key: bytes | None = b"u1") -> UserEvent | Rejected:
    return decode(
        UserEvent, value, key=key, max_bytes=64 * 1024, limits=LIMITS, key_field="user_id"
    )


def _code(value: bytes | None, key: bytes | None = b"u1") -> ErrorCode:
    result = _decode(value, key)
    assert isinstance(result, Rejected), result
    return result.code


def test_valid_event_decodes() -> None:
    result = _decode(json.dumps(GOOD).encode())
    assert isinstance(result, UserEvent)
    assert result.event_id == "e1"
    assert result.schema_version == SCHEMA_VERSION


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (b"", ErrorCode.EMPTY_PAYLOAD),
        (None, ErrorCode.EMPTY_PAYLOAD),
        (b'{"event_id": "e1", "user_id"', ErrorCode.INVALID_JSON),
        (b"\xff\xfe\x00garbage", ErrorCode.INVALID_ENCODING),
        (b"[1, 2, 3]", ErrorCode.NOT_AN_OBJECT),
        (b'"just a string"', ErrorCode.NOT_AN_OBJECT),
        (b'{"event_id": NaN}', ErrorCode.INVALID_JSON),
        (json.dumps({**GOOD, "schema_version": 2}).encode(), ErrorCode.UNSUPPORTED_VERSION),
        (
            json.dumps({**GOOD, "schema_version": 2, "new": 1}).encode(),
            ErrorCode.UNSUPPORTED_VERSION,
        ),
        (
            json.dumps({k: v for k, v in GOOD.items() if k != "event_id"}).encode(),
            ErrorCode.SCHEMA_VIOLATION,
        ),
        (json.dumps({**GOOD, "ts_ms": "soon"}).encode(), ErrorCode.SCHEMA_VIOLATION),
        (json.dumps({**GOOD, "ts_ms": -5}).encode(), ErrorCode.SCHEMA_VIOLATION),
        (json.dumps({**GOOD, "ts_ms": 10**30}).encode(), ErrorCode.SCHEMA_VIOLATION),
        (json.dumps({**GOOD, "type": "teleport"}).encode(), ErrorCode.SCHEMA_VIOLATION),
        (json.dumps({**GOOD, "schema_version": "1"}).encode(), ErrorCode.SCHEMA_VIOLATION),
        (b"x" * (64 * 1024 + 1), ErrorCode.PAYLOAD_TOO_LARGE),
    ],
)
def test_bad_payloads_get_reason_codes(value: bytes | None, code: ErrorCode) -> None:
    assert _code(value) == code


def test_key_must_be_present_and_match() -> None:
    raw = json.dumps(GOOD).encode()
    assert _code(raw, key=None) == ErrorCode.MISSING_KEY
    assert _code(raw, key=b"someone-else") == ErrorCode.KEY_MISMATCH
    assert _code(raw, key=b"\xff") == ErrorCode.KEY_MISMATCH


def test_dead_letter_keeps_origin_and_raw_bytes() -> None:
    raw = b"\x00\x01not json"
    rejected = _decode(raw)
    assert isinstance(rejected, Rejected)
    letter = to_dead_letter(
        Source("visrec.events.v1", 2, 41, b"k"), raw, rejected, now_ms=5, max_payload_bytes=4
    )
    assert (letter.source_topic, letter.partition, letter.offset) == ("visrec.events.v1", 2, 41)
    assert base64.b64decode(letter.payload_b64) == raw[:4]
    assert letter.payload_truncated
    assert base64.b64decode(letter.key_b64 or "") == b"k"
    assert letter.error_code == rejected.code
